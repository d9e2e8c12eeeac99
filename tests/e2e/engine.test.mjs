// engine.test.mjs - `onramp serve` with its live engine: the management API (users,
// explain, segments, triggers, rules and their hot reload, /metrics), absence firing on the
// wall clock with no traffic, SIGHUP, and restarts in the middle of a stream - after SIGTERM
// and after kill -9 - that neither lose nor repeat a fire, and a data directory that keeps
// the shard count its checkpoints were written by.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { serve, post, api, until, BIN } from './helpers.mjs';

const KEY = 'engine-key';
const TOKEN = 'engine-admin-token';
const dirs = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir() {
  const d = mkdtempSync(join(tmpdir(), 'onramp-e2e-engine-'));
  dirs.push(d);
  return d;
}

// A data directory and a copy of the default rules that the test may change.
function setup() {
  const dir = tempDir();
  const rules = join(dir, 'onboarding.rules');
  copyFileSync('rules/onboarding.rules', rules);
  return { dir, data: join(dir, 'data'), rules };
}

const start = (s, extra = []) =>
  serve(['--data', s.data, '--rules', s.rules, '--write-key', KEY, '--admin-token', TOKEN,
    '--partitions', '4', '--shards', '2', ...extra]);

const get = (srv, path) => api(srv.base, 'GET', path, { token: TOKEN });

