/**
 * The verdict cache, seen from outside: call counts on the mock providers,
 * `gate.stats()` and `onEvent`. Covers the expiry rules, single flight, what
 * the cache key must include, and the cache bugs other gates shipped: Ory
 * Oathkeeper skipped authorizers on cached answers (advisory
 * GHSA-qvp4-rpmr-xwrr), renewed entries on every hit and turned an upstream
 * 429 into a 401; Oathkeeper and heimdall left parts of what decides an
 * answer out of their cache keys; Ory Hydra had a bug in how long it
 * remembered a rejection.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import {
  type BearerCredential,
  createGate,
  extractBearer,
  type GateEvent,
  type GateOptions,
  onlineOrNot,
  type Provider,
  ProviderFailure,
  partoo,
  requires,
  type Verdict,
} from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { rejectionOf, thrownBy } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';
import { MemoryTier } from './support/memory-tier.js';

const closeLater = closeAfterEach();
const READ = 'uptime_checks (read)';
const WRITE = 'uptime_checks (write)';
const API_KEY = 'partoo-server-key';
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const connection = (userId: string, token: string) => ({ headers: {}, query: { user_id: userId, token } });

/** An OnlineOrNot mock with one reader token, and a gate in front of it. Retries and breaker off, so counts are exact. */
async function setup(options: Partial<GateOptions> = {}) {
  const mock = closeLater(
    await mockOnlineOrNot({ tokens: { 'reader-token': { id: 'tok_reader', permissions: [READ] } } }),
  );
  const gate = closeLater(
    createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false, ...options }),
  );
  return { mock, gate };
}

/** Sleeps until `performance.now()` reaches `at`. */
const sleepUntil = (at: number) => sleep(Math.max(0, at - performance.now()));

describe("gate cache: an app's fake timers", () => {
  it('move the cache clock: under vi.useFakeTimers(), advancing past ttl asks the provider again', async () => {
    let verified = 0;
    const counted: Provider = {
      name: 'counted',
      cacheScope: 'counted',
      extract: extractBearer,
      async verify(): Promise<Verdict> {
        verified++;
        return { ok: true, principal: { subject: 'user', permissions: [READ], details: {} } };
      },
    };
    vi.useFakeTimers();
    const gate = createGate({ providers: [counted], cache: { ttl: 60_000 } });
    try {
      await gate.authenticate(bearer('fake-timers-token'));
      vi.advanceTimersByTime(59_000);
      await gate.authenticate(bearer('fake-timers-token'));
      expect(verified).toBe(1);
      vi.advanceTimersByTime(2_000);
      await gate.authenticate(bearer('fake-timers-token'));
      expect(verified).toBe(2);
    } finally {
      vi.useRealTimers();
      await gate.close();
    }
  });
});

describe("a custom provider's details", () => {
  /** A provider accepting every token, with `details(token)` as its details. */
  const withDetails = (details: (token: string) => Record<string, unknown>): Provider => ({
    name: 'detailed',
    cacheScope: 'detailed',
    extract: extractBearer,
    async verify(credential): Promise<Verdict> {
      return { ok: true, principal: { subject: 'user', permissions: [READ], details: details(credential.secret) } };
    },
  });

  it('nested deeper than 64 levels are a 503 and a provider fault, not a crash on each request', async () => {
    const events: GateEvent[] = [];
    const gate = closeLater(
      createGate({
        providers: [withDetails(() => ({ deep: JSON.parse(`${'['.repeat(30_000)}${']'.repeat(30_000)}`) }))],
        retry: false,
        onEvent: (event) => events.push(event),
      }),
    );
    await expect(gate.authenticate(bearer('deep-token'))).rejects.toMatchObject({ status: 503 });
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'provider_error',
        reason: 'invalid_answer',
        message: expect.stringMatching(/deeper than 64/),
      }),
    );
  });

  it('keep their data members only: a getter of the provider is never run', async () => {
    let ran = 0;
    const gate = closeLater(
      createGate({
        providers: [
          withDetails(() => ({
            plan: 'pro',
            get boom(): never {
              ran++;
              throw new Error('getter');
            },
          })),
        ],
      }),
    );
    const context = await gate.authenticate(bearer('getter-token'));
    expect(context.details).toEqual({ plan: 'pro' });
    expect(ran).toBe(0);
  });

  it('keep their shape in the frozen copy: a shared member stays shared, a cycle a cycle, a __proto__ key a member', async () => {
    const role = { name: 'reader' };
    const gate = closeLater(
      createGate({
        providers: [
          withDetails(() => {
            const details: Record<string, unknown> = JSON.parse('{"__proto__":{"admin":true},"plan":"pro"}');
            details.first = role;
            details.again = role;
            details.list = [role, 'x'];
            details.self = details;
            return details;
          }),
        ],
      }),
    );
    const { details } = await gate.authenticate(bearer('shape-token'));
    expect(Object.getPrototypeOf(details)).toBe(Object.prototype);
    expect((details as { admin?: unknown }).admin).toBeUndefined();
    expect(Object.getOwnPropertyDescriptor(details, '__proto__')?.value).toEqual({ admin: true });
    expect(details.first).toEqual(role);
    expect(details.first).not.toBe(role);
    expect(details.again).toBe(details.first);
    expect((details.list as unknown[])[0]).toBe(details.first);
    expect(details.self).toBe(details);
    for (const part of [
      details,
      details.first,
      details.list,
      Object.getOwnPropertyDescriptor(details, '__proto__')?.value,
    ])
      expect(Object.isFrozen(part)).toBe(true);
  });

  it('are kept as they are when frozen already and holding only frozen plain data; copied when anything else is in them', async () => {
    const since = new Date(0);
    const kept = Object.freeze({ plan: 'pro', since, roles: Object.freeze(['reader', Object.freeze({ team: 'a' })]) });
    const unfrozenInside = Object.freeze({ plan: 'pro', roles: ['reader'] });
    const getter = Object.freeze({
      plan: 'pro',
      get boom(): string {
        throw new Error('getter');
      },
    });
    const symbol = Object.freeze({ plan: 'pro', [Symbol('hidden')]: 'x' });
    const hidden = Object.freeze(Object.defineProperty({ plan: 'pro' }, 'secret', { value: 'x', enumerable: false }));
    const proxy = new Proxy(Object.freeze({ plan: 'pro' }), {});
    const answers: Record<string, Record<string, unknown>> = { kept, unfrozenInside, getter, symbol, hidden, proxy };
    const gate = closeLater(createGate({ providers: [withDetails((secret) => answers[secret] ?? {})] }));
    const detailsOf = async (name: string) => (await gate.authenticate(bearer(name))).details;

    const same = await detailsOf('kept');
    expect(same).toBe(kept);
    expect(same.since).toBe(since);

    const copied = await detailsOf('unfrozenInside');
    expect(copied).not.toBe(unfrozenInside);
    expect(copied).toEqual({ plan: 'pro', roles: ['reader'] });
    expect(Object.isFrozen(copied.roles)).toBe(true);
    expect(Object.isFrozen(unfrozenInside.roles)).toBe(false);
    for (const name of ['getter', 'symbol', 'hidden', 'proxy']) {
      const details = await detailsOf(name);
      expect(details === answers[name], name).toBe(false);
      expect(Reflect.ownKeys(details), name).toEqual(['plan']);
      expect(Object.isFrozen(details), name).toBe(true);
    }
  });
});

