/**
 * The demos: every request the demo prints gets the status it promises, in
 * the Express and the Koa app, and `npm start`'s entry points start, print
 * working curl lines and stop cleanly on SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { RequestListener } from 'node:http';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { curlLine, DEMO_CASES, type DemoProviders, SAMPLE, startDemoProviders } from '../examples/demo.js';
import { createExampleApp as createExpressApp } from '../examples/express-app.js';
import { createExampleApp as createKoaApp } from '../examples/koa-app.js';
import type { Gate } from '../src/index.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe.each([
  ['express', (gate: Gate): RequestListener => createExpressApp(gate)],
  ['koa', (gate: Gate): RequestListener => createKoaApp(gate).callback()],
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
    if (res.status >= 400) expect(res.body).toMatchObject({ error: expect.any(String), message: expect.any(String) });
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

describe.each([['examples/express.ts'], ['examples/koa.ts']])('%s', (file) => {
  it('prints a curl line per case, answers them as promised, and exits 0 on SIGTERM', { timeout: 60_000 }, async () => {
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
});
