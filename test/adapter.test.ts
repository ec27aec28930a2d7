/**
 * The public adapter seam (`authenticator`, `authorize`, `NodeRequest`), and
 * what a developer sees when middleware is mounted wrongly: a clear 500 that
 * names the mistake, never a hang and never a crashed process.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { runInNewContext } from 'node:vm';
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as expressGate from '../adapters/express.js';
import * as fastifyGate from '../adapters/fastify.js';
import * as koaGate from '../adapters/koa.js';
import {
  AuthError,
  authenticator,
  authorize,
  type BearerCredential,
  type CredentialRequest,
  createGate,
  extractBearer,
  type Gate,
  NodeRequest,
  onlineOrNot,
  type Provider,
  ProviderFailure,
  partoo,
  requires,
  requiresAny,
} from '../src/index.js';
import { mockOnlineOrNot, stubProvider } from '../src/testing/index.js';
import { rawGet } from './support/raw-http.js';

const express4 = createRequire(import.meta.url)('express4') as typeof express;
const Koa2 = createRequire(import.meta.url)('koa2') as typeof Koa;
const Fastify4 = createRequire(import.meta.url)('fastify4') as typeof Fastify;

const READER = 'SECRETadapterReader1';
const BARE = 'SECRETadapterBare1';
const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

function stubGate(): Gate {
  const gate = createGate({
    realm: 'adapters',
    providers: [
      stubProvider({
        tokens: {
          [READER]: { subject: 'reader', permissions: ['read'] },
          [BARE]: { subject: 'bare', permissions: [] },
        },
      }),
    ],
  });
  open.push(() => gate.close().catch(() => {}));
  return gate;
}

async function serve(listener: RequestListener): Promise<string> {
  const server: Server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  open.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** GET with a deadline: a hang fails the test instead of holding it. */
async function get(url: string, token?: string) {
  const res = await fetch(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(3000),
  });
  return { status: res.status, body: await res.text(), challenge: res.headers.get('www-authenticate') };
}

/** Koa apps log every 500 through `app.emit('error')`; keep what was logged. */
function quietKoa(Framework: typeof Koa): { app: Koa; logged: string[] } {
  const app = new Framework();
  const logged: string[] = [];
  app.on('error', (error: Error) => logged.push(error.message));
  return { app, logged };
}

describe('a custom adapter on the public seam alone (plain node:http)', () => {
  function plainApp(gate: Gate, optional: boolean): RequestListener {
    const authenticate = authenticator(gate, { optional }, 'plain');
    const guard = requires('read');
    return async (req, res) => {
      const holder = {};
      try {
        const url = new URL(req.url ?? '/', 'http://127.0.0.1');
        const auth = await authenticate(new NodeRequest(req, { query: Object.fromEntries(url.searchParams) }), holder);
        authorize(auth, guard, holder);
        res.end(`hello ${auth?.subject}`);
      } catch (error) {
        const status = error instanceof AuthError ? error.status : 500;
        res.writeHead(status, error instanceof AuthError ? error.headers : {}).end();
      }
    };
  }

  it('answers 200, 401 with the realm, and 403 like the built-in adapters', async () => {
    const gate = stubGate();
    const url = await serve(plainApp(gate, false));
    expect(await get(url, READER)).toMatchObject({ status: 200, body: 'hello reader' });
    expect(await get(url)).toMatchObject({ status: 401, challenge: 'Bearer realm="adapters"' });
    expect((await get(url, 'SECRETunknown')).challenge).toContain('error="invalid_token"');
    expect(await get(url, BARE)).toMatchObject({
      status: 403,
      challenge:
        'Bearer realm="adapters", error="insufficient_scope", error_description="Requires: read", scope="read"',
    });
  });

  it('knows the realm of an anonymous request under optional: true without the gate on the request', async () => {
    const url = await serve(plainApp(stubGate(), true));
    expect(await get(url)).toMatchObject({ status: 401, challenge: 'Bearer realm="adapters"' });
  });

  it('refuses a guard that runs before any authenticate, never passing it', () => {
    expect(() => authorize(undefined, requires('read'), {})).toThrow('mount authenticate(gate) before requires()');
    // Something other than authenticate(gate) put its own object where the context belongs (another auth library's
    // req.auth): the message names what was found, beside the mount order, which may well be right.
    expect(() => authorize({ subject: 'forged', can: () => true }, requires('read'), {})).toThrow(
      new Error(
        'tokengate: requires() found an object where authenticate(gate) puts its AuthContext: mount authenticate(gate) before requires(), and nothing between them that sets the same property (another auth library)',
      ),
    );
    expect(() => authorize('forged', requiresAny('read'), {})).toThrow(
      /^tokengate: requiresAny\(\) found a string where authenticate\(gate\) puts its AuthContext/,
    );
    // The message names the guard the developer mounted, so that a search of their routes finds it.
    expect(() => authorize(undefined, requiresAny('read', 'write'), {})).toThrow(
      'tokengate: mount authenticate(gate) before requiresAny()',
    );
  });

  it('refuses null, an object without a realm, and one without authenticateNow, with its own message', () => {
    const realmOnly = { realm: 'api' };
    const methodOnly = { authenticateNow: () => undefined };
    for (const value of [null, realmOnly, methodOnly]) {
      expect(() => authenticator(value as unknown as Gate, undefined, 'plain')).toThrow(
        /^plain: authenticate\(gate\) expects a gate from createGate\(\), got (null|an object)$/,
      );
    }
  });

  it('throws at mount for anything but a gate, naming the adapter', () => {
    expect(() => authenticator({} as Gate, undefined, 'plain')).toThrow(
      'plain: authenticate(gate) expects a gate from createGate(), got an object',
    );
    expect(() => authenticator(stubGate(), { optinal: true } as never, 'plain')).toThrow(
      'plain: authenticate options: optinal: unknown option (did you mean optional?)',
    );
    // A number where a boolean belongs is the wrong type, not a number out of range.
    expect(() => authenticator(stubGate(), { optional: 1 } as never, 'plain')).toThrow(
      new TypeError('plain: authenticate options: optional: expected true or false, got 1'),
    );
  });
});

