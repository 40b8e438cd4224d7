// admin.test.cjs - adapter management: runtime load/unload with vLLM's status
// codes, path confinement, directory refresh (new, changed, removed,
// half-copied), tier limits (429 with Retry-After), auth, client disconnect
// aborts, SIGTERM drain.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { start, stop, post, metric, loraDir, tmpdir, sleep, REPO } = require('./harness.cjs');

const MATH_PROMPT = 'Q: What is 153 + 612?\nA:';

test('load/unload adapters at run time', async () => {
  const dir = loraDir(['math']);
  fs.cpSync(path.join(dir, 'math'), path.join(dir, 'extra', 'math-copy'), { recursive: true });
  const outside = tmpdir('lp-e2e-outside-');
  fs.cpSync(path.join(REPO, 'models/tinylm-adapters/sort'), path.join(outside, 'sort'), { recursive: true });
  fs.symlinkSync(path.join(outside, 'sort'), path.join(dir, 'escape'));
  const srv = await start(['--lora-dir', dir, '--lora-refresh-interval', '0']);
  try {
    const ok = await post(srv.url + '/v1/load_lora_adapter', { lora_name: 'm2', lora_path: path.join(dir, 'extra', 'math-copy') });
    assert.strictEqual(ok.status, 200, ok.text);
    const r = await post(srv.url + '/v1/completions', { model: 'm2', prompt: MATH_PROMPT, max_tokens: 8, temperature: 0 });
    assert.strictEqual(r.json.choices[0].text, ' 765\n');
    const dup = await post(srv.url + '/v1/load_lora_adapter', { lora_name: 'm2', lora_path: 'extra/math-copy' });
    assert.strictEqual(dup.status, 400);
    for (const [lora_path, why] of [['../../../etc', 'traversal'], [outside + '/sort', 'outside root'], ['escape', 'symlink escape'],
      ['http://example.com/a', 'url'], ['s3://bucket/a', 'url'], ['nonexistent', 'missing']]) {
      const b = await post(srv.url + '/v1/load_lora_adapter', { lora_name: 'bad-' + why.replace(/ /g, '-'), lora_path });
      assert.ok(b.status === 400 || b.status === 404, why + ': ' + b.status);
      assert.ok(b.json.error.message.length > 0);
    }
    for (const lora_name of ['../x', 'a/b', '.hidden', '', 'x'.repeat(200)]) {
      const b = await post(srv.url + '/v1/load_lora_adapter', { lora_name, lora_path: 'math' });
      assert.strictEqual(b.status, 400, lora_name);
      assert.strictEqual(b.json.error.param, 'lora_name');
    }
    const nul = await post(srv.url + '/v1/load_lora_adapter', '{"lora_name":"a\\u0000b","lora_path":"math"}');
    assert.strictEqual(nul.status, 400);
    // a broken adapter is refused with its message
    const broken = path.join(dir, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'adapter_config.json'), '{"r": 0, "target_modules": ["q_proj"]}');
    fs.writeFileSync(path.join(broken, 'adapter_model.safetensors'), 'garbage!!');
    const br = await post(srv.url + '/v1/load_lora_adapter', { lora_name: 'broken', lora_path: 'broken' });
    assert.strictEqual(br.status, 400);
    assert.match(br.json.error.message, /\br\b/);
    assert.strictEqual((await post(srv.url + '/v1/unload_lora_adapter', { lora_name: 'nope' })).status, 404);
    assert.strictEqual((await post(srv.url + '/v1/unload_lora_adapter', { lora_name: 'm2' })).status, 200);
    const gone = await post(srv.url + '/v1/completions', { model: 'm2', prompt: 'x', max_tokens: 1 });
    assert.strictEqual(gone.status, 404);
    assert.ok(fs.existsSync(path.join(dir, 'extra', 'math-copy', 'adapter_model.safetensors')), 'files untouched');
  } finally { await stop(srv); }
});

