// docs.test.mjs - the shell examples of docs/api.md and README.md: the curl commands run
// against a live `onramp serve`, in document order, and each must get a 2xx answer; the
// `build/onramp ...` commands run with the built binary in a scratch directory and must
// exit 0. Lines that start a server (`onramp serve ...`) are not run; the flags they use must
// be in `onramp serve --help`.
// Run: ONRAMP_BIN=build/onramp node --test tests/e2e/
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BIN, serve } from './helpers.mjs';

const KEY = 'docs-write-key';
const TOKEN = 'docs-admin-token';
const dir = mkdtempSync(join(tmpdir(), 'onramp-e2e-docs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The ```sh blocks of a markdown file, with the line each starts on.
function shBlocks(path) {
  const blocks = [];
  let cur = null;
  readFileSync(path, 'utf8').split('\n').forEach((line, i) => {
    if (cur && line.startsWith('```')) { blocks.push(cur); cur = null; return; }
    if (!cur && line === '```sh') cur = { line: i + 2, text: '' };
    else if (cur) cur.text += line + '\n';
  });
  return blocks;
}

// Commands of a block: continuation lines joined; variable assignments dropped (the test
// sets KEY, K, T and H); `onramp serve` lines returned apart.
function commands(text) {
  const joined = text.replace(/\\\n/g, ' ');
  const run = [];
  const servers = [];
  let pending = '';
  for (const line of joined.split('\n')) {
    const l = pending ? pending + '\n' + line : line;
    // a quoted argument spanning lines (a -d '{ ... }' body) continues to the next line
    if ((l.match(/'/g) ?? []).length % 2 === 1) { pending = l; continue; }
    pending = '';
    const t = l.trim();
    if (!t || t.startsWith('#') || /^[A-Z]+=/.test(t)) continue;
    if (t.startsWith('onramp serve')) servers.push(t);
    else if (t.startsWith('make ') || t.startsWith('onramp ')) continue;
    else run.push(l);
  }
  return { run, servers };
}

test('the shell examples of docs/api.md and README.md work against onramp serve', async () => {
  const rules = join(dir, 'onboarding.rules');
  copyFileSync('rules/onboarding.rules', rules);
  const srv = await serve(['--data', join(dir, 'data'), '--rules', rules, '--write-key', KEY,
    '--admin-token', TOKEN]);
  const help = execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
  // build/onramp and rules/ as the README's examples name them, in a scratch directory
  const scratch = join(dir, 'scratch');
  mkdirSync(join(scratch, 'build'), { recursive: true });
  symlinkSync(resolve(BIN), join(scratch, 'build', 'onramp'));
  symlinkSync(resolve('rules'), join(scratch, 'rules'));
  let ran = 0;
  try {
    for (const doc of ['README.md', 'docs/api.md']) {
      for (const b of shBlocks(doc)) {
        const { run, servers } = commands(b.text);
        for (const s of servers)
          for (const flag of s.match(/--[a-z-]+/g) ?? [])
            assert.ok(help.includes(flag), `${doc}:${b.line}: ${flag} is not in onramp serve --help`);
        for (const cmd of run) {
          if (cmd.trim().startsWith('build/onramp')) {
            const r = spawnSync('bash', ['-c', cmd], { encoding: 'utf8', cwd: scratch });
            assert.equal(r.status, 0, `${doc}:${b.line}: ${cmd}\n${r.stderr}`);
            ran++;
            continue;
          }
          if (!cmd.includes('curl')) continue;
          const shell = cmd.replaceAll('http://127.0.0.1:8088', srv.base);
          const r = spawnSync('bash', ['-c', 'set -o pipefail; ' +
            'curl() { command curl -sS --fail-with-body "$@"; }; ' + shell],
          { encoding: 'utf8', env: { ...process.env, KEY, K: KEY, T: TOKEN, H: srv.base }, cwd: process.cwd() });
          assert.equal(r.status, 0, `${doc}:${b.line}: ${cmd}\n${r.stdout}\n${r.stderr}`);
          ran++;
        }
      }
    }
  } finally {
    assert.equal(await srv.stop(), 0, srv.log());
  }
  assert.ok(ran >= 20, `only ${ran} examples ran`);
});
