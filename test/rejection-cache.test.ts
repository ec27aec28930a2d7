/**
 * The rules for rejected credentials, each checked by several tests that do
 * not depend on one another (in process through `gate.authenticate`, through
 * a real Express app, over one keep-alive connection):
 *
 * - a rejection is remembered for `negativeTtl`, and asked about again after;
 * - `negativeTtl: 0` remembers nothing;
 * - `cache.negativeMax` rejections are remembered, in a space of their own;
 * - a rejection replaces nothing accepted for another credential;
 * - `invalidate(req)` removes a remembered rejection;
 * - `staleIfError` never serves a credential that was rejected.
 *
 * No test waits for something to still hold: "still remembered" uses a
 * `negativeTtl` of a minute, and only "expired" sleeps, several times longer
 * than the lifetime it waits out, so a slow machine can only add margin.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import {
  type BearerCredential,
  type CacheOptions,
  createGate,
  extractBearer,
  onlineOrNot,
  type Provider,
  ProviderFailure,
  type Verdict,
} from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { rejectionOf } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';
import { gatedApp, READ_CHECKS } from './support/gated-app.js';
import { serveOnOneConnection } from './support/one-connection.js';

const closeLater = closeAfterEach();
/** Known to the provider from the start. */
const KNOWN = 'SECRETrcKnown0a1b2c3d';
/** Unknown to the provider until a test adds it. */
const LATE = 'SECRETrcLate4e5f6a7b';
/** Never known. */
const UNKNOWN = 'SECRETrcUnknown8c9d0e';
/** Long enough that nothing remembered for it expires during a test. */
const MINUTE = 60_000;
/** A short lifetime, and a sleep several times as long that is sure to outlast it. */
const SHORT = 50;
const WELL_PAST_SHORT = 300;

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const INVALID_TOKEN = /^Bearer realm="api", error="invalid_token"/;

/** An OnlineOrNot mock knowing KNOWN, and a gate in front of it (no retries, no breaker: counts are exact). */
async function setup(cache: CacheOptions) {
  const mock = closeLater(
    await mockOnlineOrNot({ tokens: { [KNOWN]: { id: 'tok-known', permissions: [READ_CHECKS] } } }),
  );
  const gate = closeLater(
    createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], cache, retry: false, breaker: false }),
  );
  return { mock, gate };
}

/** The same, with an Express app in front (`/me` answers `req.auth`), asked through supertest. */
async function setupApp(cache: CacheOptions) {
  const { mock, gate } = await setup(cache);
  const { app, seen } = gatedApp(gate);
  const get = (token: string) => request(app).get('/me').set('Authorization', `Bearer ${token}`);
  return { mock, gate, get, seen };
}

async function expectRejected(promise: Promise<unknown>): Promise<void> {
  const error = await rejectionOf(promise);
  expect(error.status).toBe(401);
  expect(error.code).toBe('invalid_token');
}

describe('a rejection is remembered for negativeTtl', () => {
  it('in process: a token the provider learns later stays rejected, without asking again', async () => {
    const { mock, gate } = await setup({ negativeTtl: MINUTE });
    await expectRejected(gate.authenticate(bearer(LATE)));
    mock.setToken(LATE, { id: 'tok-late' });
    for (let i = 0; i < 10; i++) await expectRejected(gate.authenticate(bearer(LATE)));
    expect(mock.calls.verify).toBe(1);
    expect(gate.stats()).toMatchObject({ hits: 10, misses: 1 });
  });

  it('through an app: every request gets the remembered 401 with its challenge', async () => {
    const { mock, get, seen } = await setupApp({ negativeTtl: MINUTE });
    for (let i = 0; i < 5; i++) {
      const res = await get(UNKNOWN);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(INVALID_TOKEN);
    }
    expect(mock.calls.verify).toBe(1);
    expect(seen).toEqual([]);
  });

  it('in process: once negativeTtl has passed, the provider is asked again (and ttl plays no part)', async () => {
    const { mock, gate } = await setup({ ttl: MINUTE, negativeTtl: SHORT });
    await expectRejected(gate.authenticate(bearer(LATE)));
    mock.setToken(LATE, { id: 'tok-late' });
    await sleep(WELL_PAST_SHORT);
    expect((await gate.authenticate(bearer(LATE))).subject).toBe('tok-late');
    expect(mock.calls.verify).toBe(2);
  });

  it('through an app: once negativeTtl has passed, a token the provider learned meanwhile passes', async () => {
    const { mock, get } = await setupApp({ negativeTtl: SHORT });
    expect((await get(LATE)).status).toBe(401);
    mock.setToken(LATE, { id: 'tok-late' });
    await sleep(WELL_PAST_SHORT);
    const res = await get(LATE);
    expect(res.status).toBe(200);
    expect(res.body.subject).toBe('tok-late');
    expect(mock.calls.verify).toBe(2);
  });
});