describe('a gate this copy did not make, whose answers are checked (a wrapper, a gate made in a vm context)', () => {
  const OtherPromise = runInNewContext('Promise') as PromiseConstructor;

  /** `gate` with its answers replaced by `answer`'s (given the real one, or the error it threw). */
  function wrapped(gate: Gate, answer: (real: () => unknown) => unknown): Gate {
    return Object.assign(Object.create(gate) as Gate, {
      realm: gate.realm,
      authenticateNow: (...args: Parameters<Gate['authenticateNow']>) =>
        answer(() => gate.authenticateNow(...args)) as ReturnType<Gate['authenticateNow']>,
    });
  }

  /** Another realm's promise of the real answer. */
  const otherRealm = (real: () => unknown) => {
    try {
      return OtherPromise.resolve(real());
    } catch (error) {
      return OtherPromise.reject(error);
    }
  };

  async function apps(gate: Gate, optional = false): Promise<Record<string, string>> {
    const options = { optional };
    const expressApp = express();
    expressApp.get(
      '/',
      expressGate.authenticate(gate, options),
      (req, res) => void res.send(`hello ${req.auth?.subject}`),
    );
    const { app: koaApp } = quietKoa(Koa);
    koaApp.use(koaGate.authenticate(gate, options));
    koaApp.use((ctx) => {
      ctx.body = `hello ${ctx.state.auth?.subject}`;
    });
    const fastifyApp = Fastify();
    fastifyApp.addHook('onRequest', fastifyGate.authenticate(gate, options));
    fastifyApp.get('/', async (request) => `hello ${request.auth?.subject}`);
    await fastifyApp.listen({ port: 0, host: '127.0.0.1' });
    open.push(() => fastifyApp.close());
    const { port } = fastifyApp.server.address() as AddressInfo;
    return {
      express: await serve(expressApp),
      koa: await serve(koaApp.callback()),
      fastify: `http://127.0.0.1:${port}`,
    };
  }

  it("waits for another realm's promise: a wrong token gets its 401 in every adapter, never the route", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const [name, url] of Object.entries(await apps(wrapped(stubGate(), otherRealm)))) {
        expect([name, await get(url, 'SECRETunknown')]).toMatchObject([name, { status: 401 }]);
        expect([name, await get(url, READER)]).toMatchObject([name, { status: 200, body: 'hello reader' }]);
      }
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it("answers 500 for an answer that is no context, at once or through another realm's promise, in every adapter", async () => {
    const forged = { subject: 'forged' };
    for (const answer of [() => forged, () => OtherPromise.resolve(forged)]) {
      for (const [name, url] of Object.entries(await apps(wrapped(stubGate(), answer)))) {
        expect([name, (await get(url, READER)).status]).toEqual([name, 500]);
      }
    }
  });

  it('answers 500 for no context without optional, and lets the request on anonymously under it', async () => {
    const nothing = () => OtherPromise.resolve(undefined);
    for (const [name, url] of Object.entries(await apps(wrapped(stubGate(), nothing)))) {
      expect([name, (await get(url, READER)).status]).toEqual([name, 500]);
    }
    for (const [name, url] of Object.entries(await apps(wrapped(stubGate(), nothing), true))) {
      expect([name, await get(url, READER)]).toMatchObject([name, { status: 200, body: 'hello undefined' }]);
    }
  });
});

