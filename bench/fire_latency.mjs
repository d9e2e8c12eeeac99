// fire_latency.mjs - event-to-fire latency of `onramp serve`: an open-loop sender posts one
// message a tick (each from a new user, each making server_error_seen fire) at a fixed rate,
// noting the wall clock at which it was due to be sent; the fire journal records the wall
// clock at which each fire was written. Latency = recorded - due, so a stalled sender counts
// against the server too (no coordinated omission). The first WARMUP seconds (default 2) are
// sent the same way and not counted: a server's first second pays one-time costs (its HTTP
// threads' first buffers, its tables' first pages) that are not its steady state. Prints a
// JSON line and a table.
// Usage: node bench/fire_latency.mjs ONRAMP_BIN [RATE_PER_S] [SECONDS] [WARMUP_SECONDS]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import http from 'node:http';

const bin = resolve(process.argv[2] ?? 'build/onramp');
const rate = Number(process.argv[3] ?? 500);
const seconds = Number(process.argv[4] ?? 10);
const warmup = Number(process.argv[5] ?? 2);
const KEY = 'bench-key';
const dir = mkdtempSync(join(tmpdir(), 'onramp-fire-latency-'));

const proc = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data', join(dir, 'data'),
  '--write-key', KEY, '--admin-token', 'bench', '--rules', 'rules/onboarding.rules', ...(process.env.SERVE_ARGS ?? '').split(' ').filter(Boolean)],
{ stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
const port = await new Promise((ok, fail) => {
  proc.stderr.on('data', (b) => {
    log += b;
    const m = log.match(/"msg":"listening","listen":"127\.0\.0\.1:(\d+)"/);
    if (m) ok(Number(m[1]));
  });
  proc.on('exit', (c) => fail(new Error('onramp exited ' + c + '\n' + log)));
});

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const auth = 'Basic ' + Buffer.from(KEY + ':').toString('base64');
function send(user) {
  const body = JSON.stringify({ userId: user, event: 'API Error', properties: { status: 500 } });
  return new Promise((ok) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/track', method: 'POST', agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Authorization: auth } },
    (res) => { res.resume(); res.on('end', () => ok(res.statusCode)); });
    req.on('error', () => ok(0));
    req.end(body);
  });
}

const due = new Map();
const acked = [];
const pending = [];
let errors = 0;
const start = Date.now() + 200;
const total = Math.round(rate * seconds);
const warm = Math.round(rate * warmup);
for (let i = -warm; i < total; i++) {
  const at = start + ((i + warm) * 1000) / rate;
  const wait = at - Date.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  const user = i < 0 ? `warm-${-i}` : `lat-${i}`;
  if (i >= 0) due.set(user, at);
  pending.push(send(user).then((s) => {
    if (i >= 0) acked.push(Date.now() - at);
    if (s !== 200) errors++;
  }));
}
await Promise.all(pending);
await new Promise((r) => setTimeout(r, 1000));
proc.kill('SIGTERM');
await new Promise((r) => proc.on('exit', r));

const lat = [];
for (const line of readFileSync(join(dir, 'data', 'engine', 'fires.jsonl'), 'utf8').split('\n')) {
  if (!line) continue;
  const f = JSON.parse(line);
  if (due.has(f.user)) lat.push(f.recorded_ms - due.get(f.user));
}
rmSync(dir, { recursive: true, force: true });
lat.sort((a, b) => a - b);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
acked.sort((a, b) => a - b);
const out = { ack_p50_ms: acked[Math.floor(acked.length / 2)], ack_p99_ms: acked[Math.floor(acked.length * 0.99)], bench: 'fire_latency', rate, seconds, warmup_s: warmup, sent: total, fires: lat.length, errors,
  p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat[lat.length - 1] };
console.log(JSON.stringify(out));
console.log(`event-to-fire at ${rate}/s for ${seconds}s after ${warmup}s of warm-up: ${lat.length}/${total} fired, ` +
  `p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms, max ${out.max_ms} ms` + (errors ? `, ${errors} non-200 answers` : ''));
if (errors || lat.length !== total) process.exitCode = 1;
