// harness.cjs - start and stop a real `loraplex serve` for the e2e tests.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BIN = process.env.LORAPLEX_BIN;
const REPO = process.env.LORAPLEX_REPO;
// LORAPLEX_TEST_DEVICE=cuda (or cpu, auto) runs every test server on that device.
const DEVICE = process.env.LORAPLEX_TEST_DEVICE;

function tmpdir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// A private copy of the demo adapters, so tests may add and remove some.
function loraDir(names = ['math', 'reverse', 'sort', 'fortune-chat']) {
  const dir = tmpdir('lp-e2e-loras-');
  for (const n of names)
    fs.cpSync(path.join(REPO, 'models/tinylm-adapters', n), path.join(dir, n), { recursive: true });
  return dir;
}

async function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function start(args = [], opts = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const full = ['serve', '--model', path.join(REPO, 'models/tinylm'), '--port', String(port),
      '--threads', '1', ...(DEVICE ? ['--device', DEVICE] : []), ...args];
    const proc = spawn(BIN, full, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env || {}) } });
    let log = '';
    proc.stdout.on('data', (d) => { log += d; });
    proc.stderr.on('data', (d) => { log += d; });
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20000;
    let up = false, dead = false;
    exited.then(() => { dead = true; });
    while (Date.now() < deadline && !dead) {
      try {
        const r = await fetch(url + '/health');
        if (r.status === 200) { up = true; break; }
      } catch (_) { /* not yet */ }
      await sleep(50);
    }
    if (up) return { proc, url, port, exited, log: () => log };
    proc.kill('SIGKILL');
    if (!/cannot listen/.test(log)) throw new Error('server did not start:\n' + log);
  }
  throw new Error('no free port');
}

// Stops the server with SIGTERM and checks it shut down cleanly: exit status
// 0 and no sanitizer report in its log (ASan/UBSan builds), so a crash or a
// leak at shutdown fails the test that started the server.
async function stop(srv) {
  if (srv.proc.exitCode === null && srv.proc.signalCode === null) srv.proc.kill('SIGTERM');
  const res = await srv.exited;
  const log = srv.log();
  if (res.code !== 0 || /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(log))
    throw new Error(`server did not shut down cleanly (exit ${res.code}, signal ${res.signal}):\n` + log.slice(-4000));
  return res;
}

async function post(url, body, headers = {}) {
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  return { status: r.status, json, text, headers: r.headers };
}

async function metric(url, name) {
  const t = await (await fetch(url + '/metrics')).text();
  const line = t.split('\n').find((l) => l.startsWith(name + '{') || l.startsWith(name + ' '));
  return line ? parseFloat(line.split(' ').pop()) : NaN;
}

module.exports = { BIN, REPO, tmpdir, loraDir, start, stop, post, metric, sleep };
