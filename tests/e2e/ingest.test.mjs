// ingest.test.mjs - the built `onramp serve` on loopback, driven over real HTTP: the Segment
// ingest endpoints, write-key auth, limits, gzip, header smuggling, and what lands in the log.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { BIN, basic, serve, post as postTo, raw as rawTo, readLog, api, until } from './helpers.mjs';

const KEY = 'e2e-write-key';
const ADMIN = 'e2e-admin-token';

let server, base, port, data;

before(async () => {
  data = mkdtempSync(join(tmpdir(), 'onramp-e2e-'));
  server = await serve(['--data', data, '--write-key', KEY, '--write-key', 'second-key',
    '--partitions', '4', '--threads', '2', '--admin-token', ADMIN]);
  ({ base, port } = server);
});

after(() => {
  if (server && server.proc.exitCode === null) server.proc.kill('SIGKILL');
  rmSync(data, { recursive: true, force: true });
});

const post = (path, body, { key = KEY, headers = {} } = {}) => postTo(base, path, body, { key, headers });

// Raw bytes, for requests fetch will not make: conflicting framing headers, bodies the
// server refuses before reading.
const raw = (request) => rawTo(port, request, { timeoutMs: 5000 });

const accepted = []; // messageIds the server said 200 to

// The value of an unlabelled series in /metrics.
async function metricOf(base, token, name) {
  const m = await api(base, 'GET', '/metrics', { token });
  return Number(m.text.split('\n').find((l) => l.startsWith(name + ' ')).split(' ')[1]);
}

function msg(type, extra = {}) {
  const id = randomUUID();
  const m = { userId: 'user-' + id.slice(0, 8), messageId: id, ...extra };
  if (type === 'track') m.event = 'Signed Up';
  if (type === 'alias') m.previousId = 'anon-' + id.slice(0, 8);
  return m;
}