describe('the documented defaults, under fake timers', () => {
  /** A provider whose `verify` is `answer`. */
  function scripted(answer: () => Promise<Verdict>) {
    const provider: Provider = { name: 'scripted', cacheScope: 'scripted', extract: extractBearer, verify: answer };
    return provider;
  }
  const accept = async (): Promise<Verdict> => ({
    ok: true,
    principal: { subject: 'user', permissions: [READ], details: {} },
  });
  const settled = (promise: Promise<unknown>) => {
    let done = false;
    promise.then(
      () => (done = true),
      () => (done = true),
    );
    return () => done;
  };

  it('cache.ttl 60 s and cache.negativeTtl 5 s', async () => {
    vi.useFakeTimers();
    let calls = 0;
    let verdict: Verdict = { ok: false, reason: 'unknown' };
    const gate = createGate({
      providers: [
        scripted(async () => {
          calls++;
          return verdict;
        }),
      ],
    });
    try {
      await expect(gate.authenticate(bearer('tok-1'))).rejects.toMatchObject({ status: 401 });
      vi.advanceTimersByTime(4_900);
      await expect(gate.authenticate(bearer('tok-1'))).rejects.toMatchObject({ status: 401 });
      expect(calls).toBe(1);
      vi.advanceTimersByTime(200);
      verdict = await accept();
      await gate.authenticate(bearer('tok-1'));
      expect(calls).toBe(2);
      vi.advanceTimersByTime(59_900);
      await gate.authenticate(bearer('tok-1'));
      expect(calls).toBe(2);
      vi.advanceTimersByTime(200);
      await gate.authenticate(bearer('tok-1'));
      expect(calls).toBe(3);
    } finally {
      vi.useRealTimers();
      await gate.close();
    }
  });

  it('timeout 5 s, and 2 retries of a retryable failure', async () => {
    vi.useFakeTimers();
    const hung = createGate({ providers: [scripted(() => new Promise<Verdict>(() => {}))] });
    let calls = 0;
    const failing = createGate({
      providers: [
        scripted(async () => {
          calls++;
          throw new ProviderFailure('unreachable', 'connection refused');
        }),
      ],
    });
    try {
      const answer = hung.authenticate(bearer('tok-1'));
      answer.catch(() => {});
      const done = settled(answer);
      await vi.advanceTimersByTimeAsync(4_900);
      expect(done()).toBe(false);
      await vi.advanceTimersByTimeAsync(200);
      await expect(answer).rejects.toMatchObject({ status: 503 });

      const failed = failing.authenticate(bearer('tok-2'));
      failed.catch(() => {});
      await vi.advanceTimersByTimeAsync(4_000);
      await expect(failed).rejects.toMatchObject({ status: 503 });
      expect(calls).toBe(3);
    } finally {
      vi.useRealTimers();
      await Promise.all([hung.close(), failing.close()]);
    }
  });
});

