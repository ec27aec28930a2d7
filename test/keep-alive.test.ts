/**
 * What a keep-alive client sees: many requests over one connection, where the
 * gate remembers the connection's last credential, key and context (its fast
 * path). Whatever it remembers, an invalidated, evicted, expired or changed
 * credential is decided afresh on the very next request.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import Koa from 'koa';
import { Client } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import * as expressGate from '../adapters/express.js';
import * as koaGate from '../adapters/koa.js';
import { type CacheOptions, createGate, type Gate, onlineOrNot, partoo } from '../src/index.js';
import { type MockOnlineOrNot, mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';

const READ = 'uptime_checks (read)';
const TOKEN = 'SECRETkeepAlive0a1b2c';
const OTHER = 'SECRETkeepAliveOther9z';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});

// The previous majors, installed under other names (`npm:express@4`, `npm:koa@2`) without type declarations.
const express4 = createRequire(import.meta.url)('express4') as typeof express;
const Koa2 = createRequire(import.meta.url)('koa2') as typeof Koa;

/** An Express app answering `/checks` (needs READ) with the context's subject. */
function expressApp(framework: typeof express): (gate: Gate) => RequestListener {
  return (gate) => {
    const app = framework();
    app.get('/checks', expressGate.authenticate(gate), expressGate.requires(READ), (req, res) => {
      res.json({ subject: req.auth?.subject });
    });
    return app;
  };
}

/** The same in Koa, whose own error handler answers the AuthErrors (status, challenge). */
function koaApp(Framework: typeof Koa): (gate: Gate) => RequestListener {
  return (gate) => {
    const app = new Framework();
    app.use(koaGate.authenticate(gate));
    app.use(koaGate.requires(READ));
    app.use((ctx) => {
      ctx.body = { subject: ctx.state.auth?.subject };
    });
    return app.callback();
  };
}

const apps: ReadonlyArray<[string, (gate: Gate) => RequestListener]> = [
  ['express 5', expressApp(express)],
  ['express 4', expressApp(express4)],
  ['koa 3', koaApp(Koa)],
  ['koa 2', koaApp(Koa2)],
];

async function setup(build: (gate: Gate) => RequestListener, cache: CacheOptions = {}) {
  const mock = await mockOnlineOrNot({
    tokens: { [TOKEN]: { id: 'tok-main', permissions: [READ] }, [OTHER]: { id: 'tok-other', permissions: [READ] } },
  });
  cleanup.push(() => mock.close());
  const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], cache, retry: false });
  cleanup.push(() => gate.close());
  const server: Server = createServer(build(gate));
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  /** One keep-alive connection, like a client's pool of one. */
  const client = new Client(origin, { pipelining: 1 });
  cleanup.push(() => client.close());
  const send = async (authorization: string | string[]) => {
    const res = await client.request({ method: 'GET', path: '/checks', headers: { authorization } });
    // The frameworks' own error handlers answer HTML or text; only the 200s are read.
    const body = res.statusCode === 200 ? ((await res.body.json()) as { subject?: string }) : await res.body.text();
    return { status: res.statusCode, body, challenge: res.headers['www-authenticate'] };
  };
  return { mock, gate, origin, send, connections: () => connections };
}

const asBearer = (token: string) => `Bearer ${token}`;

/** Sends TOKEN three times: one upstream verification, then two requests from the connection's memory. */
async function warm(mock: MockOnlineOrNot, send: (authorization: string) => Promise<{ status: number }>) {
  for (let i = 0; i < 3; i++) expect((await send(asBearer(TOKEN))).status).toBe(200);
  expect(mock.calls.verify).toBe(1);
}