// A server of its own, on a scratch data directory, for a test that needs other flags: runs
// fn(srv, dir), then stops the server (if fn did not) and removes the directory.
async function withServer(args, fn) {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-own-'));
  const srv = await serve(['--data', dir, '--write-key', KEY, '--admin-token', 'tok', ...args]);
  try {
    return await fn(srv, dir);
  } finally {
    if (srv.proc.exitCode === null) srv.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

const singles = {
  track: ['/v1/track', '/v1/t'], identify: ['/v1/identify', '/v1/i'], page: ['/v1/page', '/v1/p'],
  screen: ['/v1/screen', '/v1/s'], group: ['/v1/group', '/v1/g'], alias: ['/v1/alias', '/v1/a'],
};

test('every single-message endpoint accepts a valid message', async () => {
  for (const [type, paths] of Object.entries(singles)) {
    for (const path of paths) {
      const m = msg(type, type === 'group' ? { groupId: 'g1' } : {});
      const r = await post(path, m);
      assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.json)}`);
      assert.deepEqual(r.json, { success: true });
      accepted.push(m.messageId);
    }
  }
});

test('batch accepts typed items, with batch-level context', async () => {
  for (const path of ['/v1/batch', '/v1/b']) {
    const items = [{ type: 'track', ...msg('track') }, { type: 'identify', ...msg('identify'), traits: { plan: 'pro' } }];
    const r = await post(path, { batch: items, context: { library: { name: 'e2e' } }, sentAt: new Date().toISOString() });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.deepEqual(r.json, { success: true });
    accepted.push(...items.map((i) => i.messageId));
  }
});

test('health and readiness probes answer', async () => {
  for (const p of ['/healthz', '/readyz']) {
    const res = await fetch(base + p);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
  }
});

test('a missing or unknown write key is 401', async () => {
  const none = await post('/v1/track', msg('track'), { key: null });
  assert.equal(none.status, 401);
  assert.match(none.json.error, /missing write key/);
  const wrong = await post('/v1/track', msg('track'), { key: 'not-a-key' });
  assert.equal(wrong.status, 401);
  assert.match(wrong.json.error, /unknown write key/);
  const wrongInBody = await post('/v1/track', { ...msg('track'), writeKey: 'nope' }, { key: null });
  assert.equal(wrongInBody.status, 401);
});

test('writeKey in the body authenticates, and any configured key works', async () => {
  const m = msg('track');
  const r = await post('/v1/track', { ...m, writeKey: KEY }, { key: null });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  accepted.push(m.messageId);
  const m2 = msg('track');
  const r2 = await post('/v1/track', m2, { key: 'second-key' });
  assert.equal(r2.status, 200);
  accepted.push(m2.messageId);
});

test('malformed JSON and invalid messages are 400 with the reason', async () => {
  const bad = await post('/v1/track', '{"userId":"u",');
  assert.equal(bad.status, 400);
  assert.match(bad.json.error, /invalid JSON/);
  const noId = await post('/v1/track', { event: 'x' });
  assert.equal(noId.status, 400);
  assert.match(noId.json.error, /missing userId and anonymousId/);
  const noEvent = await post('/v1/track', { userId: 'u' });
  assert.equal(noEvent.status, 400);
  assert.match(noEvent.json.error, /missing "event"/);
  const notObject = await post('/v1/identify', '[1,2]');
  assert.equal(notObject.status, 400);
  assert.match(notObject.json.error, /must be a JSON object/);
});

const rejectedIds = [];

test('a batch with one bad item is rejected whole, naming that item', async () => {
  const good1 = { type: 'track', ...msg('track') };
  const bad = { type: 'track', userId: 'u', messageId: randomUUID() }; // no event
  const good2 = { type: 'page', ...msg('page') };
  rejectedIds.push(good1.messageId, bad.messageId, good2.messageId);
  const r = await post('/v1/batch', { batch: [good1, bad, good2] });
  assert.equal(r.status, 400);
  assert.equal(r.json.success, false);
  assert.deepEqual(r.json.errors.map((e) => e.index), [1]);
  assert.match(r.json.errors[0].reason, /missing "event"/);
});

test('a message over 32 KB is rejected', async () => {
  const big = msg('track', { properties: { blob: 'x'.repeat(33 * 1024) } });
  rejectedIds.push(big.messageId);
  const single = await post('/v1/track', big);
  assert.equal(single.status, 400);
  assert.equal(single.json.limit, 'event');
  assert.match(single.json.error, /exceeds the 32 KB limit per event/);
  const inBatch = await post('/v1/batch', { batch: [{ type: 'track', ...big }] });
  assert.equal(inBatch.status, 400);
  assert.match(inBatch.json.errors[0].reason, /32 KB limit/);
});

// The event limit counts the message minified, as in a batch: whitespace around a message
// sent pretty-printed to a single-message endpoint does not count.
test('a pretty-printed message is measured minified on every endpoint', async () => {
  const m = msg('track', { properties: Object.fromEntries(
    Array.from({ length: 400 }, (_, i) => [`p${i}`, 'v'.repeat(30)])) });
  const pretty = JSON.stringify(m, null, '\t'.repeat(10)).replace(/\n/g, '\n' + ' '.repeat(40));
  assert.ok(Buffer.byteLength(pretty) > 40 * 1024 && JSON.stringify(m).length < 20 * 1024);
  const single = await post('/v1/track', pretty);
  assert.equal(single.status, 200, JSON.stringify(single.json));
  accepted.push(m.messageId);
});

test('a request over 500 KB is rejected from its Content-Length, before the body', async () => {
  // Only the headers are sent: the answer must come without the body.
  const r = await raw(`POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic(KEY)}\r\n` +
    'Content-Type: application/json\r\nContent-Length: 600000\r\n\r\n');
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.body).limit, 'request');
});

test('a chunked request over 500 KB is rejected', async () => {
  const items = [];
  for (let i = 0; i < 40; i++) items.push({ type: 'track', ...msg('track', { properties: { pad: 'y'.repeat(15000) } }) });
  rejectedIds.push(...items.map((i) => i.messageId));
  const body = JSON.stringify({ batch: items });
  assert.ok(body.length > 500 * 1024);
  const chunks = body.match(/[\s\S]{1,65536}/g).map((c) => Buffer.byteLength(c).toString(16) + '\r\n' + c + '\r\n');
  const r = await raw(`POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic(KEY)}\r\n` +
    `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunks.join('')}0\r\n\r\n`);
  assert.equal(r.status, 400);
  assert.equal(JSON.parse(r.body).limit, 'request');
});

test('a gzip body is accepted, and its decompressed size counts against the limit', async () => {
  const m = msg('track');
  const r = await post('/v1/track', gzipSync(JSON.stringify(m)), { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  accepted.push(m.messageId);
  // 40 KB of one letter compresses to well under 32 KB but must still be refused.
  const big = msg('track', { properties: { blob: 'z'.repeat(40 * 1024) } });
  rejectedIds.push(big.messageId);
  const zipped = gzipSync(JSON.stringify(big));
  assert.ok(zipped.length < 32 * 1024);
  const r2 = await post('/v1/track', zipped, { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r2.status, 400);
  assert.equal(r2.json.limit, 'event');
  // a body of several gzip members reads as their contents one after the other, as gunzip
  // reads it; what follows a member must be another, or zero bytes
  const m2 = msg('track');
  const text = JSON.stringify(m2), half = Math.floor(text.length / 2);
  const two = Buffer.concat([gzipSync(text.slice(0, half)), gzipSync(text.slice(half))]);
  const r3 = await post('/v1/track', two, { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r3.status, 200, JSON.stringify(r3.json));
  accepted.push(m2.messageId);
  // zero bytes after the last member (or between members) are padding, as gunzip skips them
  const m3 = msg('track');
  const t3 = JSON.stringify(m3), h3 = Math.floor(t3.length / 2), zeros = Buffer.alloc(700);
  const padded = Buffer.concat([gzipSync(t3.slice(0, h3)), zeros, gzipSync(t3.slice(h3)), zeros]);
  const r6 = await post('/v1/track', padded, { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r6.status, 200, JSON.stringify(r6.json));
  accepted.push(m3.messageId);
  const junk = Buffer.concat([gzipSync(JSON.stringify(msg('track'))), Buffer.from('trailing junk')]);
  const r4 = await post('/v1/track', junk, { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r4.status, 400);
  assert.match(r4.json.error, /not valid gzip/);
  const cut = Buffer.concat([gzipSync('{"userId":'), gzipSync('"u","event":"E"}').subarray(0, 12)]);
  const r5 = await post('/v1/track', cut, { headers: { 'Content-Encoding': 'gzip' } });
  assert.equal(r5.status, 400);
  assert.match(r5.json.error, /truncated/);
});

test('Content-Length with Transfer-Encoding, or two Content-Lengths, is 400', async () => {
  const body = JSON.stringify(msg('track'));
  const both = await raw(`POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic(KEY)}\r\n` +
    `Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
    `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
  assert.equal(both.status, 400);
  const two = await raw(`POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: ${basic(KEY)}\r\n` +
    `Content-Length: ${body.length}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  assert.equal(two.status, 400);
});

