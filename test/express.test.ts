/**
 * tokengate/express on real Express 4 and 5 apps, through supertest, against
 * the mock OnlineOrNot and Partoo servers on 127.0.0.1.
 */
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { authenticate, requires, requiresAny } from '../adapters/express.js';
import {
  AuthError,
  type BearerCredential,
  createGate,
  extractBearer,
  type Gate,
  onlineOrNot,
  type Provider,
  partoo,
} from '../src/index.js';
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

// `express4` is `npm:express@4`, which has no type declarations under that
// name; the Express 5 types cover everything these tests touch.
const express4 = createRequire(import.meta.url)('express4') as typeof express;

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

/** Answers with what the route saw of `req.auth`. */
const showAuth: RequestHandler = (req, res) => {
  res.json({
    mark: ROUTE_MARK,
    auth:
      req.auth === undefined
        ? null
        : { provider: req.auth.provider, subject: req.auth.subject, permissions: req.auth.permissions },
  });
};

/** JSON from the error's fields; `authError` shows whether `instanceof AuthError` held. */
const jsonErrorHandler: ErrorRequestHandler = (err: unknown, _req, res, _next) => {
  if (err instanceof AuthError) {
    res.set(err.headers);
    res.status(err.status).json({ authError: true, code: err.code, message: err.expose ? err.message : 'internal' });
  } else {
    res.status(500).json({ authError: false, code: 'internal', message: 'internal' });
  }
};

function buildApp(framework: typeof express, gate: Gate, errorHandler?: ErrorRequestHandler): Express {
  const app = framework();
  // 'test' keeps Express's default handler from logging every error to stderr.
  app.set('env', 'test');
  app.get('/checks', authenticate(gate), requires(READ), showAuth);
  app.post('/checks', authenticate(gate), requires(WRITE), showAuth);
  app.get('/checks/any', authenticate(gate), requiresAny(WRITE, 'admin'), showAuth);
  app.get('/me', authenticate(gate), showAuth);
  app.get('/public', authenticate(gate, { optional: true }), showAuth);
  app.get('/public/guarded', authenticate(gate, { optional: true }), requires(READ), showAuth);
  app.get('/unmounted', requires(READ), showAuth);
  if (errorHandler) app.use(errorHandler);
  return app;
}

