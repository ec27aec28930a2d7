/**
 * The examples: every request the demo prints gets the status it promises, in
 * the Express, Koa, Fastify and plain node:http apps, with a JSON error body; the entry
 * points (`npm start` and friends) start, print working curl lines and stop
 * cleanly on SIGTERM; examples/pino.ts runs to the end and logs what it says.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { curlLine, DEMO_CASES, type DemoProviders, SAMPLE, startDemoProviders } from '../examples/demo.js';
import { createExampleApp as createExpressApp } from '../examples/express-app.js';
import { createExampleApp as createFastifyApp } from '../examples/fastify-app.js';
import { createExampleApp as createKoaApp } from '../examples/koa-app.js';
import { createExampleApp as createNodeApp, queryOf } from '../examples/node-http-app.js';
import type { Gate } from '../src/index.js';
import { rawGet } from './support/raw-http.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe.each([
  ['express', (gate: Gate): RequestListener => createExpressApp(gate)],
  ['koa', (gate: Gate): RequestListener => createKoaApp(gate).callback()],
  ['fastify', (gate: Gate): RequestListener => createFastifyApp(gate).listener],
  ['node:http', (gate: Gate): RequestListener => createNodeApp(gate)],
])('%s demo app', (_label, createApp) => {
  let providers: DemoProviders;
  let app: RequestListener;
  // Providers, gate and app per test: whatever one case caches or creates, the next starts afresh.
  beforeEach(async () => {
    providers = await startDemoProviders();
    app = createApp(providers.gate);
  });
  afterEach(() => providers.close());

  it.each(DEMO_CASES.map((demoCase) => [demoCase.title, demoCase] as const))('%s', async (_title, demoCase) => {
    let req = demoCase.method === 'GET' ? request(app).get(demoCase.path) : request(app).post(demoCase.path);
    if (demoCase.authorization !== undefined) req = req.set('Authorization', demoCase.authorization);
    const res = await req;
    expect(res.status).toBe(demoCase.status);
    if (res.status === 401 || res.status === 403)
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="api"/);
    if (res.status === 400)
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="api", error="invalid_request"/);
    if (res.status >= 400) {
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.body).toEqual({ error: expect.any(String), error_description: expect.any(String) });
    }
  });

  it('answers a repeated connection token or Authorization header with 400 invalid_request', async () => {
    const { userId, token } = SAMPLE.connection;
    const twice = await request(app).get(`/checks?user_id=${userId}&token=${token}&token=${token}`);
    expect(twice.status).toBe(400);
    expect(twice.body).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('token') });

    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const bearer = `Authorization: Bearer ${SAMPLE.readToken}`;
      const res = await rawGet(port, '/checks', [bearer, bearer]);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']?.[0]).toMatch(/error="invalid_request"/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('routes see who is calling', async () => {
    const me = await request(app).get('/me').set('Authorization', `Bearer ${SAMPLE.writeToken}`);
    expect(me.body).toMatchObject({ provider: 'onlineornot', subject: 'tok_writer' });
    const anonymous = await request(app).get('/public');
    expect(anonymous.body).toEqual({ hello: 'anonymous' });
    const viaConnection = await request(app).get(
      `/checks?user_id=${SAMPLE.connection.userId}&token=${SAMPLE.connection.token}`,
    );
    expect(viaConnection.body.owner).toBe(SAMPLE.connection.userId);
  });
});

it('curlLine quotes the URL and the header for a shell', () => {
  const post = DEMO_CASES.find((c) => c.method === 'POST' && c.authorization !== undefined);
  expect(post).toBeDefined();
  expect(curlLine('http://127.0.0.1:3000', post as (typeof DEMO_CASES)[number])).toBe(
    `curl -i -X POST -H 'Authorization: ${post?.authorization}' 'http://127.0.0.1:3000${post?.path}'`,
  );
});

/** Entry points still running after a failed test; stopped so no process outlives the suite. */
const children = new Set<ChildProcess>();
afterEach(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  children.clear();
});

