/**
 * tokengate/koa on real Koa 2 and 3 apps, through supertest, against the
 * mock OnlineOrNot and Partoo servers on 127.0.0.1. Errors go through Koa's
 * own error handling: it applies the AuthError's status, headers and expose.
 */
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import Koa, { type Middleware } from 'koa';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { authenticate, requires, requiresAny } from '../adapters/koa.js';
import { AuthError, createGate, type Gate, onlineOrNot, partoo } from '../src/index.js';
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

// `koa2` is `npm:koa@2`, which has no type declarations under that name;
// the Koa 3 types cover everything these tests touch.
const Koa2 = createRequire(import.meta.url)('koa2') as typeof Koa;

let oon: MockOnlineOrNot;
let partooMock: MockPartoo;

// Mocks per test: no call count, fault or connection carries over from another test.
beforeEach(async () => {
  ({ oon, partooMock } = await startMocks());
});
afterEach(async () => {
  await Promise.all([oon.close(), partooMock.close()]);
});

function makeGate(overrides: { oonUrl?: string; partooKey?: string } = {}): Gate {
  return createGate({
    providers: [
      onlineOrNot({ baseUrl: overrides.oonUrl ?? oon.url }),
      partoo({ apiKey: overrides.partooKey ?? PARTOO_KEY, baseUrl: partooMock.url, permissions: [READ] }),
    ],
  });
}

/**
 * A route: runs `middleware` in order for `method path`, else passes on.
 * (What @koa/router does, kept inline so the tests need no router.)
 */
function route(method: string, path: string, ...middleware: Middleware[]): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== method || ctx.path !== path) return next();
    const run = async (i: number): Promise<void> => {
      const current = middleware[i];
      if (current) await current(ctx, () => run(i + 1));
    };
    await run(0);
  };
}

/** Answers with what the route saw of `ctx.state.auth`. */
const showAuth: Middleware = (ctx) => {
  const { auth } = ctx.state;
  ctx.body = {
    mark: ROUTE_MARK,
    auth: auth === undefined ? null : { provider: auth.provider, subject: auth.subject, permissions: auth.permissions },
  };
};

/** Koa's usual JSON error middleware: renders from the error's fields; `authError` shows `instanceof AuthError`. */
const jsonErrors: Middleware = async (ctx, next) => {
  try {
    await next();
  } catch (err) {
    if (err instanceof AuthError) {
      ctx.set(err.headers);
      ctx.status = err.status;
      ctx.body = { authError: true, code: err.code, message: err.expose ? err.message : 'internal' };
    } else {
      ctx.status = 500;
      ctx.body = { authError: false, code: 'internal', message: 'internal' };
    }
  }
};

function buildApp(Framework: typeof Koa, gate: Gate, options: { jsonErrors?: boolean } = {}): Koa {
  const app = new Framework();
  // Koa logs unexposed errors (the 500s) to stderr unless silent.
  app.silent = true;
  if (options.jsonErrors) app.use(jsonErrors);
  app.use(route('GET', '/checks', authenticate(gate), requires(READ), showAuth));
  app.use(route('POST', '/checks', authenticate(gate), requires(WRITE), showAuth));
  app.use(route('GET', '/checks/any', authenticate(gate), requiresAny(WRITE, 'admin'), showAuth));
  app.use(route('GET', '/me', authenticate(gate), showAuth));
  app.use(route('GET', '/public', authenticate(gate, { optional: true }), showAuth));
  app.use(route('GET', '/public/guarded', authenticate(gate, { optional: true }), requires(READ), showAuth));
  app.use(route('GET', '/unmounted', requires(READ), showAuth));
  return app;
}

/** An HTTP server on 127.0.0.1 for `app`; closed after the test. */
const servers: Server[] = [];
async function listen(app: Koa): Promise<Server> {
  const server = createServer(app.callback());
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** The TCP port `server` listens on. */
function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('server is not listening on TCP');
  return address.port;
}

function expectNoSecrets(res: { headers: Record<string, unknown>; text: string }): void {
  const seen = `${JSON.stringify(res.headers)}\n${res.text}`;
  for (const secret of SECRETS) expect(seen).not.toContain(secret);
}