test('directory refresh: new, changed, removed and half-copied adapters', async () => {
  const dir = loraDir(['math']);
  const srv = await start(['--lora-dir', dir, '--lora-refresh-interval', '0.3']);
  const ids = async () => (await (await fetch(srv.url + '/v1/models')).json()).data.map((m) => m.id).sort();
  const waitFor = async (pred) => { for (let i = 0; i < 50; i++) { if (pred(await ids())) return true; await sleep(100); } return false; };
  try {
    assert.deepStrictEqual(await ids(), ['math', 'tinylm']);
    fs.cpSync(path.join(REPO, 'models/tinylm-adapters/sort'), path.join(dir, 'sort'), { recursive: true });
    assert.ok(await waitFor((l) => l.includes('sort')), 'new adapter appears');
    const r = await post(srv.url + '/v1/completions', { model: 'sort', prompt: 'Sort: 9 1 3 3\nSorted:', max_tokens: 12, temperature: 0 });
    assert.strictEqual(r.json.choices[0].text, ' 1 3 3 9\n');
    // half-copied: a config without weights is not registered
    fs.mkdirSync(path.join(dir, 'half'));
    fs.copyFileSync(path.join(REPO, 'models/tinylm-adapters/math/adapter_config.json'), path.join(dir, 'half', 'adapter_config.json'));
    await sleep(1000);
    assert.ok(!(await ids()).includes('half'), 'half-copied adapter must not be listed');
    // changed: replace math's weights by reverse's; new requests see the new weights
    fs.rmSync(path.join(dir, 'math'), { recursive: true });
    fs.cpSync(path.join(REPO, 'models/tinylm-adapters/reverse'), path.join(dir, 'math'), { recursive: true });
    let text = '';
    for (let i = 0; i < 50 && text !== ' e n o t s\n'; i++) {
      await sleep(100);
      const q = await post(srv.url + '/v1/completions', { model: 'math', prompt: 'Reverse the letters: s t o n e\nAnswer:', max_tokens: 12, temperature: 0 });
      text = q.json && q.json.choices ? q.json.choices[0].text : '';
    }
    assert.strictEqual(text, ' e n o t s\n', 'changed adapter reloaded');
    fs.rmSync(path.join(dir, 'sort'), { recursive: true });
    assert.ok(await waitFor((l) => !l.includes('sort')), 'removed adapter disappears');
  } finally { await stop(srv); }
});

test('host tier full of active adapters -> 429 with Retry-After; device tier swaps', async () => {
  const srv = await start(['--lora-dir', loraDir(), '--max-loras', '1', '--max-cpu-loras', '1']);
  try {
    // A 1000-token generation on tinylm takes well under a second in a
    // release build, so it can end before the 'sort' request is looked at.
    // The 429 is asserted only for attempts where 'math' is provably still
    // running after the answer (active in /v1/adapters); a lost race is
    // retried with a new long request.
    const active = async () => (await (await fetch(srv.url + '/v1/adapters')).json()).data.find((x) => x.name === 'math').active;
    let ctl, r, checked = false;
    for (let attempt = 0; attempt < 8 && !checked; attempt++) {
      ctl = new AbortController();
      const resp = await fetch(srv.url + '/v1/completions', { method: 'POST', signal: ctl.signal, headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'math', prompt: 'The', max_tokens: 1000, ignore_eos: true, stream: true }) });
      const reader = resp.body.getReader();
      await reader.read(); // generation is running
      r = await post(srv.url + '/v1/completions', { model: 'sort', prompt: 'x', max_tokens: 2 });
      if (await active() >= 1) checked = true;
      else { ctl.abort(); await sleep(100); }
    }
    assert.ok(checked, 'the long math request ended before the sort request was answered, 8 times');
    assert.strictEqual(r.status, 429, r.text);
    assert.strictEqual(r.headers.get('retry-after'), '1');
    assert.strictEqual(r.json.error.code, 429);
    // the same adapter and the base still get in
    const same = await post(srv.url + '/v1/completions', { model: 'math', prompt: MATH_PROMPT, max_tokens: 8, temperature: 0 });
    assert.strictEqual(same.json.choices[0].text, ' 765\n');
    const base = await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'x', max_tokens: 2 });
    assert.strictEqual(base.status, 200);
    ctl.abort();
    // the abort takes effect at the engine's next step: wait for it (a slow
    // build, such as the sanitized emulated-CUDA one, takes a while)
    for (let i = 0; i < 600 && await active() >= 1; i++) await sleep(50);
    // now sort fits: it displaces math from both tiers
    const s = await post(srv.url + '/v1/completions', { model: 'sort', prompt: 'Sort: 9 1 3 3\nSorted:', max_tokens: 12, temperature: 0 });
    assert.strictEqual(s.status, 200, s.text);
    assert.strictEqual(s.json.choices[0].text, ' 1 3 3 9\n');
    assert.ok(await metric(srv.url, 'loraplex_adapter_evictions_total{tier="host"}') >= 1);
  } finally { await stop(srv); }
});