describe('mistakes at mount', () => {
  it('authenticate(x) with anything but a gate throws when mounted, in both adapters', () => {
    expect(() => expressGate.authenticate(undefined as unknown as Gate)).toThrow(
      'tokengate/express: authenticate(gate) expects a gate from createGate(), got undefined',
    );
    expect(() => koaGate.authenticate('gate' as unknown as Gate)).toThrow(
      'tokengate/koa: authenticate(gate) expects a gate from createGate(), got a string',
    );
    expect(() => expressGate.authenticate(Promise.resolve(stubGate()) as unknown as Gate)).toThrow(
      'tokengate/express: authenticate(gate) expects a gate from createGate(), got a promise (missing await?)',
    );
  });

  for (const [name, framework] of [
    ['express 5', express],
    ['express 4', express4],
  ] as const) {
    it(`${name}: app.use(authenticate) (not called) answers a 500 naming the mistake, without hanging`, async () => {
      const app = framework();
      app.use(expressGate.authenticate as never);
      app.get('/', (_req, res) => {
        res.send('reached');
      });
      const url = await serve(app);
      const answer = await get(url, READER);
      expect(answer.status).toBe(500);
      expect(answer.body).toContain('authenticate was mounted without being called');
    });

    it(`${name}: app.use(requires) (not called) answers a 500 naming the mistake`, async () => {
      const app = framework();
      app.use(expressGate.authenticate(stubGate()));
      app.use(expressGate.requires as never);
      app.get('/', (_req, res) => {
        res.send('reached');
      });
      const answer = await get(await serve(app), READER);
      expect(answer.status).toBe(500);
      expect(answer.body).toContain('requires was mounted without being called');
    });

    it(`${name}: req.auth replaced after authenticate(gate) (express-jwt sets req.auth too) is a 500 saying so`, async () => {
      const app = framework();
      app.use(expressGate.authenticate(stubGate()));
      app.use((req, _res, next) => {
        (req as { auth?: unknown }).auth = { sub: 'from-a-jwt', scope: 'read' };
        next();
      });
      app.get('/', expressGate.requires('read'), (_req, res) => {
        res.send('reached');
      });
      const answer = await get(await serve(app), READER);
      expect(answer.status).toBe(500);
      expect(answer.body).toContain('requires() found an object where authenticate(gate) puts its AuthContext');
      expect(answer.body).not.toContain('reached');
    });

    it(`${name}: the Koa middleware mounted in Express is a 500 naming the right import`, async () => {
      const app = framework();
      app.use(koaGate.authenticate(stubGate()) as never);
      const url = await serve(app);
      const answer = await get(url, READER);
      expect(answer.status).toBe(500);
      expect(answer.body).toContain('use tokengate/express');
    });
  }

  for (const [name, Framework] of [
    ['koa 3', Koa],
    ['koa 2', Koa2],
  ] as const) {
    it(`${name}: app.use(authenticate) (not called) answers a 500 and logs the mistake`, async () => {
      const { app, logged } = quietKoa(Framework);
      app.use(koaGate.authenticate as never);
      const url = await serve(app.callback());
      expect((await get(url, READER)).status).toBe(500);
      expect(logged.join('\n')).toContain('authenticate was mounted without being called');
    });

    it(`${name}: app.use(requiresAny) (not called) answers a 500 and logs the mistake`, async () => {
      const { app, logged } = quietKoa(Framework);
      app.use(koaGate.authenticate(stubGate()));
      app.use(koaGate.requiresAny as never);
      expect((await get(await serve(app.callback()), READER)).status).toBe(500);
      expect(logged.join('\n')).toContain('requiresAny was mounted without being called');
    });

    it(`${name}: the Express middleware mounted in Koa is a 500, and the process lives on`, async () => {
      const { app, logged } = quietKoa(Framework);
      app.use(expressGate.authenticate(stubGate()) as never);
      app.use(expressGate.requires('read') as never);
      const url = await serve(app.callback());
      expect((await get(url, READER)).status).toBe(500);
      expect((await get(url, READER)).status).toBe(500);
      expect(logged[0]).toContain('use tokengate/koa');
    });
  }
});

describe('the Express middleware as a plain node:http listener', () => {
  it('throws naming Express and what to do on a plain server, not Koa', async () => {
    const thrown: unknown[] = [];
    const authenticate = expressGate.authenticate(stubGate());
    const guard = expressGate.requires('read');
    // What the app's own listener (or a crash report) shows: the middleware called as (req, res), without next.
    const url = await serve((req, res) => {
      for (const middleware of [authenticate, guard]) {
        try {
          middleware(req, res, undefined as never);
        } catch (error) {
          thrown.push(error);
        }
      }
      res.end();
    });
    expect((await get(url, READER)).status).toBe(200);
    expect(thrown).toHaveLength(2);
    for (const error of thrown) {
      expect(String(error)).toContain('mount it in an Express app (app.use(authenticate(gate)))');
      expect(String(error)).toContain('on a plain node:http server, await gate.authenticate(req)');
      expect(String(error)).not.toContain('Koa');
    }
  });
});

