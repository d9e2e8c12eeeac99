// restart.test.mjs - `onramp serve` stopped and started again on the same data directory:
// the log keeps what was accepted, and a message resent after the restart is still
// recognised by its messageId and not stored twice.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';

const BIN = resolve(process.env.ONRAMP_BIN ?? 'build/onramp');
const KEY = 'restart-key';
const data = mkdtempSync(join(tmpdir(), 'onramp-e2e-restart-'));
after(() => rmSync(data, { recursive: true, force: true }));

function start() {
  return new Promise((ok, fail) => {
    let err = '';
    const p = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data', data, '--write-key', KEY,
      '--partitions', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const timer = setTimeout(() => fail(new Error('no "listening" line:\n' + err)), 5000);
    p.stderr.on('data', (b) => {
      err += b;
      const m = err.match(/"msg":"listening","listen":"127\.0\.0\.1:(\d+)"/);
      if (m) { clearTimeout(timer); ok({ p, base: `http://127.0.0.1:${m[1]}`, log: () => err }); }
    });
    p.on('exit', (code) => { clearTimeout(timer); fail(new Error(`exited ${code}:\n${err}`)); });
  });
}

async function stop(s) {
  const exited = new Promise((ok) => s.p.on('exit', (code) => ok(code)));
  s.p.kill('SIGTERM');
  assert.equal(await exited, 0, s.log());
}

async function track(s, m) {
  const res = await fetch(s.base + '/v1/track', {
    method: 'POST', body: JSON.stringify(m),
    headers: { 'Content-Type': 'application/json', Authorization: 'Basic ' + Buffer.from(KEY + ':').toString('base64') },
  });
  assert.equal(res.status, 200, await res.text());
}

function stored() {
  const ids = [];
  const dir = join(data, 'log');
  for (const p of readdirSync(dir).filter((d) => /^p\d{3}$/.test(d))) {
    for (const f of readdirSync(join(dir, p)).filter((n) => n.endsWith('.log'))) {
      const buf = readFileSync(join(dir, p, f));
      for (let off = 0; off + 8 <= buf.length;) {
        const len = buf.readUInt32LE(off);
        if (len === 0 || off + 8 + len > buf.length) break;
        ids.push(JSON.parse(buf.subarray(off + 8, off + 8 + len).toString('utf8')).messageId);
        off += 8 + len;
      }
    }
  }
  return ids;
}

test('a message resent after a restart is stored once', async () => {
  const m = { userId: 'u-restart', event: 'Signed Up', messageId: randomUUID() };
  const other = { userId: 'u-restart', event: 'Feature Used', messageId: randomUUID() };
  let s = await start();
  await track(s, m);
  await stop(s);

  s = await start();
  assert.match(s.log(), /"msg":"recent messageIds recovered from the event log","message_ids":1/);
  await track(s, m);
  await track(s, other);
  await stop(s);

  const ids = stored();
  assert.equal(ids.filter((id) => id === m.messageId).length, 1, 'the resent message is stored once');
  assert.equal(ids.filter((id) => id === other.messageId).length, 1);
  assert.equal(ids.length, 2);
});
