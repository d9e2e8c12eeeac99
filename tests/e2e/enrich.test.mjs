// enrich.test.mjs - what `onramp serve` adds to a stored message's context: device type,
// OS and browser from context.userAgent or the User-Agent header, the country from
// context.ip or the client address with --geoip (a .mmdb built here by
// fixtures/make-mmdb.pl), never over what the sender set; and the --max-event-bytes /
// --max-request-bytes limits, with their startup checks.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { BIN, serve, post, readLog } from './helpers.mjs';

const KEY = 'enrich-key';
const MAKE_MMDB = fileURLToPath(new URL('./fixtures/make-mmdb.pl', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'onramp-e2e-enrich-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const perlWriter = spawnSync('perl', ['-MMaxMind::DB::Writer::Tree', '-e', '1']).status === 0;
const NO_WRITER = perlWriter ? false
  : 'libmaxmind-db-writer-perl is not installed (scripts/deps.sh installs it): no .mmdb to serve';

const UA = {
  iphone: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1',
  ipad: 'Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1',
  chromeWin: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
  firefoxLinux: 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0',
  curl: 'curl/8.4.0',
};

function msg(extra = {}) {
  const id = randomUUID();
  return { userId: 'u-' + id.slice(0, 8), event: 'Signed Up', messageId: id, ...extra };
}

// The stored records of data's log by messageId, read once the server has stopped.
function storedById(data) {
  return new Map(readLog(join(data, 'log')).map((r) => [r.json.messageId, r]));
}

// Exits a serve run that must not start: its exit code and stderr.
function refused(args, env = {}) {
  const r = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', '--data', join(tmp, 'refused'), ...args],
    { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10000 });
  return { code: r.status, stderr: r.stderr };
}

test('with --geoip: device, OS, browser and country are added, and what the sender set stays', { skip: NO_WRITER }, async () => {
  const mmdb = join(tmp, 'test.mmdb');
  const made = spawnSync('perl', [MAKE_MMDB, mmdb], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  const data = join(tmp, 'geo');
  const s = await serve(['--data', data, '--write-key', KEY, '--partitions', '2', '--geoip', mmdb]);
  const send = async (path, body, headers = {}) => {
    const r = await post(s.base, path, body, { key: KEY, headers });
    assert.equal(r.status, 200, JSON.stringify(r.json));
  };

  // The header and the peer address (127.0.0.1 -> NZ) when the message says nothing.
  const plain = msg();
  await send('/v1/track', plain, { 'User-Agent': UA.iphone });
  // The sender's context.userAgent and context.ip win over the header and the peer; its
  // device, os and location objects keep their members and get only what they lack.
  const own = msg({
    context: {
      ip: '10.1.2.3', userAgent: UA.chromeWin, device: { id: 'dev-1' }, os: { name: 'Custom OS' },
      location: { city: 'Berlin' },
    },
  });
  await send('/v1/track', own, { 'User-Agent': UA.iphone });
  // An ip with no country in the database: none, and the peer is not used instead.
  const unknownIp = msg({ context: { ip: '10.9.9.9' } });
  await send('/v1/track', unknownIp);
  // A country the sender set stays; a browser name the sender set gets no version of ours.
  const setCountry = msg({ context: { location: { country: 'FR' }, browser: { name: 'MyApp' } } });
  await send('/v1/track', setCountry, { 'User-Agent': UA.iphone });
  // Batch-level context merges into each item's without repeating a key; the item's wins.
  const b1 = { type: 'track', ...msg() };
  const b2 = { type: 'track', ...msg({ context: { library: { name: 'item-lib' }, page: { path: '/x' } } }) };
  await send('/v1/batch', {
    batch: [b1, b2], context: { ip: '10.1.0.7', library: { name: 'batch-lib' }, userAgent: UA.ipad },
  }, { 'User-Agent': UA.curl });
  // /v1/import is a backfill: the request's own header and address say nothing of the users.
  const imported = { type: 'track', ...msg() };
  const importedIp = { type: 'track', ...msg({ context: { ip: '10.1.2.3' } }) };
  await send('/v1/import', { batch: [imported, importedIp] }, { 'User-Agent': UA.iphone });

  assert.equal(await s.stop(), 0, s.log());
  const got = storedById(data);
  const ctx = (m) => got.get(m.messageId)?.json.context;

  assert.deepEqual(ctx(plain), {
    userAgent: UA.iphone, device: { type: 'mobile' }, os: { name: 'iOS' },
    browser: { name: 'Safari', version: '17' }, location: { country: 'NZ' },
  });
  assert.deepEqual(ctx(own), {
    ip: '10.1.2.3', userAgent: UA.chromeWin, device: { id: 'dev-1', type: 'desktop' },
    os: { name: 'Custom OS' }, location: { city: 'Berlin', country: 'DE' },
    browser: { name: 'Chrome', version: '120' },
  });
  assert.deepEqual(ctx(unknownIp), { ip: '10.9.9.9' });
  assert.deepEqual(ctx(setCountry), {
    location: { country: 'FR' }, browser: { name: 'MyApp' }, userAgent: UA.iphone,
    device: { type: 'mobile' }, os: { name: 'iOS' },
  });
  assert.deepEqual(ctx(b1), {
    ip: '10.1.0.7', library: { name: 'batch-lib' }, userAgent: UA.ipad, device: { type: 'tablet' },
    os: { name: 'iOS' }, browser: { name: 'Safari', version: '16' }, location: { country: 'DE' },
  });
  assert.deepEqual(ctx(b2), {
    library: { name: 'item-lib' }, page: { path: '/x' }, ip: '10.1.0.7', userAgent: UA.ipad,
    device: { type: 'tablet' }, os: { name: 'iOS' }, browser: { name: 'Safari', version: '16' },
    location: { country: 'DE' },
  });
  const b2text = got.get(b2.messageId).text;
  for (const key of ['"context"', '"library"', '"ip"', '"userAgent"', '"device"', '"location"']) {
    assert.equal(b2text.split(key + ':').length - 1, 1, `${key} once in ${b2text}`);
  }
  assert.equal(ctx(imported), undefined);
  assert.deepEqual(ctx(importedIp), { ip: '10.1.2.3', location: { country: 'DE' } });
});

test('limits from flags and environment; User-Agent enrichment without --geoip', async () => {
  const data = join(tmp, 'limits');
  const s = await serve(['--data', data, '--write-key', KEY, '--partitions', '2',
    '--max-request-bytes', '8192'], { env: { ONRAMP_MAX_EVENT_BYTES: '2048' } });
  const send = (path, body, headers = {}) => post(s.base, path, body, { key: KEY, headers });

  // An event over the event limit, alone and in a batch.
  const big = msg({ properties: { blob: 'x'.repeat(2100) } });
  const single = await send('/v1/track', big);
  assert.equal(single.status, 400, JSON.stringify(single.json));
  assert.equal(single.json.limit, 'event');
  assert.match(single.json.error, /2 KB limit/);
  const inBatch = await send('/v1/batch', { batch: [{ type: 'track', ...msg() }, { type: 'track', ...big }] });
  assert.equal(inBatch.status, 400, JSON.stringify(inBatch.json));
  assert.deepEqual(inBatch.json.errors.map((e) => e.index), [1]);
  assert.match(inBatch.json.errors[0].reason, /exceeds the 2 KB limit per event/);

  // A request over the request limit.
  const items = [];
  for (let i = 0; i < 6; i++) items.push({ type: 'track', ...msg({ properties: { pad: 'y'.repeat(1500) } }) });
  const tooMany = await send('/v1/batch', { batch: items });
  assert.equal(tooMany.status, 400, JSON.stringify(tooMany.json));
  assert.equal(tooMany.json.limit, 'request');
  assert.match(tooMany.json.error, /8 KB limit/);

  // Tiny items with a large batch context would grow far past the body once stored.
  const blowup = { batch: Array(700).fill({}), context: { pad: 'c'.repeat(5500) } };
  assert.ok(Buffer.byteLength(JSON.stringify(blowup)) < 8192);
  const grown = await send('/v1/batch', blowup);
  assert.equal(grown.status, 400, JSON.stringify(grown.json));
  assert.equal(grown.json.limit, 'request');
  assert.match(grown.json.error, /the 700 messages of this request take more than 374 KB once stored/);

  // The event limit counts what the sender wrote, not what enrichment adds: an item of
  // exactly 2048 bytes is stored with its context grown; one byte more is refused.
  const sized = (n) => {
    const m = { type: 'track', ...msg({ context: { userAgent: UA.firefoxLinux }, properties: { pad: '' } }) };
    m.properties.pad = 'z'.repeat(n - Buffer.byteLength(JSON.stringify(m)));
    assert.equal(Buffer.byteLength(JSON.stringify(m)), n);
    return m;
  };
  const atLimit = sized(2048);
  const fits = await send('/v1/batch', { batch: [atLimit] }, { 'User-Agent': UA.curl });
  assert.equal(fits.status, 200, JSON.stringify(fits.json));
  const over = await send('/v1/batch', { batch: [sized(2049)] });
  assert.equal(over.status, 400, JSON.stringify(over.json));
  assert.match(over.json.errors[0].reason, /message of 2049 bytes exceeds the 2 KB limit/);

  // The header when the message has no userAgent; an HTTP library is named, with no device.
  const byHeader = msg();
  assert.equal((await send('/v1/track', byHeader, { 'User-Agent': UA.firefoxLinux })).status, 200);
  const byCurl = msg();
  assert.equal((await send('/v1/track', byCurl, { 'User-Agent': UA.curl })).status, 200);
  const noAgent = msg(); // node:http sends no User-Agent of its own
  assert.equal((await send('/v1/track', noAgent)).status, 200);

  assert.equal(await s.stop(), 0, s.log());
  const got = storedById(data);
  assert.deepEqual(got.get(atLimit.messageId).json.context, {
    userAgent: UA.firefoxLinux, device: { type: 'desktop' }, os: { name: 'Linux' },
    browser: { name: 'Firefox', version: '121' },
  });
  assert.deepEqual(got.get(byHeader.messageId).json.context, {
    userAgent: UA.firefoxLinux, device: { type: 'desktop' }, os: { name: 'Linux' },
    browser: { name: 'Firefox', version: '121' },
  });
  assert.deepEqual(got.get(byCurl.messageId).json.context, {
    userAgent: UA.curl, browser: { name: 'curl', version: '8' },
  });
  assert.equal(got.get(noAgent.messageId).json.context, undefined);
  assert.equal(got.get(big.messageId), undefined);
});

test('bad limits, write keys with a colon and an unreadable or invalid --geoip file stop serve at startup, saying why', () => {
  let r = refused(['--max-event-bytes', '9000', '--max-request-bytes', '8192']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--max-event-bytes must be 1\.\.8192 \(--max-request-bytes\), got 9000/);
  r = refused(['--max-request-bytes', String(64 * 1024 * 1024 + 1)]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--max-request-bytes must be 1\.\.67108864 \(64 MiB\)/);
  r = refused([], { ONRAMP_MAX_REQUEST_BYTES: '0' });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--max-request-bytes must be 1\.\./);
  r = refused(['--max-event-bytes', '2k']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--max-event-bytes needs a whole number, got "2k"/);
  // Basic auth ends the key at the first colon: such a key could never be sent
  r = refused(['--write-key', 'good', '--write-key', 'has:colon']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /write key 2 of 2 contains ':'/);
  assert.ok(!r.stderr.includes('has:colon'), 'the key itself is not printed');
  r = refused([], { ONRAMP_WRITE_KEY: 'a,b:c' });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /write key 2 of 2 contains ':'/);

  const missing = join(tmp, 'no-such.mmdb');
  r = refused(['--geoip', missing]);
  assert.equal(r.code, 2);
  assert.ok(r.stderr.includes(`cannot open the GeoIP database ${missing}: `), r.stderr);
  assert.match(r.stderr, /No such file or directory/);
  const junk = join(tmp, 'junk.mmdb');
  writeFileSync(junk, 'this is not a MaxMind database\n');
  r = refused([], { ONRAMP_GEOIP: junk });
  assert.equal(r.code, 2);
  assert.ok(r.stderr.includes(`cannot open the GeoIP database ${junk}: `), r.stderr);
  assert.match(r.stderr, /metadata/i);
});