describe('negativeTtl: 0 remembers nothing', () => {
  it('in process: every request asks the provider', async () => {
    const { mock, gate } = await setup({ negativeTtl: 0 });
    for (let i = 0; i < 5; i++) await expectRejected(gate.authenticate(bearer(UNKNOWN)));
    expect(mock.calls.verify).toBe(5);
    expect(gate.stats()).toMatchObject({ hits: 0, misses: 5 });
  });

  it('through an app: a token the provider learns passes on the very next request', async () => {
    const { mock, get } = await setupApp({ negativeTtl: 0 });
    expect((await get(LATE)).status).toBe(401);
    expect((await get(LATE)).status).toBe(401);
    mock.setToken(LATE, { id: 'tok-late' });
    const res = await get(LATE);
    expect(res.status).toBe(200);
    expect(res.body.subject).toBe('tok-late');
    expect(mock.calls.verify).toBe(3);
  });

  it('invalidate(req) finds nothing to forget after a rejection', async () => {
    const { gate } = await setup({ negativeTtl: 0 });
    await expectRejected(gate.authenticate(bearer(UNKNOWN)));
    expect(gate.invalidate(bearer(UNKNOWN))).toBe(false);
  });
});

describe('cache.negativeMax sizes the space of rejections', () => {
  it('in process: that many rejections are remembered without asking again, and one more pushes out the oldest', async () => {
    // The default for max 10 would be 1: only negativeMax can keep the 20.
    const { mock, gate } = await setup({ max: 10, negativeMax: 20, negativeTtl: MINUTE });
    const unknown = Array.from({ length: 21 }, (_, i) => `${UNKNOWN}${i}`);
    for (const token of unknown.slice(0, 20)) await expectRejected(gate.authenticate(bearer(token)));
    expect(mock.calls.verify).toBe(20);
    for (const token of unknown.slice(0, 20)) await expectRejected(gate.authenticate(bearer(token)));
    expect(mock.calls.verify).toBe(20);
    await expectRejected(gate.authenticate(bearer(unknown[20] as string)));
    await expectRejected(gate.authenticate(bearer(unknown[0] as string)));
    expect(mock.calls.verify).toBe(22);
  });
});

describe('a rejection replaces nothing accepted for another credential', () => {
  it.each([MINUTE, 0])(
    'in process (negativeTtl %i): the accepted answer is still served from the cache',
    async (negativeTtl) => {
      const { mock, gate } = await setup({ negativeTtl });
      expect((await gate.authenticate(bearer(KNOWN))).subject).toBe('tok-known');
      // Revoked upstream: only the cached answer can still accept it.
      mock.removeToken(KNOWN);
      await expectRejected(gate.authenticate(bearer(UNKNOWN)));
      await expectRejected(gate.authenticate(bearer(LATE)));
      const again = await gate.authenticate(bearer(KNOWN));
      expect(again.subject).toBe('tok-known');
      expect(again.can(READ_CHECKS)).toBe(true);
      expect(mock.calls.verify).toBe(3);
    },
  );

  it.each([MINUTE, 0])(
    'over one keep-alive connection (negativeTtl %i): a rejected token between requests of an accepted one',
    async (negativeTtl) => {
      const { mock, gate } = await setup({ negativeTtl });
      const client = closeLater(await serveOnOneConnection(gatedApp(gate).app));
      const send = (token: string) => client.get('/checks', { authorization: `Bearer ${token}` });
      for (let i = 0; i < 3; i++) expect((await send(KNOWN)).status).toBe(200);
      mock.removeToken(KNOWN);
      const rejected = await send(UNKNOWN);
      expect(rejected.status).toBe(401);
      expect(rejected.challenge).toMatch(INVALID_TOKEN);
      for (let i = 0; i < 3; i++) {
        const res = await send(KNOWN);
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body)).toMatchObject({ subject: 'tok-known' });
      }
      expect(mock.calls.verify).toBe(2);
      client.expectOneConnection();
    },
  );
});