describe('the Express middleware mounted in Fastify', () => {
  for (const [name, Framework] of [
    ['fastify 5', Fastify],
    ['fastify 4', Fastify4],
  ] as const) {
    it(`${name}: a 500 naming the right import, never the route (it would miss a repeated Authorization)`, async () => {
      const app = Framework({ logger: false });
      const logged: string[] = [];
      app.setErrorHandler((error, _request, reply) => {
        logged.push((error as Error).message);
        return reply.status(500).send('failed');
      });
      app.addHook('onRequest', expressGate.authenticate(stubGate()) as never);
      app.get('/', { preHandler: expressGate.requires('read') as never }, async () => 'reached');
      try {
        const answer = await app.inject({ method: 'GET', url: '/', headers: { authorization: `Bearer ${READER}` } });
        expect(answer.statusCode).toBe(500);
        expect(answer.body).not.toContain('reached');
        expect(logged).toEqual([expect.stringContaining('in a Fastify app, use tokengate/fastify')]);
      } finally {
        await app.close();
      }
    });
  }
});

describe("gate.authenticate called by hand with a framework's request as it is", () => {
  const twoHeaders = [`Authorization: Bearer ${READER}`, 'Authorization: Bearer SECRETsecondToken'];
  const answer = (auth: Promise<{ subject: string }>) =>
    auth.then(
      (context) => ({ status: 200, body: context.subject }),
      (error: AuthError) => ({ status: error.status, body: error.message }),
    );

  it("Fastify's request and Koa's ctx: a repeated Authorization is a 400, as through their adapters", async () => {
    const gate = stubGate();
    const fastify = Fastify({ logger: false });
    fastify.get('/', async (request, reply) => {
      const { status, body } = await answer(gate.authenticate(request));
      return reply.code(status).send(body);
    });
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    open.push(() => fastify.close());
    const koa = new Koa();
    koa.use(async (ctx) => {
      const { status, body } = await answer(gate.authenticate(ctx));
      ctx.status = status;
      ctx.body = body;
    });
    const koaUrl = await serve(koa.callback());
    for (const port of [(fastify.server.address() as AddressInfo).port, Number(new URL(koaUrl).port)]) {
      const repeated = await rawGet(port, '/', twoHeaders);
      expect(repeated.status).toBe(400);
      expect(repeated.body).toBe('Only one Authorization header is allowed');
      expect((await rawGet(port, '/', twoHeaders.slice(0, 1))).status).toBe(200);
    }
  });
});

describe('the Express middleware called by a unit test with a plain request object', () => {
  it('authenticates it as Express would (no raw headers, as node-mocks-http builds one)', async () => {
    const middleware = expressGate.authenticate(stubGate());
    const req = { headers: { authorization: `Bearer ${READER}` } } as unknown as expressGate.ExpressLikeRequest;
    const error = await new Promise((resolve) => middleware(req, {} as never, resolve));
    expect(error).toBeUndefined();
    expect(req.auth?.subject).toBeDefined();
  });
});