describe.each([
  ['koa 3', Koa],
  ['koa 2', Koa2],
])('%s', (_label, Framework) => {
  let gate: Gate;
  let server: Server;

  beforeEach(async () => {
    // A fresh gate per test: no cached verdicts or breaker state carried over.
    gate = makeGate();
    server = await listen(buildApp(Framework, gate));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((done) => s.close(done))));
    await gate.close();
  });

  describe('authenticate + requires', () => {
    it('lets a Bearer token with the permission through, with ctx.state.auth set', async () => {
      const res = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(200);
      expect(res.body).toEqual({
        mark: ROUTE_MARK,
        auth: { provider: 'onlineornot', subject: 'tok_read', permissions: [READ] },
      });
    });

    it('lets a Partoo connection token from the query through', async () => {
      const res = await request(server).get(`/checks?${connectionQuery(CONNECTION)}`);
      expect(res.status).toBe(200);
      expect(res.body.auth).toEqual({ provider: 'partoo', subject: CONNECTION.userId, permissions: [READ] });
      expect(partooMock.calls.checkToken).toBe(1);
    });

    it('answers a second request from the cache and still runs the guard', async () => {
      await request(server).get('/checks').set('Authorization', bearer(TOKENS.read)).expect(200);
      const denied = await request(server).post('/checks').set('Authorization', bearer(TOKENS.read));
      expect(denied.status).toBe(403);
      expect(oon.calls.verify).toBe(1);
      expect(gate.stats().hits).toBe(1);
    });

    it('401 with a bare challenge when there is no credential; the message is the body', async () => {
      const res = await request(server).get('/checks');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.text).toBe('Authentication required');
      expect(oon.calls.total + partooMock.calls.total).toBe(0);
    });

    it('treats another scheme (Basic) as no credential', async () => {
      const res = await request(server).get('/checks').set('Authorization', 'Basic dXNlcjpwYXNz');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
    });

    it('400 invalid_request for a malformed Bearer token', async () => {
      for (const header of ['Bearer', 'Bearer two words', 'Bearer tok"en']) {
        const res = await request(server).get('/checks').set('Authorization', header);
        expect(res.status, header).toBe(400);
        expect(res.headers['www-authenticate'], header).toMatch(/^Bearer realm="api", error="invalid_request"/);
      }
      expect(oon.calls.total).toBe(0);
    });

    it('400 invalid_request for a repeated Authorization header', async () => {
      const res = await rawGet(portOf(server), '/checks', [
        `Authorization: ${bearer(TOKENS.read)}`,
        `Authorization: ${bearer(TOKENS.write)}`,
      ]);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']?.[0]).toMatch(/^Bearer realm="api", error="invalid_request"/);
      expect(res.body).toBe('Only one Authorization header is allowed');
      expect(oon.calls.total).toBe(0);
      // The same raw request with one header passes: the 400 is about the repeat.
      const single = await rawGet(portOf(server), '/checks', [`Authorization: ${bearer(TOKENS.read)}`]);
      expect(single.status).toBe(200);
    });

    it('401 invalid_token for an unknown or a disabled token', async () => {
      for (const token of [TOKENS.unknown, TOKENS.disabled]) {
        const res = await request(server).get('/checks').set('Authorization', bearer(token));
        expect(res.status).toBe(401);
        expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="api", error="invalid_token"/);
        expect(res.text).not.toContain(ROUTE_MARK);
        expectNoSecrets(res);
      }
    });

    it('401 invalid_token for a consumed connection token', async () => {
      const res = await request(server).get(`/checks?${connectionQuery(CONSUMED)}`);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      expectNoSecrets(res);
    });

    it('403 insufficient_scope naming the missing permission', async () => {
      const res = await request(server).post('/checks').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(403);
      const challenge = res.headers['www-authenticate'];
      expect(challenge).toMatch(/^Bearer realm="api", error="insufficient_scope"/);
      expect(challenge).toContain('scope="uptime_checks%20(write)"');
      expect(res.text).toBe(`Requires: ${WRITE}`);
      expectNoSecrets(res);
    });

    it('requiresAny passes with one of the permissions and names them all when none is there', async () => {
      const ok = await request(server).get('/checks/any').set('Authorization', bearer(TOKENS.write));
      expect(ok.status).toBe(200);
      expect(ok.body.auth.subject).toBe('tok_write');
      const denied = await request(server).get('/checks/any').set('Authorization', bearer(TOKENS.read));
      expect(denied.status).toBe(403);
      expect(denied.headers['www-authenticate']).toContain('scope="uptime_checks%20(write) admin"');
    });

    it('400 for credentials in two places (Bearer header and connection query)', async () => {
      const res = await request(server)
        .get(`/checks?${connectionQuery(CONNECTION)}`)
        .set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(400);
      expect(oon.calls.total + partooMock.calls.total).toBe(0);
    });
  });

  it('an app whose ctx.state.auth setter throws a non-Error gets a 500, not a request let through or left hanging', async () => {
    const app = new Framework();
    app.silent = true;
    app.use((ctx, next) => {
      Object.defineProperty(ctx.state, 'auth', {
        set: () => {
          throw undefined;
        },
        configurable: true,
      });
      return next();
    });
    app.use(authenticate(gate));
    app.use((ctx) => {
      ctx.body = ROUTE_MARK;
    });
    const guarded = await listen(app);
    const miss = await request(guarded).get('/').set('Authorization', bearer(TOKENS.read)).timeout(2000);
    const hit = await request(guarded).get('/').set('Authorization', bearer(TOKENS.read)).timeout(2000);
    expect([miss.status, hit.status]).toEqual([500, 500]);
    expect(miss.text + hit.text).not.toContain(ROUTE_MARK);
  });

  it("rejects, never throws, when the answer is known at once: a caller's own .catch() sees it", async () => {
    const app = new Framework();
    app.silent = true;
    const caught = (ctx: Koa.Context) => (error: AuthError) => {
      ctx.status = 202;
      ctx.body = `caught ${error.status}`;
    };
    // Not async: a synchronous throw would pass the .catch() by, to Koa's own handler.
    app.use((ctx, next) => (ctx.path === '/guarded' ? next() : authenticate(gate)(ctx, next).catch(caught(ctx))));
    app.use(authenticate(gate));
    app.use((ctx, next) => requires('admin')(ctx, next).catch(caught(ctx)));
    const caughtServer = await listen(app);
    expect((await request(caughtServer).get('/')).text).toBe('caught 401');
    expect((await request(caughtServer).get('/guarded').set('Authorization', bearer(TOKENS.read))).text).toBe(
      'caught 403',
    );
  });

  describe('provider failures', () => {
    it('503 when the provider resets connections; the body is the message, never the route body', async () => {
      oon.fault = { kind: 'reset' };
      const res = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(503);
      expect(res.text).toBe('Token provider onlineornot is unavailable');
      expect(res.headers['www-authenticate']).toBeUndefined();
    });

    it("gives each request waiting on one failed verification its own error: one's CORS header is not another's", async () => {
      oon.fault = { kind: 'status', status: 503 };
      const app = new Framework();
      app.silent = true;
      // What @koa/cors does on an error (keepHeadersOnError): it replaces err.headers with its own copy.
      app.use(async (ctx, next) => {
        const origin = ctx.get('Origin');
        try {
          await next();
        } catch (error) {
          const failed = error as { headers?: Record<string, string> };
          failed.headers = { ...failed.headers, 'Access-Control-Allow-Origin': origin };
          throw error;
        }
      });
      app.use(authenticate(gate));
      const corsServer = await listen(app);
      const origins = [0, 1, 2, 3, 4, 5].map((i) => `https://site${i}.example`);
      const answers = await Promise.all(
        origins.map((origin) =>
          request(corsServer).get('/').set('Origin', origin).set('Authorization', bearer(TOKENS.read)),
        ),
      );
      expect(answers.map((res) => res.status)).toEqual(origins.map(() => 503));
      expect(answers.map((res) => res.headers['access-control-allow-origin'])).toEqual(origins);
      expect(oon.calls.verify).toBeLessThan(origins.length * 3);
    });

    it('503 when the provider is not listening at all', async () => {
      const closed = await mockOnlineOrNot();
      await closed.close();
      const deadGate = makeGate({ oonUrl: closed.url });
      try {
        const deadServer = await listen(buildApp(Framework, deadGate));
        const res = await request(deadServer).get('/me').set('Authorization', bearer(TOKENS.read));
        expect(res.status).toBe(503);
        expect(res.text).not.toContain(ROUTE_MARK);
      } finally {
        await deadGate.close();
      }
    });

    it("turns the provider's 429 into 503 with Retry-After", async () => {
      oon.fault = { kind: 'status', status: 429, retryAfter: 7 };
      const res = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('7');
      expect(res.text).not.toContain(ROUTE_MARK);
    });

    it('500 with the generic body when Partoo refuses the server key (expose: false)', async () => {
      const wrongKeyGate = makeGate({ partooKey: 'wrong-key-also-secret' });
      try {
        const wrongKeyServer = await listen(buildApp(Framework, wrongKeyGate));
        const res = await request(wrongKeyServer).get(`/checks?${connectionQuery(CONNECTION)}`);
        expect(res.status).toBe(500);
        expect(res.text).toBe('Internal Server Error');
        expectNoSecrets(res);
      } finally {
        await wrongKeyGate.close();
      }
    });
  });

  describe('connection token in the query string', () => {
    it('400 for a repeated token parameter', async () => {
      const res = await request(server).get(`/checks?user_id=${CONNECTION.userId}&token=a&token=b`);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
      expect(partooMock.calls.total).toBe(0);
    });

    it('400 for a bracketed token parameter', async () => {
      const res = await request(server).get('/checks?token[x]=1&user_id=u');
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
      expect(partooMock.calls.total).toBe(0);
    });

    it('400 when only one of user_id and token is there', async () => {
      const res = await request(server).get(`/checks?user_id=${CONNECTION.userId}`);
      expect(res.status).toBe(400);
      expect(partooMock.calls.total).toBe(0);
    });
  });

  describe('optional: true', () => {
    it('lets an anonymous request through with ctx.state.auth undefined', async () => {
      const res = await request(server).get('/public');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ mark: ROUTE_MARK, auth: null });
    });

    it('still authenticates a request that carries a token', async () => {
      const res = await request(server).get('/public').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(200);
      expect(res.body.auth.subject).toBe('tok_read');
    });

    it('still rejects a bad token (401) and a malformed one (400)', async () => {
      const bad = await request(server).get('/public').set('Authorization', bearer(TOKENS.unknown));
      expect(bad.status).toBe(401);
      expect(bad.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      const malformed = await request(server).get('/public').set('Authorization', 'Bearer a b');
      expect(malformed.status).toBe(400);
    });

    it('with requires after it, an anonymous request gets the 401 challenge', async () => {
      const res = await request(server).get('/public/guarded');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.text).not.toContain(ROUTE_MARK);
    });
  });

  it('requires() without authenticate() is a 500 with the generic body, and says what to fix', async () => {
    const app = buildApp(Framework, gate);
    const emitted: unknown[] = [];
    app.on('error', (err: unknown) => emitted.push(err));
    const res = await request(await listen(app))
      .get('/unmounted')
      .set('Authorization', bearer(TOKENS.read));
    expect(res.status).toBe(500);
    expect(res.text).toBe('Internal Server Error');
    // The app's 'error' event (its logs) carries the explanation.
    expect(emitted).toHaveLength(1);
    expect(String((emitted[0] as Error).message)).toContain('mount authenticate(gate) before requires()');
  });

  describe('with a JSON error middleware', () => {
    let jsonServer: Server;
    beforeEach(async () => {
      jsonServer = await listen(buildApp(Framework, gate, { jsonErrors: true }));
    });

    it('renders JSON from err.code, err.status and err.headers; err is an AuthError', async () => {
      const missing = await request(jsonServer).get('/checks');
      expect(missing.status).toBe(401);
      expect(missing.body).toEqual({
        authError: true,
        code: 'credentials_required',
        message: 'Authentication required',
      });
      expect(missing.headers['www-authenticate']).toBe('Bearer realm="api"');

      const forbidden = await request(jsonServer).post('/checks').set('Authorization', bearer(TOKENS.read));
      expect(forbidden.status).toBe(403);
      expect(forbidden.body).toMatchObject({ authError: true, code: 'insufficient_scope' });

      oon.fault = { kind: 'status', status: 429, retryAfter: 7 };
      const unavailable = await request(jsonServer).get('/checks').set('Authorization', bearer(TOKENS.write));
      expect(unavailable.status).toBe(503);
      expect(unavailable.body).toMatchObject({ authError: true, code: 'provider_unavailable' });
      expect(unavailable.headers['retry-after']).toBe('7');

      const unmounted = await request(jsonServer).get('/unmounted');
      expect(unmounted.body).toEqual({ authError: false, code: 'internal', message: 'internal' });
    });
  });
});
