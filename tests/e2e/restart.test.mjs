// restart.test.mjs - `onramp serve` stopped and started again on the same data directory:
// the log keeps what was accepted, and a message resent after the restart is still
// recognised by its messageId and not stored twice, after a clean stop (which saves the
// recent ids, as it also does every --state-every) and after kill -9 (the log past the
// saved ids is read). A record torn by a crash is cut off at start, said in the log.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { BIN, api, serve, post, readLog, until } from './helpers.mjs';

const KEY = 'restart-key';
const data = mkdtempSync(join(tmpdir(), 'onramp-e2e-restart-'));
after(() => rmSync(data, { recursive: true, force: true }));

const start = () => serve(['--data', data, '--write-key', KEY, '--partitions', '2']);

async function stop(s) {
  assert.equal(await s.stop(), 0, s.log());
}

async function track(s, m) {
  const r = await post(s.base, '/v1/track', m, { key: KEY });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

const stored = () => readLog(join(data, 'log')).map((r) => r.json.messageId);

// A record torn by a crash (its header written, its payload cut short) is cut off at start,
// with a log line saying how many bytes; the records before it are kept and appends go on.
test('a torn tail of the event log is cut at start, saying how many bytes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-torn-'));
  const serveHere = () => serve(['--data', dir, '--write-key', KEY, '--partitions', '1']);
  try {
    const ms = [1, 2, 3].map((i) => ({ userId: 'u-torn', event: `E${i}`, messageId: randomUUID() }));
    let s = await serveHere();
    await track(s, ms[0]);
    await track(s, ms[1]);
    await stop(s);
    const part = join(dir, 'log', 'p000');
    const seg = join(part, readdirSync(part).filter((n) => n.endsWith('.log')).sort().pop());
    const header = Buffer.alloc(8);
    header.writeUInt32LE(100, 0); // a 100-byte record, of which 20 bytes made it
    appendFileSync(seg, Buffer.concat([header, Buffer.from('{"userId":"torn","ev')]));

    s = await serveHere();
    assert.match(s.log(), /truncated 28 bytes of torn or corrupt tail at byte \d+ .*the 2 records before it are kept/);
    await track(s, ms[2]);
    await stop(s);
    assert.deepEqual(readLog(join(dir, 'log')).map((r) => r.json.messageId), ms.map((m) => m.messageId));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Retention: once a checkpoint covers them, a partition's oldest whole segments go while it
// holds more than --retain-bytes; the engine keeps every user, also across a restart.
test('retention deletes checkpointed segments past --retain-bytes, and the engine keeps its users', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-retain-'));
  const seg = 2 * 1024 * 1024;
  const args = ['--data', dir, '--write-key', KEY, '--admin-token', 'tok', '--partitions', '1',
    '--segment-bytes', String(seg), '--retain-bytes', String(seg), '--checkpoint-every', '1s'];
  const metric = async (s, name) => {
    const m = await api(s.base, 'GET', '/metrics', { token: 'tok' });
    return Number(m.text.split('\n').find((l) => l.startsWith(name + ' ')).split(' ')[1]);
  };
  try {
    let s = await serve(args);
    for (let b = 0; b < 80; b++) {
      const batch = Array.from({ length: 100 }, (_, i) => ({ type: 'track', userId: `u${(b * 100 + i) % 60}`,
        event: 'Feature Used', messageId: randomUUID(), properties: { pad: 'x'.repeat(600) } }));
      const r = await post(s.base, '/v1/batch', { batch }, { key: KEY });
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    const part = join(dir, 'log', 'p000');
    const first = readdirSync(part).filter((n) => n.endsWith('.log')).sort()[0];
    assert.ok(await until(async () => !existsSync(join(part, first))), 'the oldest segment is still there');
    assert.ok(await until(async () => (await metric(s, 'onramp_log_bytes')) <= 2 * seg),
      `the partition holds ${await metric(s, 'onramp_log_bytes')} bytes`);
    assert.equal(await metric(s, 'onramp_engine_users'), 60);
    await stop(s);
    s = await serve(args);
    assert.ok(await until(async () => (await api(s.base, 'GET', '/readyz')).status === 200));
    assert.equal(await metric(s, 'onramp_engine_users'), 60);
    await stop(s);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a message resent after a restart is stored once', async () => {
  const m = { userId: 'u-restart', event: 'Signed Up', messageId: randomUUID() };
  const other = { userId: 'u-restart', event: 'Feature Used', messageId: randomUUID() };
  let s = await start();
  await track(s, m);
  await stop(s);

  s = await start();
  // from what the clean stop saved (DATA/ingest.state), without reading the log
  assert.match(s.log(), /"msg":"recent messageIds recovered from the event log","message_ids":1,"from_state":true,"log_records_read":0\b/);
  await track(s, m);
  await track(s, other);
  await stop(s);

  const ids = stored();
  assert.equal(ids.filter((id) => id === m.messageId).length, 1, 'the resent message is stored once');
  assert.equal(ids.filter((id) => id === other.messageId).length, 1);
  assert.equal(ids.length, 2);
});

test('a message resent after kill -9 is stored once: the log after the saved state is read', async () => {
  const m = { userId: 'u-crash', event: 'Signed Up', messageId: randomUUID() };
  let s = await start(); // the state of the test above's clean stop, and the log after it
  await track(s, m);
  s.proc.kill('SIGKILL');
  await s.exited;

  s = await start();
  assert.match(s.log(), /"msg":"recent messageIds recovered from the event log","message_ids":3,"from_state":true,"log_records_read":1\b/);
  await track(s, m);
  await stop(s);
  assert.equal(stored().filter((id) => id === m.messageId).length, 1, 'the resent message is stored once');
  assert.equal(stored().length, 3);
});

test('the ingest state is saved every --state-every, so a start after kill -9 reads only the log since then', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-restart-'));
  const run = () => serve(['--data', dir, '--write-key', KEY, '--partitions', '2', '--state-every', '1s']);
  try {
    const early = Array.from({ length: 5 }, (_, i) => ({ userId: `u-tick-${i}`, event: 'Signed Up', messageId: randomUUID() }));
    let s = await run();
    for (const m of early) await track(s, m);
    // a save covers what was written before the previous tick: two ticks later, all of it
    const state = join(dir, 'ingest.state');
    const saved = await until(() => existsSync(state) && statSync(state).size > 0, 10000);
    assert.ok(saved, 'no ingest.state while running');
    await new Promise((ok) => setTimeout(ok, 2500));
    const late = { userId: 'u-tick-late', event: 'Signed Up', messageId: randomUUID() };
    await track(s, late);
    s.proc.kill('SIGKILL');
    await s.exited;

    s = await run();
    assert.match(s.log(), /"msg":"recent messageIds recovered from the event log","message_ids":6,"from_state":true,"log_records_read":1\b/);
    for (const m of [...early, late]) await track(s, m);
    await stop(s);
    const ids = readLog(join(dir, 'log')).map((r) => r.json.messageId);
    assert.equal(ids.length, 6, 'a resent message was stored again');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--state-every is listed by --help and checked', () => {
  const help = spawnSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
  assert.match(help.stdout + help.stderr, /--state-every D .*\[5m\] .*ONRAMP_STATE_EVERY/);
  for (const bad of ['0s', '500ms', 'soon']) {
    const r = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--data', join(data, 'refused'), '--state-every', bad],
      { encoding: 'utf8', timeout: 10000 });
    assert.notEqual(r.status, 0, bad);
    assert.match(r.stderr, /--state-every/, bad);
  }
});

test('a log made again in place of the old one: its checkpoints are refused and its ingest state set aside', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-restart-'));
  const other = mkdtempSync(join(tmpdir(), 'onramp-e2e-restart-'));
  const args = (d) => ['--data', d, '--write-key', KEY, '--partitions', '2'];
  try {
    // the old log stores m; another log, with three messages but not m, takes its place
    const m = { userId: 'u-old-log', event: 'Signed Up', messageId: randomUUID() };
    let s = await serve(args(dir));
    await track(s, m);
    await stop(s);
    s = await serve(args(other));
    for (let i = 0; i < 3; i++) await track(s, { userId: `u-new-log-${i}`, event: 'Signed Up', messageId: randomUUID() });
    await stop(s);
    rmSync(join(dir, 'log'), { recursive: true });
    cpSync(join(other, 'log'), join(dir, 'log'), { recursive: true });
    const before = readFileSync(join(dir, 'ingest.state'));

    const refused = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', ...args(dir)], { encoding: 'utf8', timeout: 20000 });
    assert.notEqual(refused.status, 0, refused.stderr);
    const logId = readFileSync(join(dir, 'log', 'elog.meta'), 'utf8').match(/^id ([0-9a-f]{32})$/m)[1];
    assert.match(refused.stderr, new RegExp(`"msg":"event log open","dir":"[^"]*/log","log_id":"${logId}"`));
    assert.ok(refused.stderr.includes(`this log's id is ${logId})`), refused.stderr);
    assert.match(refused.stderr, /shard-\d+-of-\d+\.ckpt was written over another event log \(id [0-9a-f]{32}; this log's id is [0-9a-f]{32}\), so its offsets name other records; move \S+\/engine away to rebuild every profile from this log/);
    assert.deepEqual(readFileSync(join(dir, 'ingest.state')), before, 'a refused start changed the ingest state');

    renameSync(join(dir, 'engine'), join(dir, 'engine.old'));
    s = await serve(args(dir));
    assert.match(s.log(), /ingest\.state is not used \(written for another event log \(id [0-9a-f]{32}; this log's id is [0-9a-f]{32}\)\): the whole log is read instead/);
    assert.match(s.log(), /"msg":"recent messageIds recovered from the event log","message_ids":3,"from_state":false,"log_records_read":3\b/);
    // m is not in this log: stored, not taken for a duplicate the old log's ids remembered
    await track(s, m);
    await stop(s);
    const ids = readLog(join(dir, 'log')).map((r) => r.json.messageId);
    assert.equal(ids.length, 4);
    assert.ok(ids.includes(m.messageId), 'the message was dropped as a duplicate of the old log');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(other, { recursive: true, force: true });
  }
});