async function send(srv, batch) {
  const r = await post(srv.base, '/v1/batch', { batch }, { key: KEY });
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

// "API Error" with status 500 fires server_error_seen once per user (a 30 minute cooldown).
const apiError = (user, i) => ({
  type: 'track', userId: user, event: 'API Error', properties: { status: 500 },
  messageId: `${user}-err-${i}`,
});

function journal(s) {
  let text = '';
  try { text = readFileSync(join(s.data, 'engine', 'fires.jsonl'), 'utf8'); } catch { /* none */ }
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

test('the management API and /metrics need the admin token', async () => {
  const s = setup();
  const srv = await start(s);
  try {
    for (const path of ['/api/segments', '/api/users/u1', '/api/rules', '/metrics']) {
      const none = await api(srv.base, 'GET', path);
      assert.equal(none.status, 401, path);
      assert.match(none.headers.get('www-authenticate'), /^Bearer/);
      assert.match(none.json.error, /admin token/);
      const wrong = await api(srv.base, 'GET', path, { token: TOKEN + 'x' });
      assert.equal(wrong.status, 401, path);
    }
    // the write key is not an admin token
    assert.equal((await api(srv.base, 'GET', '/api/segments', { token: KEY })).status, 401);
    assert.equal((await get(srv, '/api/nothing')).status, 404);
    assert.equal((await api(srv.base, 'DELETE', '/api/segments', { token: TOKEN })).status, 405);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('without --admin-token one is generated, printed and accepted', async () => {
  const s = setup();
  const srv = await serve(['--data', s.data, '--rules', s.rules, '--write-key', KEY]);
  try {
    const token = await until(() => srv.log().match(/"admin_token":"([0-9a-f]{48})"/)?.[1]);
    assert.ok(token, srv.log());
    assert.equal((await api(srv.base, 'GET', '/api/segments', { token })).status, 200);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('explain watches several users of one shard at once, each keeping its record', async () => {
  const s = setup();
  const srv = await serve(['--data', s.data, '--rules', s.rules, '--write-key', KEY,
    '--admin-token', TOKEN, '--partitions', '2', '--shards', '1']);
  try {
    const users = ['wan', 'wen', 'win'];
    await send(srv, users.map((u, i) => ({ type: 'track', userId: u, event: 'Signed Up', messageId: `w-${i}` })));
    assert.ok(await until(async () => (await get(srv, '/api/users/win')).status === 200), 'no user win');
    const since = {};
    for (const u of users) {
      const x = await get(srv, `/api/users/${u}/explain`);
      assert.equal(x.status, 200);
      since[u] = x.json.report.match(/watched since (\S+)/)?.[1];
      assert.ok(since[u], x.json.report);
    }
    // asking about the others did not move the first one's watch: its events are recorded
    await send(srv, [apiError('wan', 1), apiError('wen', 1)]);
    const wan = await until(async () => {
      const r = await get(srv, '/api/users/wan/explain');
      return /server_error_seen: fired 1 time/.test(r.json.report) ? r : null;
    });
    assert.ok(wan, 'the first watched user lost its record');
    assert.match(wan.json.report, new RegExp(`watched since ${since.wan} .*, 1 event since;`));
    const wen = await get(srv, '/api/users/wen/explain');
    assert.match(wen.json.report, new RegExp(`watched since ${since.wen} .*, 1 event since;`));
    assert.match(wen.json.report, /server_error_seen: fired 1 time/);
    const win = await get(srv, '/api/users/win/explain');
    assert.match(win.json.report, new RegExp(`watched since ${since.win} .*, 0 events since;`));
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('POST /api/replay: the running rules, or others, over the log as a dry run', async () => {
  const s = setup();
  const srv = await start(s);
  try {
    const users = ['rp-a', 'rp-b', 'rp-c'];
    await send(srv, users.flatMap((u) => [
      { type: 'track', userId: u, event: 'Signed Up', messageId: `${u}-1` },
      apiError(u, 1), apiError(u, 2),
    ]));
    const live = await until(async () => {
      const t = await get(srv, '/api/triggers');
      const g = t.json.triggers.find((x) => x.name === 'server_error_seen');
      return g.fires === 3 ? t : null;
    });
    assert.ok(live, 'the live engine did not fire server_error_seen for each user');
    const journalBefore = journal(s).length;

    // the running rules (an empty body): the same counts as the live engine
    const same = await api(srv.base, 'POST', '/api/replay', { token: TOKEN });
    assert.equal(same.status, 200, same.text);
    assert.equal(same.json.records, 9);
    assert.equal(same.json.complete, true);
    assert.equal(same.json.users, 3);
    const fires = (r, name) => r.json.triggers.find((t) => t.name === name).fires;
    assert.equal(fires(same, 'server_error_seen'), 3);
    const segs = await get(srv, '/api/segments');
    assert.deepEqual(same.json.segments.map((g) => [g.name, g.members]),
      segs.json.segments.map((g) => [g.name, g.members]));

    // other rules: every API Error fires, no cooldown; and one user's explain report
    const other = 'trigger every_error {\n    on "API Error"\n}\n';
    const r = await api(srv.base, 'POST', '/api/replay?user=rp-b', { token: TOKEN, body: other });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.triggers, [{ name: 'every_error', fires: 6, held_out: 0 }]);
    assert.match(r.json.report, /^user rp-b: 3 events, 1 session/);
    assert.match(r.json.report, /every_error: fired 2 times/);

    // bounded
    const cut = await api(srv.base, 'POST', '/api/replay?max_records=4', { token: TOKEN });
    assert.equal(cut.status, 200, cut.text);
    assert.equal(cut.json.records, 4);
    assert.equal(cut.json.complete, false);

    // refused, and nothing changed
    const bad = await api(srv.base, 'POST', '/api/replay', { token: TOKEN, body: 'trigger t {\n    on "A" when count("A") => 2\n}\n' });
    assert.equal(bad.status, 422, bad.text);
    assert.match(bad.json.error, /^the rules have 1 error; nothing was run$/);
    assert.match(bad.json.errors, /^replay:2:/);
    for (const q of ['max_records=0', 'max_records=abc', 'max_records=1000000001', 'max_records=-5']) {
      const x = await api(srv.base, 'POST', `/api/replay?${q}`, { token: TOKEN });
      assert.equal(x.status, 400, q);
      assert.match(x.json.error, /max_records must be a whole number from 1 to 1000000000/);
    }
    assert.equal((await api(srv.base, 'GET', '/api/replay', { token: TOKEN })).status, 405);
    assert.equal((await api(srv.base, 'POST', '/api/replay')).status, 401);
    const rules = await get(srv, '/api/rules');
    assert.match(rules.json.source, /trigger server_error_seen/);
    assert.equal(journal(s).length, journalBefore, 'a dry run recorded fires');
    const after = await get(srv, '/api/triggers');
    assert.deepEqual(after.json, live.json, 'a dry run changed the live counts');

    // a user whose id holds '/' is named by ?user= escaped (%2F)
    await send(srv, [{ type: 'track', userId: 'rp/d', event: 'Signed Up', messageId: 'rp/d-1' },
      apiError('rp/d', 1)]);
    assert.ok(await until(async () => (await get(srv, '/api/users/rp%2Fd')).status === 200 || null));
    const sl = await api(srv.base, 'POST', '/api/replay?user=rp%2Fd', { token: TOKEN, body: other });
    assert.equal(sl.status, 200, sl.text);
    assert.match(sl.json.report, /^user rp\/d: 2 events, 1 session/);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('POST /api/replay runs one at a time, and a stop cuts a running one short with 503', async () => {
  const s = setup();
  const srv = await start(s);
  let stopped = false;
  try {
    // 200,000 records: a replay of them takes a good fraction of a second
    const batch = (b) => Array.from({ length: 100 }, (_, i) => ({
      type: 'track', userId: `big-${(b * 100 + i) % 5000}`, event: 'Feature Used',
      properties: { feature: 'reports' }, messageId: `big-${b}-${i}`,
    }));
    for (let b = 0; b < 2000; b += 10)
      await Promise.all(Array.from({ length: 10 }, (_, k) => send(srv, batch(b + k))));
    const replay = (q = '') => api(srv.base, 'POST', '/api/replay' + q, { token: TOKEN });
    const both = await Promise.all([replay(), replay()]);
    assert.deepEqual(both.map((r) => r.status).sort(), [200, 429], both.map((r) => r.text).join(' '));
    const busy = both.find((r) => r.status === 429);
    assert.equal(busy.headers.get('retry-after'), '1');
    assert.match(busy.json.error, /a replay is running; one runs at a time/);
    assert.equal(both.find((r) => r.status === 200).json.records, 200000);

    // a long replay running (a short one sent after it is turned away), then SIGTERM
    let running, probe;
    for (let attempt = 0; attempt < 5 && !probe; attempt++) {
      running = replay();
      await new Promise((ok) => setTimeout(ok, 20));
      const r = await replay('?max_records=1');
      if (r.status === 429) probe = r;
      else await running; // the short one went first, or the long one was over: again
    }
    assert.ok(probe, 'no replay was seen running');
    const exit = srv.stop();
    stopped = true;
    const cut = await running;
    assert.equal(cut.status, 503, cut.text);
    assert.match(cut.json.error, /the server is stopping; the replay was cut short/);
    assert.equal(await exit, 0, srv.log());
  } finally {
    if (!stopped) assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('a user: profile, segments, recent events and fires; explain; sizes and counts', async () => {
  const s = setup();
  const srv = await start(s);
  try {
    assert.equal((await get(srv, '/api/users/nobody')).status, 404);
    await send(srv, [
      { type: 'track', anonymousId: 'anon-7', event: 'Signed Up', messageId: 'm1' },
      { type: 'identify', anonymousId: 'anon-7', userId: 'ada', traits: { plan: 'pro' }, messageId: 'm2' },
      { type: 'track', userId: 'ada', event: 'Onboarding Step Completed', properties: { step: 1 }, messageId: 'm3' },
      apiError('ada', 1),
    ]);
    const u = await until(async () => {
      const r = await get(srv, '/api/users/ada');
      return r.status === 200 && r.json.recent_fires.length ? r : null;
    });
    assert.ok(u, 'no fire for ada');
    assert.equal(u.json.user, 'ada');
    assert.equal(u.json.signed_up, true);
    assert.equal(u.json.fires, 1);
    assert.deepEqual(u.json.recent_fires.map((f) => f.trigger), ['server_error_seen']);
    assert.match(u.json.recent_fires[0].id, /^[0-9a-f]{16}$/);
    assert.deepEqual(u.json.recent_events.map((e) => e.name ?? e.type),
      ['API Error', 'Onboarding Step Completed', 'identify', 'Signed Up']);
    // identify retired the anonymousId (docs/rules.md, "Identity"): only the userId finds ada
    assert.equal((await get(srv, '/api/users/anon-7')).status, 404);

    const x = await get(srv, '/api/users/ada/explain');
    assert.equal(x.status, 200);
    assert.match(x.json.report, /^user ada/);
    assert.match(x.json.report, /server_error_seen: /);
    assert.match(x.json.report, /segments:\n/);
    assert.equal((await get(srv, '/api/users/nobody/explain')).status, 404);

    const seg = await get(srv, '/api/segments');
    assert.deepEqual(seg.json.segments.map((g) => g.name),
      ['explorers', 'quick_completers', 'hesitant_users', 'drop_off_zones']);
    assert.equal(seg.json.users, 1);
    const trig = await get(srv, '/api/triggers');
    const t = Object.fromEntries(trig.json.triggers.map((g) => [g.name, g]));
    assert.equal(t.server_error_seen.fires, 1);
    assert.equal(t.stalled_step.holdout_percent, 10);

    // an id holding '/' is sent escaped (%2F), and found
    await send(srv, [{ type: 'identify', userId: 'team/grace', traits: { plan: 'pro' }, messageId: 'm9' }]);
    const slashed = await until(async () => {
      const r = await get(srv, '/api/users/team%2Fgrace');
      return r.status === 200 ? r : null;
    });
    assert.ok(slashed, 'no user team/grace');
    assert.equal(slashed.json.user, 'team/grace');
    const sx = await get(srv, '/api/users/team%2Fgrace/explain');
    assert.equal(sx.status, 200);
    assert.match(sx.json.report, /^user team\/grace/);
    // an id that ends in /explain is a profile with %2F, and has an explain report of its
    // own; a '%' in an id is sent as %25, so a literal "%2F" stays what it is
    await send(srv, [
      { type: 'identify', userId: 'x/explain', traits: { plan: 'pro' }, messageId: 'm10' },
      { type: 'identify', userId: 'a%2Fb', traits: { plan: 'pro' }, messageId: 'm11' },
    ]);
    const xe = await until(async () => {
      const r = await get(srv, '/api/users/x%2Fexplain');
      return r.status === 200 ? r : null;
    });
    assert.ok(xe, 'no user x/explain');
    assert.equal(xe.json.user, 'x/explain');
    const xex = await get(srv, '/api/users/x%2Fexplain/explain');
    assert.equal(xex.status, 200);
    assert.equal(xex.json.user, 'x/explain');
    assert.match(xex.json.report, /^user x\/explain/);
    const lit = await until(async () => {
      const r = await get(srv, '/api/users/a%252Fb');
      return r.status === 200 ? r : null;
    });
    assert.ok(lit, 'no user a%2Fb');
    assert.equal(lit.json.user, 'a%2Fb');
    assert.equal((await get(srv, '/api/users/a%2Fb')).status, 404, 'a/b is another id');
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('/metrics is Prometheus text with ingest, log and engine series', async () => {
  const s = setup();
  const srv = await start(s);
  try {
    await send(srv, [apiError('m1', 1), apiError('m2', 1)]);
    // a refused request is not timed: the ingest histograms count answers 200
    const bad = await post(srv.base, '/v1/track', { userId: 'm3' }, { key: KEY });
    assert.equal(bad.status, 400);
    await until(async () => (await get(srv, '/api/triggers')).json.triggers.some((t) => t.fires === 2));
    const m = await get(srv, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    for (const line of m.text.split('\n').filter(Boolean)) {
      if (line.startsWith('#')) assert.match(line, /^# (HELP|TYPE) [a-z_]+ /);
      else assert.match(line, /^[a-z_]+(\{[a-z_]+="[^"]*"\})? [0-9.e+-]+$/, line);
    }
    const value = (series) => Number(m.text.match(new RegExp('^' + series.replace(/[{}"+]/g, '\\$&') + ' (\\S+)$', 'm'))?.[1]);
    assert.equal(value('onramp_ingest_events_total'), 2);
    assert.equal(value('onramp_engine_events_total'), 2);
    assert.equal(value('onramp_engine_users'), 2);
    assert.equal(value('onramp_trigger_fires_total{trigger="server_error_seen"}'), 2);
    assert.equal(value('onramp_segment_members{segment="explorers"}'), 0);
    for (let p = 0; p < 4; p++) assert.equal(value(`onramp_engine_lag_records{partition="${p}"}`), 0);
    for (const name of ['checkpoints_total', 'checkpoint_bytes', 'checkpoint_seconds'])
      assert.ok(value(`onramp_engine_${name}{shard="0"}`) >= 0, name);
    assert.ok(value('onramp_log_fsync_seconds_count') >= 1);
    assert.equal(value('onramp_log_fsync_seconds_bucket{le="+Inf"}'), value('onramp_log_fsync_seconds_count'));
    assert.ok(value('onramp_http_responses_total{code="200"}') >= 1);
    for (const h of ['onramp_ingest_durable_seconds', 'onramp_ingest_request_seconds']) {
      assert.equal(value(`${h}_count`), 1, h);
      assert.equal(value(`${h}_bucket{le="+Inf"}`), 1, h);
      assert.ok(value(`${h}_sum`) > 0 && value(`${h}_sum`) < 10, h);
    }
    assert.ok(value('onramp_ingest_durable_seconds_sum') <= value('onramp_ingest_request_seconds_sum'));
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('PUT /api/rules: a bad file is refused with file:line:col and changes nothing; a good one swaps in, keeping state', async () => {
  const s = setup();
  const before = readFileSync(s.rules, 'utf8');
  const srv = await start(s);
  try {
    await send(srv, [apiError('keep', 1)]);
    await until(async () => (await get(srv, '/api/users/keep')).json?.fires === 1);

    const bad = before + '\nsegment broken {\n    enter when cuont(INTERACTION) >= 3\n}\n';
    const r = await api(srv.base, 'PUT', '/api/rules', { token: TOKEN, body: bad });
    assert.equal(r.status, 422);
    assert.match(r.json.error, /1 error; the running rules stay/);
    assert.match(r.json.errors, /onboarding\.rules:\d+:16: error: unknown function "cuont" \(did you mean "count"\?\)/);
    assert.equal(readFileSync(s.rules, 'utf8'), before);
    assert.equal((await get(srv, '/api/rules')).json.source, before);
    assert.equal((await get(srv, '/api/segments')).json.segments.length, 4);

    const good = before + '\nsegment errored {\n    enter on ERROR_500\n}\n';
    const ok = await api(srv.base, 'PUT', '/api/rules', { token: TOKEN, body: good });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { success: true, segments: 5, triggers: 5 });
    assert.equal(readFileSync(s.rules, 'utf8'), good);
    assert.equal((await get(srv, '/api/rules')).json.source, good);
    // the user and the trigger's count survive; the new segment works from the next event
    const u = (await get(srv, '/api/users/keep')).json;
    assert.equal(u.fires, 1);
    assert.deepEqual(u.segments, []);
    await send(srv, [apiError('keep', 2)]);
    const after2 = await until(async () => {
      const j = (await get(srv, '/api/users/keep')).json;
      return j.segments.includes('errored') ? j : null;
    });
    assert.ok(after2, 'the new segment never took the user');
    assert.equal(after2.fires, 1, 'the cooldown carried over the reload');
    const seg = (await get(srv, '/api/segments')).json.segments;
    assert.equal(seg.find((g) => g.name === 'errored').members, 1);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('SIGHUP reloads the rules file; a bad file leaves the running rules', async () => {
  const s = setup();
  const before = readFileSync(s.rules, 'utf8');
  const srv = await start(s);
  try {
    writeFileSync(s.rules, before + '\nsegment x {\n    enter when nope > 1\n}\n');
    srv.proc.kill('SIGHUP');
    assert.ok(await until(() => /the running rules stay/.test(srv.log())), srv.log());
    assert.match(srv.log(), /onboarding\.rules:\d+:16: error: unknown name/);
    assert.equal((await get(srv, '/api/segments')).json.segments.length, 4);

    writeFileSync(s.rules, before + '\nsegment y {\n    enter on "Signed Up"\n}\n');
    srv.proc.kill('SIGHUP');
    const five = await until(async () => (await get(srv, '/api/segments')).json.segments.length === 5);
    assert.ok(five, srv.log());
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('an absence fires on the wall clock with no traffic', async () => {
  const s = setup();
  writeFileSync(s.rules, 'trigger quiet {\n    on idle 1s\n    do cue "nudge"\n}\n');
  const srv = await start(s, ['--lateness', '100ms']);
  try {
    await send(srv, [{ type: 'track', userId: 'q', event: 'Feature Used', messageId: 'q1' }]);
    const t0 = Date.now();
    const fired = await until(async () => (await get(srv, '/api/users/q')).json?.fires === 1, 8000);
    assert.ok(fired, 'the idle trigger did not fire');
    assert.ok(Date.now() - t0 >= 900, 'fired before the user was idle for 1s');
    assert.deepEqual(journal(s).map((f) => [f.trigger, f.user]), [['quiet', 'q']]);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

// Users u0..u(n-1): each sends an API Error in round 1 and again in round 2 (inside the
// cooldown), and a third user group only in round 2. Exactly one fire per user, whatever
// happens to the server between the rounds.
async function twoRounds(s, between, extra) {
  const users = Array.from({ length: 60 }, (_, i) => `u${i}`);
  let srv = await start(s, extra);
  await send(srv, users.map((u) => apiError(u, 1)));
  await until(async () => (await get(srv, '/api/triggers')).json.triggers
    .find((t) => t.name === 'server_error_seen').fires === users.length);
  srv = await between(srv);
  const late = Array.from({ length: 20 }, (_, i) => `late${i}`);
  await send(srv, [...users.map((u) => apiError(u, 2)), ...late.map((u) => apiError(u, 1))]);
  const all = users.length + late.length;
  const done = await until(async () => (await get(srv, '/api/triggers')).json.triggers
    .find((t) => t.name === 'server_error_seen').fires === all);
  assert.ok(done, 'fires after the restart: ' + JSON.stringify((await get(srv, '/api/triggers')).json));
  const j = journal(s);
  assert.equal(new Set(j.map((f) => f.id)).size, j.length, 'a fire was recorded twice');
  assert.deepEqual(j.map((f) => f.user).sort(), [...users, ...late].sort());
  return srv;
}

test('restart (SIGTERM) in the middle of a stream: no fire lost or repeated', async () => {
  const s = setup();
  const srv = await twoRounds(s, async (srv1) => {
    assert.equal(await srv1.stop(), 0, srv1.log());
    const srv2 = await start(s);
    assert.match(srv2.log(), /checkpoint loaded/);
    return srv2;
  });
  assert.equal(await srv.stop(), 0, srv.log());
});

test('kill -9 in the middle of a stream: the log tail runs again and no fire is lost or repeated', async () => {
  const s = setup();
  const extra = ['--checkpoint-every', '1h', '--fsync', 'always'];
  const srv = await twoRounds(s, async (srv1) => {
    srv1.proc.kill('SIGKILL');
    await srv1.exited;
    const srv2 = await start(s, extra);
    // no checkpoint was written: the whole log runs again, and its fires are in the journal
    assert.match(srv2.log(), /no checkpoint: starting empty/);
    const m = await until(async () => {
      const text = (await get(srv2, '/metrics')).text;
      return Number(text.match(/^onramp_engine_fires_suppressed_total (\d+)$/m)[1]) === 60 ? text : null;
    });
    assert.ok(m, 'the fires before the crash were not recognised');
    return srv2;
  }, extra);
  assert.equal(await srv.stop(), 0, srv.log());
});

test('a data directory keeps its shard count: without --shards its checkpoints choose it, another count is refused', async () => {
  const s = setup();
  const srv1 = await start(s); // --shards 2
  await send(srv1, [apiError('k1', 1)]);
  assert.equal(await srv1.stop(), 0, srv1.log());
  const common = ['--data', s.data, '--rules', s.rules, '--write-key', KEY, '--admin-token', TOKEN,
    '--partitions', '4'];
  const refused = spawnSync(BIN, ['serve', '--listen', '127.0.0.1:0', ...common, '--shards', '1'],
    { encoding: 'utf8', timeout: 20000 });
  assert.equal(refused.status, 1, refused.stderr);
  assert.match(refused.stderr, /checkpoints written by 2 shards, which 1 shards cannot load.*Start with --shards 2 \(or without --shards\)/);
  const srv2 = await serve(common);
  assert.match(srv2.log(), /"msg":"engine shards started","shards":2/);
  assert.match(srv2.log(), /checkpoint loaded/);
  const u = await until(async () => { const r = await get(srv2, '/api/users/k1'); return r.status === 200 ? r : null; });
  assert.ok(u, 'the user of the first run is not known after the restart');
  assert.equal(await srv2.stop(), 0, srv2.log());
});

test('/readyz answers 503 while the engine runs the log tail, and ingest 503 past --max-lag', async () => {
  const s = setup();
  // a log of 100k messages with no checkpoint
  let srv = await start(s, ['--checkpoint-every', '1h']);
  const msgs = [];
  for (let i = 0; i < 100000; i++)
    msgs.push({ type: 'track', userId: `w${i % 5000}`, event: 'Feature Used', properties: { feature: 'f' }, messageId: `w-${i}` });
  for (let i = 0; i < msgs.length; i += 4000)
    await Promise.all([0, 1000, 2000, 3000].map((o) => send(srv, msgs.slice(i + o, i + o + 1000))));
  srv.proc.kill('SIGKILL');
  await srv.exited;
  // a rate limit of 1 event a second in bursts of 2: a 503 gives its events back, so the
  // retry is not refused for them (without that, the second request below would wait 2 s)
  srv = await start(s, ['--max-lag', '10', '--rate-limit', '1', '--rate-burst', '2']);
  try {
    const two = { batch: [{ type: 'track', userId: 'x', event: 'E' }, { type: 'track', userId: 'x', event: 'F' }] };
    const [ready, ingest] = await Promise.all([
      api(srv.base, 'GET', '/readyz'),
      post(srv.base, '/v1/batch', two, { key: KEY }),
    ]);
    assert.equal(ready.status, 503, ready.text);
    assert.match(ready.json.error, /running the event log's tail/);
    assert.equal(ingest.status, 503);
    assert.equal(ingest.headers['retry-after'], '1');
    assert.match(ingest.json.error, /engine is behind/);
    const retry = await post(srv.base, '/v1/batch', two, { key: KEY });
    assert.ok(retry.status === 503 || retry.status === 200, `${retry.status} ${JSON.stringify(retry.json)}`);
    assert.ok(await until(async () => (await api(srv.base, 'GET', '/readyz')).status === 200, 60000));
    // (the bucket may still be refilling from the retry)
    assert.ok(await until(async () =>
      (await post(srv.base, '/v1/track', { userId: 'x', event: 'E' }, { key: KEY })).status === 200));
    assert.ok(await until(async () => (await get(srv, '/api/segments')).json.users === 5001),
      JSON.stringify((await get(srv, '/api/segments')).json));
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});
