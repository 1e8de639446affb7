// The official openai Node SDK against the real llm-sidecar facade in front
// of the real fake upstream (both started here, on free loopback ports):
// its timeout header and its retries, as an app uses them. What reached the
// upstream is read back at GET /_fake/requests.
//
// Run by scripts/test (`node --test tests/node`); LLM_SIDECAR_BIN names the
// sidecar binary, the fake upstream is beside it.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const root = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const sidecarBin = process.env.LLM_SIDECAR_BIN ?? join(root, 'target/debug/llm-sidecar');
const fakeBin = join(dirname(sidecarBin), 'fake-upstream');

const children = [];
let facade;
let upstream;
let token;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

function start(bin, args) {
  // The sidecar sees only the keys a test gives it, never the machine's.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.endsWith('_API_KEY')),
  );
  env.LLM_SIDECAR_LOG = 'warn';
  const child = spawn(bin, args, { env, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  return child;
}

async function until(ready, what) {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (await ready().catch(() => false)) return;
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error(`${what} did not start`);
}

async function upstreamRequests() {
  const response = await fetch(`${upstream.replace(/\/v1$/, '')}/_fake/requests`);
  const recorded = await response.json();
  return recorded.filter((request) => request.path.endsWith('/chat/completions'));
}

before(async () => {
  const work = mkdtempSync(join(tmpdir(), 'llm-sidecar-node-'));
  const fakePort = await freePort();
  start(fakeBin, ['--listen', `127.0.0.1:${fakePort}`]);
  upstream = `http://127.0.0.1:${fakePort}/v1`;
  await until(async () => (await fetch(`${upstream}/models`)).ok, 'fake-upstream');
  const httpPort = await freePort();
  const config = join(work, 'sidecar.toml');
  writeFileSync(
    config,
    `[server]
uds = "${join(work, 'sidecar.sock')}"
tcp = ""
http = "127.0.0.1:${httpPort}"

[ledger]
path = "${join(work, 'ledger.sqlite')}"

[providers.fake]
base_url = "${upstream}"
circuit_failures = 0

[retry]
base_delay_ms = 10

[[routes]]
model = "fake-*"
provider = "fake"
`,
  );
  start(sidecarBin, ['serve', '--config', config]);
  facade = `http://127.0.0.1:${httpPort}/v1`;
  const tokenFile = join(work, 'token');
  await until(async () => existsSync(tokenFile), 'llm-sidecar');
  token = readFileSync(tokenFile, 'utf8').trim();
  await until(
    async () => (await fetch(`${facade}/models`, { headers: { authorization: `Bearer ${token}` } })).ok,
    'llm-sidecar',
  );
});

after(() => {
  for (const child of children) child.kill('SIGTERM');
});

beforeEach(async () => {
  await fetch(`${upstream.replace(/\/v1$/, '')}/_fake/requests`, { method: 'DELETE' });
});

const hello = [{ role: 'user', content: 'hello from node' }];

test('a 3.5 s per-request timeout is the SDK\'s to end, not cut short at 3 s', async () => {
  // The SDK sends `x-stainless-timeout: 3` (whole seconds, truncated); a
  // sidecar taking it for 3 s would answer 504 at ~2.98 s.
  const client = new OpenAI({ baseURL: facade, apiKey: token, maxRetries: 0 });
  const began = Date.now();
  await assert.rejects(
    client.chat.completions.create(
      { model: 'fake-model', messages: hello, fake: { hang: true } },
      { timeout: 3500 },
    ),
    (error) => {
      assert.ok(error instanceof OpenAI.APIConnectionTimeoutError, `${error}`);
      return true;
    },
  );
  const waited = Date.now() - began;
  assert.ok(waited >= 3400 && waited < 6000, `waited ${waited} ms`);
});

test('a failure the sidecar already retried is not retried by the SDK', async () => {
  const client = new OpenAI({ baseURL: facade, apiKey: token }); // maxRetries: 2
  await assert.rejects(
    client.chat.completions.create({ model: 'fake-model', messages: hello, fake: { status: 503 } }),
    (error) => {
      assert.ok(error instanceof OpenAI.InternalServerError, `${error}`);
      assert.equal(error.headers.get('x-should-retry'), 'false');
      assert.equal(error.headers.get('x-llm-attempts'), '3');
      return true;
    },
  );
  // The sidecar's three attempts; the SDK's two retries would make nine.
  assert.equal((await upstreamRequests()).length, 3);
});

test('a rate limit stays a RateLimitError with its Retry-After', async () => {
  const client = new OpenAI({ baseURL: facade, apiKey: token, maxRetries: 0 });
  for (let call = 0; call < 6; call += 1) {
    await assert.rejects(
      client.chat.completions.create(
        { model: 'fake-model', messages: hello, fake: { status: 429, retry_after: '1' } },
        { headers: { 'x-llm-max-attempts': '1' } },
      ),
      (error) => {
        // Never the circuit's 503, however many came before.
        assert.ok(error instanceof OpenAI.RateLimitError, `${error}`);
        assert.equal(error.headers.get('retry-after'), '1');
        return true;
      },
    );
  }
});
