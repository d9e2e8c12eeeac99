// route.test.mjs - partitions and identity in `onramp serve`: a visitor's anonymous events,
// the identify (or alias) that names them and the identified events after it are stored in
// one partition, also across a restart in between (the router saved at a clean stop, or
// learnt again from the log); with the router off (--route-capacity 0)
// the plain hash routing splits them.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { BIN, serve, post, readLog } from './helpers.mjs';

const KEY = 'route-key';
const USERS = 24;
const dirs = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function dataDir() {
  const d = mkdtempSync(join(tmpdir(), 'onramp-e2e-route-'));
  dirs.push(d);
  return d;
}

const start = (data, extra = [], opts) =>
  serve(['--data', data, '--write-key', KEY, '--partitions', '8', ...extra], opts);

async function stop(s) {
  assert.equal(await s.stop(), 0, s.log());
}

async function send(s, path, m) {
  const r = await post(s.base, path, { messageId: randomUUID(), ...m }, { key: KEY });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

const visitors = (tag) => Array.from({ length: USERS }, (_, i) =>
  ({ user: `${tag}-user-${i}-${randomUUID()}`, anon: `${tag}-anon-${i}-${randomUUID()}` }));

// Before the login: anonymous events only, one of them in a batch.
async function anonymous(s, v) {
  await send(s, '/v1/page', { anonymousId: v.anon, name: 'Pricing' });
  await send(s, '/v1/track', { anonymousId: v.anon, event: 'Signed Up' });
  const r = await post(s.base, '/v1/batch', {
    batch: [{ type: 'track', anonymousId: v.anon, event: 'Onboarding Step Completed', messageId: randomUUID() }],
  }, { key: KEY });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

async function identify(s, v, alias = false) {
  if (alias) await send(s, '/v1/alias', { previousId: v.anon, userId: v.user });
  else await send(s, '/v1/identify', { userId: v.user, anonymousId: v.anon, traits: { plan: 'pro' } });
}

async function identified(s, v) {
  await send(s, '/v1/track', { userId: v.user, event: 'Feature Used', properties: { feature: 'settings' } });
  await send(s, '/v1/track', { userId: v.user, anonymousId: v.anon, event: 'Feature Used' });
  await send(s, '/v1/track', { userId: v.user, event: 'Onboarding Completed' });
}

// The partitions (p000 ...) holding the messages of each visitor, and how many messages.
function partitionsOf(data, vs) {
  const recs = readLog(join(data, 'log'));
  return vs.map((v) => {
    const mine = recs.filter((r) => [r.json.userId, r.json.anonymousId, r.json.previousId].some(
      (id) => id === v.user || id === v.anon));
    return { parts: new Set(mine.map((r) => r.partition)), count: mine.length };
  });
}

test('anonymous events, identify and identified events of a user land in one partition', async () => {
  const data = dataDir();
  const vs = visitors('one');
  const s = await start(data);
  for (const v of vs) await anonymous(s, v);
  for (const v of vs) await identify(s, v, false);
  for (const v of vs) await identified(s, v);
  await stop(s);
  for (const [i, got] of partitionsOf(data, vs).entries()) {
    assert.equal(got.count, 7, `visitor ${i}: messages stored`);
    assert.equal(got.parts.size, 1, `visitor ${i} split across ${[...got.parts]}`);
  }
});

test('an alias joins the anonymous history the same way', async () => {
  const data = dataDir();
  const vs = visitors('alias');
  const s = await start(data);
  for (const v of vs) await anonymous(s, v);
  for (const v of vs) await identify(s, v, true);
  for (const v of vs) await identified(s, v);
  await stop(s);
  for (const [i, got] of partitionsOf(data, vs).entries()) {
    assert.equal(got.count, 7);
    assert.equal(got.parts.size, 1, `visitor ${i} split across ${[...got.parts]}`);
  }
});

// How the restarted server learns where ids went: from the state a clean stop saved, from
// the whole log, or from the state of an earlier clean stop and the log after it.
const RESTARTS = {
  'the state of a clean stop': { recovered: /"from_state":true,"log_records_read":0\b/ },
  'the whole log, with no state file': { recovered: /"from_state":false/, before: (state) => rmSync(state) },
  'the whole log, past a damaged state file': {
    recovered: /"from_state":false/,
    warned: /ingest\.state is not used \(damaged \(its checksum does not match\)\)/,
    // a flipped bit in the time of the last messageId saved
    before: (state) => { const b = readFileSync(state); b[b.length - 30] ^= 0x10; writeFileSync(state, b); },
  },
  'an earlier state and the log after it (kill -9)': {
    recovered: new RegExp(`"from_state":true,"log_records_read":${USERS}\\b`), crash: true,
  },
};

for (const [how, want] of Object.entries(RESTARTS)) {
  test(`routing after a restart matches routing before it: ${how}`, async () => {
    const data = dataDir();
    const before = visitors('restart-a'); // anonymous before the restart, identified after
    const linked = visitors('restart-b'); // identified before the restart, events after
    let s = await start(data);
    for (const v of [...before, ...linked]) await anonymous(s, v);
    if (want.crash) { // a clean stop saves the anonymous visits; the identifies come after it
      await stop(s);
      s = await start(data);
    }
    for (const v of linked) await identify(s, v, false);
    if (want.crash) {
      s.proc.kill('SIGKILL');
      await s.exited;
    } else {
      await stop(s);
    }
    want.before?.(join(data, 'ingest.state'));

    s = await start(data);
    assert.match(s.log(), want.recovered);
    if (want.warned) assert.match(s.log(), want.warned);
    for (const v of before) await identify(s, v, false);
    for (const v of [...before, ...linked]) await identified(s, v);
    // the linked visitors' anonymousIds come back without a userId (a log-out)
    for (const v of linked) await send(s, '/v1/page', { anonymousId: v.anon, name: 'Home' });
    await stop(s);
    for (const [i, got] of partitionsOf(data, [...before, ...linked]).entries()) {
      assert.equal(got.count, i < USERS ? 7 : 8);
      assert.equal(got.parts.size, 1, `visitor ${i} split across ${[...got.parts]}`);
    }
  });
}

test('a state file of another --route-capacity is set aside: the whole log teaches the router', async () => {
  const data = dataDir();
  const vs = visitors('capacity');
  let s = await start(data);
  for (const v of vs) await anonymous(s, v);
  for (const v of vs) await identify(s, v, false);
  await stop(s);
  s = await start(data, ['--route-capacity', '65536']);
  assert.match(s.log(), /ingest\.state is not used \(written with other --partitions or --route-capacity\)/);
  // each visitor: three anonymous messages and an identify
  assert.match(s.log(), new RegExp(`"from_state":false,"log_records_read":${USERS * 4}\\b`));
  for (const v of vs) await identified(s, v);
  await stop(s);
  for (const [i, got] of partitionsOf(data, vs).entries()) {
    assert.equal(got.count, 7);
    assert.equal(got.parts.size, 1, `visitor ${i} split across ${[...got.parts]}`);
  }
});

test('a rejected batch teaches the router nothing', async () => {
  const data = dataDir();
  const vs = visitors('rejected');
  const s = await start(data);
  for (const v of vs) await anonymous(s, v);
  for (const v of vs) {
    const r = await post(s.base, '/v1/batch', {
      batch: [{ type: 'identify', userId: v.user, anonymousId: v.anon, messageId: randomUUID() },
        { type: 'track', userId: v.user }], // no "event": the whole batch is refused
    }, { key: KEY });
    assert.equal(r.status, 400, JSON.stringify(r.json));
  }
  // the users are new to the router: their own hash, not their anonymous partition
  for (const v of vs) await send(s, '/v1/track', { userId: v.user, event: 'Feature Used' });
  await stop(s);
  const split = partitionsOf(data, vs).filter((got) => got.count === 4 && got.parts.size > 1).length;
  // 8 partitions: a user's hash and its anonymousId's agree for about 1 visitor in 8
  assert.ok(split >= USERS / 2, `only ${split} of ${USERS} visitors routed by their own hash`);
});

test('with --route-capacity 0 messages go by the plain hash, and the flow splits', async () => {
  const data = dataDir();
  const vs = visitors('off');
  const s = await start(data, [], { env: { ONRAMP_ROUTE_CAPACITY: '0' } });
  for (const v of vs) await anonymous(s, v);
  for (const v of vs) await identify(s, v, false);
  for (const v of vs) await identified(s, v);
  await stop(s);
  const split = partitionsOf(data, vs).filter((got) => got.parts.size > 1).length;
  // 8 partitions: a user's and its anonymousId's hash agree for about 1 visitor in 8
  assert.ok(split >= USERS / 2, `only ${split} of ${USERS} visitors split`);
});

test('--route-capacity is listed by --help and checked', () => {
  const help = spawnSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--route-capacity N .*ONRAMP_ROUTE_CAPACITY/);
  for (const bad of ['lots', '-1', '99999999999']) {
    const r = spawnSync(BIN, ['serve', '--data', dataDir(), '--route-capacity', bad], { encoding: 'utf8' });
    assert.equal(r.status, 2, `--route-capacity ${bad}: ${r.stderr}`);
    assert.match(r.stderr, /--route-capacity/);
  }
});
