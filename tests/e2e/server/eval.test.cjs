// eval.test.cjs - the shared task evals through the server: the 180 prompts
// of math, reverse and sort sent by 24 concurrent clients with --max-loras 2
// --max-cpu-loras 3, so adapters swap in and out of the device tier during the
// run. Each adapter must reach >= 97% exact answers, and every response must
// equal what the same request gets alone (the reference stack's greedy
// output, which single runs reproduce token for token).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const OpenAI = require('openai');
const { start, stop, metric, loraDir, REPO } = require('./harness.cjs');

test('24 concurrent clients, three adapters swapping through two slots', async () => {
  const srv = await start(['--lora-dir', loraDir(['math', 'reverse', 'sort']), '--max-loras', '2', '--max-cpu-loras', '3',
    '--threads', '2']);
  const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  try {
    const items = [];
    for (const task of ['math', 'reverse', 'sort']) {
      const lines = fs.readFileSync(path.join(REPO, `tests/data/evals/tinylm-${task}-shared.jsonl`), 'utf8').trim().split('\n');
      for (const l of lines) items.push(JSON.parse(l));
    }
    // interleave tasks so consecutive requests use different adapters
    items.sort((a, b) => (items.indexOf(a) % 60) - (items.indexOf(b) % 60));
    const results = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        const it = items[i];
        const r = await client.completions.create({ model: it.adapter, prompt: it.prompt, max_tokens: 24, temperature: 0 });
        results[i] = r.choices[0].text;
      }
    };
    await Promise.all(Array.from({ length: 24 }, worker));
    const per = {};
    let same = 0;
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      per[it.adapter] = per[it.adapter] || { ok: 0, n: 0 };
      per[it.adapter].n++;
      if (results[i].startsWith(it.expected)) per[it.adapter].ok++;
      const alone = it.ref_adapter_text.replace(/<\|endoftext\|>|<\|im_end\|>/g, '');
      if (results[i] === alone) same++;
    }
    for (const [name, { ok, n }] of Object.entries(per)) {
      console.log(`${name}: ${ok}/${n} exact`);
      assert.ok(ok / n >= 0.97, `${name}: ${ok}/${n}`);
    }
    console.log(`responses equal to the single-request reference: ${same}/${items.length}`);
    assert.strictEqual(same, items.length);
    const loads = await metric(srv.url, 'loraplex_adapter_loads_total{tier="device"}');
    const evictions = await metric(srv.url, 'loraplex_adapter_evictions_total{tier="device"}');
    console.log(`device-tier loads ${loads}, evictions ${evictions}`);
    assert.ok(evictions >= 1, 'adapters swapped through the device tier');
  } finally { await stop(srv); }
});