describe('gate cache: hits and lifetimes', () => {
  it('answers the second request from the cache', async () => {
    const { mock, gate } = await setup();
    const first = await gate.authenticate(bearer('reader-token'));
    const second = await gate.authenticate(bearer('reader-token'));
    expect(second.subject).toBe(first.subject);
    expect(second.permissions).toEqual([READ]);
    expect(mock.calls).toMatchObject({ verify: 1, permissions: 1 });
    expect(gate.stats()).toMatchObject({ hits: 1, misses: 1, coalesced: 0, upstreamCalls: 1, errors: 0 });
  });

  it('asks the provider again once ttl has passed', async () => {
    const { mock, gate } = await setup({ cache: { ttl: 200 } });
    await gate.authenticate(bearer('reader-token'));
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(1);
    await sleep(300);
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(2);
    expect(gate.stats()).toMatchObject({ hits: 1, misses: 2 });
  });

  it('never keeps a token past its own expiresAt, even with a long ttl', async () => {
    const mock = closeLater(await mockPartoo({ apiKey: API_KEY }));
    mock.setToken({ userId: 'user-1', token: 'short-lived', expirationDate: new Date(Date.now() + 1000) });
    const gate = closeLater(
      createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url })], cache: { ttl: 60_000 }, retry: false }),
    );
    await gate.authenticate(connection('user-1', 'short-lived'));
    await gate.authenticate(connection('user-1', 'short-lived'));
    expect(mock.calls.checkToken).toBe(1);

    await sleep(1200);
    mock.setToken({
      userId: 'user-1',
      token: 'short-lived',
      status: 'expired',
      expirationDate: new Date(Date.now() - 100),
    });
    const error = await rejectionOf(gate.authenticate(connection('user-1', 'short-lived')));
    expect(mock.calls.checkToken).toBe(2);
    expect(error.status).toBe(401);
    expect(error.code).toBe('invalid_token');
  });

  it('rejects a token once its expiry has passed, even when the provider still says valid', async () => {
    const mock = closeLater(await mockPartoo({ apiKey: API_KEY }));
    mock.setToken({ userId: 'user-1', token: 'short-lived', expirationDate: new Date(Date.now() + 1000) });
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url })], retry: false }));
    await gate.authenticate(connection('user-1', 'short-lived'));
    await sleep(1200);
    const error = await rejectionOf(gate.authenticate(connection('user-1', 'short-lived')));
    expect(error.status).toBe(401);
    expect(error.headers['WWW-Authenticate']).toContain('error_description="The access token has expired"');
    expect(mock.calls.checkToken).toBe(2);
  });

  it('refuses a cached token past its expiry when the wall clock jumps ahead of the cache clock (a suspend, an NTP step)', async () => {
    // The cache's clock (performance.now()) stands still while the machine sleeps; the wall clock does not.
    const expiresAt = new Date(Date.now() + 30_000);
    let verified = 0;
    const expiring: Provider = {
      name: 'expiring',
      cacheScope: 'expiring',
      extract: extractBearer,
      async verify(): Promise<Verdict> {
        verified++;
        return { ok: true, principal: { subject: 'user', permissions: [READ], details: {}, expiresAt } };
      },
    };
    const gate = closeLater(createGate({ providers: [expiring], cache: { ttl: 60_000 } }));
    const socket = {};
    const onConnection = (token: string) => ({ ...bearer(token), connection: socket });
    await gate.authenticate(bearer('by-key'));
    await gate.authenticate(onConnection('by-connection'));
    await gate.authenticate(onConnection('by-connection'));
    expect(verified).toBe(2);
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(expiresAt.getTime() + 60 * 60_000);
      for (const request of [bearer('by-key'), onConnection('by-connection')]) {
        const error = await rejectionOf(gate.authenticate(request));
        expect(error.status).toBe(401);
        expect(error.headers['WWW-Authenticate']).toContain('error_description="The access token has expired"');
      }
    } finally {
      vi.useRealTimers();
    }
  });

  it('refuses a cached token from the very millisecond its expiresAt names, on the instance that asked and on one that took its answer from a shared tier', async () => {
    const mock = closeLater(await mockPartoo({ apiKey: API_KEY }));
    const tier = new MemoryTier();
    const gateOnTier = () =>
      closeLater(
        createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url })], sharedCache: tier, retry: false }),
      );
    const asker = gateOnTier();
    const taker = gateOnTier();
    const passedAtExpiry: string[] = [];
    // Each answer lands at its own moment within a millisecond of the wall clock: many tokens, many moments.
    for (let i = 0; i < 25; i++) {
      const token = `edge-${i}`;
      const expiresAt = Date.now() + 120;
      mock.setToken({ userId: 'user-1', token, expirationDate: new Date(expiresAt) });
      const calls = mock.calls.checkToken;
      await asker.authenticate(connection('user-1', token));
      await taker.authenticate(connection('user-1', token));
      expect(mock.calls.checkToken - calls).toBe(1);
      await sleep(Math.max(0, expiresAt - Date.now() - 5));
      while (Date.now() < expiresAt) {
        // The first moment the wall clock reads expiresAt: the token has expired.
      }
      // Both asked at once: a cached answer is found before the first await.
      const answers = [asker, taker].map((gate) =>
        gate.authenticate(connection('user-1', token)).then(
          () => true,
          () => false,
        ),
      );
      const [askerPassed, takerPassed] = await Promise.all(answers);
      if (askerPassed) passedAtExpiry.push(`asker ${token}`);
      if (takerPassed) passedAtExpiry.push(`taker ${token}`);
    }
    expect(passedAtExpiry).toEqual([]);
  });

  it('never extends an entry on a hit (Oathkeeper renewed entries on hits)', async () => {
    const { mock, gate } = await setup({ cache: { ttl: 1000 } });
    const started = performance.now();
    await gate.authenticate(bearer('reader-token'));
    // Hits well inside the ttl; were a hit to renew the entry, the last one would keep it alive until ~1600 ms.
    for (const at of [100, 300, 600]) {
      await sleepUntil(started + at);
      await gate.authenticate(bearer('reader-token'));
    }
    expect(mock.calls.verify).toBe(1);
    await sleepUntil(started + 1200);
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(2);
    expect(gate.stats()).toMatchObject({ hits: 3, misses: 2 });
  });

  it('remembers a rejection for negativeTtl, then asks again (a Hydra bug)', async () => {
    const { mock, gate } = await setup({ cache: { negativeTtl: 250 } });
    expect((await rejectionOf(gate.authenticate(bearer('new-token')))).status).toBe(401);
    expect((await rejectionOf(gate.authenticate(bearer('new-token')))).status).toBe(401);
    expect(mock.calls.verify).toBe(1);
    expect(gate.stats()).toMatchObject({ hits: 1, misses: 1 });

    // The provider now knows the token; the cached rejection still holds until negativeTtl passes.
    mock.setToken('new-token', { id: 'tok_new', permissions: [READ] });
    expect((await rejectionOf(gate.authenticate(bearer('new-token')))).status).toBe(401);
    expect(mock.calls.verify).toBe(1);
    await sleep(350);
    expect((await gate.authenticate(bearer('new-token'))).subject).toBe('tok_new');
    expect(mock.calls.verify).toBe(2);
  });

  it('does not remember rejections with negativeTtl: 0', async () => {
    const { mock, gate } = await setup({ cache: { negativeTtl: 0 } });
    await rejectionOf(gate.authenticate(bearer('new-token')));
    await rejectionOf(gate.authenticate(bearer('new-token')));
    expect(mock.calls.verify).toBe(2);
  });

  it('does not cache provider failures: the first request after recovery passes', async () => {
    const { mock, gate } = await setup();
    mock.fault = { kind: 'status', status: 500 };
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(503);
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(503);
    mock.fault = undefined;
    expect((await gate.authenticate(bearer('reader-token'))).subject).toBe('tok_reader');
    expect(gate.stats()).toMatchObject({ hits: 0, misses: 3, errors: 2 });
  });

  it("turns a provider's 429 into 503 with Retry-After, never a 401 (Oathkeeper answered 401)", async () => {
    const { mock, gate } = await setup({ retry: {}, timeout: 1000 });
    mock.fault = { kind: 'status', status: 429, retryAfter: 7 };
    const error = await rejectionOf(gate.authenticate(bearer('reader-token')));
    expect(error.status).toBe(503);
    expect(error.code).toBe('provider_unavailable');
    expect(error.headers).toEqual({ 'Retry-After': '7' });
    // Retry-After is beyond the deadline, so no retry either.
    expect(mock.calls.verify).toBe(1);
    mock.fault = undefined;
    expect((await gate.authenticate(bearer('reader-token'))).subject).toBe('tok_reader');
  });
});

