// run.test.mjs - how a server is started. `make run`, the README's first command: it builds
// (a no-op here: the binary under test is built), starts `onramp serve` on its defaults with
// the generated write key and admin token printed, and both work: a stock request is stored
// and the management API answers. SERVE_OPTS moves it to a free port and a scratch data
// directory; a SIGTERM to the process group stops the server after its checkpoint. And every
// ONRAMP_* variable `onramp serve --help` lists reaches its flag, which wins over it.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { BIN, serve, post, api, until } from './helpers.mjs';

test('make run starts the server on its defaults, with a write key and an admin token that work', async () => {
  const data = mkdtempSync(join(tmpdir(), 'onramp-e2e-run-'));
  // the build directory of the binary under test (build, or build-sanitize under make sanitize)
  const build = relative(process.cwd(), dirname(BIN));
  const make = spawn('make', ['-s', 'run', `BUILD=${build}`,
    `SERVE_OPTS=--listen 127.0.0.1:0 --data ${data}`], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  make.stdout.on('data', (b) => { out += b; });
  make.stderr.on('data', (b) => { err += b; });
  const exited = new Promise((done) => make.on('exit', (code, sig) => done(code ?? sig)));
  try {
    const line = (msg) => err.split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return {}; } })
      .find((l) => l.msg && l.msg.startsWith(msg));
    assert.ok(await until(() => line('no --write-key given') && line('management API ready') && line('listening'), 60000),
      `no start lines:\n${out}\n${err}`);
    assert.match(out, /onramp: starting the server/);
    const { listen } = line('listening');
    const base = `http://${listen}`;
    const key = line('no --write-key given').write_key;
    const token = line('management API ready').admin_token;
    assert.match(key, /^[0-9a-f]{32}$/);
    assert.match(token, /^[0-9a-f]{48}$/);
    const r = await post(base, '/v1/track', { userId: 'make-run-user', event: 'Signed Up' }, { key });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((await api(base, 'GET', '/api/segments', { token })).status, 200);
    assert.ok(await until(async () => (await api(base, 'GET', '/api/users/make-run-user', { token })).status === 200));
    assert.equal((await api(base, 'GET', '/api/segments', { token: 'not-the-token' })).status, 401);
    assert.ok(existsSync(join(data, 'log')), 'no event log in the data directory');
  } finally {
    process.kill(-make.pid, 'SIGTERM');
    await exited;
    rmSync(data, { recursive: true, force: true });
  }
  assert.ok(err.includes('"msg":"stopped"'), `the server did not stop cleanly:\n${err}`);
});

// A value each variable refuses, and the error that names it. ONRAMP_DATA, ONRAMP_ADMIN_TOKEN
// and ONRAMP_WRITE_KEY are checked by what a server started with them does, below.
const refused = {
  ONRAMP_LISTEN: ['bad', /--listen needs ADDR:PORT, got "bad"/],
  ONRAMP_FSYNC: ['sometimes', /--fsync must be always, batch or everysec, got "sometimes"/],
  ONRAMP_COMMIT_INTERVAL: ['x', /--commit-interval needs a duration/],
  ONRAMP_PARTITIONS: ['x', /--partitions needs a whole number/],
  ONRAMP_THREADS: ['x', /--threads needs a whole number/],
  ONRAMP_MAX_CONNECTIONS: ['x', /--max-connections needs a whole number/],
  ONRAMP_ROUTE_CAPACITY: ['x', /--route-capacity needs a whole number/],
  ONRAMP_RATE_LIMIT: ['x', /--rate-limit needs a whole number/],
  ONRAMP_RATE_BURST: ['x', /--rate-burst needs a whole number/],
  ONRAMP_HTTP_TIMEOUT: ['x', /--http-timeout needs a whole number/],
  ONRAMP_RULES: ['/nonexistent/onboarding.rules', /"rules":"\/nonexistent\/onboarding.rules".*cannot open/],
  ONRAMP_SHARDS: ['x', /--shards needs a whole number/],
  ONRAMP_CHECKPOINT_EVERY: ['x', /--checkpoint-every needs a duration/],
  ONRAMP_STATE_EVERY: ['x', /--state-every needs a duration/],
  ONRAMP_LATENESS: ['x', /--lateness needs a duration/],
  ONRAMP_MAX_LAG: ['x', /--max-lag needs a whole number/],
  ONRAMP_RETAIN_AGE: ['x', /--retain-age needs a duration/],
  ONRAMP_RETAIN_BYTES: ['x', /--retain-bytes needs a whole number/],
  ONRAMP_SEGMENT_BYTES: ['x', /--segment-bytes needs a whole number/],
  ONRAMP_MAX_EVENT_BYTES: ['x', /--max-event-bytes needs a whole number/],
  ONRAMP_MAX_REQUEST_BYTES: ['x', /--max-request-bytes needs a whole number/],
  ONRAMP_GEOIP: ['/nonexistent.mmdb', /cannot open the GeoIP database \/nonexistent\.mmdb/],
  ONRAMP_WRITE_KEY: ['a:b', /write key 1 of 1 contains ':'/],
};
const started = ['ONRAMP_DATA', 'ONRAMP_ADMIN_TOKEN', 'ONRAMP_WRITE_KEY'];