test('a message without messageId gets one; an unknown path is 404', async () => {
  const r = await post('/v1/track', { userId: 'no-id-user', event: 'Generated Id' });
  assert.equal(r.status, 200);
  const nf = await post('/v1/nope', {});
  assert.equal(nf.status, 404);
});

test('a resent messageId is answered 200 and stored once', async () => {
  const m = msg('track');
  for (let i = 0; i < 2; i++) {
    const r = await post('/v1/track', m);
    assert.equal(r.status, 200, JSON.stringify(r.json));
  }
  const m2 = msg('track');
  const items = [{ type: 'track', ...m2 }, { type: 'track', ...m2 }, { type: 'track', ...m }];
  const r = await post('/v1/batch', { batch: items });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  accepted.push(m.messageId, m2.messageId); // once each: the final count checks it
});

// A resend that arrives while the first copy is still being stored (a client that timed
// out and retried, or sent twice at once) is not stored again: it is a resend once the first
// is durable, and until then it is asked to retry (503, Retry-After), as the first may fail.
test('resends racing the first copy are stored once', () => withServer([
  '--fsync', 'always', '--partitions', '2',
], async (srv) => {
  const rounds = 12, copies = 8;
  let busy = 0;
  for (let r = 0; r < rounds; r++) {
    const m = msg('track');
    const answers = await Promise.all(Array.from({ length: copies },
      () => postTo(srv.base, '/v1/track', m, { key: KEY })));
    for (const a of answers) {
      if (a.status === 503) {
        busy++;
        assert.equal(a.headers['retry-after'], '1');
        assert.match(a.json.error, /another request is storing a message with this messageId/);
      } else {
        assert.equal(a.status, 200, JSON.stringify(a.json));
      }
    }
    assert.ok(answers.some((a) => a.status === 200), 'one copy is stored');
    // the retry of a copy asked to wait is a resend now
    const again = await postTo(srv.base, '/v1/track', m, { key: KEY });
    assert.equal(again.status, 200);
  }
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_log_records_total'), rounds);
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_ingest_events_total'), rounds);
  assert.equal(await metricOf(srv.base, 'tok',
    'onramp_ingest_rejected_total{reason="resend_in_flight"}'), busy);
  // a batch whose messages repeat one another stores each once, and is not held up by itself
  const m = msg('track');
  const b = await postTo(srv.base, '/v1/batch',
    { batch: [{ type: 'track', ...m }, { type: 'track', ...m }] }, { key: KEY });
  assert.equal(b.status, 200, JSON.stringify(b.json));
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_log_records_total'), rounds + 1);
  console.log(`# ${busy} of ${rounds * copies} racing copies were asked to retry`);
}));

