/**
 * tokengate/fastify on real Fastify 4 and 5 apps, through `app.inject()` and
 * a server listening on 127.0.0.1, against the mock OnlineOrNot and Partoo
 * servers on 127.0.0.1. Errors go through Fastify's own error handling: its
 * default handler applies the AuthError's statusCode and headers.
 */
import { connect as connectHttp2, type IncomingHttpHeaders } from 'node:http2';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { FastifyInstance as Fastify4Instance } from 'fastify4';
import Koa from 'koa';
import request from 'supertest';
import { Client } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { authenticate, type FastifyHook, requires, requiresAny, tokengate } from '../adapters/fastify.js';
import { AuthError, createGate, type Gate, type GateOptions, onlineOrNot, partoo } from '../src/index.js';
import { type MockOnlineOrNot, type MockPartoo, mockOnlineOrNot } from '../src/testing/index.js';
import {
  bearer,
  CONNECTION,
  CONSUMED,
  connectionQuery,
  PARTOO_KEY,
  READ,
  ROUTE_MARK,
  SECRETS,
  startMocks,
  TOKENS,
  WRITE,
} from './support/adapter-fixture.js';
import { rawGet } from './support/raw-http.js';

// `fastify4` is `npm:fastify@4`; its own declarations describe another module name, which
// tokengate's `request.auth` does not augment. The Fastify 5 types cover everything these tests touch.
const Fastify4 = createRequire(import.meta.url)('fastify4') as typeof Fastify;

let oon: MockOnlineOrNot;
let partooMock: MockPartoo;

beforeAll(async () => {
  ({ oon, partooMock } = await startMocks());
});
afterAll(async () => {
  await Promise.all([oon.close(), partooMock.close()]);
});

function makeGate(
  overrides: { oonUrl?: string; partooKey?: string; admission?: GateOptions['admission']; connections?: number } = {},
): Gate {
  return createGate({
    providers: [
      onlineOrNot({
        baseUrl: overrides.oonUrl ?? oon.url,
        ...(overrides.connections === undefined ? {} : { connections: overrides.connections }),
      }),
      partoo({ apiKey: overrides.partooKey ?? PARTOO_KEY, baseUrl: partooMock.url, permissions: [READ] }),
    ],
    ...(overrides.admission === undefined ? {} : { admission: overrides.admission }),
  });
}

/** Answers with what the route saw of `request.auth`. */
function showAuth(request: FastifyRequest) {
  const { auth } = request;
  return {
    mark: ROUTE_MARK,
    auth: auth === undefined ? null : { provider: auth.provider, subject: auth.subject, permissions: auth.permissions },
  };
}

/** JSON from the error's fields; `authError` shows whether `instanceof AuthError` held. */
function jsonErrorHandler(error: Error, _request: FastifyRequest, reply: FastifyReply): void {
  if (error instanceof AuthError) {
    void reply
      .headers(error.headers)
      .code(error.status)
      .send({ authError: true, code: error.code, message: error.expose ? error.message : 'internal' });
  } else {
    void reply.code(500).send({ authError: false, code: 'internal', message: 'internal' });
  }
}

type Framework = typeof Fastify;

/**
 * The Express suite's routes, on an app with the `tokengate` plugin registered: `authenticate` as an
 * `onRequest` hook (before the body is read), the guards as `preHandler` hooks; `/public/guarded` has
 * both as `preHandler`s, `/scoped` gets its `authenticate` from a plugin's `addHook`.
 */
function buildApp(framework: Framework, gate: Gate, errorHandler?: typeof jsonErrorHandler): FastifyInstance {
  const app = framework();
  void app.register(tokengate);
  app.get('/checks', { onRequest: authenticate(gate), preHandler: requires(READ) }, showAuth);
  app.post('/checks', { onRequest: authenticate(gate), preHandler: requires(WRITE) }, showAuth);
  app.get('/checks/any', { onRequest: authenticate(gate), preHandler: requiresAny(WRITE, 'admin') }, showAuth);
  app.get('/me', { onRequest: authenticate(gate) }, showAuth);
  app.get('/public', { onRequest: authenticate(gate, { optional: true }) }, showAuth);
  app.get('/public/guarded', { preHandler: [authenticate(gate, { optional: true }), requires(READ)] }, showAuth);
  app.get('/unmounted', { preHandler: requires(READ) }, showAuth);
  void app.register(async (scope) => {
    scope.addHook('onRequest', authenticate(gate));
    scope.get('/scoped', { preHandler: requires(READ) }, showAuth);
  });
  if (errorHandler) app.setErrorHandler(errorHandler);
  return app;
}

/** Apps closed after each test. */
const apps: FastifyInstance[] = [];
function track(app: FastifyInstance): FastifyInstance {
  apps.push(app);
  return app;
}

/** `app` listening on 127.0.0.1; its origin. */
async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

/** `GET` or `POST` through `app.inject()`, with an Authorization header when given. */
async function send(app: FastifyInstance, url: string, authorization?: string, method: 'GET' | 'POST' = 'GET') {
  const res = await app.inject({ method, url, headers: authorization === undefined ? {} : { authorization } });
  return { status: res.statusCode, headers: res.headers, text: res.body, json: () => res.json() };
}

function expectNoSecrets(res: { headers: Record<string, unknown>; text: string }): void {
  const seen = `${JSON.stringify(res.headers)}\n${res.text}`;
  for (const secret of SECRETS) expect(seen).not.toContain(secret);
}

