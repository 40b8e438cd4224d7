// bench.test.cjs - `loraplex bench` against the real server: its counts agree
// with the server's own metrics, --ignore-eos gives exactly requests x OSL
// tokens, the adapter distribution is what was asked (chi-square), and
// errors (429s, a server dying mid-run) are counted, not crashed on.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync, spawn } = require('node:child_process');
const { start, stop, metric, loraDir, tmpdir, BIN } = require('./harness.cjs');

function bench(args) {
  const out = path.join(tmpdir('lp-bench-'), 'r.json');
  const r = spawnSync(BIN, ['bench', '--quiet', '--json', out, ...args], { encoding: 'utf8', timeout: 300000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: fs.existsSync(out) ? JSON.parse(fs.readFileSync(out, 'utf8')) : null };
}

test('counts agree with the server; ignore_eos gives requests x osl tokens', async () => {
  const srv = await start(['--lora-dir', loraDir(['math', 'sort'])]);
  try {
    const before = await metric(srv.url, 'loraplex_generation_tokens_total');
    const r = bench(['--url', srv.url, '--adapters', 'math,sort', '--base', '--concurrency', '4', '--requests', '30',
      '--isl', '20', '--osl', '12', '--ignore-eos']);
    assert.strictEqual(r.status, 0, r.stderr);
    assert.strictEqual(r.json.requests_completed, 30);
    assert.strictEqual(r.json.output_tokens, 30 * 12);
    assert.strictEqual(r.json.input_tokens, 30 * 20);
    const after = await metric(srv.url, 'loraplex_generation_tokens_total');
    assert.strictEqual(after - before, 30 * 12);
    for (const k of ['ttft_ms', 'itl_ms', 'tpot_ms', 'e2e_ms'])
      for (const q of ['mean', 'p50', 'p90', 'p99']) assert.ok(r.json[k][q] > 0, k + '.' + q);
    assert.ok(r.json.output_tokens_per_s > 0 && r.json.requests_per_s > 0);
    assert.deepStrictEqual(Object.keys(r.json.per_adapter).sort(), ['math', 'sort', 'tinylm']);
    assert.match(r.stdout, /time to first token/);
  } finally { await stop(srv); }
});

test('adapter distributions (chi-square)', async () => {
  const dir = loraDir(['math']);
  const names = ['a0', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7'];
  for (const n of names) fs.cpSync(path.join(dir, 'math'), path.join(dir, n), { recursive: true });
  const srv = await start(['--lora-dir', dir, '--max-loras', '8', '--max-cpu-loras', '16']);
  try {
    const N = 400;
    const chi2 = (obs, exp) => obs.reduce((s, o, i) => s + (o - exp[i]) ** 2 / exp[i], 0);
    const counts = (j) => names.map((n) => (j.per_adapter[n] ? j.per_adapter[n].requests : 0));
    const u = bench(['--url', srv.url, '--adapters', names.join(','), '--concurrency', '8', '--requests', String(N), '--isl', '4', '--osl', '1', '--seed', '3']);
    assert.strictEqual(u.status, 0, u.stderr);
    // 7 degrees of freedom: 24.3 is the 0.001 critical value
    assert.ok(chi2(counts(u.json), names.map(() => N / 8)) < 24.3, 'uniform: ' + counts(u.json));
    const z = bench(['--url', srv.url, '--adapters', names.join(','), '--adapter-dist', 'zipf:1.0', '--concurrency', '8', '--requests', String(N), '--isl', '4', '--osl', '1', '--seed', '4']);
    const H = names.reduce((s, _, i) => s + 1 / (i + 1), 0);
    assert.ok(chi2(counts(z.json), names.map((_, i) => N / (i + 1) / H)) < 24.3, 'zipf: ' + counts(z.json));
    const h = bench(['--url', srv.url, '--adapters', names.join(','), '--adapter-dist', 'hot:0.8', '--concurrency', '8', '--requests', String(N), '--isl', '4', '--osl', '1', '--seed', '5']);
    const hc = counts(h.json);
    const hot = hc[0] + hc[1]; // ceil(0.2 * 8) = 2 hot adapters get 80%
    assert.ok(Math.abs(hot / N - 0.8) < 0.08, 'hot: ' + hc);
    const rr = bench(['--url', srv.url, '--adapters', names.join(','), '--adapter-dist', 'round-robin', '--concurrency', '3', '--requests', '80', '--isl', '4', '--osl', '1']);
    assert.deepStrictEqual(counts(rr.json), names.map(() => 10));
  } finally { await stop(srv); }
});

test('429s and a server dying mid-run are counted as errors', async () => {
  const srv = await start(['--lora-dir', loraDir(['math', 'sort', 'reverse']), '--max-loras', '1', '--max-cpu-loras', '1']);
  try {
    const r = bench(['--url', srv.url, '--adapters', 'math,sort,reverse', '--concurrency', '6', '--requests', '60', '--isl', '8', '--osl', '24', '--ignore-eos']);
    assert.strictEqual(r.status, 0, r.stderr);
    assert.ok((r.json.errors['429'] || 0) > 0, JSON.stringify(r.json.errors));
    assert.strictEqual(r.json.requests_completed + (r.json.errors['429'] || 0), 60);
  } finally { await stop(srv); }
  const srv2 = await start([]);
  const child = spawn(BIN, ['bench', '--quiet', '--url', srv2.url, '--concurrency', '4', '--duration', '4', '--isl', '8', '--osl', '64', '--ignore-eos',
    '--json', path.join(tmpdir('lp-bench-'), 'x.json')]);
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  await new Promise((r) => setTimeout(r, 1000));
  srv2.proc.kill('SIGKILL');
  const code = await new Promise((r) => child.on('exit', r));
  assert.strictEqual(code, 0);
  assert.match(out, /errors/);
  assert.match(out, /requests: \d+ sent, \d+ completed, [1-9]\d* errors/);
});