describe('gate cache: single flight', () => {
  it('shares one upstream call between 50 concurrent misses', async () => {
    const { mock, gate } = await setup();
    mock.latency = 100;
    const results = await Promise.all(Array.from({ length: 50 }, () => gate.authenticate(bearer('reader-token'))));
    expect(new Set(results.map((auth) => auth.subject))).toEqual(new Set(['tok_reader']));
    expect(mock.calls).toMatchObject({ verify: 1, permissions: 1 });
    expect(gate.stats()).toMatchObject({ misses: 50, coalesced: 49, upstreamCalls: 1, hits: 0 });
  });

  it('shares one rejection between concurrent misses', async () => {
    const { mock, gate } = await setup();
    mock.latency = 50;
    const errors = await Promise.all(Array.from({ length: 10 }, () => rejectionOf(gate.authenticate(bearer('nope')))));
    expect(errors.map((error) => error.status)).toEqual(Array(10).fill(401));
    expect(mock.calls.verify).toBe(1);
  });

  it('shares one failure between concurrent misses, and the next request asks again', async () => {
    const { mock, gate } = await setup();
    mock.latency = 50;
    mock.fault = { kind: 'status', status: 503 };
    const errors = await Promise.all(
      Array.from({ length: 10 }, () => rejectionOf(gate.authenticate(bearer('reader-token')))),
    );
    expect(errors.map((error) => error.status)).toEqual(Array(10).fill(503));
    expect(mock.calls.verify).toBe(1);
    mock.fault = undefined;
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(2);
  });

  it('does not share calls between different tokens', async () => {
    const { mock, gate } = await setup();
    mock.setToken('other-token', { id: 'tok_other' });
    mock.latency = 50;
    const [a, b] = await Promise.all([
      gate.authenticate(bearer('reader-token')),
      gate.authenticate(bearer('other-token')),
    ]);
    expect([a.subject, b.subject]).toEqual(['tok_reader', 'tok_other']);
    expect(mock.calls.verify).toBe(2);
    expect(gate.stats().coalesced).toBe(0);
  });
});

/** `provider`, but only for requests whose `x-tenant` header is `tenant`: lets one gate hold two similar providers. */
function forTenant<C extends BearerCredential>(tenant: string, provider: Provider<C>): Provider<C> {
  return {
    name: provider.name,
    cacheScope: provider.cacheScope,
    extract: (req, realm) => (req.headers['x-tenant'] === tenant ? provider.extract(req, realm) : undefined),
    verify: (credential, signal) => provider.verify(credential, signal),
    close: () => provider.close?.() ?? Promise.resolve(),
  };
}