describe.each([
  ['fastify 5', Fastify],
  ['fastify 4', Fastify4],
])('%s', (_label, framework) => {
  let gate: Gate;
  let app: FastifyInstance;

  beforeEach(() => {
    // A fresh gate per test: no cached verdicts or breaker state carried over.
    gate = makeGate();
    app = track(buildApp(framework, gate));
  });
  afterEach(async () => {
    // The gate's pools close once their requests are done (a permissions call left running after an early 401
    // included), so no call of this test lands in the next one's counts.
    await Promise.all(apps.splice(0).map((a) => a.close()));
    await gate.close();
    oon.fault = undefined;
    partooMock.fault = undefined;
    oon.resetCalls();
    partooMock.resetCalls();
  });

  describe('authenticate + requires', () => {
    it('lets a Bearer token with the permission through, with request.auth set', async () => {
      const res = await send(app, '/checks', bearer(TOKENS.read));
      expect(res.status).toBe(200);
      expect(res.json()).toEqual({
        mark: ROUTE_MARK,
        auth: { provider: 'onlineornot', subject: 'tok_read', permissions: [READ] },
      });
    });

    it('accepts a lower-case scheme name', async () => {
      const res = await send(app, '/checks', `bearer ${TOKENS.read}`);
      expect(res.status).toBe(200);
      expect(res.json().auth.subject).toBe('tok_read');
    });

    it('lets a Partoo connection token from the query through', async () => {
      const res = await send(app, `/checks?${connectionQuery(CONNECTION)}`);
      expect(res.status).toBe(200);
      expect(res.json().auth).toEqual({ provider: 'partoo', subject: CONNECTION.userId, permissions: [READ] });
      expect(partooMock.calls.checkToken).toBe(1);
    });

    it('a logout route revokes with request itself (its query typed unknown), as with Express and Koa', async () => {
      app.post('/logout', async (request) => ({ revoked: await gate.revoke(request) }));
      app.post('/forget', async (request) => ({ forgotten: gate.invalidate(request) }));
      expect((await send(app, '/checks', bearer(TOKENS.read))).status).toBe(200);
      expect((await send(app, '/logout', bearer(TOKENS.read), 'POST')).json()).toEqual({ revoked: true });
      expect((await send(app, '/checks', bearer(TOKENS.read))).status).toBe(200);
      expect(oon.calls.verify).toBe(2);
      // A connection token, read from the query Fastify types unknown: cached, then forgotten.
      expect((await send(app, `/checks?${connectionQuery(CONNECTION)}`)).status).toBe(200);
      expect((await send(app, `/forget?${connectionQuery(CONNECTION)}`, undefined, 'POST')).json()).toEqual({
        forgotten: true,
      });
    });

    it('answers a second request from the cache and still runs the guard', async () => {
      expect((await send(app, '/checks', bearer(TOKENS.read))).status).toBe(200);
      const denied = await send(app, '/checks', bearer(TOKENS.read), 'POST');
      expect(denied.status).toBe(403);
      expect(oon.calls.verify).toBe(1);
      expect(gate.stats().hits).toBe(1);
    });

    it('works as an onRequest hook added by a plugin', async () => {
      expect((await send(app, '/scoped', bearer(TOKENS.read))).json().auth.subject).toBe('tok_read');
      const missing = await send(app, '/scoped');
      expect(missing.status).toBe(401);
      expect(missing.headers['www-authenticate']).toBe('Bearer realm="api"');
    });

    it('401 with a bare challenge when there is no credential', async () => {
      const res = await send(app, '/checks');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.text).not.toContain(ROUTE_MARK);
      expect(oon.calls.total + partooMock.calls.total).toBe(0);
    });

    it('treats another scheme (Basic) as no credential', async () => {
      const res = await send(app, '/checks', 'Basic dXNlcjpwYXNz');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
    });

    it('400 invalid_request for a malformed Bearer token', async () => {
      for (const header of ['Bearer', 'Bearer two words', 'Bearer tok"en']) {
        const res = await send(app, '/checks', header);
        expect(res.status, header).toBe(400);
        expect(res.headers['www-authenticate'], header).toMatch(/^Bearer realm="api", error="invalid_request"/);
      }
      expect(oon.calls.total).toBe(0);
    });

    it('401 invalid_token for an unknown or a disabled token', async () => {
      for (const token of [TOKENS.unknown, TOKENS.disabled]) {
        const res = await send(app, '/checks', bearer(token));
        expect(res.status).toBe(401);
        expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="api", error="invalid_token"/);
        expect(res.text).not.toContain(ROUTE_MARK);
        expectNoSecrets(res);
      }
    });

    it('401 invalid_token for a consumed connection token', async () => {
      const res = await send(app, `/checks?${connectionQuery(CONSUMED)}`);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      expectNoSecrets(res);
    });

    it('403 insufficient_scope naming the missing permission', async () => {
      const res = await send(app, '/checks', bearer(TOKENS.read), 'POST');
      expect(res.status).toBe(403);
      const challenge = res.headers['www-authenticate'];
      expect(challenge).toMatch(/^Bearer realm="api", error="insufficient_scope"/);
      expect(challenge).toContain('scope="uptime_checks%20(write)"');
      expect(res.text).not.toContain(ROUTE_MARK);
      expectNoSecrets(res);
    });

    it('requiresAny passes with one of the permissions and names them all when none is there', async () => {
      const ok = await send(app, '/checks/any', bearer(TOKENS.write));
      expect(ok.status).toBe(200);
      expect(ok.json().auth.subject).toBe('tok_write');
      const denied = await send(app, '/checks/any', bearer(TOKENS.read));
      expect(denied.status).toBe(403);
      expect(denied.headers['www-authenticate']).toContain('scope="uptime_checks%20(write) admin"');
    });

    it('400 for credentials in two places (Bearer header and connection query)', async () => {
      const res = await send(app, `/checks?${connectionQuery(CONNECTION)}`, bearer(TOKENS.read));
      expect(res.status).toBe(400);
      expect(oon.calls.total + partooMock.calls.total).toBe(0);
    });
  });

  describe('provider failures', () => {
    it('503 when the provider resets connections, never the route body', async () => {
      oon.fault = { kind: 'reset' };
      const res = await send(app, '/checks', bearer(TOKENS.read));
      expect(res.status).toBe(503);
      expect(res.text).not.toContain(ROUTE_MARK);
      expect(res.headers['www-authenticate']).toBeUndefined();
      expectNoSecrets(res);
    });

    it('503 when the provider is not listening at all', async () => {
      const closed = await mockOnlineOrNot();
      await closed.close();
      const deadGate = makeGate({ oonUrl: closed.url });
      try {
        const res = await send(track(buildApp(framework, deadGate)), '/me', bearer(TOKENS.read));
        expect(res.status).toBe(503);
        expect(res.text).not.toContain(ROUTE_MARK);
      } finally {
        await deadGate.close();
      }
    });

    it("turns the provider's 429 into 503 with Retry-After", async () => {
      oon.fault = { kind: 'status', status: 429, retryAfter: 7 };
      const res = await send(app, '/checks', bearer(TOKENS.read));
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('7');
      expect(res.text).not.toContain(ROUTE_MARK);
    });

    it('500 without the API key when Partoo refuses the server key', async () => {
      const wrongKeyGate = makeGate({ partooKey: 'wrong-key-also-secret' });
      try {
        const res = await send(track(buildApp(framework, wrongKeyGate)), `/checks?${connectionQuery(CONNECTION)}`);
        expect(res.status).toBe(500);
        expect(res.text).not.toContain(ROUTE_MARK);
        expect(res.text).not.toContain('wrong-key-also-secret');
        expectNoSecrets(res);
      } finally {
        await wrongKeyGate.close();
      }
    });
  });

  describe('connection token in the query string', () => {
    it('400 for a repeated token parameter', async () => {
      const res = await send(app, `/checks?user_id=${CONNECTION.userId}&token=a&token=b`);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
      expect(partooMock.calls.total).toBe(0);
    });

    it('400 for a bracketed token parameter (a stray key under Fastify’s query parser)', async () => {
      const res = await send(app, '/checks?token[x]=1&user_id=u');
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
      expect(partooMock.calls.total).toBe(0);
    });

    it('400 when only one of user_id and token is there', async () => {
      const res = await send(app, `/checks?user_id=${CONNECTION.userId}`);
      expect(res.status).toBe(400);
      expect(partooMock.calls.total).toBe(0);
    });
  });

  describe('optional: true', () => {
    it('lets an anonymous request through with request.auth undefined', async () => {
      const res = await send(app, '/public');
      expect(res.status).toBe(200);
      expect(res.json()).toEqual({ mark: ROUTE_MARK, auth: null });
    });

    it('still authenticates a request that carries a token', async () => {
      const res = await send(app, '/public', bearer(TOKENS.read));
      expect(res.status).toBe(200);
      expect(res.json().auth.subject).toBe('tok_read');
    });

    it('still rejects a bad token (401) and a malformed one (400)', async () => {
      const bad = await send(app, '/public', bearer(TOKENS.unknown));
      expect(bad.status).toBe(401);
      expect(bad.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      const malformed = await send(app, '/public', 'Bearer a b');
      expect(malformed.status).toBe(400);
    });

    it('with requires after it, an anonymous request gets the 401 challenge', async () => {
      const res = await send(app, '/public/guarded');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.text).not.toContain(ROUTE_MARK);
    });
  });

  it('requires() without authenticate() is a 500 that says what to fix', async () => {
    const res = await send(app, '/unmounted', bearer(TOKENS.read));
    expect(res.status).toBe(500);
    // Fastify's default handler answers the error's message as JSON.
    expect(res.json().message).toBe('tokengate: mount authenticate(gate) before requires()');
    expect(res.text).not.toContain(ROUTE_MARK);
  });

  it("requires() behind another library's request.auth is the same 500, never a pass", async () => {
    const foreign = track(framework());
    // What another auth plugin might leave in request.auth: not a tokengate context.
    const foreignAuth: FastifyHook = (request, _reply, done) => {
      (request as { auth?: unknown }).auth = { payload: { scope: READ }, can: () => true };
      done();
    };
    foreign.get('/foreign', { preHandler: [foreignAuth, requires(READ)] }, () => ROUTE_MARK);
    const res = await send(foreign, '/foreign');
    expect(res.status).toBe(500);
    expect(res.text).toContain('mount authenticate(gate) before requires()');
    expect(res.text).not.toContain(ROUTE_MARK);
  });

  it('authenticate() with anything but a gate throws at registration; mounted uncalled, it is a 500 saying so', async () => {
    expect(() => authenticate({} as Gate)).toThrow(/tokengate\/fastify: authenticate\(gate\) expects a gate/);
    const uncalled = track(framework());
    uncalled.get('/uncalled', { onRequest: authenticate as unknown as FastifyHook }, () => ROUTE_MARK);
    const res = await send(uncalled, '/uncalled', bearer(TOKENS.read));
    expect(res.status).toBe(500);
    expect(res.json().message).toMatch(/mount authenticate\(gate\), not authenticate/);
  });

  it("passes Fastify's request.ip, under its trustProxy setting, to the gate", async () => {
    const seen: Array<string | undefined> = [];
    const ipGate = makeGate({
      connections: 2, // one verification at a time
      admission: {
        clientKey: (req) => {
          seen.push(req.ip);
          return req.ip ?? '';
        },
      },
    });
    try {
      const proxied = track(framework({ trustProxy: true }));
      void proxied.register(tokengate);
      proxied.get('/me', { onRequest: authenticate(ipGate) }, showAuth);
      // Two new tokens at once on a provider that verifies one at a time: the second waits, and only a
      // verification that waits is asked who its client is.
      oon.latency = 50;
      const [first, second] = await Promise.all(
        [TOKENS.read, TOKENS.write].map((token) =>
          proxied.inject({ url: '/me', headers: { authorization: bearer(token), 'x-forwarded-for': '127.0.0.9' } }),
        ),
      );
      expect([first?.statusCode, second?.statusCode]).toEqual([200, 200]);
      expect(seen).toEqual(['127.0.0.9']);
    } finally {
      oon.latency = 0;
      await ipGate.close();
    }
  });

  describe('with a custom error handler', () => {
    let jsonApp: FastifyInstance;
    beforeEach(() => {
      jsonApp = track(buildApp(framework, gate, jsonErrorHandler));
    });

    it('renders JSON from error.code, error.status and error.headers; the error is an AuthError', async () => {
      const missing = await send(jsonApp, '/checks');
      expect(missing.status).toBe(401);
      expect(missing.json()).toEqual({
        authError: true,
        code: 'credentials_required',
        message: 'Authentication required',
      });
      expect(missing.headers['www-authenticate']).toBe('Bearer realm="api"');

      const forbidden = await send(jsonApp, '/checks', bearer(TOKENS.read), 'POST');
      expect(forbidden.status).toBe(403);
      expect(forbidden.json()).toMatchObject({ authError: true, code: 'insufficient_scope' });
      expect(forbidden.headers['www-authenticate']).toContain('error="insufficient_scope"');

      const unknown = await send(jsonApp, '/checks', bearer(TOKENS.unknown));
      expect(unknown.json()).toMatchObject({ authError: true, code: 'invalid_token' });
      expectNoSecrets(unknown);
    });

    it('gets provider_unavailable with Retry-After, and a plain Error for a missing authenticate()', async () => {
      oon.fault = { kind: 'status', status: 429, retryAfter: 7 };
      const unavailable = await send(jsonApp, '/checks', bearer(TOKENS.read));
      expect(unavailable.status).toBe(503);
      expect(unavailable.json()).toMatchObject({ authError: true, code: 'provider_unavailable' });
      expect(unavailable.headers['retry-after']).toBe('7');

      const unmounted = await send(jsonApp, '/unmounted');
      expect(unmounted.status).toBe(500);
      expect(unmounted.json()).toEqual({ authError: false, code: 'internal', message: 'internal' });
    });

    it('gets provider_misconfigured with expose false', async () => {
      const wrongKeyGate = makeGate({ partooKey: 'another-wrong-key' });
      try {
        const wrongKeyApp = track(buildApp(framework, wrongKeyGate, jsonErrorHandler));
        const res = await send(wrongKeyApp, `/checks?${connectionQuery(CONNECTION)}`);
        expect(res.status).toBe(500);
        expect(res.json()).toEqual({ authError: true, code: 'provider_misconfigured', message: 'internal' });
        expect(res.text).not.toContain('another-wrong-key');
      } finally {
        await wrongKeyGate.close();
      }
    });
  });

  describe('the tokengate plugin', () => {
    it('declares request.auth on every request, in child scopes too', async () => {
      const plain = track(framework());
      void plain.register(tokengate);
      plain.get('/', (request) => ({ declared: 'auth' in request, auth: request.auth ?? null }));
      void plain.register(async (scope) => {
        scope.get('/child', (request) => ({ declared: 'auth' in request }));
      });
      expect((await send(plain, '/')).json()).toEqual({ declared: true, auth: null });
      expect((await send(plain, '/child')).json()).toEqual({ declared: true });
    });

    it('can be registered twice (by two plugins of the app)', async () => {
      const twice = track(framework());
      void twice.register(tokengate);
      void twice.register(tokengate);
      twice.get('/me', { onRequest: authenticate(gate) }, showAuth);
      expect((await send(twice, '/me', bearer(TOKENS.read))).json().auth.subject).toBe('tok_read');
    });

    it('given options ({ gate }), fails the app at startup instead of leaving routes open', async () => {
      const app = track(framework());
      void app.register(tokengate as never, { gate } as never);
      app.get('/me', showAuth);
      await expect(app.ready()).rejects.toThrow(
        "tokengate/fastify: the tokengate plugin takes no options, got gate: it only declares request.auth; protect routes with app.addHook('onRequest', authenticate(gate))",
      );
    });

    it("takes Fastify's own register options", async () => {
      const app = track(framework());
      void app.register(tokengate, { prefix: '/api', logLevel: 'warn' } as never);
      app.get('/me', { onRequest: authenticate(gate) }, showAuth);
      expect((await send(app, '/me', bearer(TOKENS.read))).json().auth.subject).toBe('tok_read');
    });

    it('a hook registered as a plugin fails the app at startup, naming the mistake', async () => {
      const hooked = track(framework());
      void hooked.register(authenticate(gate) as never);
      await expect(hooked.ready()).rejects.toThrow(
        "tokengate/fastify: authenticate(gate) is a hook, not a plugin: app.addHook('onRequest', authenticate(gate))",
      );
      const guarded = track(framework());
      void guarded.register(requiresAny(READ) as never);
      await expect(guarded.ready()).rejects.toThrow('tokengate/fastify: requiresAny(...) is a hook, not a plugin');
    });

    it.each([
      ['authenticate', authenticate, "app.addHook('onRequest', authenticate(gate))"],
      ['requires', requires, "app.addHook('preHandler', requires('permission'))"],
      ['requiresAny', requiresAny, "app.addHook('preHandler', requiresAny('permission'))"],
    ] as const)(
      '%s registered uncalled, as a plugin, fails the app at startup saying so',
      async (name, factory, use) => {
        const app = track(framework());
        void app.register(factory as never);
        await expect(app.ready()).rejects.toThrow(
          `tokengate/fastify: ${name} was registered uncalled, as a plugin: ${use}`,
        );
      },
    );

    it('added as a hook, the plugin answers 500 naming the mistake, and the route is not reached', async () => {
      const app = track(framework());
      app.addHook('onRequest', tokengate as never);
      app.get('/me', () => ROUTE_MARK);
      const res = await send(app, '/me', bearer(TOKENS.read));
      expect(res.status).toBe(500);
      expect(res.json().message).toContain('tokengate/fastify: tokengate is the plugin (app.register(tokengate))');
      expect(res.text).not.toContain(ROUTE_MARK);
    });

    it('a hook called from an async function without done answers 500 saying so', async () => {
      const app = track(framework());
      const hook = authenticate(gate);
      app.addHook('onRequest', async (request, reply) => hook(request, reply, undefined as never));
      app.get('/me', () => ROUTE_MARK);
      const res = await send(app, '/me', bearer(TOKENS.read));
      expect(res.status).toBe(500);
      expect(res.json().message).toContain("tokengate/fastify hook called without Fastify's done callback");
    });

    it.each([
      ['onSend', 'authenticate(gate)'],
      ['preSerialization', 'authenticate(gate)'],
      ['preParsing', 'authenticate(gate)'],
      ['onSend', 'requires(...)'],
    ] as const)('added with addHook(%s), %s answers 500 naming the hooks to use', async (name, hook) => {
      const app = track(framework());
      const added = hook === 'authenticate(gate)' ? authenticate(gate) : requires(READ);
      app.addHook(name as 'onRequest', added);
      app.get('/me', () => ({ mark: ROUTE_MARK }));
      const res = await send(app, '/me');
      expect(res.status).toBe(500);
      expect(res.json().message).toBe(
        `tokengate/fastify: ${hook} was added as a hook that passes a payload or an error: add it as an onRequest, preValidation or preHandler hook (app.addHook('onRequest', authenticate(gate)))`,
      );
    });

    it.each(['authenticate(gate)', 'requires(...)'] as const)(
      'added with addHook(onResponse), %s logs on every request that it protects nothing',
      async (hook) => {
        const logged: string[] = [];
        const stream = { write: (line: string) => void logged.push(line) };
        const app = track(framework({ logger: { level: 'error', stream } }));
        app.addHook('onResponse', hook === 'authenticate(gate)' ? authenticate(gate) : requires(READ));
        app.get('/me', () => ({ mark: ROUTE_MARK }));
        for (let i = 0; i < 2; i++) await send(app, '/me');
        const errors = logged.filter((line) =>
          line.includes(`tokengate/fastify: ${hook} ran after the reply was sent`),
        );
        expect(errors).toHaveLength(2);
        expect(errors[0]).toContain('add it as an onRequest, preValidation or preHandler hook');
      },
    );

    it('authenticate reads an Authorization header an earlier hook set (from a cookie) or removed', async () => {
      const app = track(framework());
      app.addHook('onRequest', (request, _reply, done) => {
        if (request.url === '/stripped') delete request.headers.authorization;
        else request.headers.authorization ??= request.headers.cookie?.replace(/^session=/, 'Bearer ');
        done();
      });
      app.addHook('onRequest', authenticate(gate));
      app.get('/me', showAuth);
      app.get('/stripped', showAuth);
      const fromCookie = await app.inject({ url: '/me', headers: { cookie: `session=${TOKENS.read}` } });
      expect(fromCookie.json().auth.subject).toBe('tok_read');
      expect((await send(app, '/stripped', bearer(TOKENS.read))).status).toBe(401);
    });

    it("authenticate reads the headers a hook set through Fastify's request.headers setter", async () => {
      const app = track(framework());
      app.addHook('onRequest', (request, _reply, done) => {
        const apiToken = request.headers['x-api-token'];
        if (typeof apiToken === 'string') request.headers = { ...request.headers, authorization: `Bearer ${apiToken}` };
        done();
      });
      app.addHook('onRequest', authenticate(gate));
      app.get('/me', (request) => ({ seen: request.headers.authorization, subject: request.auth?.subject }));
      const alone = await app.inject({ url: '/me', headers: { 'x-api-token': TOKENS.read } });
      expect(alone.statusCode).toBe(200);
      expect(alone.json().subject).toBe('tok_read');
      // The gate checks the very token the route sees, not the one the client first sent.
      const both = await app.inject({
        url: '/me',
        headers: { 'x-api-token': TOKENS.write, authorization: bearer(TOKENS.read) },
      });
      expect(both.json()).toEqual({ seen: bearer(TOKENS.write), subject: 'tok_write' });
    });

    it('a request.auth another plugin made read-only is a 500, on a cache miss and on a hit', async () => {
      const app = track(framework());
      app.decorateRequest('auth', { getter: () => undefined } as never);
      await app.register(tokengate);
      app.get('/me', { onRequest: authenticate(gate) }, () => ROUTE_MARK);
      for (const _ of ['miss', 'hit']) {
        const res = await send(app, '/me', bearer(TOKENS.read));
        expect(res.status).toBe(500);
        expect(res.text).not.toContain(ROUTE_MARK);
      }
      expect(oon.calls.verify).toBe(1);
    });

    it.each(['onReady', 'onClose', 'preClose'] as const)(
      'added as an application hook (%s), a hook fails ready() or close() naming the mistake',
      async (name) => {
        const app = framework();
        app.addHook(name as 'onReady', authenticate(gate) as never);
        const message = 'tokengate/fastify: authenticate(gate) was added as an application hook';
        if (name === 'onReady') {
          await expect(app.ready()).rejects.toThrow(message);
          return;
        }
        await app.ready();
        await expect(app.close()).rejects.toThrow(message);
      },
    );

    it('added as onListen, whose errors Fastify only logs, a hook closes the server and prints the mistake: no route is served unprotected', async () => {
      const app = framework();
      app.addHook('onListen', authenticate(gate) as never);
      app.get('/me', () => ROUTE_MARK);
      const warnings: string[] = [];
      const onWarning = (warning: Error) => warnings.push(warning.message);
      process.on('warning', onWarning);
      try {
        await app.listen({ port: 0, host: '127.0.0.1' });
        await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
        expect(app.server.listening).toBe(false);
        expect(warnings).toEqual([
          expect.stringContaining('tokengate/fastify: authenticate(gate) was added as an application hook'),
        ]);
      } finally {
        process.off('warning', onWarning);
        await app.close();
      }
    });

    it.each(['onSend', 'onResponse', 'preSerialization'] as const)(
      'registered before the routes, the plugin refuses a route with a tokengate hook in %s',
      async (name) => {
        const app = track(framework());
        await app.register(tokengate);
        expect(() => app.get('/me', { [name]: [authenticate(gate)] }, () => ROUTE_MARK)).toThrow(
          `tokengate/fastify: route GET /me has a tokengate hook in ${name}, where it protects nothing`,
        );
        expect(() => app.get('/other', { [name]: requires(READ) }, () => ROUTE_MARK)).toThrow(
          `route GET /other has a tokengate hook in ${name}`,
        );
        // Its own hooks elsewhere, and any other hook there, are fine.
        app.get(
          '/fine',
          { onRequest: authenticate(gate), onSend: (_q, _r, payload, done) => done(null, payload) },
          () => ROUTE_MARK,
        );
        expect((await send(app, '/fine', bearer(TOKENS.read))).text).toBe(ROUTE_MARK);
      },
    );

    it('registered before the routes, the plugin refuses a route whose guard runs before its own authenticate(gate)', async () => {
      const app = track(framework());
      await app.register(tokengate);
      expect(() =>
        app.get('/me', { onRequest: requires(READ), preHandler: authenticate(gate) }, () => ROUTE_MARK),
      ).toThrow(
        'tokengate/fastify: route GET /me runs a tokengate guard in onRequest before its authenticate(gate) in preHandler',
      );
      expect(() => app.get('/same', { onRequest: [requiresAny(READ), authenticate(gate)] }, () => ROUTE_MARK)).toThrow(
        'route GET /same runs a tokengate guard in onRequest before its authenticate(gate) in onRequest',
      );
      // In order, or with the guard alone (authenticate is the app's own hook), the route is added.
      app.get('/fine', { onRequest: authenticate(gate), preHandler: requires(READ) }, () => ROUTE_MARK);
      app.get('/guard-only', { preHandler: requires(READ) }, () => ROUTE_MARK);
      expect((await send(app, '/fine', bearer(TOKENS.read))).text).toBe(ROUTE_MARK);
    });

    it.each([
      ['preHandler', 'requires', requires, "requires('permission')"],
      ['preValidation', 'requiresAny', requiresAny, "requiresAny('permission')"],
      ['onRequest', 'authenticate', authenticate, 'authenticate(gate)'],
    ] as const)(
      'registered before the routes, the plugin refuses a route with a factory uncalled in %s (%s)',
      async (name, factory, uncalled, call) => {
        const app = track(framework());
        await app.register(tokengate);
        expect(() => app.get('/x', { [name]: uncalled as never }, () => ROUTE_MARK)).toThrow(
          `tokengate/fastify: route GET /x has ${factory} uncalled in ${name}: add ${call}, the hook it makes`,
        );
        expect(() => app.get('/y', { [name]: [authenticate(gate), uncalled as never] }, () => ROUTE_MARK)).toThrow(
          `route GET /y has ${factory} uncalled in ${name}`,
        );
      },
    );

    it('without the plugin, a guard factory added uncalled answers every request a 500 naming it', async () => {
      const app = track(framework());
      const errors: string[] = [];
      app.setErrorHandler((error, _request, reply) => {
        errors.push((error as Error).message);
        reply.code(500).send('failed');
      });
      app.get('/x', { onRequest: authenticate(gate), preHandler: requires as never }, () => ROUTE_MARK);
      const res = await send(app, '/x', bearer(TOKENS.read));
      expect(res.status).toBe(500);
      expect(errors).toEqual([
        "tokengate/fastify: requires was added as a hook uncalled: app.addHook('preHandler', requires('permission'))",
      ]);
    });

    it('is optional: without it, the hooks set request.auth all the same', async () => {
      const bare = track(framework());
      bare.get('/checks', { onRequest: authenticate(gate), preHandler: requires(READ) }, showAuth);
      bare.get('/public', { onRequest: authenticate(gate, { optional: true }) }, (request) => ({
        declared: 'auth' in request,
      }));
      expect((await send(bare, '/checks', bearer(TOKENS.read))).json().auth.subject).toBe('tok_read');
      expect((await send(bare, '/checks')).status).toBe(401);
      expect((await send(bare, '/public')).json()).toEqual({ declared: true });
    });
  });

  describe('on a listening server', () => {
    let origin: string;
    let port: number;
    let connections: number;
    let client: Client;

    beforeEach(async () => {
      connections = 0;
      app.server.on('connection', () => connections++);
      origin = await listen(app);
      port = Number(new URL(origin).port);
      // One keep-alive connection, like a client's pool of one.
      client = new Client(origin, { pipelining: 1 });
    });
    afterEach(async () => {
      await client.close();
    });

    /** One request over the kept connection. */
    async function overClient(path: string, authorization?: string, method: 'GET' | 'POST' = 'GET') {
      const res = await client.request({ method, path, headers: authorization === undefined ? {} : { authorization } });
      const text = await res.body.text();
      return { status: res.statusCode, challenge: res.headers['www-authenticate'], text };
    }

    it('400 invalid_request for a repeated Authorization header', async () => {
      const res = await rawGet(port, '/checks', [
        `Authorization: ${bearer(TOKENS.read)}`,
        `Authorization: ${bearer(TOKENS.write)}`,
      ]);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']?.[0]).toMatch(/^Bearer realm="api", error="invalid_request"/);
      expect(res.body).not.toContain(ROUTE_MARK);
      expect(oon.calls.total).toBe(0);
      // The same raw request with one header passes: the 400 is about the repeat.
      const single = await rawGet(port, '/checks', [`Authorization: ${bearer(TOKENS.read)}`]);
      expect(single.status).toBe(200);
    });

    it('a repeated Authorization header is a 400 when a hook set other headers, and not when it set Authorization', async () => {
      const hooked = track(framework());
      hooked.addHook('onRequest', (request, _reply, done) => {
        const replace = request.url === '/replaced';
        // Replaced by a value other than the first the client sent (one equal to it is taken for no change).
        request.headers = replace
          ? { ...request.headers, authorization: bearer(TOKENS.write) }
          : { ...request.headers, 'x-tenant': 'a' };
        done();
      });
      hooked.addHook('onRequest', authenticate(gate));
      hooked.get('/other', () => ROUTE_MARK);
      hooked.get('/replaced', () => ROUTE_MARK);
      const hookedPort = Number(new URL(await listen(hooked)).port);
      const twice = [`Authorization: ${bearer(TOKENS.read)}`, `Authorization: ${bearer(TOKENS.write)}`];
      const other = await rawGet(hookedPort, '/other', twice);
      expect(other.status).toBe(400);
      expect(other.body).not.toContain(ROUTE_MARK);
      const replaced = await rawGet(hookedPort, '/replaced', twice);
      expect(replaced.status).toBe(200);
    });

    it('a token without the permission is a 403 on every request over one connection', async () => {
      for (let i = 0; i < 25; i++) {
        const res = await overClient('/checks', bearer(TOKENS.read), 'POST');
        expect(res.status, `request ${i}`).toBe(403);
        expect(res.challenge, `request ${i}`).toContain('error="insufficient_scope"');
        expect(res.text).not.toContain(ROUTE_MARK);
        // The same token where it has the permission, in between: the guard runs on every request.
        expect((await overClient('/checks', bearer(TOKENS.read))).status, `request ${i}`).toBe(200);
      }
      expect(oon.calls.verify).toBe(1);
      expect(connections).toBe(1);
    });

    it('switching tokens on one connection gives each token its own answer', async () => {
      const subject = async (authorization?: string) => {
        const res = await overClient('/me', authorization);
        return res.status === 200 ? (JSON.parse(res.text) as { auth: { subject: string } }).auth.subject : res.status;
      };
      for (let round = 0; round < 3; round++) {
        expect(await subject(bearer(TOKENS.read))).toBe('tok_read');
        expect(await subject(bearer(TOKENS.write))).toBe('tok_write');
        expect(await subject(bearer(TOKENS.unknown))).toBe(401);
        expect(await subject()).toBe(401);
        expect(await subject('Bearer a b')).toBe(400);
      }
      const anonymous = await overClient('/me');
      expect(anonymous.challenge).toBe('Bearer realm="api"');
      expect(oon.calls.verify).toBe(3);
      expect(connections).toBe(1);
    });

    it('a Partoo connection token from the query, then a Bearer token, on one connection', async () => {
      const viaQuery = await overClient(`/checks?${connectionQuery(CONNECTION)}`);
      expect(viaQuery.status).toBe(200);
      expect(JSON.parse(viaQuery.text).auth.provider).toBe('partoo');
      const viaHeader = await overClient('/checks', bearer(TOKENS.read));
      expect(JSON.parse(viaHeader.text).auth.provider).toBe('onlineornot');
      const both = await overClient(`/checks?${connectionQuery(CONNECTION)}`, bearer(TOKENS.read));
      expect(both.status).toBe(400);
      expect(connections).toBe(1);
    });
  });
});