// Three batches holding the same new messages in other orders, sent at once: each message is
// stored once, and in every round one batch is stored whole. The ids are claimed in the order
// of their digests, whatever their order in the batch; were each batch to claim some first,
// all could be refused at once (an interleaving this test seldom meets, but may).
test('of racing batches with the same messages, one is stored', () => withServer([
  '--fsync', 'always', '--partitions', '4',
], async (srv) => {
  const rounds = 30, size = 6;
  let busy = 0;
  for (let r = 0; r < rounds; r++) {
    const ms = Array.from({ length: size }, () => ({ type: 'track', ...msg('track') }));
    const answers = await Promise.all([ms, [...ms].reverse(), [ms[3], ms[0], ms[5], ms[1], ms[4], ms[2]]]
      .map((batch) => postTo(srv.base, '/v1/batch', { batch }, { key: KEY })));
    for (const a of answers) {
      if (a.status === 503) busy++;
      else assert.equal(a.status, 200, JSON.stringify(a.json));
    }
    assert.ok(answers.some((a) => a.status === 200),
      `round ${r}: every batch was refused: ${answers.map((a) => a.json.error).join('; ')}`);
  }
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_log_records_total'), rounds * size);
  console.log(`# ${busy} of ${rounds * 3} racing batches were asked to retry`);
}));

