// segment-library.test.mjs - stock tracking libraries from npm pointed at `onramp serve` by
// their host alone: Segment's (@segment/analytics-node) and RudderStack's
// (@rudderstack/rudder-sdk-node, which gzips its batches). Their batches are accepted, and
// the user they describe lands in a segment, seen through the management API.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Analytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';
import { serve, api, until } from './helpers.mjs';

const KEY = 'segment-lib-key';
const TOKEN = 'segment-lib-admin';
const data = mkdtempSync(join(tmpdir(), 'onramp-e2e-segment-'));
const data2 = mkdtempSync(join(tmpdir(), 'onramp-e2e-rudder-'));
after(() => [data, data2].forEach((d) => rmSync(d, { recursive: true, force: true })));

test('@segment/analytics-node sends to onramp with only its host changed', async () => {
  const srv = await serve(['--data', data, '--write-key', KEY, '--admin-token', TOKEN]);
  try {
    // One batch (the library's default flushAt is 15): requests sent concurrently race, and
    // an anonymous event routed after its user's identified ones stays apart (docs/api.md,
    // "Partitions and identity").
    const analytics = new Analytics({ writeKey: KEY, host: srv.base, flushAt: 20, flushInterval: 200 });
    const failures = [];
    analytics.on('error', (e) => failures.push(e));

    // an anonymous visitor signs up, identifies, and explores: ten features in a minute
    analytics.track({ anonymousId: 'visitor-1', event: 'Signed Up' });
    analytics.identify({ anonymousId: 'visitor-1', userId: 'grace', traits: { plan: 'team' } });
    for (let i = 0; i < 10; i++)
      analytics.track({ userId: 'grace', event: 'Feature Used', properties: { feature: `f${i}` } });
    await analytics.closeAndFlush({ timeout: 10000 });
    assert.deepEqual(failures, []);

    const get = (path) => api(srv.base, 'GET', path, { token: TOKEN });
    const user = await until(async () => {
      const r = await get('/api/users/grace');
      return r.status === 200 && r.json.segments.includes('explorers') ? r.json : null;
    });
    assert.ok(user, 'grace never became an explorer: ' + (await get('/api/users/grace')).text);
    assert.equal(user.signed_up, true);
    assert.deepEqual(user.recent_fires.map((f) => f.trigger), ['welcome_explorer']);
    assert.equal(user.recent_events.length, 12);
    const seg = (await get('/api/segments')).json.segments;
    assert.equal(seg.find((s) => s.name === 'explorers').members, 1);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});

test('@rudderstack/rudder-sdk-node sends (gzipped) to onramp with only its data plane URL changed', async () => {
  const srv = await serve(['--data', data2, '--write-key', KEY, '--admin-token', TOKEN]);
  try {
    const failures = [];
    const client = new RudderAnalytics(KEY, {
      dataPlaneUrl: srv.base, flushAt: 20, flushInterval: 200, logLevel: 'error',
      errorHandler: (e) => failures.push(e),
    });
    client.track({ anonymousId: 'visitor-2', event: 'Signed Up' });
    client.identify({ anonymousId: 'visitor-2', userId: 'linus', traits: { plan: 'team' } });
    for (let i = 0; i < 10; i++)
      client.track({ userId: 'linus', event: 'Feature Used', properties: { feature: `f${i}` } });
    await client.flush();
    assert.deepEqual(failures, []);

    const get = (path) => api(srv.base, 'GET', path, { token: TOKEN });
    const user = await until(async () => {
      const r = await get('/api/users/linus');
      return r.status === 200 && r.json.segments.includes('explorers') ? r.json : null;
    });
    assert.ok(user, 'linus never became an explorer: ' + (await get('/api/users/linus')).text);
    assert.equal(user.signed_up, true);
    assert.deepEqual(user.recent_fires.map((f) => f.trigger), ['welcome_explorer']);
    const m = (await get('/metrics')).text;
    assert.match(m, /^onramp_ingest_events_total 12$/m);
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
});