it("the hooks fit Fastify 4's own declarations (for `npm run typecheck`), on a typed route", async () => {
  const gate = makeGate();
  const app = Fastify4() as unknown as Fastify4Instance;
  try {
    await app.register(tokengate);
    app.addHook('onRequest', authenticate(gate));
    app.get<{ Querystring: { page: string } }>(
      '/typed',
      { preHandler: [requiresAny(READ, WRITE)] },
      (request) => `page ${request.query.page}`,
    );
    const res = await app.inject({ url: '/typed?page=2', headers: { authorization: bearer(TOKENS.read) } });
    expect(res.body).toBe('page 2');
  } finally {
    await app.close();
    await gate.close();
  }
});

it("the hooks fit the declarations of a Fastify app served over HTTP/2 (for `npm run typecheck`), in a route's own options", async () => {
  const gate = makeGate();
  // `http2: true`: Fastify's request.raw is an Http2ServerRequest, not an IncomingMessage.
  const app = Fastify({ http2: true });
  await app.register(tokengate);
  app.get<{ Querystring: { page: string } }>(
    '/typed',
    { onRequest: authenticate(gate), preHandler: [requiresAny(READ, WRITE)] },
    (request) => `page ${request.query.page} for ${request.auth?.subject}`,
  );
  app.get('/write', { onRequest: [authenticate(gate)], preValidation: requires(WRITE) }, () => ROUTE_MARK);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const session = connectHttp2(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  /** One request on the HTTP/2 connection: its status, challenge and body. */
  const get = (path: string, authorization?: string) =>
    new Promise<{ status: unknown; challenge: unknown; body: string }>((resolve, reject) => {
      const stream = session.request({ ':path': path, ...(authorization === undefined ? {} : { authorization }) });
      let headers: IncomingHttpHeaders = {};
      let body = '';
      stream.on('response', (received) => {
        headers = received;
      });
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        body += chunk;
      });
      stream.on('end', () => resolve({ status: headers[':status'], challenge: headers['www-authenticate'], body }));
      stream.on('error', reject);
    });
  try {
    expect(await get('/typed?page=2', bearer(TOKENS.read))).toEqual({
      status: 200,
      challenge: undefined,
      body: 'page 2 for tok_read',
    });
    const anonymous = await get('/typed?page=2');
    expect([anonymous.status, anonymous.challenge]).toEqual([401, 'Bearer realm="api"']);
    const refused = await get('/write', bearer(TOKENS.read));
    expect(refused.status).toBe(403);
    expect(refused.challenge).toMatch(/^Bearer realm="api", error="insufficient_scope"/);
    expect(refused.body).not.toContain(ROUTE_MARK);
  } finally {
    session.close();
    await app.close();
    await gate.close();
  }
});