test('device tier bytes budget: --max-lora-mib admits adapters by size, refuses one larger than it', async () => {
  // math (1.8 MB) and reverse (0.2 MB) fit in 3 MiB together; fortune-chat (7.2 MB) never does
  const srv = await start(['--lora-dir', loraDir(), '--max-loras', '3', '--max-lora-mib', '3']);
  try {
    assert.strictEqual(await metric(srv.url, 'loraplex_adapter_device_bytes{kind="budget"}'), 3 * 1048576);
    const m = await post(srv.url + '/v1/completions', { model: 'math', prompt: MATH_PROMPT, max_tokens: 8, temperature: 0 });
    assert.strictEqual(m.status, 200, m.text);
    assert.strictEqual(m.json.choices[0].text, ' 765\n');
    const r = await post(srv.url + '/v1/completions', { model: 'reverse', prompt: 'x', max_tokens: 2 });
    assert.strictEqual(r.status, 200, r.text);
    const used = await metric(srv.url, 'loraplex_adapter_device_bytes{kind="used"}');
    assert.ok(used > 1.8e6 && used <= 3 * 1048576, 'device bytes used: ' + used);
    const list = await (await fetch(srv.url + '/v1/adapters')).json();
    assert.strictEqual(list.max_lora_bytes, 3 * 1048576);
    const per = Object.fromEntries(list.data.map((a) => [a.name, a]));
    assert.strictEqual(per.math.device_bytes + per.reverse.device_bytes, used, JSON.stringify(list));
    assert.strictEqual(per.sort.device_bytes, 0);
    const f = await post(srv.url + '/v1/completions', { model: 'fortune-chat', prompt: 'x', max_tokens: 2 });
    assert.notStrictEqual(f.status, 200);
    assert.match(f.json.error.message, /fortune-chat.*more than the 3\.0 MiB/, f.text);
    // the others still answer
    const again = await post(srv.url + '/v1/completions', { model: 'math', prompt: MATH_PROMPT, max_tokens: 8, temperature: 0 });
    assert.strictEqual(again.json.choices[0].text, ' 765\n');
  } finally { await stop(srv); }
});

test('a second server on a port in use fails with an error instead of sharing it', async () => {
  const srv = await start(['--lora-dir', loraDir(['math'])]);
  try {
    const { spawn } = require('node:child_process');
    const second = spawn(process.env.LORAPLEX_BIN, ['serve', '--model', path.join(REPO, 'models/tinylm'), '--port', String(srv.port)],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    second.stdout.on('data', (d) => { log += d; });
    second.stderr.on('data', (d) => { log += d; });
    const timer = setTimeout(() => second.kill('SIGKILL'), 20000);
    const code = await new Promise((resolve) => second.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    assert.notStrictEqual(code, 0, log);
    assert.notStrictEqual(code, null, 'the second server was still running after 20 s:\n' + log);
    assert.match(log, /cannot listen on 127\.0\.0\.1:\d+/);
    assert.strictEqual((await fetch(srv.url + '/health')).status, 200);
  } finally { await stop(srv); }
});

test('client disconnect aborts generation and frees its KV blocks', async () => {
  const srv = await start(['--lora-dir', loraDir()]);
  try {
    for (const stream of [true, false]) {
      const ctl = new AbortController();
      const p = fetch(srv.url + '/v1/completions', { method: 'POST', signal: ctl.signal, headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'math', prompt: 'The', max_tokens: 1000, ignore_eos: true, stream }) }).catch(() => null);
      let running = 0;
      for (let i = 0; i < 500 && running < 1; i++) { await sleep(20); running = await metric(srv.url, 'vllm:num_requests_running'); }
      assert.strictEqual(running, 1);
      ctl.abort();
      await p;
      let after = 1;
      for (let i = 0; i < 200 && after > 0; i++) { await sleep(50); after = await metric(srv.url, 'vllm:num_requests_running'); }
      assert.strictEqual(after, 0, 'aborted (' + (stream ? 'stream' : 'plain') + ')');
      assert.strictEqual(await metric(srv.url, 'vllm:kv_cache_usage_perc'), 0);
    }
    const a = await (await fetch(srv.url + '/v1/adapters')).json();
    assert.strictEqual(a.data.find((x) => x.name === 'math').active, 0);
  } finally { await stop(srv); }
});

test('api key and admin key', async () => {
  const srv = await start(['--lora-dir', loraDir(['math']), '--api-key', 'k1', '--admin-key', 'k2']);
  try {
    assert.strictEqual((await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'x', max_tokens: 1 })).status, 401);
    assert.strictEqual((await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'x', max_tokens: 1 }, { Authorization: 'Bearer nope' })).status, 401);
    assert.strictEqual((await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'x', max_tokens: 1 }, { Authorization: 'Bearer k1' })).status, 200);
    assert.strictEqual((await fetch(srv.url + '/health')).status, 200);
    assert.strictEqual((await fetch(srv.url + '/metrics')).status, 200);
    assert.strictEqual((await post(srv.url + '/v1/unload_lora_adapter', { lora_name: 'math' }, { Authorization: 'Bearer k1' })).status, 401);
    assert.strictEqual((await post(srv.url + '/v1/unload_lora_adapter', { lora_name: 'math' }, { Authorization: 'Bearer k2' })).status, 200);
  } finally { await stop(srv); }
});