describe('closing a gate', () => {
  it('ends verifications under way at once, with a 503, rather than waiting for a hung provider', async () => {
    const oon = await mockOnlineOrNot({ tokens: {} });
    open.push(() => oon.close());
    oon.fault = { kind: 'hang' };
    // A deadline far past the test's own timeout: only close() can end the verification in time.
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: oon.url })], timeout: 60_000 });
    const app = express();
    app.get('/', expressGate.authenticate(gate), (_req, res) => void res.send('reached'));
    const url = await serve(app);
    const pending = get(url, READER);
    await vi.waitFor(() => expect(oon.calls.total).toBeGreaterThan(0));
    await gate.close();
    const res = await pending;
    expect(res.status).toBe(503);
    expect(res.body).not.toContain('reached');
  });

  it('does not wait for a call a verification left running after its answer', async () => {
    const oon = await mockOnlineOrNot({ tokens: {} });
    open.push(() => oon.close());
    // verify says 401 at once; permissions hangs, and the gate lets it finish on its own.
    oon.fault = { kind: 'hang', endpoints: ['permissions'] };
    const events: string[] = [];
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: oon.url })],
      timeout: 60_000,
      onEvent: (event) => events.push(event.type),
    });
    await expect(gate.authenticate({ headers: { authorization: `Bearer ${READER}` } })).rejects.toMatchObject({
      status: 401,
    });
    await gate.close(); // within the test's own timeout, far below the gate's
    expect(events).not.toContain('provider_error');
  });

  it('ends a verification waiting out a retry backoff without asking again or reporting a provider fault', async () => {
    let calls = 0;
    const flaky: Provider<BearerCredential> = {
      name: 'flaky',
      cacheScope: 'flaky',
      extract: extractBearer,
      async verify() {
        calls++;
        throw new ProviderFailure('unreachable', 'connection refused');
      },
    };
    const events: string[] = [];
    const closing: Promise<void>[] = [];
    const gate: Gate = createGate({
      providers: [flaky],
      timeout: 60_000,
      retry: { retries: 2, baseDelay: 20_000, maxDelay: 20_000 },
      onEvent: (event) => {
        events.push(event.type);
        // Closed as the backoff starts: its full-jitter wait may be any length down to 0 ms.
        if (event.type === 'retry') closing.push(gate.close());
      },
    });
    const answer = gate.authenticate({ headers: { authorization: `Bearer ${READER}` } });
    answer.catch(() => {});
    await vi.waitFor(() => expect(closing).toHaveLength(1));
    await closing[0];
    const error = await answer.then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toMatchObject({ status: 503, cause: { message: 'the gate closed while flaky was asked' } });
    expect(calls).toBe(1);
    expect(events.filter((type) => type === 'provider_error')).toHaveLength(1);
  });

  it("closes every provider when one's close() throws, and rejects with that error", async () => {
    const closed: string[] = [];
    const named = (name: string, close: () => Promise<void>): Provider<BearerCredential> => ({
      name,
      cacheScope: name,
      extract: extractBearer,
      verify: async () => ({ ok: false, reason: 'no' }),
      close,
    });
    const gate = createGate({
      providers: [
        named('first', () => {
          throw new Error('first could not close');
        }),
        named('second', async () => void closed.push('second')),
      ],
    });
    await expect(gate.close()).rejects.toThrow('first could not close');
    expect(closed).toEqual(['second']);
  });

  it("ends requests waiting for another instance's answer through the shared tier", async () => {
    const heldElsewhere = {
      get: async () => undefined,
      set: async () => {},
      delete: async () => {},
      lease: async () => ({ state: 'held' as const }),
      // Another instance that never answers: only close() can end the wait before the gate's timeout.
      waitFor: () => new Promise<unknown>(() => {}),
    };
    const gate = createGate({
      providers: [stubProvider({ tokens: { [READER]: { subject: 'reader' } } })],
      sharedCache: heldElsewhere,
      timeout: 60_000,
    });
    const answer = gate.authenticate({ headers: { authorization: `Bearer ${READER}` } });
    answer.catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 50));
    await gate.close();
    await expect(answer).rejects.toMatchObject({ status: 503, code: 'provider_unavailable' });
  });

  it("aborts a custom provider's signal, and its 503's cause says the gate closed", async () => {
    let signal: AbortSignal | undefined;
    const hung: Provider<BearerCredential> = {
      name: 'hung',
      cacheScope: 'hung',
      extract: extractBearer,
      verify: (_credential, given) => {
        signal = given;
        return new Promise(() => {});
      },
    };
    const gate = createGate({ providers: [hung], timeout: 60_000 });
    const answer = gate.authenticate({ headers: { authorization: `Bearer ${READER}` } });
    await vi.waitFor(() => expect(signal).toBeDefined());
    await gate.close();
    const error = await answer.then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toMatchObject({ status: 503, code: 'provider_unavailable' });
    expect((error as Error).cause).toMatchObject({ message: 'the gate closed while hung was asked' });
    expect(signal?.aborted).toBe(true);
  });
});

describe('a closed gate', () => {
  it('throws "gate is closed" from every method but stats(), which reads the last counters', async () => {
    const gate = stubGate();
    const req = { headers: { authorization: `Bearer ${READER}` } };
    await gate.authenticate(req);
    await gate.authenticate(req);
    const before = gate.stats();
    await gate.close();
    // A metrics scrape during shutdown reads what the gate counted.
    expect(gate.stats()).toEqual(before);
    expect(before).toMatchObject({ hits: 1, misses: 1 });
    const calls: Array<[string, () => unknown]> = [
      ['authenticateNow', () => gate.authenticateNow(req)],
      ['authorize', () => gate.authorize(undefined, requires('read'))],
      ['invalidate', () => gate.invalidate(req)],
      ['clear', () => gate.clear()],
      ['reset', () => gate.reset()],
    ];
    for (const [, call] of calls) expect(call).toThrow('gate is closed');
    await expect(gate.authenticate(req)).rejects.toThrow('gate is closed');
  });

  it('close() again, or twice at once, returns what the first call returned (shutdown code that runs twice)', async () => {
    const gate = stubGate();
    const [first, second] = [gate.close(), gate.close()];
    expect(second).toBe(first);
    await expect(Promise.all([first, second])).resolves.toEqual([undefined, undefined]);
    await expect(gate.close()).resolves.toBeUndefined();
  });

  it('refuses a provider another gate holds, or one a gate closed, naming it: each gate has providers of its own', async () => {
    const held = onlineOrNot({ baseUrl: 'http://127.0.0.1:9' });
    const first = createGate({ providers: [held] });
    // The pool and its admission are one gate's: a second gate's verifications would queue in it as an outage.
    const other = partoo({ apiKey: 'partoo-key', baseUrl: 'http://127.0.0.1:9/v2' });
    expect(() => createGate({ providers: [other, held] })).toThrow(
      /^createGate: providers\[1\] \(onlineornot\) belongs to another gate, which admits verifications to its connections and closes it: create a provider for each gate$/,
    );
    // The gate refused holds nothing: its other provider serves the next gate.
    const second = createGate({ providers: [other] });
    await Promise.all([first.close(), second.close()]);
    expect(() => createGate({ providers: [held] })).toThrow(
      /^createGate: providers\[0\] \(onlineornot\) was closed by gate\.close\(\)/,
    );
  });

  it('lets a provider without close() (a stub made once for many tests) serve gate after gate', async () => {
    const stub = stubProvider({ tokens: { [READER]: { subject: 'reader' } } });
    for (let test = 1; test <= 3; test++) {
      const gate = createGate({ providers: [stub] });
      expect((await gate.authenticate({ headers: { authorization: `Bearer ${READER}` } })).subject).toBe('reader');
      await gate.close();
    }
  });

  it('makes an app answer 500 (a programming error), not 503 and not a pass: the stub gate too', async () => {
    const gate = stubGate();
    const app = express();
    app.get('/', expressGate.authenticate(gate), (_req, res) => {
      res.send('reached');
    });
    const url = await serve(app);
    expect((await get(url, READER)).status).toBe(200);
    await gate.close();
    const answer = await get(url, READER);
    expect(answer.status).toBe(500);
    expect(answer.body).not.toContain('reached');
  });
});