describe.each(apps)('one keep-alive connection (%s)', (_name, build) => {
  it('serves repeated requests from the cache, counted as hits, over one connection', async () => {
    const { mock, gate, send, connections } = await setup(build);
    await warm(mock, send);
    expect((await send(asBearer(TOKEN))).body).toEqual({ subject: 'tok-main' });
    expect(gate.stats()).toMatchObject({ hits: 3, misses: 1, upstreamCalls: 1 });
    expect(connections()).toBe(1);
  });

  it('invalidate() and clear() take effect on the next request over the same connection', async () => {
    const { mock, gate, send } = await setup(build);
    await warm(mock, send);
    mock.removeToken(TOKEN);
    gate.invalidate({ headers: { authorization: asBearer(TOKEN) } });
    const revoked = await send(asBearer(TOKEN));
    expect(revoked.status).toBe(401);
    expect(revoked.challenge).toContain('error="invalid_token"');

    mock.setToken(TOKEN, { id: 'tok-main', permissions: [READ] });
    gate.clear();
    expect((await send(asBearer(TOKEN))).status).toBe(200);
    expect((await send(asBearer(TOKEN))).status).toBe(200);
    mock.removeToken(TOKEN);
    gate.clear();
    expect((await send(asBearer(TOKEN))).status).toBe(401);
  });

  it('an entry evicted by another connection is verified again', async () => {
    const { mock, origin, send } = await setup(build, { max: 1 });
    await warm(mock, send);
    const other = new Client(origin);
    cleanup.push(() => other.close());
    const res = await other.request({ method: 'GET', path: '/checks', headers: { authorization: asBearer(OTHER) } });
    await res.body.dump();
    expect(mock.calls.verify).toBe(2);
    mock.removeToken(TOKEN);
    expect((await send(asBearer(TOKEN))).status).toBe(401);
    expect(mock.calls.verify).toBe(3);
  });

  it('an expired entry is verified again', async () => {
    // A ttl the three warming requests always fit in, and a sleep that always outlasts it, but ends well inside the
    // second for which a connection reuses its remembered entry without reading the store: the memo itself must
    // see that the entry expired.
    const { mock, send } = await setup(build, { ttl: 500 });
    await warm(mock, send);
    await sleep(700);
    mock.removeToken(TOKEN);
    expect((await send(asBearer(TOKEN))).status).toBe(401);
    expect(mock.calls.verify).toBe(2);
  });

  it("another credential on the same connection gets that credential's answer", async () => {
    const { mock, send } = await setup(build);
    await warm(mock, send);
    expect((await send(asBearer(OTHER))).body).toEqual({ subject: 'tok-other' });
    expect((await send(asBearer(TOKEN))).body).toEqual({ subject: 'tok-main' });
    const unknown = await send(asBearer('SECRETunknownToken00'));
    expect(unknown.status).toBe(401);
    // The same token under a differently spelled scheme is the same credential.
    expect((await send(`bearer  ${TOKEN}`)).body).toEqual({ subject: 'tok-main' });
    expect(mock.calls.verify).toBe(3);
  });

  it('a malformed or repeated header after a remembered one is still a 400', async () => {
    const { mock, send } = await setup(build);
    await warm(mock, send);
    const repeated = await send([asBearer(TOKEN), asBearer(TOKEN)]);
    expect(repeated.status).toBe(400);
    expect(repeated.challenge).toContain('error="invalid_request"');
    const malformed = await send(`${asBearer(TOKEN)} extra`);
    expect(malformed.status).toBe(400);
    expect((await send('Basic dXNlcjpwYXNz')).status).toBe(401);
    expect((await send(asBearer(TOKEN))).status).toBe(200);
  });
});

describe('one keep-alive connection, a gate with a query-credential provider too', () => {
  it('a header credential the connection sent before plus a query credential is a 400', async () => {
    const oon = await mockOnlineOrNot({ tokens: { [TOKEN]: { id: 'tok-main', permissions: [READ] } } });
    cleanup.push(() => oon.close());
    const pt = await mockPartoo({ apiKey: 'key', tokens: [] });
    cleanup.push(() => pt.close());
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: 'key', baseUrl: pt.url, permissions: [READ] })],
    });
    cleanup.push(() => gate.close());
    const app = express();
    app.get('/checks', expressGate.authenticate(gate), expressGate.requires(READ), (_req, res) => {
      res.json({});
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    cleanup.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    const client = new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    cleanup.push(() => client.close());
    const get = async (path: string) => {
      const res = await client.request({ method: 'GET', path, headers: { authorization: asBearer(TOKEN) } });
      await res.body.dump();
      return res.statusCode;
    };
    expect(await get('/checks')).toBe(200);
    expect(await get('/checks')).toBe(200);
    expect(await get('/checks?user_id=u1&token=t1')).toBe(400);
  });
});