describe('gate cache: what the key includes (Oathkeeper and heimdall left parts of it out)', () => {
  it('keeps answers of two providers with the same name but different base URLs apart', async () => {
    const mockA = closeLater(
      await mockOnlineOrNot({ tokens: { 'shared-token': { id: 'tok_A', permissions: [READ] } } }),
    );
    const mockB = closeLater(await mockOnlineOrNot({ tokens: { 'shared-token': { id: 'tok_B', permissions: [] } } }));
    const gate = closeLater(
      createGate({
        providers: [
          forTenant('a', onlineOrNot({ baseUrl: mockA.url })),
          forTenant('b', onlineOrNot({ baseUrl: mockB.url })),
        ],
      }),
    );
    const asTenant = (tenant: string) => ({ headers: { authorization: 'Bearer shared-token', 'x-tenant': tenant } });

    expect((await gate.authenticate(asTenant('a'))).subject).toBe('tok_A');
    const b = await gate.authenticate(asTenant('b'));
    expect(b.subject).toBe('tok_B');
    expect(b.can(READ)).toBe(false);
    expect((await gate.authenticate(asTenant('a'))).subject).toBe('tok_A');
    expect((await gate.authenticate(asTenant('b'))).subject).toBe('tok_B');
    expect([mockA.calls.verify, mockB.calls.verify]).toEqual([1, 1]);
    expect(gate.stats()).toMatchObject({ hits: 2, misses: 2 });
  });

  it("keeps a token rejected by one provider from being accepted from another's cache", async () => {
    const mockA = closeLater(await mockOnlineOrNot({ tokens: { 'shared-token': { id: 'tok_A' } } }));
    const mockB = closeLater(await mockOnlineOrNot());
    const gate = closeLater(
      createGate({
        providers: [
          forTenant('a', onlineOrNot({ baseUrl: mockA.url })),
          forTenant('b', onlineOrNot({ baseUrl: mockB.url })),
        ],
      }),
    );
    await gate.authenticate({ headers: { authorization: 'Bearer shared-token', 'x-tenant': 'a' } });
    const error = await rejectionOf(
      gate.authenticate({ headers: { authorization: 'Bearer shared-token', 'x-tenant': 'b' } }),
    );
    expect(error.status).toBe(401);
    expect(mockB.calls.verify).toBe(1);
  });

  it("keys Partoo answers by the server's API key and accepted statuses too", async () => {
    const mock = closeLater(
      await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'user-1', token: 'used-token', status: 'consumed' }] }),
    );
    /** Routes a connection request to a provider by its `x-tenant` header. */
    const tenant = (name: string, provider: ReturnType<typeof partoo>): ReturnType<typeof partoo> => ({
      ...provider,
      extract: (req, realm) => (req.headers['x-tenant'] === name ? provider.extract(req, realm) : undefined),
    });
    const gate = closeLater(
      createGate({
        providers: [
          tenant('lenient', partoo({ apiKey: API_KEY, baseUrl: mock.url, accept: ['valid', 'consumed'] })),
          tenant('strict', partoo({ apiKey: API_KEY, baseUrl: mock.url })),
          tenant('wrong-key', partoo({ apiKey: 'another-key', baseUrl: mock.url, accept: ['valid', 'consumed'] })),
        ],
        retry: false,
      }),
    );
    const as = (name: string) => ({ headers: { 'x-tenant': name }, query: { user_id: 'user-1', token: 'used-token' } });

    expect((await gate.authenticate(as('lenient'))).subject).toBe('user-1');
    expect((await rejectionOf(gate.authenticate(as('strict')))).status).toBe(401);
    expect((await rejectionOf(gate.authenticate(as('wrong-key')))).status).toBe(500);
    expect(mock.calls.checkToken).toBe(3);
  });
});

describe('gate cache: guards on cached answers', () => {
  it('runs guards on a cache hit: a cached token without the permission is still 403 (GHSA-qvp4-rpmr-xwrr)', async () => {
    const { mock, gate } = await setup();
    const needsWrite = requires(WRITE);
    const needsRead = requires(READ);
    for (let request = 1; request <= 3; request++) {
      const auth = await gate.authenticate(bearer('reader-token'));
      const error = thrownBy(() => gate.authorize(auth, needsWrite));
      expect(error.status).toBe(403);
      expect(error.code).toBe('insufficient_scope');
      expect(() => gate.authorize(auth, needsRead)).not.toThrow();
    }
    expect(mock.calls.verify).toBe(1);
    expect(gate.stats().hits).toBe(2);
  });
});