/**
 * A gate whose provider verifies one credential at a time, with `extract` and `clientKey` as given. Its first
 * verification is held until a second new token has reached the gate (or 2 s have passed): of two new tokens sent at
 * once, the second always waits for a slot, and only then is its client asked for.
 */
function oneAtATimeGate(options: {
  extract?: Provider<BearerCredential>['extract'];
  clientKey: (req: CredentialRequest) => string;
}): Gate {
  let misses = 0;
  let bothArrived: () => void = () => {};
  const second = new Promise<void>((resolve) => {
    bothArrived = resolve;
    setTimeout(resolve, 2000).unref();
  });
  const oneAtATime: Provider<BearerCredential> = {
    name: 'one-at-a-time',
    cacheScope: 'one-at-a-time',
    concurrency: 1,
    extract: options.extract ?? extractBearer,
    verify: async (credential) => {
      await second;
      return { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } };
    },
  };
  const gate = createGate({
    providers: [oneAtATime],
    admission: { clientKey: options.clientKey },
    onEvent: (event) => {
      if (event.type === 'cache' && event.result === 'miss' && ++misses === 2) bothArrived();
    },
  });
  open.push(() => gate.close());
  return gate;
}

describe('the client address the gate shares capacity by', () => {
  /** A one-at-a-time gate whose `clientKey` records the `ip` it is asked about (it is asked only of waiters). */
  const recordingGate = (seen: Array<string | undefined>): Gate =>
    oneAtATimeGate({
      clientKey: (req) => {
        seen.push(req.ip);
        return req.ip ?? 'unknown';
      },
    });

  /** Two new tokens at once through `url`, both from `forwardedFor`: their statuses. */
  async function getVia(url: string, forwardedFor: string) {
    const get = async (token: string) => {
      const res = await fetch(url, {
        headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwardedFor },
        signal: AbortSignal.timeout(3000),
      });
      return res.status;
    };
    return Promise.all([get(`SECRETfirst${forwardedFor}`), get(`SECRETsecond${forwardedFor}`)]);
  }

  it("is Express's req.ip, so its trust proxy setting applies", async () => {
    for (const trust of [false, true]) {
      const seen: Array<string | undefined> = [];
      const app = express();
      app.set('trust proxy', trust);
      app.get('/', expressGate.authenticate(recordingGate(seen)), (_req, res) => {
        res.send('ok');
      });
      expect(await getVia(await serve(app), '127.0.0.9')).toEqual([200, 200]);
      expect(seen).toEqual([trust ? '127.0.0.9' : '127.0.0.1']);
    }
  });

  it("is Koa's ctx.ip, so app.proxy applies", async () => {
    for (const proxy of [false, true]) {
      const seen: Array<string | undefined> = [];
      const app = new Koa({ proxy });
      app.use(koaGate.authenticate(recordingGate(seen)));
      app.use((ctx) => {
        ctx.body = 'ok';
      });
      expect(await getVia(await serve(app.callback()), '127.0.0.9')).toEqual([200, 200]);
      expect(seen).toEqual([proxy ? '127.0.0.9' : '127.0.0.1']);
    }
  });

  /** Each framework behind one trusted proxy on 127.0.0.1, answering 200 or the error's status. */
  const proxied: Record<string, (gate: Gate) => Promise<string>> = {
    'Express 5 (trust proxy: loopback)': (gate) => {
      const app = express();
      app.set('trust proxy', 'loopback');
      app.get('/', expressGate.authenticate(gate), (_req, res) => {
        res.send('ok');
      });
      return serve(app);
    },
    'Koa 3 (proxy: true, maxIpsCount: 1)': (gate) => {
      const app = new Koa({ proxy: true, maxIpsCount: 1 });
      app.silent = true;
      app.use(koaGate.authenticate(gate));
      app.use((ctx) => {
        ctx.body = 'ok';
      });
      return serve(app.callback());
    },
    "Fastify 5 (trustProxy: '127.0.0.1')": async (gate) => {
      const app = Fastify({ trustProxy: '127.0.0.1' });
      app.addHook('onRequest', fastifyGate.authenticate(gate));
      app.get('/', async () => 'ok');
      open.push(() => app.close());
      return app.listen({ port: 0, host: '127.0.0.1' });
    },
  };

  it.each(Object.keys(proxied))(
    '%s: a proxy that writes the port in X-Forwarded-For (address:port) does not make each connection a client',
    async (framework) => {
      // One verification at a time, two waiting; each held until the test lets it answer.
      const held: Array<() => void> = [];
      let arrived = 0;
      const provider: Provider<BearerCredential> = {
        name: 'held',
        cacheScope: 'held-ports',
        concurrency: 1,
        extract: extractBearer,
        verify: async (credential) => {
          await new Promise<void>((resolve) => held.push(resolve));
          return { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } };
        },
      };
      const gate = createGate({
        providers: [provider],
        admission: { maxWaiting: 2 },
        onEvent: (event) => {
          if (event.type === 'cache' && event.result === 'miss') arrived++;
        },
      });
      open.push(() => gate.close());
      const url = await (proxied[framework] as (gate: Gate) => Promise<string>)(gate);
      const from = async (token: string, forwardedFor: string) => {
        const res = await fetch(url, {
          headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwardedFor },
          signal: AbortSignal.timeout(5000),
        });
        return res.status;
      };
      // One address floods from four connections, a new source port each: it fills the slot and the wait.
      const flood = [40001, 40002, 40003, 40004].map((port) => from(`SECRETflood${port}`, `127.0.1.7:${port}`));
      await vi.waitFor(() => expect(arrived).toBe(4));
      // Another address's first token takes the place of the flood's newest waiter.
      const other = from('SECRETquiet', '127.0.2.9:50000');
      await vi.waitFor(() => expect(arrived).toBe(5));
      let settled = false;
      const statuses = Promise.all([other, ...flood]).finally(() => {
        settled = true;
      });
      for (let turn = 0; turn < 200 && !settled; turn++) {
        for (const release of held.splice(0)) release();
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const [quiet, ...flooded] = await statuses;
      expect(quiet).toBe(200);
      expect(flooded.filter((status) => status === 503)).toHaveLength(2);
    },
  );
});