describe('invalidate(req) removes a remembered rejection', () => {
  it('in process: the next request asks the provider, which now accepts', async () => {
    const { mock, gate } = await setup({ negativeTtl: MINUTE });
    await expectRejected(gate.authenticate(bearer(LATE)));
    mock.setToken(LATE, { id: 'tok-late' });
    expect(gate.invalidate(bearer(LATE))).toBe(true);
    expect(gate.invalidate(bearer(LATE))).toBe(false);
    expect((await gate.authenticate(bearer(LATE))).subject).toBe('tok-late');
    expect(mock.calls.verify).toBe(2);
  });

  it("through an app: only that token's rejection goes", async () => {
    const { mock, gate, get } = await setupApp({ negativeTtl: MINUTE });
    expect((await get(LATE)).status).toBe(401);
    expect((await get(UNKNOWN)).status).toBe(401);
    mock.setToken(LATE, { id: 'tok-late' });
    mock.setToken(UNKNOWN, { id: 'tok-unknown' });
    expect((await get(LATE)).status).toBe(401); // still remembered
    gate.invalidate(bearer(LATE));
    expect((await get(LATE)).status).toBe(200);
    expect((await get(UNKNOWN)).status).toBe(401); // not invalidated: still remembered
    expect(mock.calls.verify).toBe(3);
  });
});

describe('staleIfError never serves a credential that was rejected', () => {
  /** Accepted with a short ttl and a long stale window, then left to go stale (past ttl, inside the window). */
  async function staleThenRejected(negativeTtl: number) {
    const { mock, get, gate, seen } = await setupApp({ ttl: SHORT, negativeTtl, staleIfError: MINUTE });
    expect((await get(KNOWN)).status).toBe(200);
    await sleep(WELL_PAST_SHORT);
    mock.removeToken(KNOWN);
    const rejected = await get(KNOWN);
    expect(rejected.status).toBe(401);
    expect(rejected.headers['www-authenticate']).toMatch(INVALID_TOKEN);
    return { mock, get, gate, seen };
  }

  /** Asks while the provider fails: a 503, never the old answer. */
  async function expectNoStale(ctx: Awaited<ReturnType<typeof staleThenRejected>>) {
    ctx.mock.fault = { kind: 'reset' };
    const res = await ctx.get(KNOWN);
    expect(res.status).toBe(503);
    expect(ctx.seen).toHaveLength(1); // the first, accepted request; nothing since
    expect(ctx.gate.stats().stale).toBe(0);
  }

  it('negativeTtl 0: the rejection, though not remembered, ends the stale answer', async () => {
    await expectNoStale(await staleThenRejected(0));
  });

  it('the rejection invalidated: nothing is left to serve', async () => {
    const ctx = await staleThenRejected(MINUTE);
    expect(ctx.gate.invalidate(bearer(KNOWN))).toBe(true);
    await expectNoStale(ctx);
  });

  it('the rejection expired: nothing is left to serve', async () => {
    const ctx = await staleThenRejected(SHORT);
    await sleep(WELL_PAST_SHORT);
    await expectNoStale(ctx);
  });

  it('in process, with a provider of its own that accepts, then rejects, then fails', async () => {
    let answer: 'accept' | 'reject' | 'fail' = 'accept';
    const provider: Provider<BearerCredential> = {
      name: 'scripted',
      cacheScope: 'scripted',
      extract: extractBearer,
      verify: async (): Promise<Verdict> => {
        if (answer === 'fail') throw new ProviderFailure('unreachable', 'down', true);
        if (answer === 'reject') return { ok: false, reason: 'The access token is invalid' };
        return { ok: true, principal: { subject: 'tok-scripted', permissions: [], details: {} } };
      },
    };
    const gate = closeLater(
      createGate({ providers: [provider], cache: { ttl: 1, negativeTtl: 0, staleIfError: MINUTE }, retry: false }),
    );
    expect((await gate.authenticate(bearer(KNOWN))).stale).toBe(false);
    await sleep(WELL_PAST_SHORT);
    answer = 'reject';
    await expectRejected(gate.authenticate(bearer(KNOWN)));
    answer = 'fail';
    for (let i = 0; i < 3; i++) {
      const error = await rejectionOf(gate.authenticate(bearer(KNOWN)));
      expect(error.status).toBe(503);
    }
    expect(gate.stats().stale).toBe(0);
  });
});