// Raised limits reach the event log and the engine: a message over the log's default record
// size (1 MiB) is stored and run, and a batch whose copies of its context would not fit one
// write of the log is refused with 400 instead of failing with 503 on every retry.
test('raised limits store and run messages over 1 MiB', () => withServer([
  '--max-request-bytes', '4000000', '--max-event-bytes', '3000000', '--partitions', '2',
], async (srv) => {
  const big = await postTo(srv.base, '/v1/track',
    msg('track', { properties: { pad: 'x'.repeat(2000000) } }), { key: KEY });
  assert.equal(big.status, 200, JSON.stringify(big.json));
  const items = (n) => Array.from({ length: n }, () => ({ type: 'track', ...msg('track') }));
  const context = { pad: 'y'.repeat(1900000) };
  const fits = await postTo(srv.base, '/v1/batch', { batch: items(20), context }, { key: KEY });
  assert.equal(fits.status, 200, JSON.stringify(fits.json));
  const over = await postTo(srv.base, '/v1/batch', { batch: items(40), context }, { key: KEY });
  assert.equal(over.status, 400);
  assert.equal(over.json.limit, 'request');
  assert.match(over.json.error, /take more than \d+ bytes once stored/);
  await until(async () => (await metricOf(srv.base, 'tok', 'onramp_engine_events_total')) === 21);
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_engine_records_skipped_total'), 0);
}));

// /metrics counts the messages ingest refused, by reason: each message of a refused request,
// or one for a request refused before its messages could be counted.
test('refused messages are counted by reason', () => withServer([
  '--partitions', '2', '--rate-limit', '5', '--rate-burst', '5',
], async (srv) => {
  const send = (path, body, opts = {}) => postTo(srv.base, path, body, { key: KEY, ...opts });
  const rejected = async (reason) =>
    metricOf(srv.base, 'tok', `onramp_ingest_rejected_total{reason="${reason}"}`);
  assert.equal((await send('/v1/track', '{"userId":')).status, 400);
  assert.equal((await send('/v1/batch', { sentAt: '2026-01-01T00:00:00Z' })).status, 400);
  assert.equal((await send('/v1/track', msg('track'), { headers: { 'Content-Encoding': 'br' } })).status, 415);
  assert.equal(await rejected('malformed'), 3);
  const bad = await send('/v1/batch', { batch: [{ type: 'track', ...msg('track') },
    { type: 'track', userId: 'u' }, { type: 'page', ...msg('page') }] });
  assert.equal(bad.status, 400);
  assert.equal(await rejected('invalid'), 3);
  const big = await send('/v1/track', msg('track', { properties: { pad: 'x'.repeat(40000) } }));
  assert.equal(big.status, 400);
  assert.equal(await rejected('too_large'), 1);
  assert.equal((await send('/v1/track', msg('track'), { key: 'not-a-key' })).status, 401);
  assert.equal(await rejected('unauthorized'), 1);
  const many = await send('/v1/batch', { batch: Array.from({ length: 6 }, () => ({ type: 'track', ...msg('track') })) });
  assert.equal(many.status, 429);
  assert.equal(await rejected('rate_limited'), 6);
  for (const reason of ['engine_lag', 'resend_in_flight', 'log_error'])
    assert.equal(await rejected(reason), 0, reason);
  assert.equal(await metricOf(srv.base, 'tok', 'onramp_ingest_events_total'), 0);
}));

// A page on another origin can send events: ingest answers CORS preflights and lets any
// origin read its answers; the management API does not.
test('ingest endpoints answer CORS preflights and carry Access-Control-Allow-Origin', async () => {
  for (const path of ['/v1/track', '/v1/batch', '/v1/p']) {
    const pre = await fetch(base + path, { method: 'OPTIONS', headers: {
      Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'content-type,authorization' } });
    assert.equal(pre.status, 204, path);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    assert.match(pre.headers.get('access-control-allow-methods'), /POST/);
    assert.match(pre.headers.get('access-control-allow-headers'), /Authorization/);
    assert.match(pre.headers.get('access-control-allow-headers'), /Content-Type/);
  }
  const m = msg('track');
  const ok = await post('/v1/track', m, { headers: { Origin: 'https://app.example' } });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['access-control-allow-origin'], '*');
  accepted.push(m.messageId);
  const bad = await post('/v1/track', { userId: 'u' });
  assert.equal(bad.status, 400);
  assert.equal(bad.headers['access-control-allow-origin'], '*');
  assert.equal(bad.headers['access-control-expose-headers'], 'Retry-After');
  const admin = await api(base, 'GET', '/api/segments', { token: ADMIN });
  assert.equal(admin.status, 200);
  assert.equal(admin.headers.get('access-control-allow-origin'), null);
  assert.ok(await metricOf(base, ADMIN, 'onramp_http_responses_total{code="204"}') >= 3);
});

