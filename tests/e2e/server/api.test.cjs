// api.test.cjs - the OpenAI-compatible API through the official openai client
// and raw HTTP: models, completions, chat, streaming, logprobs, stop strings,
// tokenize, errors, auth, metrics.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const OpenAI = require('openai');
const net = require('node:net');
const { start, stop, post, metric, loraDir } = require('./harness.cjs');

let srv, client;
test.before(async () => {
  srv = await start(['--lora-dir', loraDir()]);
  client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
});
test.after(async () => { await stop(srv); });

test('models list: base and every adapter with root and parent', async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id).sort();
  assert.deepStrictEqual(ids, ['fortune-chat', 'math', 'reverse', 'sort', 'tinylm']);
  const math = models.data.find((m) => m.id === 'math');
  assert.strictEqual(math.parent, 'tinylm');
  assert.match(math.root, /math$/);
  assert.strictEqual(models.data.find((m) => m.id === 'tinylm').parent, null);
});

test('completions: adapters answer their tasks, the base does not', async () => {
  const r = await client.completions.create({ model: 'math', prompt: 'Q: What is 153 + 612?\nA:', max_tokens: 8, temperature: 0 });
  assert.strictEqual(r.choices[0].text, ' 765\n');
  assert.strictEqual(r.choices[0].finish_reason, 'stop');
  assert.strictEqual(r.usage.prompt_tokens + r.usage.completion_tokens, r.usage.total_tokens);
  const s = await client.completions.create({ model: 'sort', prompt: 'Sort: 9 1 3 3\nSorted:', max_tokens: 12, temperature: 0 });
  assert.strictEqual(s.choices[0].text, ' 1 3 3 9\n');
  const b = await client.completions.create({ model: 'tinylm', prompt: 'Q: What is 153 + 612?\nA:', max_tokens: 8, temperature: 0 });
  assert.notStrictEqual(b.choices[0].text, ' 765\n');
});

test('completions: token-id prompt, n, echo, seed determinism', async () => {
  const tok = await post(srv.url + '/tokenize', { prompt: 'Reverse the letters: s t o n e\nAnswer:' });
  assert.strictEqual(tok.status, 200);
  const r = await client.completions.create({ model: 'reverse', prompt: tok.json.tokens, max_tokens: 12, temperature: 0 });
  assert.strictEqual(r.choices[0].text, ' e n o t s\n');
  const e = await client.completions.create({ model: 'reverse', prompt: 'Reverse the letters: s t o n e\nAnswer:', max_tokens: 12, temperature: 0, echo: true });
  assert.strictEqual(e.choices[0].text, 'Reverse the letters: s t o n e\nAnswer: e n o t s\n');
  const es = await client.completions.create({ model: 'reverse', prompt: 'Reverse the letters: s t o n e\nAnswer:', max_tokens: 12, temperature: 0, echo: true, stream: true });
  let etext = '';
  for await (const ch of es) for (const c of ch.choices) etext += c.text;
  assert.strictEqual(etext, 'Reverse the letters: s t o n e\nAnswer: e n o t s\n');
  const n = await client.completions.create({ model: 'tinylm', prompt: 'The computer', max_tokens: 16, temperature: 1.0, n: 3, seed: 5 });
  assert.strictEqual(n.choices.length, 3);
  const n2 = await client.completions.create({ model: 'tinylm', prompt: 'The computer', max_tokens: 16, temperature: 1.0, n: 3, seed: 5 });
  assert.deepStrictEqual(n.choices.map((c) => c.text), n2.choices.map((c) => c.text));
});

test('streaming completion equals the non-streamed one, usage chunk last', async () => {
  const args = { model: 'tinylm', prompt: 'The computer', max_tokens: 24, temperature: 0 };
  const whole = await client.completions.create(args);
  const stream = await client.completions.create({ ...args, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null, chunks = 0;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) { text += c.text; if (c.finish_reason) finish = c.finish_reason; }
  }
  assert.strictEqual(text, whole.choices[0].text);
  assert.strictEqual(finish, 'length');
  assert.ok(chunks > 3);
  assert.deepStrictEqual(usage, whole.usage);
});