/** Starts an example entry point; resolves with its base URL and output so far once it has printed everything. */
function startEntryPoint(file: string): Promise<{ child: ChildProcess; baseUrl: string; output: () => string }> {
  // PORT=0: a free port, so the test never collides with a running demo.
  const child = spawn(process.execPath, ['--import', 'tsx', file], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  return new Promise((resolve, reject) => {
    const onData = () => {
      const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
      if (url !== undefined && output.includes('Ctrl+C to stop.')) {
        child.stdout.off('data', onData);
        resolve({ child, baseUrl: url, output: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${file} exited early (${code}):\n${output}`)));
  });
}

describe.each([['examples/express.ts'], ['examples/koa.ts'], ['examples/fastify.ts'], ['examples/node-http.ts']])(
  '%s',
  (file) => {
    it('prints a curl line per case, answers them as promised, and exits 0 on SIGTERM', {
      timeout: 60_000,
    }, async () => {
      const { child, baseUrl, output } = await startEntryPoint(file);
      try {
        for (const demoCase of DEMO_CASES) {
          expect(output()).toContain(`# ${demoCase.status}  ${demoCase.title}\n${curlLine(baseUrl, demoCase)}\n`);
          const headers: Record<string, string> = {};
          if (demoCase.authorization !== undefined) headers.authorization = demoCase.authorization;
          const res = await fetch(`${baseUrl}${demoCase.path}`, { method: demoCase.method, headers });
          await res.arrayBuffer();
          expect(res.status, demoCase.title).toBe(demoCase.status);
        }
      } finally {
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        child.kill('SIGTERM');
        // Exit code 0 means the signal was handled and nothing was left open on the event loop.
        expect(await exited).toBe(0);
      }
      expect(output()).toContain('SIGTERM: shutting down');
    });
  },
);

describe('node:http demo app', () => {
  it('keeps every value of a repeated query parameter, and `__proto__` as a plain name', () => {
    expect(Object.entries(queryOf('/checks?__proto__=a&x=1&__proto__=b&y=%20'))).toEqual([
      ['__proto__', ['a', 'b']],
      ['x', '1'],
      ['y', ' '],
    ]);
    expect(Object.entries(queryOf('/checks'))).toEqual([]);
  });

  it('answers a target that is no route with 404 as JSON, an absolute-form one too', async () => {
    const providers = await startDemoProviders();
    const server = createServer(createNodeApp(providers.gate));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const unknown = await request(server).get('/nowhere?token=a&token=b');
      expect(unknown.status).toBe(404);
      expect(unknown.body).toEqual({ error: 'not_found', error_description: expect.any(String) });
      // Node passes an absolute-form target on as it is (here with a port `new URL` would refuse).
      const { port } = server.address() as AddressInfo;
      const absolute = await rawGet(port, 'http://127.0.0.1:99999/checks', []);
      expect(absolute.status).toBe(404);
      expect(JSON.parse(absolute.body)).toEqual({ error: 'not_found', error_description: expect.any(String) });
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await providers.close();
    }
  });
});

/** Runs an example script to its end; resolves with its exit code and output. */
function runToEnd(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('examples/pino.ts', () => {
  it('logs requests and gate events as JSON lines, prints metrics, exits 0', { timeout: 60_000 }, async () => {
    const { code, stdout, stderr } = await runToEnd('examples/pino.ts');
    expect(code, stderr).toBe(0);
    // pino writes asynchronously: its lines and the metrics block may interleave.
    const lines = stdout.split('\n');
    const logLines = lines
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const metricsPart = lines.filter((line) => line.startsWith('tokengate_')).join('\n');
    expect(stdout).toContain('\n# tokengate metrics\n');

    const requests = logLines.filter((line) => line.component === 'client').map((line) => [line.what, line.status]);
    expect(requests).toEqual([
      ['valid bearer token (cache miss)', 200],
      ['same token again (cache hit)', 200],
      ['unknown bearer token', 401],
      ['no credential', 401],
      ['valid connection token', 200],
      ['cached token while the provider fails (served stale)', 200],
      ['uncached token while the provider fails', 503],
      ['uncached token, breaker open (fails fast)', 503],
      ['after recovery (half-open probe)', 200],
      ['after recovery', 200],
    ]);
    const eventTypes = new Set(logLines.filter((line) => line.component === 'tokengate').map((line) => line.type));
    expect([...eventTypes].sort()).toEqual([
      'breaker',
      'cache',
      'held_back',
      'provider_error',
      'retry',
      'stale',
      'verify',
    ]);
    const stats = logLines.find((line) => line.msg === 'gate stats')?.stats;
    expect(stats).toMatchObject({ stale: 1, heldBack: 1, breakers: { onlineornot: 'closed', partoo: 'closed' } });
    expect(metricsPart).toMatch(/^tokengate_held_back_total\{provider="onlineornot",reason="open"\} 1$/m);

    expect(metricsPart).toMatch(/^tokengate_stale_total\{provider="onlineornot"\} 1$/m);
    expect(metricsPart).toMatch(/^tokengate_breaker_transitions_total\{provider="onlineornot",state="open"\} 1$/m);
    expect(metricsPart).toMatch(/^tokengate_verify_total\{provider="partoo",outcome="accepted"\} 1$/m);
    // Durations as a histogram (fixed buckets, a sum and a count), which an alert rates over a window: a summary
    // over the process's whole life would keep every duration, and its max would stay up after one slow call.
    const verified = [
      ...metricsPart.matchAll(/^tokengate_verify_total\{provider="onlineornot",outcome="\w+"\} (\d+)$/gm),
    ];
    const verifications = verified.reduce((sum, match) => sum + Number(match[1]), 0);
    expect(verifications).toBeGreaterThan(0);
    const metricLines = metricsPart.split('\n');
    expect(metricLines).toContain(
      `tokengate_verify_duration_ms_bucket{provider="onlineornot",le="+Inf"} ${verifications}`,
    );
    expect(metricLines).toContain(`tokengate_verify_duration_ms_count{provider="onlineornot"} ${verifications}`);
    expect(metricsPart).toMatch(/^tokengate_verify_duration_ms_sum\{provider="onlineornot"\} \d+\.\d$/m);
    const buckets = [
      ...metricsPart.matchAll(/^tokengate_verify_duration_ms_bucket\{provider="onlineornot",le="[^"]+"\} (\d+)$/gm),
    ];
    const cumulative = buckets.map((match) => Number(match[1]));
    expect(cumulative).toEqual([...cumulative].sort((a, b) => a - b));
    expect(metricsPart).not.toContain('quantile=');
    expect(stdout).toContain('\n# TYPE tokengate_verify_duration_ms histogram\ntokengate_verify_duration_ms_bucket{');

    // The example's fake credentials never reach its logs.
    const secrets = ['example-read-token', 'example-other-token', 'example-unknown-token', 'example-connection-token'];
    for (const secret of [...secrets, 'example-partoo-api-key']) expect(stdout + stderr).not.toContain(secret);
  });
});