// The environment without any ONRAMP_* variable of the caller's, plus vars.
function envWith(vars) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ONRAMP_')));
  return { ...env, ...vars };
}

test('every ONRAMP_* variable reaches its flag, and the flag wins over it', async () => {
  const help = execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
  const listed = [...new Set(help.match(/ONRAMP_[A-Z_]+/g))].sort();
  assert.deepEqual(listed, [...new Set([...Object.keys(refused), ...started])].sort(),
    'the variables --help lists and those this test covers differ');
  const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-env-'));
  try {
    for (const [name, [value, why]] of Object.entries(refused)) {
      // the flag a variable stands for is left off its own run
      const args = [...(name === 'ONRAMP_LISTEN' ? [] : ['--listen', '127.0.0.1:0']),
        ...(name === 'ONRAMP_RULES' ? [] : ['--rules', 'rules/onboarding.rules']), '--data', join(dir, 'refused')];
      const r = spawnSync(BIN, ['serve', ...args], { encoding: 'utf8', env: envWith({ [name]: value }), timeout: 10000 });
      assert.ok(r.status > 0, `${name}=${value} was taken (exit ${r.status}, ${r.signal})`);
      assert.match(r.stderr, why, `${name}=${value}`);
      assert.ok(!existsSync(join(dir, 'refused', 'log')), `${name}=${value} wrote a log`);
    }
    // the flag wins: each refused value beside its flag with a good one starts
    const srv0 = await serve(['--data', join(dir, 'flags'), '--partitions', '4', '--fsync', 'batch'],
      { env: envWith({ ONRAMP_PARTITIONS: 'x', ONRAMP_FSYNC: 'sometimes' }) });
    assert.equal(await srv0.stop(), 0, srv0.log());
    // a data directory, an admin token and two write keys (comma-separated), from the environment
    const data = join(dir, 'from-env');
    const srv = await serve([], {
      env: envWith({ ONRAMP_DATA: data, ONRAMP_ADMIN_TOKEN: 'env-token', ONRAMP_WRITE_KEY: 'k-one,k-two' }),
    });
    try {
      for (const key of ['k-one', 'k-two'])
        assert.equal((await post(srv.base, '/v1/track', { userId: 'env-user', event: 'E' }, { key })).status, 200, key);
      assert.equal((await post(srv.base, '/v1/track', { userId: 'env-user', event: 'E' }, { key: 'k-three' })).status, 401);
      assert.equal((await api(srv.base, 'GET', '/api/segments', { token: 'env-token' })).status, 200);
      assert.ok(existsSync(join(data, 'log')), 'no event log in ONRAMP_DATA');
    } finally {
      assert.equal(await srv.stop(), 0, srv.log());
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
