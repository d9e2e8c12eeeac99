// helpers.mjs - what the e2e tests share: the built `onramp serve` started on a free loopback
// port, HTTP requests to it (node:http, one connection each, so that a server closing idle
// connections never races a reused one), raw-socket requests for what a client library will
// not send, and the event log's segment files read back record by record.
import { after } from 'node:test';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import http from 'node:http';
import net from 'node:net';

export const BIN = resolve(process.env.ONRAMP_BIN ?? 'build/onramp');

export const basic = (key) => 'Basic ' + Buffer.from(key + ':').toString('base64');

// Servers still running when a file's tests end (a test failed before stopping its own) are
// killed, so that they do not keep the test process alive.
const running = new Set();
after(() => { for (const proc of running) proc.kill('SIGKILL'); });

// Starts `onramp serve --listen 127.0.0.1:0 ...args` and resolves once it logs the port it
// bound. The result: { proc, pid, port, base, log() (stderr so far), exited (a promise of the
// exit code, or the signal's name), stop(signal) (sends it, resolves with the exit code) }.
export function serve(args, { env, openFiles } = {}) {
  return new Promise((ok, fail) => {
    // openFiles: the server runs under `ulimit -n openFiles` (soft and hard)
    const argv = [BIN, 'serve', '--listen', '127.0.0.1:0', ...args];
    const options = { stdio: ['ignore', 'ignore', 'pipe'], env: env ? { ...process.env, ...env } : process.env };
    const proc = openFiles
      ? spawn('sh', ['-c', `ulimit -n ${openFiles} && exec "$@"`, 'sh', ...argv], options)
      : spawn(argv[0], argv.slice(1), options);
    let err = '';
    let server = null;
    running.add(proc);
    const exited = new Promise((done) => proc.on('exit', (code, sig) => {
      running.delete(proc);
      done(code ?? sig);
    }));
    const timer = setTimeout(() => fail(new Error('no "listening" line:\n' + err)), 10000);
    proc.on('error', (e) => { clearTimeout(timer); fail(e); });
    proc.stderr.on('data', (b) => {
      err += b;
      const m = err.match(/"msg":"listening","listen":"127\.0\.0\.1:(\d+)"/);
      if (m && !server) {
        clearTimeout(timer);
        const port = Number(m[1]);
        server = {
          proc, pid: proc.pid, port, base: `http://127.0.0.1:${port}`, log: () => err, exited,
          stop: (signal = 'SIGTERM') => { proc.kill(signal); return exited; },
        };
        ok(server);
      }
    });
    exited.then((code) => { clearTimeout(timer); if (!server) fail(new Error(`exited ${code}:\n${err}`)); });
  });
}

// POSTs body (an object is sent as JSON) to base + path with key as the Basic auth user
// (null: no Authorization). Resolves { status, headers, json } (json is the text when the
// answer is not JSON).
export function post(base, path, body, { key, headers = {} } = {}) {
  const data = typeof body === 'string' || Buffer.isBuffer(body) ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
  const h = { 'Content-Type': 'application/json', 'Content-Length': data.length, ...headers };
  if (key) h.Authorization = basic(key);
  return new Promise((ok, fail) => {
    const req = http.request(base + path, { method: 'POST', headers: h, agent: false }, (res) => {
      const parts = [];
      res.on('data', (b) => parts.push(b));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = text; }
        ok({ status: res.statusCode, headers: res.headers, json });
      });
      res.on('error', fail);
    });
    req.on('error', fail);
    req.end(data);
  });
}

// Parses what a raw request got back: the first answer's status, headers (lower-case names)
// and body, and how many status lines came back in all.
export function parseAnswer(text) {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = end < 0 ? '' : text.slice(end + 4);
  if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']));
  return { status: Number(statusLine.split(' ')[1]), headers, body, answers: (text.match(/^HTTP\/1\.[01] \d{3} /gm) ?? []).length, text };
}

// Writes request (a string or Buffer, or an array of them written in turn) on a new
// connection to port and resolves parseAnswer(all it got) once the server closes it (or after
// timeoutMs). For requests fetch will not make: conflicting framing headers, bodies the
// server refuses before reading them.
export function raw(port, request, { timeoutMs = 10000 } = {}) {
  return new Promise((ok, fail) => {
    const s = net.connect(port, '127.0.0.1');
    const got = [];
    const done = () => ok(parseAnswer(Buffer.concat(got).toString('latin1')));
    s.on('data', (b) => got.push(b));
    s.on('error', (e) => (got.length ? done() : fail(e)));
    s.on('close', done);
    for (const part of Array.isArray(request) ? request : [request]) s.write(part);
    s.setTimeout(timeoutMs, () => s.destroy());
  });
}

// Every record of every segment of the log in dir (DATA/log), partition by partition in
// offset order: { partition: 'p000', json, text }. The framing is u32 LE length, u32 CRC32C,
// payload; reading stops at a short record (a torn tail the next start cuts off).
export function readLog(dir) {
  const out = [];
  for (const p of readdirSync(dir).filter((d) => /^p\d{3}$/.test(d)).sort()) {
    for (const f of readdirSync(join(dir, p)).filter((n) => n.endsWith('.log')).sort()) {
      const buf = readFileSync(join(dir, p, f));
      let off = 0;
      while (off + 8 <= buf.length) {
        const len = buf.readUInt32LE(off);
        if (len === 0 || off + 8 + len > buf.length) break;
        const text = buf.subarray(off + 8, off + 8 + len).toString('utf8');
        out.push({ partition: p, json: JSON.parse(text), text });
        off += 8 + len;
      }
    }
  }
  return out;
}

// The resident set size and its peak so far, in bytes, of process pid (Linux).
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))[1]) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

// A management API request: method and path on base with token as the bearer (null: no
// Authorization); body is sent as is (a string: a rules file). Resolves { status, headers,
// json, text }.
export async function api(base, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, json, text };
}

// Polls check() (async; a truthy result ends it) every 50 ms for up to ms; resolves with the
// last result, so that the caller's assertion reports what was seen.
export async function until(check, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  return last;
}