describe('gate cache: invalidate and clear', () => {
  async function setupTwoTokens() {
    const context = await setup();
    context.mock.setToken('other-token', { id: 'tok_other' });
    await context.gate.authenticate(bearer('reader-token'));
    await context.gate.authenticate(bearer('other-token'));
    expect(context.mock.calls.verify).toBe(2);
    return context;
  }

  it('invalidate(req) forgets only that credential', async () => {
    const { mock, gate } = await setupTwoTokens();
    expect(gate.invalidate(bearer('reader-token'))).toBe(true);
    expect(gate.invalidate(bearer('reader-token'))).toBe(false);
    await gate.authenticate(bearer('other-token'));
    expect(mock.calls.verify).toBe(2);
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(3);
  });

  it('invalidate(req) picks up a revocation at once', async () => {
    const { mock, gate } = await setupTwoTokens();
    mock.removeToken('reader-token');
    expect((await gate.authenticate(bearer('reader-token'))).subject).toBe('tok_reader');
    gate.invalidate(bearer('reader-token'));
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(401);
  });

  it('invalidate(req) forgets a cached rejection too', async () => {
    const { mock, gate } = await setup({ cache: { negativeTtl: 60_000 } });
    await rejectionOf(gate.authenticate(bearer('late-token')));
    mock.setToken('late-token', { id: 'tok_late' });
    expect(gate.invalidate(bearer('late-token'))).toBe(true);
    expect((await gate.authenticate(bearer('late-token'))).subject).toBe('tok_late');
  });

  it('invalidate(req) returns false for a request without a credential', async () => {
    const { gate } = await setupTwoTokens();
    expect(gate.invalidate({ headers: {} })).toBe(false);
    expect(gate.invalidate(bearer('never-seen'))).toBe(false);
  });

  it('clear() forgets every credential; counters survive', async () => {
    const { mock, gate } = await setupTwoTokens();
    gate.clear();
    await gate.authenticate(bearer('reader-token'));
    await gate.authenticate(bearer('other-token'));
    expect(mock.calls.verify).toBe(4);
    expect(gate.stats()).toMatchObject({ misses: 4, hits: 0 });
  });

  it('invalidate(req) during an upstream call keeps that answer out of the cache', async () => {
    const { mock, gate } = await setup();
    mock.latency = 150;
    const pending = gate.authenticate(bearer('reader-token'));
    await sleep(50);
    expect(gate.invalidate(bearer('reader-token'))).toBe(true);
    expect((await pending).subject).toBe('tok_reader'); // asked before the invalidation
    mock.removeToken('reader-token');
    mock.latency = 0;
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(401);
    expect(mock.calls.verify).toBe(2);
  });

  it('revoke(req) during an upstream call: a request after it asks again, not joining the call', async () => {
    const { mock, gate } = await setup();
    mock.latency = 150;
    const pending = gate.authenticate(bearer('reader-token'));
    await sleep(50);
    expect(await gate.revoke(bearer('reader-token'))).toBe(true);
    // A request after the revocation does not join the verification asked before it: it asks again.
    const after = gate.authenticate(bearer('reader-token'));
    expect((await pending).subject).toBe('tok_reader'); // asked before the revocation
    expect((await after).subject).toBe('tok_reader');
    expect(mock.calls.verify).toBe(2);
    // Once the provider has dropped the token, a revocation makes the next request ask, and it is refused.
    mock.removeToken('reader-token');
    mock.latency = 0;
    await gate.revoke(bearer('reader-token'));
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(401);
    expect(mock.calls.verify).toBe(3);
  });

  it('a rejection that comes after invalidate(req) still removes what a later request stored for the credential', async () => {
    const { mock, gate } = await setup();
    mock.setToken('other-token', { id: 'tok_other' });
    // Every second verification answers 2 s late, the first for reader-token; the answer is made when it is sent,
    // well after the steps below.
    mock.fault = { kind: 'delay', ms: 2000, every: 2 };
    await gate.authenticate(bearer('other-token'));
    const asked = rejectionOf(gate.authenticate(bearer('reader-token')));
    await sleep(50);
    expect(gate.invalidate(bearer('reader-token'))).toBe(true);
    // Asked after the invalidation, answered at once, and kept.
    expect((await gate.authenticate(bearer('reader-token'))).subject).toBe('tok_reader');
    mock.removeToken('reader-token');
    expect((await asked).status).toBe(401);
    mock.fault = undefined;
    // The provider has since rejected the credential: the acceptance kept before is not served again.
    expect((await rejectionOf(gate.authenticate(bearer('reader-token')))).status).toBe(401);
    expect(mock.calls.verify).toBe(4);
  });

  it('clear() during an upstream call keeps that answer out of the cache', async () => {
    const { mock, gate } = await setup();
    mock.latency = 150;
    const pending = gate.authenticate(bearer('reader-token'));
    await sleep(50);
    gate.clear();
    await pending;
    mock.latency = 0;
    await gate.authenticate(bearer('reader-token'));
    expect(mock.calls.verify).toBe(2);
  });
});

describe('gate cache: broken verdicts fail closed', () => {
  /** A hand-written provider whose verify resolves `answer`, counting calls. */
  function brokenProvider(answer: unknown) {
    const provider = {
      calls: 0,
      name: 'broken',
      cacheScope: 'broken',
      extract: extractBearer,
      verify: async (): Promise<Verdict> => {
        provider.calls++;
        return answer as Verdict;
      },
    };
    return provider;
  }

  // What the 503's cause (and the provider_error event) tells the provider's author: the member that is wrong, by
  // its type alone (a value may be a secret).
  it.each([
    ['undefined', undefined, 'verify resolved undefined, not { ok: true, principal } or { ok: false, reason }'],
    ['null', null, 'verify resolved null, not { ok: true, principal } or { ok: false, reason }'],
    ['an empty object', {}, 'ok is undefined, not true or false'],
    ['ok: true without a principal', { ok: true }, 'principal is undefined, not an object'],
    [
      'a principal without subject',
      { ok: true, principal: { permissions: [], details: {} } },
      'principal.subject is undefined, not a string',
    ],
    [
      'permissions that are not a list',
      { ok: true, principal: { subject: 's', permissions: 'read', details: {} } },
      'principal.permissions is a string, not an array of strings',
    ],
    [
      'permissions that are not strings',
      { ok: true, principal: { subject: 's', permissions: ['x', 1], details: {} } },
      'principal.permissions[1] is 1, not a string',
    ],
    // A hole: `every` skips it, and auth.can(undefined) would pass.
    [
      'permissions with a hole',
      // biome-ignore lint/suspicious/noSparseArray: the hole is the point
      { ok: true, principal: { subject: 's', permissions: [, 'x'], details: {} } },
      'principal.permissions[0] is undefined, not a string',
    ],
    [
      'an invalid expiresAt',
      { ok: true, principal: { subject: 's', permissions: [], details: {}, expiresAt: new Date('x') } },
      'principal.expiresAt is an invalid Date',
    ],
    [
      'an expiresAt that is not a Date',
      { ok: true, principal: { subject: 's', permissions: [], details: {}, expiresAt: 1700000000000 } },
      'principal.expiresAt is 1700000000000, not a Date',
    ],
    [
      'a principal without details',
      { ok: true, principal: { subject: 's', permissions: [] } },
      'principal.details is undefined, not an object',
    ],
    [
      'ok: "yes"',
      { ok: 'yes', principal: { subject: 's', permissions: [], details: {} } },
      'ok is a string, not true or false',
    ],
    ['a rejection without a reason', { ok: false }, 'reason is undefined, not a string'],
  ])(
    'answers 503, never a pass, when verify resolves %s; not cached; the cause names what is wrong',
    async (_, answer, wrong) => {
      const provider = brokenProvider(answer);
      const messages: string[] = [];
      const gate = closeLater(
        createGate({
          providers: [provider],
          retry: false,
          breaker: false,
          onEvent: (event) => {
            if (event.type === 'provider_error') messages.push(event.message);
          },
        }),
      );
      for (let request = 1; request <= 2; request++) {
        const error = await rejectionOf(gate.authenticate(bearer('any-token')));
        expect(error.status).toBe(503);
        expect(error.code).toBe('provider_unavailable');
        expect((error.cause as Error).message).toBe(`broken returned no usable verdict: ${wrong}`);
      }
      expect(messages).toEqual([
        `broken returned no usable verdict: ${wrong}`,
        `broken returned no usable verdict: ${wrong}`,
      ]);
      expect(provider.calls).toBe(2);
    },
  );

  it('answers 503 when verify throws something that is not a ProviderFailure', async () => {
    const gate = closeLater(
      createGate({
        providers: [
          {
            name: 'throws',
            cacheScope: 'throws',
            extract: extractBearer,
            verify: () => Promise.reject(new Error('boom')),
          },
        ],
      }),
    );
    expect((await rejectionOf(gate.authenticate(bearer('any-token')))).status).toBe(503);
  });
});