describe('a callback of yours that throws something that is not an Error', () => {
  /** A one-at-a-time gate whose `extract`, or `admission.clientKey` (asked of a request that waits), throws `undefined`. */
  const throwingGate = (what: 'extract' | 'clientKey'): Gate =>
    oneAtATimeGate({
      extract: (req, realm) => {
        if (what === 'extract') throw undefined;
        return extractBearer(req, realm);
      },
      clientKey: () => {
        throw undefined;
      },
    });

  const apps: Record<string, (gate: Gate) => Promise<string>> = {
    'Express 5': (gate) => {
      const app = express();
      app.get('/', expressGate.authenticate(gate), (req, res) => {
        res.send(`reached as ${req.auth?.subject}`);
      });
      return serve(app);
    },
    'Koa 3': (gate) => {
      const { app } = quietKoa(Koa);
      app.use(koaGate.authenticate(gate));
      app.use((ctx) => {
        ctx.body = `reached as ${ctx.state.auth?.subject}`;
      });
      return serve(app.callback());
    },
    'Fastify 5': async (gate) => {
      const app = Fastify();
      app.addHook('onRequest', fastifyGate.authenticate(gate));
      app.get('/', async (request) => `reached as ${request.auth?.subject}`);
      open.push(() => app.close());
      return app.listen({ port: 0, host: '127.0.0.1' });
    },
  };

  it.each(Object.keys(apps))('%s: a 500, never the route, when extract throws it', async (framework) => {
    const url = await (apps[framework] as (gate: Gate) => Promise<string>)(throwingGate('extract'));
    const answer = await get(url, READER);
    expect(answer.status).toBe(500);
    expect(answer.body).not.toContain('reached');
  });

  it.each(Object.keys(apps))(
    '%s: a 500 for the request that waited, never the route, when clientKey throws it',
    async (framework) => {
      const url = await (apps[framework] as (gate: Gate) => Promise<string>)(throwingGate('clientKey'));
      const answers = await Promise.all([get(url, 'SECRETfirstToken'), get(url, 'SECRETsecondToken')]);
      expect(answers.map((answer) => answer.status).sort()).toEqual([200, 500]);
      const failed = answers.find((answer) => answer.status === 500);
      expect(failed?.body).not.toContain('reached');
    },
  );
});