it('a tokengate/fastify hook mounted in Express or Koa is a 500 naming the mistake, before the gate is asked', async () => {
  const gate = makeGate();
  oon.resetCalls();
  try {
    const app = express();
    // 'test' keeps Express's default handler from logging the error; outside production it shows the message.
    app.set('env', 'test');
    app.get('/', authenticate(gate) as unknown as RequestHandler, (_req, res) => {
      res.send(ROUTE_MARK);
    });
    const inExpress = await request(app).get('/').set('Authorization', bearer(TOKENS.read));
    expect(inExpress.status).toBe(500);
    expect(inExpress.text).toContain('tokengate/fastify hook called without a Fastify request');
    expect(inExpress.text).not.toContain(ROUTE_MARK);

    const koa = new Koa();
    koa.silent = true;
    let thrown: unknown;
    koa.use(async (_ctx, next) => {
      try {
        await next();
      } catch (error) {
        thrown = error;
        throw error;
      }
    });
    koa.use(requires(READ) as unknown as Koa.Middleware);
    const inKoa = await request(koa.callback()).get('/').set('Authorization', bearer(TOKENS.read));
    expect(inKoa.status).toBe(500);
    expect((thrown as Error).message).toContain('tokengate/fastify hook called without a Fastify request');
    expect(oon.calls.total).toBe(0);
  } finally {
    await gate.close();
  }
});