test('SIGTERM drains in-flight requests, refuses new ones, exits 0', async () => {
  // a drain deadline far beyond what 200 tokens take on the slowest build
  const srv = await start(['--lora-dir', loraDir(['math']), '--drain-timeout', '600']);
  const inflight = post(srv.url + '/v1/completions', { model: 'math', prompt: 'The', max_tokens: 200, ignore_eos: true });
  let running = 0;
  for (let i = 0; i < 1000 && running < 1; i++) { await sleep(10); running = await metric(srv.url, 'vllm:num_requests_running'); }
  assert.strictEqual(running, 1, 'the in-flight request is running before SIGTERM');
  srv.proc.kill('SIGTERM');
  await sleep(50);
  const late = await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'x', max_tokens: 1 }).catch(() => ({ status: 'refused' }));
  assert.ok(late.status === 'refused' || late.status === 503, 'new request: ' + late.status);
  const r = await inflight;
  assert.strictEqual(r.status, 200);
  assert.strictEqual(r.json.usage.completion_tokens, 200);
  const { code } = await srv.exited;
  assert.strictEqual(code, 0);
});

test('slow clients are cut off; other clients unaffected; bad framing refused', async () => {
  const net = require('node:net');
  const srv = await start(['--request-timeout', '2']);
  try {
    const slow = (payload, everyMs) => new Promise((resolve) => {
      const t0 = Date.now();
      const sock = net.connect(srv.port, '127.0.0.1');
      let i = 0, closed = false;
      const timer = setInterval(() => { if (!closed && i < payload.length) sock.write(payload[i++]); }, everyMs);
      sock.on('data', () => {});
      sock.on('error', () => {});
      sock.on('close', () => { closed = true; clearInterval(timer); resolve(Date.now() - t0); });
      setTimeout(() => { sock.destroy(); }, 15000);
    });
    // slowloris: a header byte every 300 ms (well inside the idle timeout)
    const loris = slow('GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(200) + '\r\n\r\n', 300);
    // slow POST: headers at once, then the body a byte at a time
    const body = JSON.stringify({ model: 'tinylm', prompt: 'x', max_tokens: 1 });
    const slowPost = slow(['POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ' + body.length + '\r\n\r\n', ...body], 300);
    // meanwhile others are served
    const t0 = Date.now();
    const r = await post(srv.url + '/v1/completions', { model: 'tinylm', prompt: 'hello', max_tokens: 4 });
    assert.strictEqual(r.status, 200);
    assert.ok(Date.now() - t0 < 5000, 'others are served while slow clients dribble');
    const [a, b] = await Promise.all([loris, slowPost]);
    assert.ok(a >= 1800 && a < 6000, 'slowloris closed after ' + a + ' ms');
    assert.ok(b >= 1800 && b < 6000, 'slow POST closed after ' + b + ' ms');
    // Content-Length together with Transfer-Encoding -> 400
    const framing = await new Promise((resolve) => {
      const sock = net.connect(srv.port, '127.0.0.1', () => sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n' +
        'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'));
      let d = '';
      sock.on('data', (x) => { d += x; });
      sock.on('close', () => resolve(d));
      sock.on('error', () => resolve(d));
    });
    assert.match(framing, /^HTTP\/1\.1 400/);
    assert.strictEqual((await fetch(srv.url + '/health')).status, 200);
  } finally { await stop(srv); }
});

test('unloading or replacing an adapter in use lets its rows finish on the old weights', async () => {
  const dir = loraDir(['math']);
  const srv = await start(['--lora-dir', dir, '--lora-refresh-interval', '0']);
  try {
    const long = post(srv.url + '/v1/completions', { model: 'math', prompt: 'The', max_tokens: 300, ignore_eos: true });
    let running = 0;
    for (let i = 0; i < 500 && running < 1; i++) { await sleep(10); running = await metric(srv.url, 'vllm:num_requests_running'); }
    assert.strictEqual(running, 1);
    const u = await post(srv.url + '/v1/unload_lora_adapter', { lora_name: 'math' });
    assert.strictEqual(u.status, 200);
    assert.strictEqual((await post(srv.url + '/v1/completions', { model: 'math', prompt: 'x', max_tokens: 1 })).status, 404);
    // register the name again (new weights: reverse's) while the old row still runs
    fs.cpSync(path.join(REPO, 'models/tinylm-adapters/reverse'), path.join(dir, 'rev'), { recursive: true });
    assert.strictEqual((await post(srv.url + '/v1/load_lora_adapter', { lora_name: 'math', lora_path: 'rev' })).status, 200);
    const nw = await post(srv.url + '/v1/completions', { model: 'math', prompt: 'Reverse the letters: s t o n e\nAnswer:', max_tokens: 12, temperature: 0 });
    assert.strictEqual(nw.json.choices[0].text, ' e n o t s\n');
    const r = await long;
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.json.usage.completion_tokens, 300);
    assert.strictEqual(r.json.choices[0].finish_reason, 'length');
  } finally { await stop(srv); }
});