describe("a custom provider's extract that throws something other than an AuthError", () => {
  const TOKEN = 'SECRETnotJsonAtAll';
  /** A provider whose extract decodes its token as JSON: JSON.parse's SyntaxError quotes the start of what it read. */
  function decodingGate(): Gate {
    function decodeClaims(req: CredentialRequest, realm: string) {
      const found = extractBearer(req, realm);
      if (found === undefined) return undefined;
      JSON.parse(found.secret);
      return found;
    }
    const gate = createGate({
      providers: [
        {
          name: 'claims',
          cacheScope: 'claims',
          extract: decodeClaims,
          verify: async () => ({ ok: false, reason: 'no' }),
        },
      ],
    });
    open.push(() => gate.close());
    return gate;
  }

  it('gives an Error that names the provider and the fix, withholds the message, and keeps where it was thrown', async () => {
    const error = await decodingGate()
      .authenticate({ headers: { authorization: `Bearer ${TOKEN}` } })
      .then(
        () => undefined,
        (thrown: Error) => thrown,
      );
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(AuthError);
    expect(error?.message).toBe(
      "tokengate: claims's extract threw a SyntaxError (its message is withheld: it may hold the credential); for a malformed credential, throw invalidRequest(realm, description)",
    );
    const cause = error?.cause as Error;
    expect(cause.message).toBe('SyntaxError thrown by extract (its message is withheld: it may hold a secret)');
    expect(cause.stack).toContain('decodeClaims');
    expect(JSON.stringify([error?.message, error?.stack, cause.message, cause.stack])).not.toContain('SECRET');
  });

  it('Express 5: a 500 whose page, in development, shows no part of the token', async () => {
    const app = express();
    app.get('/', expressGate.authenticate(decodingGate()), (_req, res) => {
      res.send('reached');
    });
    const answer = await get(await serve(app), TOKEN);
    expect(answer.status).toBe(500);
    expect(answer.body).toContain('extract threw a SyntaxError (its message is withheld');
    expect(answer.body).not.toContain('SECRET');
    expect(answer.body).not.toContain('reached');
  });
});

describe('an Authorization header set or removed by middleware before the gate', () => {
  /** GET with `headers`, answered with the status and the body. */
  const send = async (url: string, headers: Record<string, string>) => {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(3000) });
    return [res.status, await res.text()];
  };
  const fromCookie = (cookie: string | undefined) => {
    const token = /(?:^|; )session=([^;]+)/.exec(cookie ?? '')?.[1];
    return token === undefined ? undefined : `Bearer ${token}`;
  };

  for (const [name, framework] of [
    ['express 5', express],
    ['express 4', express4],
  ] as const) {
    it(`${name}: is what the gate reads (a credential from a cookie, or none)`, async () => {
      const app = framework();
      app.use((req, _res, next) => {
        if (req.path === '/stripped') delete req.headers.authorization;
        else req.headers.authorization ??= fromCookie(req.headers.cookie);
        next();
      });
      app.use(expressGate.authenticate(stubGate()));
      app.use((req, res) => {
        res.send(req.auth?.subject);
      });
      app.use((error: AuthError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        res.status(error.status).send(error.code);
      });
      const url = await serve(app);
      expect(await send(url, { cookie: `theme=dark; session=${READER}` })).toEqual([200, 'reader']);
      expect(await send(`${url}/stripped`, { authorization: `Bearer ${READER}` })).toEqual([
        401,
        'credentials_required',
      ]);
    });
  }

  for (const [name, Framework] of [
    ['koa 3', Koa],
    ['koa 2', Koa2],
  ] as const) {
    it(`${name}: is what the gate reads (a credential from a cookie, or none)`, async () => {
      const { app } = quietKoa(Framework);
      app.use(async (ctx, next) => {
        try {
          await next();
        } catch (error) {
          ctx.status = (error as AuthError).status;
          ctx.body = (error as AuthError).code;
        }
      });
      app.use(async (ctx, next) => {
        if (ctx.path === '/stripped') delete ctx.headers.authorization;
        else ctx.headers.authorization ??= fromCookie(ctx.get('cookie'));
        await next();
      });
      app.use(koaGate.authenticate(stubGate()));
      app.use((ctx) => {
        ctx.body = ctx.state.auth?.subject;
      });
      const url = await serve(app.callback());
      expect(await send(url, { cookie: `session=${READER}` })).toEqual([200, 'reader']);
      expect(await send(`${url}/stripped`, { authorization: `Bearer ${READER}` })).toEqual([
        401,
        'credentials_required',
      ]);
    });
  }
});

describe('what a request shows of earlier ones', () => {
  it('util.inspect of an anonymous request and its socket shows no token an earlier request sent on the connection', async () => {
    const { inspect } = await import('node:util');
    const { Client } = await import('undici');
    const gate = createGate({
      providers: [stubProvider({ tokens: { [READER]: { subject: 'reader', permissions: ['read'] } } })],
    });
    open.push(() => gate.close());
    const shown: string[] = [];
    const app = express();
    app.get('/', expressGate.authenticate(gate, { optional: true }), (req, res) => {
      shown.push(inspect(req, { depth: 4, showHidden: true }), inspect(req.socket, { depth: 4, showHidden: true }));
      res.send(req.auth?.subject ?? 'anonymous');
    });
    const client = new Client(await serve(app));
    open.push(() => client.close());
    const first = await client.request({ method: 'GET', path: '/', headers: { authorization: `Bearer ${READER}` } });
    expect(await first.body.text()).toBe('reader');
    shown.length = 0;
    const second = await client.request({ method: 'GET', path: '/' });
    expect(await second.body.text()).toBe('anonymous');
    expect(shown).toHaveLength(2);
    for (const text of shown) expect(text).not.toContain(READER);
  });
});