describe('gate cache: no secrets in events or errors', () => {
  it('never reports the token through onEvent, error messages or headers', async () => {
    const events: GateEvent[] = [];
    const { mock, gate } = await setup({ onEvent: (event) => events.push(event), cache: { negativeTtl: 1000 } });
    const secrets = ['reader-token', 'unknown-s3cret-token'];

    await gate.authenticate(bearer('reader-token'));
    await gate.authenticate(bearer('reader-token'));
    const seen: unknown[] = [];
    const record = (error: Error & { headers?: unknown }) =>
      seen.push({ message: error.message, headers: error.headers, stack: error.stack });
    record(await rejectionOf(gate.authenticate(bearer('unknown-s3cret-token'))));
    record(await rejectionOf(gate.authenticate(bearer('unknown-s3cret-token'))));
    gate.clear();
    mock.fault = { kind: 'status', status: 500 };
    record(await rejectionOf(gate.authenticate(bearer('reader-token'))));
    mock.fault = { kind: 'garbage' };
    record(await rejectionOf(gate.authenticate(bearer('reader-token'))));

    expect(events.map((event) => event.type)).toEqual(expect.arrayContaining(['cache', 'verify', 'provider_error']));
    const reported = JSON.stringify({ events, seen, stats: gate.stats() });
    for (const secret of secrets) expect(reported).not.toContain(secret);
  });

  it('reports a hit, a miss and a coalesced request as cache events', async () => {
    const events: GateEvent[] = [];
    const { mock, gate } = await setup({ onEvent: (event) => events.push(event) });
    mock.latency = 50;
    await Promise.all([gate.authenticate(bearer('reader-token')), gate.authenticate(bearer('reader-token'))]);
    await gate.authenticate(bearer('reader-token'));
    const cacheResults = events.flatMap((event) => (event.type === 'cache' ? [event.result] : []));
    expect(cacheResults).toEqual(['miss', 'coalesced', 'hit']);
  });

  it('keeps authenticating when the onEvent listener throws', async () => {
    const { gate } = await setup({
      onEvent: () => {
        throw new Error('logger down');
      },
    });
    expect((await gate.authenticate(bearer('reader-token'))).subject).toBe('tok_reader');
  });
});