/** An HTTP server on 127.0.0.1 for `app`; closed after the test. */
const servers: Server[] = [];
async function listen(app: Express): Promise<Server> {
  const server = createServer(app);
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

/** What a buggy route might do to `value`: grant itself WRITE and rename everything it can reach. */
function tamper(value: unknown, seen = new Set<unknown>()): void {
  if (typeof value !== 'object' || value === null || seen.has(value)) return;
  seen.add(value);
  const attempt = (change: () => unknown) => {
    try {
      change();
    } catch {
      // A frozen object refuses, as it should.
    }
  };
  const record = value as Record<PropertyKey, unknown>;
  if (value instanceof Set) attempt(() => value.add(WRITE));
  if (Array.isArray(value)) attempt(() => value.push(WRITE));
  attempt(() => {
    record.subject = 'mallory';
  });
  for (const key of Reflect.ownKeys(value)) {
    const child = record[key];
    tamper(child, seen);
    attempt(() => {
      record[key] = typeof child === 'string' ? 'mallory' : child;
    });
  }
}

function expectNoSecrets(res: { headers: Record<string, unknown>; text: string }): void {
  const seen = `${JSON.stringify(res.headers)}\n${res.text}`;
  for (const secret of SECRETS) expect(seen).not.toContain(secret);
}

describe("a custom provider's details", () => {
  it('reach every request as a frozen copy: a route cannot change them, and the provider keeps its own objects', async () => {
    // What a provider might hand over: an object of the app's own cache, a Buffer, a Date.
    const profile = { plan: 'pro', roles: ['reader'] };
    const provider: Provider<BearerCredential> = {
      name: 'profiles',
      cacheScope: 'profiles',
      extract: extractBearer,
      async verify() {
        const details = { profile, avatar: Buffer.from('png'), seen: new Date(0) };
        return { ok: true, principal: { subject: 'u1', permissions: [READ], details } };
      },
    };
    const gate = createGate({ providers: [provider] });
    const app = express();
    app.set('env', 'test');
    app.get('/tamper', authenticate(gate), (req, res) => {
      tamper(req.auth);
      res.status(204).end();
    });
    app.get('/details', authenticate(gate), (req, res) => {
      const details = req.auth?.details as { profile: typeof profile; avatar: Buffer };
      res.json({ profile: details.profile, avatar: details.avatar.toString() });
    });
    const server = await listen(app);
    try {
      const auth = { Authorization: bearer('profile-token-1') };
      expect((await request(server).get('/tamper').set(auth)).status).toBe(204);
      const res = await request(server).get('/details').set(auth);
      expect(res.body).toEqual({ profile: { plan: 'pro', roles: ['reader'] }, avatar: 'png' });
      // The app's own object is not frozen by being handed over.
      profile.roles.push('writer');
      expect(profile.roles).toEqual(['reader', 'writer']);
    } finally {
      await gate.close();
    }
  });
});

describe.each([
  ['express 5', express],
  ['express 4', express4],
])('%s', (_label, framework) => {
  let gate: Gate;
  let server: Server;

  beforeEach(async () => {
    // A fresh gate per test: no cached verdicts or breaker state carried over.
    gate = makeGate();
    server = await listen(buildApp(framework, gate));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((done) => s.close(done))));
    await gate.close();
  });

  describe('authenticate + requires', () => {
    it('an app that made req.auth read-only gets a 500 on a cache miss as on a hit, not a hung request', async () => {
      const app = framework();
      app.set('env', 'test');
      app.use((req, _res, next) => {
        Object.defineProperty(req, 'auth', { get: () => undefined, configurable: true });
        next();
      });
      app.get('/me', authenticate(gate), showAuth);
      const readOnly = await listen(app);
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on('unhandledRejection', onUnhandled);
      try {
        const miss = await request(readOnly).get('/me').set('Authorization', bearer(TOKENS.read)).timeout(2000);
        const hit = await request(readOnly).get('/me').set('Authorization', bearer(TOKENS.read)).timeout(2000);
        expect([miss.status, hit.status]).toEqual([500, 500]);
        expect(miss.text).not.toContain(ROUTE_MARK);
        expect(unhandled).toEqual([]);
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
    });

    it('an app whose req.auth setter throws a non-Error gets a 500, not a request let through', async () => {
      const app = framework();
      app.set('env', 'test');
      app.use((req, _res, next) => {
        Object.defineProperty(req, 'auth', {
          set: () => {
            throw undefined;
          },
          configurable: true,
        });
        next();
      });
      app.get('/me', authenticate(gate), (_req, res) => void res.send(ROUTE_MARK));
      const guarded = await listen(app);
      const miss = await request(guarded).get('/me').set('Authorization', bearer(TOKENS.read));
      const hit = await request(guarded).get('/me').set('Authorization', bearer(TOKENS.read));
      expect([miss.status, hit.status]).toEqual([500, 500]);
      expect(miss.text + hit.text).not.toContain(ROUTE_MARK);
    });

    it('a route that writes to req.auth changes nothing that another request sees', async () => {
      // A context is shared by every request with its token, and its permission list by every context with the
      // same list (the Partoo connection here is granted READ, as the read token is).
      const app = framework();
      app.set('env', 'test');
      app.get('/tamper', authenticate(gate), (req, res) => {
        tamper(req.auth);
        res.status(204).end();
      });
      const tamperServer = await listen(app);
      expect((await request(tamperServer).get('/tamper').set('Authorization', bearer(TOKENS.read))).status).toBe(204);
      expect((await request(tamperServer).get(`/tamper?${connectionQuery(CONNECTION)}`)).status).toBe(204);

      const read = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(read.body.auth).toEqual({ provider: 'onlineornot', subject: 'tok_read', permissions: [READ] });
      expect((await request(server).post('/checks').set('Authorization', bearer(TOKENS.read))).status).toBe(403);
      expect((await request(server).post(`/checks?${connectionQuery(CONNECTION)}`)).status).toBe(403);
      const connection = await request(server).get(`/checks?${connectionQuery(CONNECTION)}`);
      expect(connection.body.auth).toEqual({ provider: 'partoo', subject: CONNECTION.userId, permissions: [READ] });
    });

    it('lets a Bearer token with the permission through, with req.auth set', async () => {
      const res = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(200);
      expect(res.body).toEqual({
        mark: ROUTE_MARK,
        auth: { provider: 'onlineornot', subject: 'tok_read', permissions: [READ] },
      });
    });

    it('accepts a lower-case scheme name', async () => {
      const res = await request(server).get('/checks').set('Authorization', `bearer ${TOKENS.read}`);
      expect(res.status).toBe(200);
      expect(res.body.auth.subject).toBe('tok_read');
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

    it('401 with a bare challenge when there is no credential', async () => {
      const res = await request(server).get('/checks');
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
      expect(res.text).not.toContain(ROUTE_MARK);
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
      expect(res.body).not.toContain(ROUTE_MARK);
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
      expect(res.text).not.toContain(ROUTE_MARK);
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

  describe('provider failures', () => {
    it('503 when the provider resets connections, never the route body', async () => {
      oon.fault = { kind: 'reset' };
      const res = await request(server).get('/checks').set('Authorization', bearer(TOKENS.read));
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
        const deadServer = await listen(buildApp(framework, deadGate));
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

    it('500 without the API key when Partoo refuses the server key', async () => {
      const wrongKeyGate = makeGate({ partooKey: 'wrong-key-also-secret' });
      try {
        const wrongKeyServer = await listen(buildApp(framework, wrongKeyGate));
        const res = await request(wrongKeyServer).get(`/checks?${connectionQuery(CONNECTION)}`);
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
      const res = await request(server).get(`/checks?user_id=${CONNECTION.userId}&token=a&token=b`);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_request"/);
      expect(partooMock.calls.total).toBe(0);
    });

    it('400 for a bracketed token parameter (nested under the extended parser, a stray key under the simple one)', async () => {
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

  describe('req.auth', () => {
    const readAuth = { provider: 'onlineornot', subject: 'tok_read', permissions: [READ] };

    it('reaches a mounted sub-app, and comes back from one to an app that never ran tokengate', async () => {
      const down = framework();
      down.set('env', 'test');
      const guarded = framework();
      guarded.get('/x', requires(READ), showAuth);
      down.use('/sub', authenticate(gate), guarded);
      const up = framework(); // runs no tokengate middleware itself
      up.set('env', 'test');
      const authenticating = framework();
      authenticating.use(authenticate(gate));
      up.use('/sub', authenticating);
      up.get('/sub/x', showAuth);
      for (const app of [down, up]) {
        const res = await request(app).get('/sub/x').set('Authorization', bearer(TOKENS.read));
        expect(res.status).toBe(200);
        expect(res.body.auth).toEqual(readAuth);
      }
    });

    it('is what a later middleware set: requires() judges that, not the context it replaced', async () => {
      const app = framework();
      app.set('env', 'test');
      const replace: RequestHandler = (req, _res, next) => {
        (req as { auth?: unknown }).auth = { payload: { scope: READ } };
        next();
      };
      app.get('/replaced', authenticate(gate), replace, requires(READ), showAuth);
      app.get('/read', authenticate(gate), replace, (req, res) => {
        res.json(req.auth);
      });
      const guarded = await request(app).get('/replaced').set('Authorization', bearer(TOKENS.read));
      expect(guarded.status).toBe(500);
      expect(guarded.text).not.toContain(ROUTE_MARK);
      const read = await request(app).get('/read').set('Authorization', bearer(TOKENS.read));
      expect(read.body).toEqual({ payload: { scope: READ } });
    });

    it('is gone once a later middleware deletes it: requires() then refuses', async () => {
      const app = framework();
      app.set('env', 'test');
      const forget: RequestHandler = (req, _res, next) => {
        delete (req as { auth?: unknown }).auth;
        next();
      };
      app.get('/forgotten', authenticate(gate), forget, requires(READ), showAuth);
      const res = await request(app).get('/forgotten').set('Authorization', bearer(TOKENS.read));
      expect(res.status).toBe(500);
      expect(res.text).not.toContain(ROUTE_MARK);
    });

    it('is set on a plain Node request too, outside any Express app', async () => {
      const middleware = authenticate(gate);
      const plain = createServer((req, res) => {
        middleware(req, res, (error) => {
          const seen = req as typeof req & { auth?: { subject: string } };
          res.end(
            JSON.stringify({
              error: error !== undefined,
              own: Object.hasOwn(req, 'auth'),
              subject: seen.auth?.subject,
            }),
          );
        });
      });
      servers.push(plain);
      await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
      const res = await request(plain).get('/').set('Authorization', bearer(TOKENS.read));
      expect(JSON.parse(res.text)).toEqual({ error: false, own: true, subject: 'tok_read' });
    });

    it('hands every failure to next(err), those known at once too, so a host that does not catch throws is safe', async () => {
      const chain = [authenticate(gate), requires(WRITE)];
      const plain = createServer((req, res) => {
        const run =
          (at: number) =>
          (error?: unknown): void => {
            if (error !== undefined) return void res.writeHead((error as AuthError).status ?? 500).end();
            if (at === chain.length) return void res.end('reached');
            try {
              chain[at]?.(req, res, run(at + 1));
            } catch {
              res.writeHead(599).end(); // a host that does not catch would have crashed here
            }
          };
        run(0)();
      });
      servers.push(plain);
      await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
      const statuses: number[] = [];
      // Unknown (a miss, then the cached rejection), malformed, a token without WRITE (miss, then hit), none.
      for (const header of [
        'Bearer unknown',
        'Bearer unknown',
        'Bearer a b',
        bearer(TOKENS.read),
        bearer(TOKENS.read),
      ]) {
        statuses.push((await request(plain).get('/').set('Authorization', header)).status);
      }
      statuses.push((await request(plain).get('/')).status);
      expect(statuses).toEqual([401, 401, 400, 403, 403, 401]);
    });
  });

  describe('optional: true', () => {
    it('lets an anonymous request through with req.auth undefined', async () => {
      const res = await request(server).get('/public');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ mark: ROUTE_MARK, auth: null });
    });

    it('lets a request with an empty Authorization header through as anonymous; a guard then asks for a token', async () => {
      const res = await request(server).get('/public').set('Authorization', '');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ mark: ROUTE_MARK, auth: null });
      const guarded = await request(server).get('/public/guarded').set('Authorization', '');
      expect(guarded.status).toBe(401);
      expect(guarded.headers['www-authenticate']).toBe('Bearer realm="api"');
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

  it('requires() without authenticate() is a 500 that says what to fix', async () => {
    const res = await request(server).get('/unmounted').set('Authorization', bearer(TOKENS.read));
    expect(res.status).toBe(500);
    // Outside production Express's default handler shows the error's stack, message first.
    expect(res.text).toContain('mount authenticate(gate) before requires()');
    expect(res.text).not.toContain(ROUTE_MARK);
  });

  it("requires() behind another library's req.auth is the same 500, never a pass", async () => {
    const app = express();
    // What express-oauth2-jwt-bearer and others leave in req.auth: not a tokengate context.
    const foreignAuth: RequestHandler = (req, _res, next) => {
      (req as { auth?: unknown }).auth = { payload: { scope: 'uptime_checks (read)' }, can: () => true };
      next();
    };
    app.get('/foreign', foreignAuth, requires('uptime_checks (read)'), (_req, res) => {
      res.send(ROUTE_MARK);
    });
    const res = await request(app).get('/foreign');
    expect(res.status).toBe(500);
    expect(res.text).toContain('mount authenticate(gate) before requires()');
    expect(res.text).not.toContain(ROUTE_MARK);
  });

  describe('with a custom error handler', () => {
    let jsonServer: Server;
    beforeEach(async () => {
      jsonServer = await listen(buildApp(framework, gate, jsonErrorHandler));
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
      expect(forbidden.headers['www-authenticate']).toContain('error="insufficient_scope"');

      const unknown = await request(jsonServer).get('/checks').set('Authorization', bearer(TOKENS.unknown));
      expect(unknown.body).toMatchObject({ authError: true, code: 'invalid_token' });
      expectNoSecrets(unknown);
    });

    it('gets provider_unavailable with Retry-After, and a plain Error for a missing authenticate()', async () => {
      oon.fault = { kind: 'status', status: 429, retryAfter: 7 };
      const unavailable = await request(jsonServer).get('/checks').set('Authorization', bearer(TOKENS.read));
      expect(unavailable.status).toBe(503);
      expect(unavailable.body).toMatchObject({ authError: true, code: 'provider_unavailable' });
      expect(unavailable.headers['retry-after']).toBe('7');

      const unmounted = await request(jsonServer).get('/unmounted');
      expect(unmounted.status).toBe(500);
      expect(unmounted.body).toEqual({ authError: false, code: 'internal', message: 'internal' });
    });

    it('gets provider_misconfigured with expose false', async () => {
      const wrongKeyGate = makeGate({ partooKey: 'another-wrong-key' });
      try {
        const wrongKeyServer = await listen(buildApp(framework, wrongKeyGate, jsonErrorHandler));
        const res = await request(wrongKeyServer).get(`/checks?${connectionQuery(CONNECTION)}`);
        expect(res.status).toBe(500);
        expect(res.body).toEqual({ authError: true, code: 'provider_misconfigured', message: 'internal' });
        expect(res.text).not.toContain('another-wrong-key');
      } finally {
        await wrongKeyGate.close();
      }
    });
  });
});