test('chat completions, streamed and not, with the model chat template', async () => {
  const messages = [{ role: 'user', content: 'Tell me a fortune about cats.' }];
  // Both requests below find the prompt's first block in the prefix cache:
  // on the CUDA backend a prompt computed whole (tensor-core prefill, Q and P
  // in fp16) and one whose prefix was cached (per-token kernel for the tail)
  // differ by bf16 rounding, enough to flip a near-tie (docs/cuda.md)
  await client.chat.completions.create({ model: 'fortune-chat', messages, max_tokens: 1, temperature: 0 });
  const r = await client.chat.completions.create({ model: 'fortune-chat', messages, max_tokens: 30, temperature: 0 });
  assert.strictEqual(r.object, 'chat.completion');
  assert.strictEqual(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  const s = await client.chat.completions.create({ model: 'fortune-chat', messages, max_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', role = null, usage = null;
  for await (const ch of s) {
    if (ch.usage) usage = ch.usage;
    for (const c of ch.choices) { if (c.delta.role) role = c.delta.role; text += c.delta.content || ''; }
  }
  assert.strictEqual(role, 'assistant');
  assert.strictEqual(text, r.choices[0].message.content);
  assert.deepStrictEqual(usage, r.usage);
});

test('logprobs: completions and chat formats', async () => {
  const r = await client.completions.create({ model: 'math', prompt: 'Q: What is 1 + 2?\nA:', max_tokens: 4, temperature: 0, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.strictEqual(lp.tokens.length, lp.token_logprobs.length);
  assert.strictEqual(lp.top_logprobs.length, lp.tokens.length);
  assert.ok(lp.token_logprobs.every((x) => x <= 0));
  assert.strictEqual(Object.keys(lp.top_logprobs[0]).length, 2);
  const c = await client.chat.completions.create({ model: 'fortune-chat', messages: [{ role: 'user', content: 'Tell me a fortune about dogs.' }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = c.choices[0].logprobs.content;
  assert.strictEqual(content.length, c.usage.completion_tokens);
  assert.strictEqual(content[0].top_logprobs.length, 3);
  assert.strictEqual(content[0].top_logprobs[0].token, content[0].token); // greedy = most likely
});

test('echo with logprobs: prompt tokens get the logprobs the model gives them when generating', async () => {
  const prompt = 'Q: What is 153 + 612?\nA:';
  const gen = await client.completions.create({ model: 'math', prompt, max_tokens: 6, temperature: 0, logprobs: 1 });
  const tok = await post(srv.url + '/tokenize', { prompt });
  const genIds = (await post(srv.url + '/tokenize', { prompt: gen.choices[0].text })).json.tokens;
  const ids = tok.json.tokens.concat(genIds);
  const e = await client.completions.create({ model: 'math', prompt: ids, max_tokens: 1, temperature: 0, logprobs: 1, echo: true });
  const lp = e.choices[0].logprobs;
  assert.strictEqual(lp.tokens.length, ids.length + 1);
  assert.strictEqual(lp.token_logprobs[0], null);
  assert.strictEqual(lp.top_logprobs[0], null);
  const n = genIds.length;
  const promptPart = lp.token_logprobs.slice(ids.length - n, ids.length);
  const genPart = gen.choices[0].logprobs.token_logprobs.slice(0, n);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(promptPart[i] - genPart[i]) < 1e-3, `${promptPart[i]} vs ${genPart[i]}`);
  assert.strictEqual(lp.text_offset[0], 0);
  // streamed: the echo chunk carries the prompt's logprobs
  const s = await client.completions.create({ model: 'math', prompt, max_tokens: 3, temperature: 0, logprobs: 1, echo: true, stream: true });
  let first = null, text = '';
  for await (const ch of s) for (const c of ch.choices) { if (!first) first = c; text += c.text; }
  assert.strictEqual(first.text, prompt);
  assert.strictEqual(first.logprobs.tokens.length, tok.json.tokens.length);
  assert.ok(text.startsWith(prompt));
});

test('stop strings, also across token boundaries', async () => {
  const r = await client.completions.create({ model: 'math', prompt: 'Q: What is 153 + 612?\nA:', max_tokens: 8, temperature: 0, stop: ['65'] });
  assert.strictEqual(r.choices[0].text, ' 7');
  assert.strictEqual(r.choices[0].finish_reason, 'stop');
  const s = await client.completions.create({ model: 'sort', prompt: 'Sort: 9 1 3 3\nSorted:', max_tokens: 12, temperature: 0, stop: ['3 3'], stream: true });
  let text = '';
  for await (const ch of s) for (const c of ch.choices) text += c.text;
  assert.strictEqual(text, ' 1 ');
});

test('tokenize and detokenize round trip', async () => {
  const t = await post(srv.url + '/tokenize', { prompt: 'The computer' });
  assert.strictEqual(t.status, 200);
  assert.strictEqual(t.json.count, t.json.tokens.length);
  const d = await post(srv.url + '/detokenize', { tokens: t.json.tokens });
  assert.strictEqual(d.json.prompt, 'The computer');
  assert.strictEqual((await post(srv.url + '/detokenize', { tokens: [99999] })).status, 400);
});

test('errors: status, type and param as OpenAI clients expect', async () => {
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x', max_tokens: 1 }), (e) => {
    assert.strictEqual(e.status, 404); assert.strictEqual(e.error.param, 'model'); return true;
  });
  const cases = [
    [{ model: 'tinylm', prompt: 'x', temperature: -1 }, 'temperature'],
    [{ model: 'tinylm', prompt: 'x', top_p: 2 }, 'top_p'],
    [{ model: 'tinylm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    [{ model: 'tinylm', prompt: 'x', max_tokens: 5000 }, 'max_tokens'],
    [{ model: 'tinylm', prompt: '' }, 'prompt'],
    [{ model: 'tinylm', prompt: [1, 2, 99999] }, 'prompt'],
    [{ model: 'tinylm', prompt: [-1] }, 'prompt'],
    [{ model: 'tinylm', prompt: 'x', n: 1000 }, 'n'],
    [{ model: 'tinylm', prompt: 'x', logprobs: 50 }, 'logprobs'],
    [{ model: 'tinylm', prompt: 'x', logit_bias: { '99999': 1 } }, 'logit_bias'],
    [{ model: 'tinylm', prompt: 'x', temperature: 'hot' }, 'temperature'],
    [{ model: 7, prompt: 'x' }, 'model'],
  ];
  for (const [body, param] of cases) {
    const r = await post(srv.url + '/v1/completions', body);
    assert.strictEqual(r.status, 400, JSON.stringify(body) + ' -> ' + r.text);
    assert.strictEqual(r.json.error.param, param, JSON.stringify(body) + ' -> ' + r.text);
    assert.ok(r.json.error.message.length > 0);
  }
  const chat = await post(srv.url + '/v1/chat/completions', { model: 'tinylm', messages: [] });
  assert.strictEqual(chat.status, 400);
  assert.strictEqual(chat.json.error.param, 'messages');
  for (const raw of ['{', '[]', 'null', '{"model": "tinylm", "prompt": "a", "prompt": "b"}', '[' .repeat(100000)]) {
    const r = await post(srv.url + '/v1/completions', raw);
    assert.strictEqual(r.status, 400, raw.slice(0, 20));
    assert.ok(r.json.error.message);
  }
  const bad = Buffer.from('{"model":"tinylm","prompt":"\xff\xfe","max_tokens":1}', 'latin1');
  const u = await fetch(srv.url + '/v1/completions', { method: 'POST', body: bad, headers: { 'Content-Type': 'application/json' } });
  assert.strictEqual(u.status, 400);
  assert.strictEqual((await fetch(srv.url + '/v1/nothing')).status, 404);
  assert.strictEqual((await fetch(srv.url + '/v1/completions')).status, 405);
});

test('limits: body too large -> 413, huge headers -> 431', async () => {
  const big = JSON.stringify({ model: 'tinylm', prompt: 'a'.repeat(9 << 20) });
  const r = await post(srv.url + '/v1/completions', big);
  assert.strictEqual(r.status, 413);
  const status = await new Promise((resolve) => {
    const sock = net.connect(srv.port, '127.0.0.1', () => {
      sock.write('GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'a'.repeat(200000) + '\r\n\r\n');
    });
    let data = '';
    sock.on('data', (d) => { data += d; });
    sock.on('close', () => resolve(data.split(' ')[1]));
    sock.on('error', () => resolve(data.split(' ')[1] || 'closed'));
  });
  assert.ok(status === '431' || status === '413' || status === 'closed', 'got ' + status);
  // the server still serves afterwards
  assert.strictEqual((await fetch(srv.url + '/health')).status, 200);
});

test('metrics: the series a LoRA-aware router reads', async () => {
  const t = await (await fetch(srv.url + '/metrics')).text();
  for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc',
    'vllm:cache_config_info', 'vllm:lora_requests_info', 'loraplex_adapter_hits_total', 'loraplex_adapter_loads_total',
    'loraplex_adapter_evictions_total', 'loraplex_adapters_resident', 'loraplex_adapter_load_seconds_bucket',
    'loraplex_time_to_first_token_seconds_bucket', 'loraplex_inter_token_latency_seconds_bucket',
    'loraplex_queue_time_seconds_bucket', 'loraplex_generation_tokens_total', 'loraplex_prompt_tokens_total'])
    assert.ok(t.includes(name), name);
  assert.match(t, /vllm:lora_requests_info\{max_lora="\d+",running_lora_adapters="[^"]*",waiting_lora_adapters="[^"]*"\} \d+/);
  assert.ok(await metric(srv.url, 'loraplex_generation_tokens_total') > 0);
  const a = await (await fetch(srv.url + '/v1/adapters')).json();
  const math = a.data.find((x) => x.name === 'math');
  assert.strictEqual(math.rank, 16);
  assert.ok(['host', 'device'].includes(math.tier));
  assert.ok(math.requests >= 1);
});