// Ingest validates each message as it will be stored without parsing what it wrote: the
// members it replaces (type on a single-message endpoint, receivedAt, a null or empty
// messageId) and the batch-level ones it fills in (sentAt, context) are read in their place.
// Duplicate keys are valid JSON, and the first one counts, both here and in the engine.
test('messages are validated as they are stored: replaced, filled-in and duplicate members', () => withServer([
  '--partitions', '2',
], async (srv, dir) => {
  const send = (path, body) => postTo(srv.base, path, body, { key: KEY });
  const tag = randomUUID().slice(0, 8);
  const ok = [];
  const good = async (path, body, n) => {
    const r = await send(path, body);
    assert.equal(r.status, 200, `${body}: ${JSON.stringify(r.json)}`);
    ok.push(n);
  };
  // replaced by the endpoint and the server: not validated
  await good('/v1/track', `{"type":42,"userId":"u-${tag}","event":"E","receivedAt":"yesterday"}`, 1);
  // the first non-empty messageId is the one stored, and resends of it are recognised
  await good('/v1/batch', `{"batch":[{"type":"track","userId":"u-${tag}","event":"E",` +
    `"messageId":null,"messageId":"dup-${tag}","messageId":"later-${tag}"}]}`, 1);
  // the first context is the one stored; the batch's fills in what it lacks
  await good('/v1/batch', `{"context":{"traits":5,"library":{"name":"b-${tag}"}},"batch":[` +
    `{"type":"identify","userId":"c-${tag}","context":{"traits":{"plan":"pro"}},"context":7}]}`, 1);
  // the batch's sentAt for an item without one
  await good('/v1/batch', `{"sentAt":"2026-01-02T03:04:05.000Z","batch":[` +
    `{"type":"track","userId":"s-${tag}","event":"E","originalTimestamp":"2026-01-02T03:04:00.000Z"},` +
    `{"type":"track","userId":"s-${tag}","event":"E","sentAt":null}]}`, 2);

  const bad = async (body, reason) => {
    const r = await send('/v1/batch', body);
    assert.equal(r.status, 400, body);
    assert.equal(r.json.errors[0].reason, reason, JSON.stringify(r.json));
  };
  await bad(`{"context":{"traits":5},"batch":[{"type":"identify","userId":"x"}]}`,
    '"context.traits" must be an object, got number');
  await bad(`{"context":{"traits":5},"batch":[{"type":"identify","userId":"x","context":{}}]}`,
    '"context.traits" must be an object, got number');
  await bad(`{"context":"web","batch":[{"type":"identify","userId":"x"}]}`,
    '"context" must be an object, got string');
  await bad(`{"sentAt":"soon","batch":[{"type":"track","userId":"x","event":"E"}]}`,
    '"sentAt" is not a valid ISO-8601 time: "soon"');
  await bad(`{"batch":[{"type":"track","userId":"x","event":"E","messageId":"","messageId":7}]}`,
    '"messageId" must be a string, got number');

  const resend = await send('/v1/track', { userId: `u-${tag}`, event: 'E', messageId: `dup-${tag}` });
  assert.equal(resend.status, 200);
  const stored = ok.reduce((a, b) => a + b, 0);
  const metric = (name) => metricOf(srv.base, 'tok', name);
  assert.equal(await metric('onramp_ingest_events_total'), stored);
  assert.equal(await metric('onramp_ingest_duplicates_total'), 1);
  // the engine decodes every stored message: most from what ingest decoded and offered it,
  // the others (read before their offer came) from the log
  assert.equal(await until(async () => (await metric('onramp_engine_events_total')) === stored), true);
  assert.equal(await metric('onramp_engine_records_skipped_total'), 0);
  const taken = await metric('onramp_engine_records_decoded_total{from="taken"}');
  const parsed = await metric('onramp_engine_records_decoded_total{from="parsed"}');
  assert.equal(taken + parsed, stored);
  assert.ok(taken > 0, `taken ${taken} of ${stored}`);

  assert.equal(await srv.stop(), 0, srv.log());
  const recs = readLog(join(dir, 'log'));
  assert.equal(recs.length, stored);
  const byUser = (u) => recs.filter((r) => r.json.userId === u).map((r) => r.json);
  assert.equal(byUser(`u-${tag}`)[0].type, 'track');
  // (JSON.parse keeps the last of duplicate keys: the stored text is read instead)
  const firstId = (r) => r.text.match(/"messageId":("[^"]*"|null)/)[1];
  assert.ok(recs.some((r) => firstId(r) === `"dup-${tag}"`));
  const c = byUser(`c-${tag}`)[0].context;
  assert.deepEqual(c.traits, { plan: 'pro' });
  assert.equal(c.library.name, `b-${tag}`);
  assert.deepEqual(byUser(`s-${tag}`).map((m) => m.sentAt).sort(), ['2026-01-02T03:04:05.000Z', null]);
}));

// Random messages, seeded: the members decoding reads, in any order, given twice, null or of
// the wrong type, with or without a batch-level context and sentAt. Whatever ingest accepts,
// the engine must run as ingest validated it: none of it skipped as undecodable.
test('random messages with duplicate and odd members: every one accepted is run by the engine', () => withServer([
  '--partitions', '4',
], async (srv) => {
  let seed = 20261204;
  const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const odd = ['null', '""', '"x"', '5', 'true', '{}', '[]', '"soon"', '{"traits":5}',
    '{"traits":null}', '"a\\"b"', '"\\u00e9"'];
  const fits = {
    type: () => pick(['"track"', '"identify"', '"page"', '"screen"', '"group"', '"alias"']),
    userId: () => `"u${Math.floor(rnd() * 50)}"`, anonymousId: () => '"a1"', previousId: () => '"p1"',
    groupId: () => '"g1"',
    event: () => '"E"', name: () => '"Home"', messageId: () => `"m${Math.floor(rnd() * 1e9)}"`,
    timestamp: () => '"2026-01-02T03:04:05Z"', originalTimestamp: () => '"2026-01-02T03:04:00Z"',
    sentAt: () => '"2026-01-02T03:04:06Z"', receivedAt: () => '"2026-01-02T03:04:07Z"',
    context: () => pick(['{"traits":{"plan":"p"}}', '{}', '{"ip":"1.2.3.4"}']),
    properties: () => '{"feature":"f"}', traits: () => '{"plan":"q"}', integrations: () => '{}',
  };
  const keys = Object.keys(fits);
  const item = () => {
    const members = [`"type":${fits.type()}`, `"userId":${fits.userId()}`];
    for (let i = Math.floor(rnd() * 8); i >= 0; i--) {
      const k = pick(keys);
      members.push(`"${k}":${rnd() < 0.75 ? fits[k]() : pick(odd)}`);
    }
    for (let i = members.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [members[i], members[j]] = [members[j], members[i]];
    }
    return `{${members.join(',')}}`;
  };
  const answers = { 200: 0, 400: 0 };
  for (let r = 0; r < 1500; r++) {
    const items = Array.from({ length: 1 + Math.floor(rnd() * 3) }, item);
    let res;
    if (items.length === 1 && rnd() < 0.3) {
      res = await postTo(srv.base, pick(['/v1/track', '/v1/identify', '/v1/page', '/v1/alias']), items[0], { key: KEY });
    } else {
      const top = [];
      if (rnd() < 0.3) top.push(`"context":${rnd() < 0.5 ? fits.context() : pick(odd)}`);
      if (rnd() < 0.3) top.push(`"sentAt":${rnd() < 0.5 ? fits.sentAt() : pick(odd)}`);
      top.push(`"batch":[${items.join(',')}]`);
      res = await postTo(srv.base, '/v1/batch', `{${top.join(',')}}`, { key: KEY });
    }
    assert.ok(res.status in answers, `${res.status}: ${JSON.stringify(res.json)}`);
    answers[res.status]++;
  }
  // both kinds of answer are common, so that the check below covers many stored messages
  assert.ok(answers[200] > 200 && answers[400] > 200, JSON.stringify(answers));
  const metric = (name) => metricOf(srv.base, 'tok', name);
  const stored = await metric('onramp_ingest_events_total');
  assert.equal(await until(async () => (await metric('onramp_engine_events_total')) === stored), true);
  assert.equal(await metric('onramp_engine_records_skipped_total'), 0, srv.log());
  assert.equal(await srv.stop(), 0, srv.log());
}));

test('after SIGTERM the server exits 0 and the log holds exactly the accepted messages', async () => {
  // the engine runs every message this file's tests stored, odd ones included: what ingest
  // writes decodes as ingest validated it
  const metric = (name) => metricOf(base, ADMIN, name);
  const stored = await metric('onramp_ingest_events_total');
  assert.ok(stored > 0);
  assert.equal(await until(async () => (await metric('onramp_engine_events_total')) === stored), true);
  assert.equal(await metric('onramp_engine_records_skipped_total'), 0);
  assert.equal(await server.stop(), 0, server.log());
  assert.match(server.log(), /"msg":"stopped"/);
  const recs = readLog(join(data, 'log'));
  const ids = new Set(recs.map((r) => r.json.messageId));
  for (const id of accepted) assert.ok(ids.has(id), `accepted ${id} is not in the log`);
  for (const id of rejectedIds) assert.ok(!ids.has(id), `rejected ${id} is in the log`);
  // Every stored message carries the server's fields.
  for (const r of recs) {
    assert.ok(r.json.type && r.json.messageId && r.json.receivedAt, JSON.stringify(r.json));
    assert.equal(r.json.writeKey, undefined);
  }
  const generated = recs.find((r) => r.json.userId === 'no-id-user');
  assert.match(generated.json.messageId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const batched = recs.find((r) => r.json.context?.library?.name === 'e2e');
  assert.ok(batched, 'batch-level context was merged into the items');
  // One user's messages stay in one partition.
  const parts = new Map();
  for (const r of recs) {
    const k = r.json.userId || r.json.anonymousId;
    if (parts.has(k)) assert.equal(parts.get(k), r.partition);
    parts.set(k, r.partition);
  }
  assert.equal(recs.length, accepted.length + 1);
});

test('--commit-interval spaces the journal fsyncs of a busy log, and bad values are refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-'));
  try {
    const s = await serve(['--data', dir, '--write-key', KEY, '--partitions', '2'],
      { env: { ONRAMP_COMMIT_INTERVAL: '300ms' } });
    // One request after another: each waits for a round of its own, 300 ms after the last began.
    const t0 = Date.now();
    for (let i = 0; i < 4; i++) {
      const r = await postTo(s.base, '/v1/track', msg('track'), { key: KEY });
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    const took = Date.now() - t0;
    assert.ok(took >= 850, `4 acknowledgements one after another took ${took} ms, under 3 intervals`);
    assert.equal(await s.stop(), 0, s.log());

    const now = await serve(['--data', dir, '--write-key', KEY, '--partitions', '2',
      '--commit-interval', '0']);
    const r = await postTo(now.base, '/v1/track', msg('track'), { key: KEY });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(await now.stop(), 0, now.log());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const bad of ['soon', '11s', '-1']) {
    const r = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--commit-interval', bad],
      { encoding: 'utf8' });
    assert.notEqual(r.status, 0, `--commit-interval ${bad} was accepted`);
    assert.match(r.stderr, /--commit-interval/);
  }
});