describe("gate cache: a shared tier's calls and the request's timeout", () => {
  const TIMEOUT = 300;

  async function sharing(tier: MemoryTier, cache: GateOptions['cache'] = {}, timeout = TIMEOUT) {
    const mock = closeLater(await mockOnlineOrNot({ tokens: { 'tok-1': { id: 'tok_1', permissions: [READ] } } }));
    const gate = closeLater(
      createGate({
        providers: [onlineOrNot({ baseUrl: mock.url })],
        sharedCache: tier,
        timeout,
        retry: false,
        cache,
      }),
    );
    return { mock, gate };
  }

  it('a rejection that comes after invalidate(req) removes the acceptance another request shared since', async () => {
    const tier = new MemoryTier();
    const { mock, gate } = await sharing(tier, {}, 3000);
    const other = closeLater(
      createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], sharedCache: tier, retry: false }),
    );
    mock.setToken('tok-2', { id: 'tok_2' });
    // The first verification of tok-1 answers 2 s late; the answer is made when it is sent, well after the steps below.
    mock.fault = { kind: 'delay', ms: 2000, every: 2 };
    await gate.authenticate(bearer('tok-2'));
    const asked = rejectionOf(gate.authenticate(bearer('tok-1')));
    await sleep(50);
    gate.invalidate(bearer('tok-1'));
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('tok_1');
    mock.removeToken('tok-1');
    expect((await asked).status).toBe(401);
    mock.fault = undefined;
    // The other instance does not find the acceptance in the tier: it asks, and is refused.
    expect((await rejectionOf(other.authenticate(bearer('tok-1')))).status).toBe(401);
    expect(mock.calls.verify).toBe(4);
  });

  it('serves the stale copy while the provider hangs (staleIfError), as without a tier', async () => {
    const { mock, gate } = await sharing(new MemoryTier(), { ttl: 50, staleIfError: 60_000 });
    expect((await gate.authenticate(bearer('tok-1'))).stale).toBe(false);
    await sleep(100);
    mock.fault = { kind: 'hang' };
    const context = await gate.authenticate(bearer('tok-1'));
    expect(context).toMatchObject({ subject: 'tok_1', stale: true });
    expect(gate.stats().stale).toBe(1);
  });

  it('serves no stale copy of an acceptance the tier declined (set answered false): no rejection there outlives it', async () => {
    const tier = new MemoryTier();
    tier.declinesAcceptances = true;
    const { mock, gate } = await sharing(tier, { ttl: 50, staleIfError: 60_000 });
    expect((await gate.authenticate(bearer('tok-1'))).stale).toBe(false);
    expect(tier.size).toBe(0);
    await sleep(100);
    mock.fault = { kind: 'status', status: 503 };
    expect((await rejectionOf(gate.authenticate(bearer('tok-1')))).status).toBe(503);
    expect(gate.stats().stale).toBe(0);
  });

  it("never serves stale on an instance without staleIfError, though another instance's copy in the tier allows it", async () => {
    const tier = new MemoryTier();
    // Fresh for half a second: time enough for the strict instance to take the shared copy.
    const { mock, gate: lenient } = await sharing(tier, { ttl: 500, staleIfError: 60_000 });
    const strict = closeLater(
      createGate({
        providers: [onlineOrNot({ baseUrl: mock.url })],
        sharedCache: tier,
        timeout: TIMEOUT,
        retry: false,
      }),
    );
    expect((await lenient.authenticate(bearer('tok-1'))).stale).toBe(false);
    expect((await strict.authenticate(bearer('tok-1'))).stale).toBe(false);
    expect(mock.calls.verify).toBe(1);
    await sleep(600);
    mock.fault = { kind: 'hang' };
    expect((await rejectionOf(strict.authenticate(bearer('tok-1')))).status).toBe(503);
    expect(strict.stats().stale).toBe(0);
    expect(await lenient.authenticate(bearer('tok-1'))).toMatchObject({ subject: 'tok_1', stale: true });
  });

  /** The names of the warnings Node emits while `run` runs, and on the tick after. */
  async function warningsDuring(run: () => Promise<void>): Promise<string[]> {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      await run();
      await sleep(20); // warnings are emitted on the next tick
      return warnings;
    } finally {
      process.off('warning', onWarning);
    }
  }

  it('takes many tier calls at once without a warning from Node', async () => {
    const warnings = await warningsDuring(async () => {
      const tier = new MemoryTier(500);
      tier.latency = 20;
      const { gate } = await sharing(tier);
      const answers = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) => gate.authenticate(bearer(`unknown-${i}`))),
      );
      expect(answers.every((answer) => answer.status === 'rejected')).toBe(true);
      expect(tier.gets).toBe(40);
    });
    expect(warnings).toEqual([]);
  });

  it("takes many waits for other instances' answers at once without a warning from Node", async () => {
    const warnings = await warningsDuring(async () => {
      // Another instance holds every lease; each wait listens to the signal it is given, as the Redis tier does.
      const tier = new MemoryTier(500);
      let waits = 0;
      const leasing = Object.assign(tier, {
        lease: () => Promise.resolve({ state: 'held' as const }),
        waitFor: (_key: string, signal?: AbortSignal) =>
          new Promise<undefined>((resolve) => {
            waits++;
            const done = () => {
              signal?.removeEventListener('abort', done);
              resolve(undefined);
            };
            signal?.addEventListener('abort', done);
            setTimeout(done, 30);
          }),
      });
      const { gate } = await sharing(leasing);
      await Promise.allSettled(Array.from({ length: 20 }, (_, i) => gate.authenticate(bearer(`unknown-${i}`))));
      expect(waits).toBeGreaterThanOrEqual(20);
    });
    expect(warnings).toEqual([]);
  });

  it("gives the provider the whole timeout, the tier's own calls aside: a slow tier and a slow provider still answer", async () => {
    // Counted against the provider, the tier's 400 ms would leave it 600 of its 1000: too few for its 700.
    const tier = new MemoryTier(500);
    tier.latency = 400;
    const { mock, gate } = await sharing(tier, {}, 1000);
    mock.latency = 700;
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('tok_1');
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('tok_1');
    expect(mock.calls.verify).toBe(1);
  });
});

describe('gate cache: a shared tier whose subscription fails', () => {
  it('fails createGate naming the subscription, and leaves no other subscription behind', () => {
    let subscribed = 0;
    const tier = new MemoryTier();
    const failing = Object.assign(tier, {
      onInvalidate: () => {
        subscribed++;
        return () => {
          subscribed--;
        };
      },
      onReconnect: () => {
        throw new Error('the bus is down');
      },
    });
    let error: unknown;
    try {
      createGate({ providers: [onlineOrNot()], sharedCache: failing });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe('createGate: sharedCache.onReconnect threw');
    expect(((error as Error).cause as Error).message).toBe('the bus is down');
    expect(subscribed).toBe(0);
  });

  it('names the failed subscription even when ending the one before it throws too', () => {
    const failing = Object.assign(new MemoryTier(), {
      onInvalidate: () => () => {
        throw new Error('already gone');
      },
      onReconnect: () => {
        throw new Error('the bus is down');
      },
    });
    expect(() => createGate({ providers: [onlineOrNot()], sharedCache: failing })).toThrow(
      expect.objectContaining({
        message: 'createGate: sharedCache.onReconnect threw',
        cause: expect.objectContaining({ message: 'the bus is down' }),
      }),
    );
  });
});
