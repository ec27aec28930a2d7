/**
 * The Redis tier (`tokengate/redis`) against a real redis-server, through
 * both clients (ioredis and node-redis, the same suite): instances in one
 * process, each with its own client, tier and gate, sharing only Redis.
 *
 * Covers sharing (one upstream call per credential, stampede included),
 * what Redis holds (lifetimes, no secrets, foreign values), leases that
 * lapse or end early, revocation (messages, tombstones, localTtl, the purge
 * on reconnect), and Redis paused or killed.
 */

import type { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis as IoRedis6, Cluster as IoRedis6Cluster, type Redis } from 'ioredis';
import { Redis as IoRedis5, Cluster as IoRedis5Cluster } from 'ioredis5';
import { createClient as createNodeRedis } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type AuthContext,
  type AuthError,
  type CredentialRequest,
  createGate,
  extractBearer,
  onlineOrNot,
  type Provider,
  ProviderFailure,
  partoo,
  type Verdict,
} from '../src/index.js';
import { redisCache } from '../src/redis/index.js';
import { MAX_CLAIMS } from '../src/redis/scripts.js';
import type { SharedVerdict } from '../src/shared-tier.js';
import { cacheKey } from '../src/store.js';
import { type MockOnlineOrNot, mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { watchTimers } from './support/live-timers.js';
import {
  adminClient,
  CLIENT_KINDS,
  CLUSTER_KINDS,
  type ClientKind,
  clusterUp,
  connectClient,
  type Instance,
  type InstanceOptions,
  sharedErrors,
  startInstance,
  startRedisClusterNode,
} from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const READ = 'uptime_checks (read)';
const PARTOO_KEY = 'SECRETpartooApiKey';
const bearer = (token: string): CredentialRequest => ({ headers: { authorization: `Bearer ${token}` } });

/** Redis key of `kind` (`v` value, `l` lease, `t` tombstone, `c` claims) for `secret` under `provider`. */
function redisKey(provider: Provider, secret: string, kind: 'v' | 'l' | 't' | 'c', prefix = 'tokengate:'): string {
  const encoded = Buffer.from(cacheKey(provider.cacheScope, secret), 'latin1').toString('base64url');
  return `${prefix}{${encoded}}:${kind}`;
}

/** What `promise` ended with: the context, or the error. */
const outcome = (promise: Promise<AuthContext>) =>
  promise.then(
    (context) => ({ ok: true as const, subject: context.subject }),
    (error: { code?: string }) => ({ ok: false as const, code: error.code }),
  );

/** Runs `probe` every 10 ms until it returns true; fails after `ms`. Resolves with the ms it took. */
async function eventually(probe: () => Promise<boolean>, ms: number, what: string): Promise<number> {
  const started = performance.now();
  while (!(await probe())) {
    if (performance.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
  return performance.now() - started;
}

/**
 * Makes a tier on `client`, and another on an admin client of the redis-server on `port`: the first is ready within
 * `ms`, and hears a revocation the other sends. Then closes both tiers and both clients.
 */
async function readyAndHearsRevocations(
  client: Parameters<typeof redisCache>[0] & { disconnect(): void },
  port: number,
  ms: number,
): Promise<void> {
  const other = adminClient(port);
  const tier = redisCache(client);
  const otherTier = redisCache(other);
  try {
    let ready = false;
    void tier.ready().then(() => {
      ready = true;
    });
    await eventually(async () => ready, ms, 'ready()');
    const key = cacheKey('scope', 'heard');
    const heard = new Promise((resolve) => tier.onInvalidate(resolve));
    await otherTier.invalidate?.(key);
    expect(await heard).toBe(key);
  } finally {
    await Promise.all([tier.close(), otherTier.close()]);
    client.disconnect();
    other.disconnect();
  }
}

/**
 * Resolves once a new token (from `newToken`) asked of `a` then `b` costs `mock` one upstream verification again
 * (shared through Redis); fails after `ms`.
 */
const sharedAgain = (mock: MockOnlineOrNot, newToken: () => string, a: Instance, b: Instance, ms = 5000) =>
  eventually(
    async () => {
      const before = mock.calls.verify;
      const token = newToken();
      await a.gate.authenticate(bearer(token));
      await b.gate.authenticate(bearer(token));
      return mock.calls.verify - before === 1;
    },
    ms,
    'sharing resumed',
  );

/** A Bearer provider named `name` (cache scope `<name>-scope`) that runs `before`, then accepts as subject `u1`. */
function scriptedProvider(name: string, before: () => Promise<void>): Provider {
  return {
    name,
    cacheScope: `${name}-scope`,
    extract: extractBearer,
    async verify(): Promise<Verdict> {
      await before();
      return { ok: true, principal: { subject: 'u1', permissions: [], details: {} } };
    },
  };
}

/** A rejection to store, alive a minute. */
const rejection = (): SharedVerdict => ({
  ok: false,
  reason: 'The access token is invalid',
  until: Date.now() + 60_000,
});

/** An acceptance to store, fresh a minute, with `details`. */
const acceptance = (details: Readonly<Record<string, unknown>> = {}): SharedVerdict & { ok: true } => ({
  ok: true,
  subject: 'someone',
  permissions: ['read'],
  details,
  freshUntil: Date.now() + 60_000,
  until: Date.now() + 60_000,
});

const rejects = (instance: Instance, token: string) => async () =>
  !(await outcome(instance.gate.authenticate(bearer(token)))).ok;

describe.skipIf(redisServerMissing)('tokengate/redis against a real redis-server', () => {
  let redis: RedisServer;
  let admin: Redis;
  let mock: MockOnlineOrNot;
  let provider: Provider;
  let tokens = 0;
  const open: Instance[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
    admin = adminClient(redis.port);
    mock = await mockOnlineOrNot();
    provider = onlineOrNot({ baseUrl: mock.url });
  });

  afterAll(async () => {
    admin?.disconnect();
    await mock?.close();
    await redis?.close();
  });

  afterEach(async () => {
    redis.signal('SIGCONT');
    await Promise.all(open.splice(0).map((instance) => instance.close()));
    await admin.flushall();
    mock.latency = 0;
    mock.fault = undefined;
    mock.resetCalls();
  });

  /** Resolves once Redis holds a value for `token` (instances write in the background). */
  const stored = (token: string, scope: Provider = provider) =>
    eventually(async () => (await admin.exists(redisKey(scope, token, 'v'))) === 1, 2000, 'stored in Redis');

  const sharingResumes = (a: Instance, b: Instance) => sharedAgain(mock, knownToken, a, b);

  /** A token the mock knows, new to every test. */
  function knownToken(): string {
    const token = `tok-${++tokens}-${Math.random().toString(36).slice(2)}`;
    mock.setToken(token, { id: `id-${tokens}`, permissions: [READ] });
    return token;
  }

  /**
   * Pauses Redis until `instance`'s tier opens its breaker (three commands timed out; then every command is skipped
   * at once), runs `whileDown` 400 ms later, and resumes Redis. Resolves with the moment the breaker opened.
   */
  async function whileBreakerOpen(instance: Instance, whileDown: () => Promise<void>): Promise<number> {
    redis.signal('SIGSTOP');
    try {
      await Promise.allSettled(Array.from({ length: 3 }, () => instance.tier.get(cacheKey('scope', 'other'))));
      const opened = performance.now();
      await sleep(400);
      await whileDown();
      return opened;
    } finally {
      redis.signal('SIGCONT');
    }
  }

  describe.each(CLIENT_KINDS)('with %s', (kind: ClientKind) => {
    /** `count` instances, each with providers of its own (`makeProviders`), alike in all else. */
    async function start(
      count: number,
      options: InstanceOptions = {},
      makeProviders: () => Provider[] = () => [onlineOrNot({ baseUrl: mock.url })],
    ): Promise<Instance[]> {
      const started = await Promise.all(
        Array.from({ length: count }, () => startInstance(kind, redis.port, makeProviders(), options)),
      );
      open.push(...started);
      return started;
    }

    /**
     * Redis's timeout for the stampedes: an instance whose lease call Redis answers late asks the provider itself, by
     * design, which a loaded machine (coverage, CI) can make happen with the default 50 ms. These tests are about the
     * single flight when Redis answers.
     */
    const STAMPEDE_REDIS = { timeout: 1000 } as const;

    /**
     * The verifications `instances` made, as their gates count them, beside the provider's count of `verify` calls.
     * Not its `permissions` count: a rejected token's `permissions` call, which its gate leaves running, may reach the
     * mock after the test that sent it ended.
     */
    const upstreamCalls = (instances: readonly Instance[]) => ({
      gates: instances.reduce((sum, instance) => sum + instance.gate.stats().upstreamCalls, 0),
      verify: mock.calls.verify,
    });

    /** `perInstance` requests for `token` on every one of `instances` at once, the provider taking 100 ms: how many passed. */
    async function stampede(instances: readonly Instance[], token: string, perInstance: number): Promise<number> {
      mock.latency = 100;
      const answers = await Promise.all(
        instances.flatMap((instance) =>
          Array.from({ length: perInstance }, () => outcome(instance.gate.authenticate(bearer(token)))),
        ),
      );
      mock.latency = 0;
      return answers.filter((answer) => answer.ok).length;
    }

    /** Two instances (each keeping answers in process a minute) that cached a token the provider has removed since. */
    async function twoHoldingARemovedToken(): Promise<{ a: Instance; b: Instance; token: string }> {
      const [a, b] = (await start(2, { redis: { localTtl: 60_000 } })) as [Instance, Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await b.gate.authenticate(bearer(token));
      mock.removeToken(token);
      return { a, b, token };
    }

    it('a second instance answers from Redis: one upstream verification for both, rejections too', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const token = knownToken();
      const first = await a.gate.authenticate(bearer(token));
      const second = await b.gate.authenticate(bearer(token));
      expect(second.subject).toBe(first.subject);
      expect(second.permissions).toEqual([READ]);
      expect(mock.calls.verify).toBe(1);
      expect(await outcome(a.gate.authenticate(bearer('never-issued')))).toEqual({ ok: false, code: 'invalid_token' });
      expect(await outcome(b.gate.authenticate(bearer('never-issued')))).toEqual({ ok: false, code: 'invalid_token' });
      expect(mock.calls.verify).toBe(2);
      expect(sharedErrors([...a.events, ...b.events])).toEqual([]);
    });

    it('counts in stats().sharedHits the requests the shared tier answered, held or awaited, and zeroes it on reset() alone', async () => {
      const [a, b] = (await start(2, { redis: STAMPEDE_REDIS })) as [Instance, Instance];
      // Held in Redis: b's requests for a's verdicts, coalesced ones and a rejection included, cost no upstream call.
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await stored(token);
      const answers = await Promise.all([1, 2, 3].map(() => outcome(b.gate.authenticate(bearer(token)))));
      expect(answers.every((answer) => answer.ok)).toBe(true);
      expect(await outcome(a.gate.authenticate(bearer('never-issued')))).toEqual({ ok: false, code: 'invalid_token' });
      await stored('never-issued');
      expect(await outcome(b.gate.authenticate(bearer('never-issued')))).toEqual({ ok: false, code: 'invalid_token' });
      expect(b.gate.stats()).toMatchObject({ hits: 0, misses: 4, coalesced: 2, sharedHits: 4, upstreamCalls: 0 });
      // Awaited: b asks while a holds the lease, and takes a's answer.
      const slow = knownToken();
      mock.latency = 200;
      const first = a.gate.authenticate(bearer(slow));
      await eventually(async () => (await admin.exists(redisKey(provider, slow, 'l'))) === 1, 2000, 'lease taken');
      expect((await outcome(b.gate.authenticate(bearer(slow)))).ok).toBe(true);
      await first;
      mock.latency = 0;
      expect(b.gate.stats()).toMatchObject({ misses: 5, sharedHits: 5, upstreamCalls: 0 });
      expect(b.events.filter((event) => event.type === 'verify')).toEqual([]);
      // A hit in process is a hit, as without a tier; a's own verifications are no shared hits.
      await b.gate.authenticate(bearer(token));
      expect(b.gate.stats()).toMatchObject({ hits: 1, misses: 5, sharedHits: 5 });
      expect(a.gate.stats()).toMatchObject({ misses: 3, sharedHits: 0, upstreamCalls: 3 });
      b.gate.clear();
      expect(b.gate.stats().sharedHits).toBe(5);
      b.gate.reset();
      expect(b.gate.stats()).toMatchObject({ hits: 0, misses: 0, sharedHits: 0 });
    });

    it('answers a hit in process without a Redis command', async () => {
      const [a] = (await start(1)) as [Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await stored(token);
      const commands = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1]);
      const before = await commands();
      for (let i = 0; i < 100; i++) await a.gate.authenticate(bearer(token));
      expect(before).toBeGreaterThan(0);
      expect(await commands()).toBe(before);
    });

    it('stores hashed keys and verdicts only, for no longer than the in-process rules allow', async () => {
      const partooMock = await mockPartoo({ apiKey: PARTOO_KEY });
      try {
        const partooProvider = partoo({ apiKey: PARTOO_KEY, baseUrl: partooMock.url });
        const expiresAt = new Date(Date.now() + 3000);
        partooMock.setToken({ userId: 'u1', token: 'SECRETconnection', expirationDate: expiresAt });
        const [a] = (await start(1, { gate: { cache: { negativeTtl: 1000 } } }, () => [
          onlineOrNot({ baseUrl: mock.url }),
          partoo({ apiKey: PARTOO_KEY, baseUrl: partooMock.url }),
        ])) as [Instance];
        const monitor = await admin.monitor();
        const seen: string[] = [];
        monitor.on('monitor', (_time: string, args: string[]) => seen.push(args.join(' ')));
        const bearerToken = `SECRET${knownToken()}`;
        mock.setToken(bearerToken, { id: 'id-secret', permissions: [READ] });
        await a.gate.authenticate({ headers: {}, query: { user_id: 'u1', token: 'SECRETconnection' } });
        await a.gate.authenticate(bearer(bearerToken));
        await outcome(a.gate.authenticate(bearer('SECRETnever-issued')));
        expect(await a.gate.revoke(bearer(bearerToken))).toBe(true);
        await sleep(50);
        monitor.disconnect();
        expect(seen.some((line) => line.includes('PUBLISH'))).toBe(true);
        expect(seen.join('\n')).not.toMatch(/SECRET/);
        const connectionKey = redisKey(partooProvider, 'SECRETconnection', 'v');
        expect(await admin.pttl(connectionKey)).toBeLessThanOrEqual(expiresAt.getTime() - Date.now() + 50);
        const rejectionKey = redisKey(provider, 'SECRETnever-issued', 'v');
        expect(JSON.parse((await admin.get(rejectionKey)) ?? '{}')).toMatchObject({ ok: false });
        expect(await admin.pttl(rejectionKey)).toBeLessThanOrEqual(1000);
        expect(await admin.pttl(rejectionKey)).toBeGreaterThan(0);
        expect(await admin.get(redisKey(provider, bearerToken, 'v'))).toBeNull();
        expect(await admin.pttl(redisKey(provider, bearerToken, 't'))).toBeGreaterThan(0);
      } finally {
        await partooMock.close();
      }
    });

    it('ignores a corrupt, foreign or other-version value and overwrites it with the provider answer', async () => {
      const [a] = (await start(1)) as [Instance];
      const foreign = [
        'not json',
        JSON.stringify({ ok: false, reason: 'x'.repeat(70_000), until: Date.now() + 60_000 }),
        JSON.stringify({ ok: true, subject: 'mallory', permissions: ['admin'], details: {}, freshUntil: 'soon' }),
        JSON.stringify({ v: 2, ...acceptance(), subject: 'mallory', permissions: ['admin'] }),
        // Numbers no store writes: an expiry no Date holds, kept past the credential's own expiry.
        JSON.stringify({ ...acceptance(), subject: 'mallory', expiresAt: 1e300 }),
        JSON.stringify({ ...acceptance(), subject: 'mallory', expiresAt: Date.now() - 1000 }),
        JSON.stringify({ ...acceptance(), subject: 'mallory', freshUntil: Date.now() + 120_000 }),
      ];
      for (const value of foreign) {
        await admin.set(redisKey(provider, 'never-issued', 'v'), value, 'PX', 60_000);
        a.gate.clear();
        expect(await outcome(a.gate.authenticate(bearer('never-issued')))).toEqual({
          ok: false,
          code: 'invalid_token',
        });
        const replaced = async () => {
          const now = (await admin.get(redisKey(provider, 'never-issued', 'v'))) ?? '';
          return now !== value && /"ok":false/.test(now);
        };
        await eventually(replaced, 2000, 'overwritten');
      }
      expect(mock.calls.verify).toBe(foreign.length);
    });

    it('keeps the lease of an instance with a longer leaseTime: only one outlasting every instance is foreign', async () => {
      const [long] = (await start(1, { redis: { leaseTime: 45_000 } })) as [Instance];
      const [short] = (await start(1)) as [Instance];
      const key = cacheKey('scope', `mixed-${Math.random()}`);
      const held = await long.tier.lease(key, false);
      expect(held.state).toBe('claimed');
      expect((await short.tier.lease(key, false)).state).toBe('held');
      if (held.state === 'claimed') held.claim.release();
    });

    it("skips a key's value, lease or claims of another type, or far too long, without reading it, and shares again", async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const plant: Array<(token: string) => Promise<unknown>> = [
        (token) => admin.hset(redisKey(provider, token, 'v'), 'ok', 'true'),
        (token) => admin.set(redisKey(provider, token, 'v'), 'x'.repeat(8 * 1024 * 1024)),
        (token) => admin.set(redisKey(provider, token, 'c'), 'not a hash'),
        (token) => admin.rpush(redisKey(provider, token, 'l'), 'not a lease'),
        (token) => admin.set(redisKey(provider, token, 'l'), 'a lease that never ends'),
        (token) => admin.set(redisKey(provider, token, 'l'), 'a lease of an hour', 'PX', 3_600_000),
      ];
      for (const planted of plant) {
        const token = knownToken();
        await planted(token);
        const calls = mock.calls.verify;
        expect(await outcome(a.gate.authenticate(bearer(token)))).toMatchObject({ ok: true });
        expect(mock.calls.verify).toBe(calls + 1);
        await stored(token);
        // Shared: the other instance adopts it without asking the provider.
        expect(await outcome(b.gate.authenticate(bearer(token)))).toMatchObject({ ok: true });
        expect(mock.calls.verify).toBe(calls + 1);
      }
      expect(sharedErrors([...a.events, ...b.events])).toEqual([]);
    });

    it('with a secret, trusts only verdicts sealed with it for their own key', async () => {
      const current = 'current-secret-0123456789abcdef0123456789';
      const next = 'next-secret-0123456789abcdef0123456789abcd';
      const [sealed] = (await start(1, { redis: { secret: current } })) as [Instance];
      const forged = JSON.stringify({ ...acceptance(), subject: 'mallory', permissions: [READ, 'admin'] });
      // A verdict written by someone without the secret: the provider decides.
      await admin.set(redisKey(provider, 'never-issued', 'v'), forged, 'PX', 60_000);
      expect(await outcome(sealed.gate.authenticate(bearer('never-issued')))).toEqual({
        ok: false,
        code: 'invalid_token',
      });
      expect(mock.calls.verify).toBe(1);
      // A sealed verdict copied from another token's key: the provider decides too.
      const token = knownToken();
      const first = await sealed.gate.authenticate(bearer(token));
      await stored(token);
      const value = (await admin.get(redisKey(provider, token, 'v'))) ?? '';
      expect(value).toMatch(/^[A-Za-z0-9_-]{43}\.\{"ok":true/);
      expect(value).not.toContain(current);
      await admin.set(redisKey(provider, 'never-issued-2', 'v'), value, 'PX', 60_000);
      expect(await outcome(sealed.gate.authenticate(bearer('never-issued-2')))).toEqual({
        ok: false,
        code: 'invalid_token',
      });
      expect(mock.calls.verify).toBe(3);
      // Sealed with the secret: another instance that holds it (first or not) answers from Redis.
      const [rotated] = (await start(1, { redis: { secret: [next, current] } })) as [Instance];
      expect((await rotated.gate.authenticate(bearer(token))).subject).toBe(first.subject);
      expect(mock.calls.verify).toBe(3);
      // Without the secret, or with another one, it is not trusted.
      const [plain, other] = (await Promise.all([start(1), start(1, { redis: { secret: next } })])).flat() as [
        Instance,
        Instance,
      ];
      await plain.gate.authenticate(bearer(token));
      expect(mock.calls.verify).toBe(4);
      await admin.set(redisKey(provider, token, 'v'), value, 'PX', 60_000);
      await other.gate.authenticate(bearer(token));
      expect(mock.calls.verify).toBe(5);
      // Each value an instance could not read is reported, never a value it could.
      expect(sharedErrors(sealed.events)).toEqual(['lease:unreadable', 'lease:unreadable']);
      expect(sharedErrors(rotated.events)).toEqual([]);
      expect(sharedErrors(plain.events)).toEqual(['lease:unreadable']);
      expect(sharedErrors(other.events)).toEqual(['lease:unreadable']);
    });

    it('instances whose secrets differ share nothing and say so: unreadable, once per verification, naming no token or secret', async () => {
      const secretA = 'fleet-a-secret-0123456789abcdef0123456789';
      const secretB = 'fleet-b-secret-0123456789abcdef0123456789';
      const [a] = (await start(1, { redis: { ...STAMPEDE_REDIS, secret: secretA } })) as [Instance];
      const [b] = (await start(1, { redis: { ...STAMPEDE_REDIS, secret: secretB } })) as [Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await stored(token);
      const sealedByA = await admin.get(redisKey(provider, token, 'v'));
      // b cannot read a's verdict: it asks the provider, and says why once for its three requests (one verification).
      const answers = await Promise.all([1, 2, 3].map(() => outcome(b.gate.authenticate(bearer(token)))));
      expect(answers.every((answer) => answer.ok)).toBe(true);
      expect(mock.calls.verify).toBe(2);
      expect(sharedErrors(b.events)).toEqual(['lease:unreadable']);
      expect(b.gate.stats()).toMatchObject({ misses: 3, sharedHits: 0, upstreamCalls: 1 });
      // b's answer replaced a's: a, once its own copy is gone, cannot read it either.
      await eventually(async () => (await admin.get(redisKey(provider, token, 'v'))) !== sealedByA, 2000, 'replaced');
      a.gate.clear();
      await a.gate.authenticate(bearer(token));
      expect(mock.calls.verify).toBe(3);
      expect(sharedErrors(a.events)).toEqual(['lease:unreadable']);
      // Waiting on a's lease, b reads a's answer, then finds it again as it leases: one verification, one event.
      const slow = knownToken();
      mock.latency = 200;
      const first = a.gate.authenticate(bearer(slow));
      await eventually(async () => (await admin.exists(redisKey(provider, slow, 'l'))) === 1, 2000, 'lease taken');
      expect((await outcome(b.gate.authenticate(bearer(slow)))).ok).toBe(true);
      await first;
      expect(mock.calls.verify).toBe(5);
      expect(sharedErrors(b.events)).toEqual(['lease:unreadable', 'wait:unreadable']);
      // A hit in process reads nothing from Redis, and reports nothing.
      await b.gate.authenticate(bearer(slow));
      expect(sharedErrors(b.events)).toHaveLength(2);
      const shown = JSON.stringify([...a.events, ...b.events]);
      for (const secret of [token, slow, secretA, secretB, cacheKey(provider.cacheScope, token)]) {
        expect(shown).not.toContain(secret);
      }
      expect(shown).not.toContain(redisKey(provider, token, 'v').slice(11, 54));
    });

    it('with a secret, instances share sealed answers in a stampede, and a waiting one takes no unsealed answer', async () => {
      const secret = 'stampede-secret-0123456789abcdef01234567';
      const instances = await start(3, { redis: { ...STAMPEDE_REDIS, secret } });
      expect(await stampede(instances, knownToken(), 10)).toBe(30);
      expect(upstreamCalls(instances)).toEqual({ gates: 1, verify: 1 });
      // Another instance holds the lease; meanwhile someone without the secret writes an answer.
      const [a] = instances as [Instance];
      await admin.set(redisKey(provider, 'never-issued', 'l'), 'another-instance', 'PX', 300);
      const pending = outcome(a.gate.authenticate(bearer('never-issued')));
      await sleep(30);
      const forged = { ok: true, subject: 'mallory', permissions: [READ], details: {} };
      const until = Date.now() + 60_000;
      await admin.set(
        redisKey(provider, 'never-issued', 'v'),
        JSON.stringify({ ...forged, freshUntil: until, until }),
        'PX',
        60_000,
      );
      expect(await pending).toEqual({ ok: false, code: 'invalid_token' });
      expect(mock.calls.verify).toBe(2);
    });

    it('makes one upstream call for a cold token stampeding three instances', async () => {
      const instances = await start(3, { redis: STAMPEDE_REDIS });
      expect(await stampede(instances, knownToken(), 30)).toBe(90);
      expect(upstreamCalls(instances)).toEqual({ gates: 1, verify: 1 });
    });

    it('makes one upstream call when four instances refresh a verdict Redis holds only stale (staleIfError)', async () => {
      const cache = { ttl: 200, staleIfError: 60_000 };
      const instances = await start(4, { gate: { cache }, redis: STAMPEDE_REDIS });
      const token = knownToken();
      await instances[0]?.gate.authenticate(bearer(token));
      await stored(token);
      await sleep(300);
      for (const instance of instances) instance.gate.clear();
      mock.resetCalls();
      expect(await stampede(instances, token, 5)).toBe(20);
      expect(mock.calls).toMatchObject({ verify: 1, permissions: 1 });
    });

    it('waits for a lease whose holder died at most the lease time, then asks itself', async () => {
      const [a] = (await start(1, { redis: { leaseTime: 300 } })) as [Instance];
      const token = knownToken();
      await admin.set(redisKey(provider, token, 'l'), 'dead-holder', 'PX', 300);
      const started = performance.now();
      expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(250);
      expect(waited).toBeLessThan(300 + 1000);
      expect(mock.calls.verify).toBe(1);
    });

    it("a dead holder's lease outlasting the request: 503 in time, then the provider asked in full, its answer kept, nothing against it", async () => {
      const TIMEOUT = 1000;
      const [a] = (await start(1, { redis: { leaseTime: 5000 }, gate: { timeout: TIMEOUT, retry: false } })) as [
        Instance,
      ];
      const token = knownToken();
      // Lapses after the request's time (timeout plus the tier's 250 ms) is nearly spent.
      await admin.set(redisKey(provider, token, 'l'), 'dead-holder', 'PX', TIMEOUT + 150);
      mock.latency = 200;
      const started = performance.now();
      const failed = await a.gate.authenticate(bearer(token)).catch((error: AuthError) => error);
      expect(failed).toMatchObject({ code: 'provider_unavailable' });
      expect(performance.now() - started).toBeLessThan(TIMEOUT + 250 + 300);
      // No event reports this 503 (the provider is healthy): its cause says where the time went.
      expect((failed as AuthError).cause).toMatchObject({
        name: 'ProviderFailure',
        kind: 'timeout',
        message: expect.stringContaining("waiting for another instance's verification of this credential"),
      });
      await eventually(async () => mock.calls.verify === 1, 2000, 'asked the provider');
      await sleep(400);
      expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
      expect(mock.calls.verify).toBe(1);
      expect(a.gate.stats()).toMatchObject({ errors: 0, breakers: { onlineornot: 'closed' } });
    });

    it('a gate closed while a request waits for another instance asks its provider nothing afterwards', async () => {
      let calls = 0;
      const counted = scriptedProvider('counted', async () => {
        calls++;
      });
      const [a] = (await start(1, { redis: { leaseTime: 5000 } }, () => [counted])) as [Instance];
      await admin.set(redisKey({ cacheScope: 'counted-scope' } as Provider, 'counted-token', 'l'), 'holder', 'PX', 300);
      const waiting = outcome(a.gate.authenticate(bearer('counted-token')));
      await sleep(50);
      open.splice(open.indexOf(a), 1);
      await a.close();
      expect(await waiting).toEqual({ ok: false, code: 'provider_unavailable' });
      await sleep(400); // past the lease: a flight still going would have asked by now
      expect(calls).toBe(0);
    });

    it.each(['right away', 'after clear()'] as const)(
      'a gate closed %s ends a request waiting for another instance at once, and leaves nothing waiting on Redis',
      async (when) => {
        const [a] = (await start(1, { redis: { leaseTime: 20_000 } })) as [Instance];
        const token = knownToken();
        await admin.set(redisKey(provider, token, 'l'), 'another-instance', 'PX', 20_000);
        const timers = watchTimers();
        try {
          const waiting = outcome(a.gate.authenticate(bearer(token)));
          await sleep(100);
          if (when === 'after clear()') a.gate.clear();
          const started = performance.now();
          await a.gate.close();
          expect(await waiting).toEqual({ ok: false, code: 'provider_unavailable' });
          expect(performance.now() - started).toBeLessThan(1000);
          await sleep(50);
          // No poll, lease time or tier timeout left running: nothing keeps the process up for 20 s.
          expect(timers.pending()).toBe(0);
          expect(mock.calls.verify).toBe(0);
        } finally {
          timers.stop();
        }
      },
    );

    it('ends the lease of a failed upstream call at once: the waiting instance asks without waiting it out', async () => {
      let calls = 0;
      const scripted = scriptedProvider('scripted', async () => {
        calls++;
        await sleep(100);
        if (calls === 1) throw new ProviderFailure('status', 'scripted failure', { status: 500 });
      });
      const [a, b] = (await start(2, { redis: { leaseTime: 5000 } }, () => [scripted])) as [Instance, Instance];
      const first = outcome(a.gate.authenticate(bearer('scripted-token')));
      await sleep(30);
      const started = performance.now();
      const second = await outcome(b.gate.authenticate(bearer('scripted-token')));
      expect(await first).toEqual({ ok: false, code: 'provider_unavailable' });
      expect(second).toEqual({ ok: true, subject: 'u1' });
      expect(performance.now() - started).toBeLessThan(2500);
      expect(calls).toBe(2);
    });

    it.each(['clear', 'invalidate'] as const)(
      'ends the lease of a call cancelled by %s() at once: the waiting instance asks without waiting for it',
      async (how) => {
        let calls = 0;
        const scripted = scriptedProvider('scripted', async () => {
          calls++;
          if (calls === 1) await sleep(1500);
        });
        const [a, b] = (await start(2, { redis: { leaseTime: 5000 } }, () => [scripted])) as [Instance, Instance];
        const first = outcome(a.gate.authenticate(bearer('scripted-token')));
        await vi.waitFor(() => expect(calls).toBe(1));
        const second = outcome(b.gate.authenticate(bearer('scripted-token'))); // waits for a's lease
        await sleep(100);
        const started = performance.now();
        if (how === 'clear') a.gate.clear();
        else a.gate.invalidate(bearer('scripted-token'));
        expect(await second).toEqual({ ok: true, subject: 'u1' });
        // Long before the cancelled call ends (1.4 s after the cancel): b was told its lease ended.
        expect(performance.now() - started).toBeLessThan(800);
        expect(calls).toBe(2);
        // The request already waiting on the cancelled call still gets its answer.
        expect(await first).toEqual({ ok: true, subject: 'u1' });
      },
    );

    it("a provider that hangs: every instance's 503 within its own timeout, waits for the others' calls included", async () => {
      const TIMEOUT = 1000;
      const instances = await start(4, { gate: { timeout: TIMEOUT, retry: false } });
      const token = knownToken();
      mock.fault = { kind: 'hang' };
      const took = await Promise.all(
        instances.map(async (instance, i) => {
          await sleep(5 * i);
          const started = performance.now();
          expect(await outcome(instance.gate.authenticate(bearer(token)))).toEqual({
            ok: false,
            code: 'provider_unavailable',
          });
          return performance.now() - started;
        }),
      );
      // The tier's timeout is 250 ms here: a miss spends at most that in Redis besides the gate's timeout.
      for (const ms of took) expect(ms).toBeLessThan(TIMEOUT + 250 + 300);
    });

    it('revoke on one instance: every instance rejects the token next, told through Redis', async () => {
      const instances = (await start(3, { redis: { localTtl: 60_000 } })) as [Instance, Instance, Instance];
      const token = knownToken();
      for (const instance of instances) await instance.gate.authenticate(bearer(token));
      expect(mock.calls.verify).toBe(1);
      mock.removeToken(token);
      expect((await outcome(instances[1].gate.authenticate(bearer(token)))).ok).toBe(true);
      expect(await instances[0].gate.revoke(bearer(token))).toBe(true);
      for (const instance of instances) await eventually(rejects(instance, token), 2000, 'rejected');
      expect(await instances[0].gate.revoke({ headers: {} })).toBe(false);
    });

    it('subscribes again when Redis drops its subscriber connection, and revocations reach it', async () => {
      const { a, b, token } = await twoHoldingARemovedToken();
      const subscribers = async () =>
        String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
          .split('\n')
          .filter(Boolean);
      expect(await subscribers()).toHaveLength(2);
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await eventually(async () => (await subscribers()).length === 2, 5000, 'both subscribed again');
      expect(await a.gate.revoke(bearer(token))).toBe(true);
      await eventually(rejects(b, token), 2000, 'rejected');
    });

    it('closes cleanly right after it was made, before its subscription is up', async () => {
      const connected = await connectClient(kind, redis.port);
      try {
        const tier = redisCache(connected.client);
        const readyBeforeClose = tier.ready();
        await tier.close();
        await tier.close();
        expect(await tier.waitFor(cacheKey('scope', 'closed'))).toBeUndefined();
        // Neither a ready() under way nor one after close waits for a subscription that will never come.
        await readyBeforeClose;
        await tier.ready();
      } finally {
        await connected.close();
      }
    });

    it('ready() asked again and again before the subscription is up holds one wait, which resolves once it is', async () => {
      const connected = await connectClient(kind, redis.port);
      const tier = redisCache(connected.client);
      try {
        const first = tier.ready();
        const calls = Array.from({ length: 1000 }, () => tier.ready());
        // A caller polling ready() in a loop holds one promise, not one per call.
        expect(new Set(calls)).toEqual(new Set([first]));
        await first;
        await expect(tier.ready()).resolves.toBeUndefined();
      } finally {
        await tier.close();
        await connected.close();
      }
    });

    it('two gates on one tier: a revocation through one reaches the other at once', async () => {
      const [a] = (await start(1, { redis: { localTtl: 60_000 } })) as [Instance];
      await a.tier.ready();
      const sibling = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], sharedCache: a.tier });
      try {
        const token = knownToken();
        await a.gate.authenticate(bearer(token));
        await sibling.authenticate(bearer(token));
        mock.removeToken(token);
        expect(await a.gate.revoke(bearer(token))).toBe(true);
        expect(await outcome(sibling.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
      } finally {
        await sibling.close();
      }
    });

    it('invalidate(req) still returns a boolean, and reaches every instance too', async () => {
      const { a, b, token } = await twoHoldingARemovedToken();
      expect(a.gate.invalidate(bearer(token))).toBe(true);
      expect(a.gate.invalidate(bearer('never-seen'))).toBe(false);
      await eventually(rejects(b, token), 2000, 'rejected by the other instance');
    });

    it('never stores an acceptance that was under way when the key was invalidated (tombstone)', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const key = cacheKey('scope', 'tombstone-test');
      const verdict = acceptance();
      const before = await a.tier.lease(key, false);
      expect(before.state).toBe('claimed');
      await b.tier.invalidate(key);
      expect(await a.tier.set(key, verdict, before.state === 'claimed' ? before.claim : undefined)).toBe(false);
      expect(await a.tier.get(key)).toBeUndefined();
      const after = await a.tier.lease(key, false);
      expect(after.state).toBe('claimed');
      expect(await a.tier.set(key, verdict, after.state === 'claimed' ? after.claim : undefined)).toBe(true);
      expect(await a.tier.get(key)).toEqual({ ...verdict, storedAt: expect.any(Number) });
    });

    /** The store key `name` (in scope `scope`), claimed by `instance`, and a Redis key of it by kind. */
    async function claimed(instance: Instance, name: string) {
      const key = cacheKey('scope', name);
      const lease = await instance.tier.lease(key, false);
      if (lease.state !== 'claimed') throw new Error(`expected a claim, got ${lease.state}`);
      const stored = (kind: 'v' | 'l' | 't' | 'c') => redisKey({ cacheScope: 'scope' } as Provider, name, kind);
      return { key, claim: lease.claim, stored };
    }

    it('never stores an acceptance asked for before a revocation, even when Redis evicted the tombstone since', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const { key, claim, stored } = await claimed(a, 'evicted-tombstone');
      await b.tier.invalidate(key);
      // What `maxmemory-policy volatile-ttl` evicts first: the keys nearest their expiry.
      await admin.del(stored('t'));
      expect(await a.tier.set(key, acceptance(), claim)).toBe(false);
      expect(await admin.exists(stored('v'))).toBe(0);
    });

    it('a claim Redis no longer lists (evicted) stores no acceptance, and its lease ends for those waiting', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const { key, claim, stored } = await claimed(a, 'evicted-claims');
      const waited = b.tier.waitFor(key);
      await admin.del(stored('c'));
      expect(await a.tier.set(key, acceptance(), claim)).toBe(false);
      expect(await waited).toBeUndefined();
      expect(await admin.exists(stored('v'))).toBe(0);
      expect(await admin.exists(stored('l'))).toBe(0);
    });

    it("a claim past its time on Redis's clock stores no acceptance (a command that reached Redis late)", async () => {
      const [a] = (await start(1)) as [Instance];
      const { key, claim, stored } = await claimed(a, 'late-claim');
      const [id] = await admin.hkeys(stored('c'));
      // As Redis sees a claim whose command arrives after its time: its deadline is behind Redis's clock.
      const [seconds] = await admin.time();
      await admin.hset(stored('c'), String(id), String(Number(seconds) * 1000 - 1000));
      expect(await a.tier.set(key, acceptance(), claim)).toBe(false);
      expect(await admin.exists(stored('v'))).toBe(0);
    });

    it('a rejection is stored whatever its claim and the tombstone, and no claim taken before it stores after it', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      // Under a claim an invalidation ended, and without one beside a tombstone: a rejection is always safe to keep.
      const { key, claim, stored } = await claimed(a, 'rejection-rules');
      await b.tier.invalidate(key);
      await a.tier.set(key, rejection(), claim);
      expect(await a.tier.get(key)).toMatchObject({ ok: false });
      await a.tier.invalidate(key);
      expect(await admin.exists(stored('t'))).toBe(1);
      await b.tier.set(key, rejection());
      expect(await a.tier.get(key)).toMatchObject({ ok: false });
      // An instance that asked before another heard the rejection: its acceptance comes too late.
      await admin.del(stored('v'), stored('t'));
      const early = await a.tier.lease(key, false);
      if (early.state !== 'claimed') throw new Error(`expected a claim, got ${early.state}`);
      await admin.del(stored('l'));
      const next = await b.tier.lease(key, false);
      if (next.state !== 'claimed') throw new Error(`expected a claim, got ${next.state}`);
      await b.tier.set(key, rejection(), next.claim);
      expect(await a.tier.set(key, acceptance(), early.claim)).toBe(false);
      expect(await a.tier.get(key)).toMatchObject({ ok: false });
      // The same when the rejection is not kept (negativeTtl 0): the store deletes the key instead.
      await admin.del(stored('v'));
      const before = await a.tier.lease(key, false);
      if (before.state !== 'claimed') throw new Error(`expected a claim, got ${before.state}`);
      await b.tier.delete(key);
      expect(await a.tier.set(key, acceptance(), before.claim)).toBe(false);
      expect(await admin.exists(stored('v'))).toBe(0);
    });

    it('a rejection lives at least as long as the value it replaces, whatever time it was given', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const { key, claim, stored } = await claimed(a, 'rejection-outlives');
      expect(await a.tier.set(key, acceptance(), claim)).toBe(true);
      const short = { ok: false, reason: 'The access token is invalid', until: Date.now() + 300 } as const;
      expect(await b.tier.set(key, short)).toBe(true);
      expect(await b.tier.get(key)).toMatchObject({ ok: false });
      expect(await admin.pttl(stored('v'))).toBeGreaterThan(50_000);
      // Over no value, or a shorter one, it lives its own time.
      const { key: alone, stored: storedAlone } = await claimed(a, 'rejection-alone');
      expect(await b.tier.set(alone, short)).toBe(true);
      expect(await admin.pttl(storedAlone('v'))).toBeLessThanOrEqual(300);
      expect(await b.tier.set(alone, rejection())).toBe(true);
      expect(await admin.pttl(storedAlone('v'))).toBeGreaterThan(50_000);
    });

    it('lists at most 32 claims per key, whatever number of holders died holding one', async () => {
      const [a] = (await start(1)) as [Instance];
      const scope = { cacheScope: 'scope' } as Provider;
      const key = cacheKey('scope', 'many-claims');
      for (let i = 0; i < 40; i++) {
        expect((await a.tier.lease(key, false)).state).toBe('claimed');
        // The holder died: its lease lapses, its claim is never used.
        await admin.del(redisKey(scope, 'many-claims', 'l'));
      }
      expect(await admin.hlen(redisKey(scope, 'many-claims', 'c'))).toBeLessThanOrEqual(MAX_CLAIMS);
      expect(await admin.pttl(redisKey(scope, 'many-claims', 'c'))).toBeGreaterThan(0);
    });

    it('a holder slower than leaseTime: its answer is shared, with those waiting on the next holder too', async () => {
      const instances = (await start(3, { redis: { leaseTime: 300 } })) as [Instance, Instance, Instance];
      const [a, b, c] = instances;
      const token = knownToken();
      mock.latency = 400;
      const first = outcome(a.gate.authenticate(bearer(token)));
      await sleep(30);
      const others = [b, c].map((instance) => outcome(instance.gate.authenticate(bearer(token))));
      const answers = await Promise.all([first, ...others]);
      mock.latency = 0;
      expect(answers.every((answer) => answer.ok)).toBe(true);
      // The first holder, and the one that leased after its lease lapsed; the third took the first's answer.
      expect(mock.calls.verify).toBeLessThanOrEqual(2);
    });

    it('an acceptance asked for before another instance heard the token rejected is not stored over that rejection', async () => {
      // The provider decides as it is asked; its first answer takes 600 ms to arrive.
      let revoked = false;
      let calls = 0;
      const revocable: Provider = {
        ...scriptedProvider('revocable', async () => {}),
        async verify(): Promise<Verdict> {
          const valid = !revoked;
          if (++calls === 1) await sleep(600);
          if (!valid) return { ok: false, reason: 'The access token is invalid' };
          return { ok: true, principal: { subject: 'u1', permissions: [], details: {} } };
        },
      };
      const instances = await start(3, { redis: { leaseTime: 100 } }, () => [revocable]);
      const [a, b, c] = instances as [Instance, Instance, Instance];
      const first = outcome(a.gate.authenticate(bearer('revocable-token')));
      await sleep(200); // A's lease has lapsed; its answer is still on its way
      revoked = true;
      expect(await outcome(b.gate.authenticate(bearer('revocable-token')))).toEqual({
        ok: false,
        code: 'invalid_token',
      });
      expect((await first).ok).toBe(true); // asked before the revocation
      await sleep(50);
      expect(await outcome(c.gate.authenticate(bearer('revocable-token')))).toEqual({
        ok: false,
        code: 'invalid_token',
      });
      expect(calls).toBe(2);
    });

    it('stores an acceptance under a claim once; never one already expired; without a claim only while no tombstone', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const key = cacheKey('scope', 'set-rules');
      const verdict = acceptance();
      const first = await a.tier.lease(key, false);
      if (first.state !== 'claimed') throw new Error(`expected a claim, got ${first.state}`);
      await a.tier.set(key, { ...verdict, until: Date.now() - 1 }, first.claim);
      expect(await a.tier.get(key)).toBeUndefined();
      // The expired verdict ended the lease: another instance gets it at once.
      const second = await b.tier.lease(key, false);
      if (second.state !== 'claimed') throw new Error(`expected a claim, got ${second.state}`);
      await b.tier.set(key, verdict, second.claim);
      await b.tier.set(key, { ...verdict, subject: 'again' }, second.claim);
      expect(await a.tier.get(key)).toEqual({ ...verdict, storedAt: expect.any(Number) });
      await a.tier.invalidate(key);
      expect(await a.tier.get(key)).toBeUndefined();
      await a.tier.set(key, verdict);
      expect(await a.tier.get(key)).toBeUndefined();
      await admin.del(redisKey({ cacheScope: 'scope' } as Provider, 'set-rules', 't'));
      await a.tier.set(key, verdict);
      expect(await a.tier.get(key)).toEqual({ ...verdict, storedAt: expect.any(Number) });
    });

    it('waits end without an answer when the lease goes away unannounced, when the tier closes, and at once once closed', async () => {
      const [a] = (await start(1)) as [Instance];
      const key = cacheKey('scope', 'waits');
      const lease = redisKey({ cacheScope: 'scope' } as Provider, 'waits', 'l');
      await admin.set(lease, 'holder', 'PX', 10_000);
      const waits = [a.tier.waitFor(key), a.tier.waitFor(key)];
      await sleep(30);
      await admin.del(lease);
      expect(await Promise.all(waits)).toEqual([undefined, undefined]);
      await admin.set(lease, 'holder', 'PX', 10_000);
      const closing = a.tier.waitFor(key);
      await a.tier.close();
      expect(await closing).toBeUndefined();
      expect(await a.tier.waitFor(key)).toBeUndefined();
    });

    it('a wait takes an answer stored before it began (its message long gone) at once, not at a poll', {
      timeout: 3000,
    }, async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const key = cacheKey('scope', 'stored-before');
      const held = await b.tier.lease(key, false);
      if (held.state !== 'claimed') throw new Error(`expected a claim, got ${held.state}`);
      const verdict: SharedVerdict = { ok: false, reason: 'The access token is invalid', until: Date.now() + 5000 };
      await b.tier.set(key, verdict, held.claim);
      // The answer's message has reached every subscriber before the wait begins.
      await sleep(100);
      // Timers stand still: neither the wait's poll nor its deadline can answer it; only a look at Redis can.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
      try {
        expect(await a.tier.waitFor(key)).toEqual({ ...verdict, storedAt: expect.any(Number) });
      } finally {
        vi.useRealTimers();
      }
    });

    it('a wait fails when Redis stops answering, and takes an answer announced on the channel', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const key = cacheKey('scope', 'wait-fails');
      const held = await b.tier.lease(key, false);
      if (held.state !== 'claimed') throw new Error(`expected a claim, got ${held.state}`);
      const answered = a.tier.waitFor(key);
      const verdict: SharedVerdict = { ok: false, reason: 'The access token is invalid', until: Date.now() + 5000 };
      await b.tier.set(key, verdict, held.claim);
      expect(await answered).toEqual({ ...verdict, storedAt: expect.any(Number) });
      // Another token, whose lease is held and whose answer never comes: Redis stops answering meanwhile.
      await admin.set(redisKey({ cacheScope: 'scope' } as Provider, 'wait-fails-2', 'l'), 'holder', 'PX', 10_000);
      const failing = a.tier.waitFor(cacheKey('scope', 'wait-fails-2'));
      redis.signal('SIGSTOP');
      try {
        await expect(failing).rejects.toMatchObject({ code: 'ETIMEDOUT' });
      } finally {
        redis.signal('SIGCONT');
      }
    });

    it('ignores foreign messages on its channel', async () => {
      const [a, b] = (await start(2, { redis: { localTtl: 60_000 } })) as [Instance, Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      const encoded = Buffer.from(cacheKey(provider.cacheScope, token), 'latin1').toString('base64url');
      for (const text of ['hello', `x${encoded}:0123456789abcdef`, `i${encoded}`, `pnot-a-nonce:0123456789abcdef`]) {
        await admin.publish('tokengate:bus', text);
      }
      await sleep(50);
      const before = mock.calls.verify;
      await a.gate.authenticate(bearer(token));
      expect(mock.calls.verify).toBe(before);
      // The real message, for contrast (with the value gone from Redis, as an invalidation leaves it).
      await admin.del(redisKey(provider, token, 'v'));
      mock.removeToken(token);
      await admin.publish('tokengate:bus', `i${encoded}:0123456789abcdef`);
      await eventually(rejects(a, token), 2000, 'rejected once told');
      expect(sharedErrors(b.events)).toEqual([]);
    });

    it('an instance asking upstream during a revocation neither keeps nor shares the old answer', async () => {
      let calls = 0;
      const scripted = (): Provider => ({
        name: 'scripted',
        cacheScope: 'scripted-scope',
        extract: extractBearer,
        async verify(): Promise<Verdict> {
          // The first answer is the one given before the revocation, and arrives after it.
          if (++calls > 1) return { ok: false, reason: 'The access token was revoked' };
          await sleep(200);
          return { ok: true, principal: { subject: 'u1', permissions: [], details: {} } };
        },
      });
      const [a, b, c] = (await start(3, {}, () => [scripted()])) as [Instance, Instance, Instance];
      const underWay = outcome(b.gate.authenticate(bearer('revoked-token')));
      await sleep(60);
      expect(await a.gate.revoke(bearer('revoked-token'))).toBe(true);
      expect(await underWay).toEqual({ ok: true, subject: 'u1' });
      await sleep(50);
      expect(await c.gate.authenticate(bearer('revoked-token')).catch((error: Error) => error.message)).toBe(
        'The access token was revoked',
      );
      expect(await outcome(b.gate.authenticate(bearer('revoked-token')))).toMatchObject({ ok: false });
    });

    it('serves from process no longer than localTtl: a lost message matters that long at most', async () => {
      const [a] = (await start(1, { redis: { localTtl: 200 } })) as [Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await stored(token);
      await admin.del(redisKey(provider, token, 'v'));
      mock.removeToken(token);
      expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
      await sleep(250);
      expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
    });

    it('forgets what it holds in process when its subscriber reconnects', async () => {
      const [a] = (await start(1, { redis: { localTtl: 60_000 } })) as [Instance];
      const token = knownToken();
      await a.gate.authenticate(bearer(token));
      await stored(token);
      await admin.del(redisKey(provider, token, 'v'));
      mock.removeToken(token);
      expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
      await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await eventually(rejects(a, token), 3000, 'rejected after the subscriber reconnected');
    });

    it('Redis paused: the provider answers within the Redis timeout, Redis is skipped while down, sharing resumes', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const warm = knownToken();
      await a.gate.authenticate(bearer(warm));
      mock.latency = 20;
      redis.signal('SIGSTOP');
      const slowest = { ms: 0 };
      try {
        for (let i = 0; i < 8; i++) {
          const started = performance.now();
          expect((await outcome(a.gate.authenticate(bearer(knownToken())))).ok).toBe(true);
          expect((await outcome(a.gate.authenticate(bearer(warm)))).ok).toBe(true);
          slowest.ms = Math.max(slowest.ms, performance.now() - started);
        }
        expect(await a.gate.revoke(bearer(warm))).toBe(false);
      } finally {
        redis.signal('SIGCONT');
      }
      expect(slowest.ms).toBeLessThan(1000);
      expect(sharedErrors(a.events)).toContain('lease:timeout');
      expect(sharedErrors(a.events)).toContain('lease:unavailable');
      await sharingResumes(a, b);
    });

    it.each([300, 0])(
      "a rejection seen while Redis was too slow to lease outlives this instance's own (negativeTtl %i): the acceptance Redis held is gone",
      async (negativeTtl) => {
        const [a] = (await start(1, { redis: { localTtl: 200 }, gate: { cache: { negativeTtl } } })) as [Instance];
        const token = knownToken();
        expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
        await stored(token);
        mock.removeToken(token);
        await sleep(250); // past localTtl: the next request reads Redis
        await admin.call('CLIENT', 'PAUSE', '400', 'ALL');
        expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
        expect(sharedErrors(a.events)).toContain('lease:timeout');
        await sleep(negativeTtl + 400); // Redis back, this instance's rejection gone
        expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
      },
    );

    it('past 10,000 revocations queued while Redis was down, none dropped is read back from Redis', async () => {
      const [a] = (await start(1)) as [Instance];
      const token = knownToken();
      const kept = knownToken();
      for (const each of [token, kept]) {
        await a.gate.authenticate(bearer(each));
        await stored(each);
      }
      mock.removeToken(token);
      await whileBreakerOpen(a, async () => {
        expect(await a.gate.revoke(bearer(token))).toBe(false);
        // The first revocation is the oldest queued: these push it out.
        for (let i = 0; i <= 10_000; i += 500) {
          await Promise.all(Array.from({ length: 500 }, (_, j) => a.gate.revoke(bearer(`other-${i + j}`))));
        }
      });
      // Redis is back and has taken the queued revocations, the newest last; the dropped one never reached it.
      await eventually(
        async () => (await admin.exists(redisKey(provider, 'other-10499', 't'))) === 1,
        10_000,
        'flushed',
      );
      expect(await admin.exists(redisKey(provider, token, 'v'))).toBe(1);
      const calls = mock.calls.verify;
      expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
      expect(mock.calls.verify).toBe(calls + 1);
      // A token whose revocation was not dropped is still read from Redis.
      a.gate.clear();
      expect(await outcome(a.gate.authenticate(bearer(kept)))).toMatchObject({ ok: true });
      expect(mock.calls.verify).toBe(calls + 1);
    }, 30_000);

    it('Redis paused: a revocation Redis missed is retried, and reaches the other instances once it is back', async () => {
      const { a, b, token } = await twoHoldingARemovedToken();
      redis.signal('SIGSTOP');
      try {
        expect(await a.gate.revoke(bearer(token))).toBe(false);
        expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
        expect((await outcome(b.gate.authenticate(bearer(token)))).ok).toBe(true);
      } finally {
        redis.signal('SIGCONT');
      }
      expect(sharedErrors(a.events)).toContain('invalidate:timeout');
      await eventually(rejects(b, token), 5000, 'rejected by the other instance');
    });

    it('Redis killed: from the moment the client has lost its connection, Redis is skipped, not waited for', async () => {
      const [a] = (await start(1, { redis: { timeout: 10_000 } })) as [Instance];
      await a.gate.authenticate(bearer(knownToken()));
      const lostEvent = kind.startsWith('ioredis') ? 'close' : 'reconnecting';
      const lost = new Promise<void>((resolve) => {
        (a.client as unknown as EventEmitter).once(lostEvent, () => resolve());
      });
      await redis.kill();
      await lost;
      for (let i = 0; i < 5; i++) {
        const started = performance.now();
        expect((await outcome(a.gate.authenticate(bearer(knownToken())))).ok).toBe(true);
        // Far below the 10 s Redis timeout, and below the 3.7 s after which ioredis itself gives up on a queued
        // command (20 reconnection attempts): no command went to wait in the client's offline queue.
        expect(performance.now() - started).toBeLessThan(2000);
      }
      // Reported as skipped (a command already sent when Redis went may fail on its own first).
      expect(sharedErrors(a.events)).toContain('lease:unavailable');
      await redis.restart();
      // The instance writes in the background, after its answer: any token verified since counts once Redis has it.
      const verified: string[] = [];
      await eventually(
        async () => {
          const token = knownToken();
          await a.gate.authenticate(bearer(token));
          verified.push(redisKey(provider, token, 'v'));
          return (await admin.exists(verified)) > 0;
        },
        5000,
        'shared again once the client is ready',
      );
    }, 30_000);

    it('Redis killed while a command waits for it: the command is given up as the connection goes, not at its timeout', async () => {
      const [a] = (await start(1, { redis: { timeout: 10_000 } })) as [Instance];
      await a.gate.authenticate(bearer(knownToken()));
      redis.signal('SIGSTOP');
      try {
        // The signal takes effect at Redis's next scheduling point: give it that before asking.
        await sleep(50);
        const started = performance.now();
        const pending = outcome(a.gate.authenticate(bearer(knownToken())));
        // Its lookup is sent, and waits on the paused Redis; then Redis dies, still paused (never resumed to
        // answer it), and its connection closes.
        await sleep(100);
        redis.signal('SIGKILL');
        await redis.kill();
        expect((await pending).ok).toBe(true);
        // Far below the 10 s Redis timeout, and below ioredis's own 3.7 s of reconnection attempts.
        expect(performance.now() - started, sharedErrors(a.events).join(', ')).toBeLessThan(3000);
        // Given up by the tier (`unavailable`), or failed by the client itself as the socket closed (`error`).
        expect(sharedErrors(a.events).length).toBeGreaterThan(0);
      } finally {
        await redis.restart();
      }
    }, 30_000);

    it('Redis killed and restarted: answered by the provider meanwhile, sharing resumes', async () => {
      const [a, b] = (await start(2)) as [Instance, Instance];
      const warm = knownToken();
      await a.gate.authenticate(bearer(warm));
      mock.latency = 20;
      await redis.kill();
      let slowest = 0;
      for (let i = 0; i < 8; i++) {
        const started = performance.now();
        expect((await outcome(b.gate.authenticate(bearer(knownToken())))).ok).toBe(true);
        expect((await outcome(a.gate.authenticate(bearer(warm)))).ok).toBe(true);
        slowest = Math.max(slowest, performance.now() - started);
      }
      expect(slowest).toBeLessThan(1000);
      expect(sharedErrors(b.events).length).toBeGreaterThan(0);
      await redis.restart();
      await sharingResumes(a, b);
    });

    it('SCRIPT FLUSH on a running Redis: the tier sends its scripts again, shares and revokes, and reports nothing', async () => {
      const { a, b, token } = await twoHoldingARemovedToken();
      await admin.script('FLUSH');
      const other = knownToken();
      await a.gate.authenticate(bearer(other));
      expect((await b.gate.authenticate(bearer(other))).subject).toMatch(/^id-/);
      expect(mock.calls.verify).toBe(2); // `token` once, `other` once
      expect(await a.gate.revoke(bearer(token))).toBe(true);
      await eventually(rejects(b, token), 2000, 'rejected by the other instance');
      expect(sharedErrors([...a.events, ...b.events])).toEqual([]);
    });
  });

  it('keeps at most 10,000 invalidations Redis missed for a retry, the oldest dropped first, and retries them once Redis is back', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    redis.signal('SIGSTOP');
    try {
      // Three that time out open the breaker; then every invalidation fails at once, in order.
      const opening = Array.from({ length: 3 }, (_, i) => a.tier.invalidate(cacheKey('scope', `opening-${i}`)));
      await Promise.allSettled(opening);
      const failed = await Promise.allSettled(
        Array.from({ length: 10_001 }, (_, i) => a.tier.invalidate(cacheKey('scope', `pending-${i}`))),
      );
      expect(failed.every((result) => result.status === 'rejected')).toBe(true);
      // Still down when the first retry comes: those wait for the next one.
      await sleep(1300);
    } finally {
      redis.signal('SIGCONT');
    }
    const tombstone = (i: number) => redisKey(scope, `pending-${i}`, 't');
    await eventually(async () => (await admin.exists(tombstone(10_000))) === 1, 5000, 'retried');
    await eventually(async () => (await admin.exists(tombstone(1))) === 1, 5000, 'all retried');
    expect(await admin.exists(tombstone(0))).toBe(0);
  });

  it('the instance that revoked while Redis was down does not take the token back through its next lease', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })], {
      redis: { localTtl: 60_000 },
    });
    open.push(a);
    const token = knownToken();
    expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
    await stored(token);
    const opened = await whileBreakerOpen(a, async () => {
      expect(await a.gate.revoke(bearer(token))).toBe(false);
    });
    mock.removeToken(token);
    // Past the breaker's cooldown, before the retry: this request's lease is the command that probes Redis.
    await sleep(opened + 1100 - performance.now());
    expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
  });

  it('a read waits for the revocation under way for its key, even one Redis makes resend (scripts lost in a failover)', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    const key = cacheKey('scope', 'resent');
    await admin.set(redisKey(scope, 'resent', 'v'), JSON.stringify(acceptance()), 'PX', 60_000);
    const opened = await whileBreakerOpen(a, async () => {
      await expect(a.tier.invalidate(key)).rejects.toMatchObject({ code: 'EUNAVAILABLE' });
    });
    // As a promoted replica: the data, none of the scripts. The revocation's script is answered NOSCRIPT and sent again.
    await admin.script('FLUSH');
    await sleep(opened + 1100 - performance.now());
    await a.tier.lease(cacheKey('scope', 'probe'), false); // closes the breaker: the retry goes out
    expect((await a.tier.lease(key, false)).state).toBe('claimed');
    expect(await admin.exists(redisKey(scope, 'resent', 't'))).toBe(1);
  });

  it('a deletion and a revocation of one key both missed: the retry sends the revocation alone', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    const key = cacheKey('scope', 'both-missed');
    const opened = await whileBreakerOpen(a, async () => {
      // The deletion fails after the revocation was sent, the revocation after it: both are kept for a retry.
      const missed = [a.tier.delete(key), a.tier.invalidate(key)];
      expect((await Promise.allSettled(missed)).map((result) => result.status)).toEqual(['rejected', 'rejected']);
    });
    const monitor = await admin.monitor();
    const seen: string[] = [];
    monitor.on('monitor', (_time: string, args: string[]) => seen.push(args.join(' ')));
    try {
      await sleep(opened + 1100 - performance.now());
      await a.tier.lease(cacheKey('scope', 'probe'), false); // closes the breaker: the retry goes out
      await eventually(async () => (await admin.exists(redisKey(scope, 'both-missed', 't'))) === 1, 5000, 'retried');
      await sleep(100);
    } finally {
      monitor.disconnect();
    }
    const [value, lease, claims] = (['v', 'l', 'c'] as const).map((kind) => redisKey(scope, 'both-missed', kind));
    // Redis ran the revocation's deletion, and not the rejection's after it (which could only delete what was stored
    // since).
    expect(seen).toContain(`DEL ${value} ${lease} ${claims}`);
    expect(seen).not.toContain(`DEL ${value} ${claims}`);
  });

  it('two reads of a key whose revocation is resent: neither reads before Redis has taken it', async () => {
    const client = adminClient(redis.port);
    const tier = redisCache(client, { timeout: 300 });
    try {
      await tier.ready();
      const scope = { cacheScope: 'scope' } as Provider;
      const key = cacheKey('scope', 'read-twice');
      await admin.set(redisKey(scope, 'read-twice', 'v'), JSON.stringify(acceptance()), 'PX', 60_000);
      // As after a failover: the data, none of the scripts; then a read loads the read's script again, not the revocation's.
      await admin.script('FLUSH');
      await tier.get(cacheKey('scope', 'warm'));
      redis.signal('SIGSTOP');
      let reads: Array<Promise<unknown>>;
      try {
        // Both reads wait for the revocation under way; it times out, and goes out again before either reads.
        const revoked = tier.invalidate(key);
        reads = [tier.get(key), tier.get(key)];
        await expect(revoked).rejects.toMatchObject({ code: 'ETIMEDOUT' });
        await sleep(20);
      } finally {
        redis.signal('SIGCONT');
      }
      const read = await Promise.allSettled(reads);
      expect(read.map((result) => (result.status === 'fulfilled' ? result.value : 'failed'))).toEqual([
        undefined,
        undefined,
      ]);
      expect(await admin.exists(redisKey(scope, 'read-twice', 'v'))).toBe(0);
    } finally {
      await tier.close();
      client.disconnect();
    }
  });

  it('sends every deletion (of a rejection not kept) Redis missed once it is back, more than one batch of them', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    const values = Array.from({ length: 600 }, (_, n) => redisKey(scope, `missed-${n}`, 'v'));
    for (const value of values) await admin.set(value, JSON.stringify(acceptance()), 'PX', 60_000);
    await whileBreakerOpen(a, async () => {
      const missed = await Promise.allSettled(values.map((_, n) => a.tier.delete(cacheKey('scope', `missed-${n}`))));
      expect(missed.every((result) => result.status === 'rejected')).toBe(true);
    });
    await eventually(async () => (await admin.exists(...values)) === 0, 5000, 'every value deleted');
  });

  it('a verdict longer than a value is read back (64 KiB) is not written, its lease ends at once, and a rejection that large or already expired deletes instead', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    const key = cacheKey('scope', 'large');
    const lease = await a.tier.lease(key, false);
    if (lease.state !== 'claimed') throw new Error(`expected a claim, got ${lease.state}`);
    await expect(a.tier.set(key, acceptance({ blob: 'x'.repeat(70_000) }), lease.claim)).rejects.toThrow(
      /is not shared \(at most 65536\)/,
    );
    await eventually(async () => (await admin.exists(redisKey(scope, 'large', 'l'))) === 0, 1000, 'lease ended');
    expect(await admin.exists(redisKey(scope, 'large', 'v'))).toBe(0);
    // A rejection that large still replaces what Redis holds: it deletes it.
    await admin.set(redisKey(scope, 'large', 'v'), JSON.stringify(acceptance()), 'PX', 60_000);
    await a.tier.set(key, { ok: false, reason: 'x'.repeat(70_000), until: Date.now() + 60_000 });
    expect(await admin.exists(redisKey(scope, 'large', 'v'))).toBe(0);
    // So does a rejection already expired (a negativeTtl shorter than the way to Redis).
    await admin.set(redisKey(scope, 'large', 'v'), JSON.stringify(acceptance()), 'PX', 60_000);
    await a.tier.set(key, { ...rejection(), until: Date.now() - 1 } as SharedVerdict);
    expect(await admin.exists(redisKey(scope, 'large', 'v'))).toBe(0);
  });

  it('a verdict JSON cannot hold (a BigInt in details) is not written and ends its lease at once: the other instance asks without waiting leaseTime', async () => {
    const bigDetails = scriptedProvider('big', () => sleep(100));
    const verify = bigDetails.verify;
    const provider = (): Provider => ({
      ...bigDetails,
      async verify(credential, signal) {
        const verdict = await verify(credential, signal);
        return verdict.ok ? { ok: true, principal: { ...verdict.principal, details: { n: 10n } } } : verdict;
      },
    });
    const [a, b] = await Promise.all([0, 1].map(() => startInstance('ioredis 6', redis.port, [provider()])));
    open.push(a as Instance, b as Instance);
    const first = (a as Instance).gate.authenticate(bearer('big-details'));
    await sleep(20);
    const started = performance.now();
    expect((await (b as Instance).gate.authenticate(bearer('big-details'))).subject).toBe('u1');
    await first;
    // The lease's 2,000 ms is not waited for: b asked once a's answer came and was not stored.
    expect(performance.now() - started).toBeLessThan(1500);
    expect(sharedErrors((a as Instance).events)).toEqual(['set:error']);
  });

  it('a rejection whose reason is over 200 characters is shared, cut to 200, and replaces the acceptance another instance holds', async () => {
    let mode: 'accept' | 'reject' | 'fail' = 'accept';
    let calls = 0;
    const longReason = `Revoked: ${'x'.repeat(250)}`;
    const provider = (): Provider => ({
      name: 'custom',
      cacheScope: 'long-reason',
      extract: extractBearer,
      async verify(): Promise<Verdict> {
        calls++;
        if (mode === 'fail') throw new ProviderFailure('unreachable', 'down', { retryable: false });
        if (mode === 'reject') return { ok: false, reason: longReason };
        return { ok: true, principal: { subject: 'u1', permissions: [], details: {} } };
      },
    });
    const [a, b] = (await Promise.all(
      [0, 1].map(() => startInstance('ioredis 6', redis.port, [provider()], { redis: { localTtl: 100 } })),
    )) as [Instance, Instance];
    open.push(a, b);
    const token = 'long-reason';
    await a.gate.authenticate(bearer(token));
    await b.gate.authenticate(bearer(token));
    await sleep(150);
    // Redis let the acceptance go (evicted, expired); the provider now rejects the token.
    await admin.del(redisKey({ cacheScope: 'long-reason' } as Provider, token, 'v'));
    mode = 'reject';
    calls = 0;
    const rejected = await a.gate.authenticate(bearer(token)).catch((error: { message: string }) => error);
    expect((rejected as { message: string }).message).toBe(longReason.slice(0, 200));
    // The provider is down now: b reads the rejection from Redis, and serves no stale acceptance.
    mode = 'fail';
    const fromB = await b.gate.authenticate(bearer(token)).then(
      (context) => (context.stale ? 'accepted stale' : 'accepted'),
      (error: { status: number; message: string }) => `${error.status} ${error.message}`,
    );
    expect({ fromB, calls }).toEqual({ fromB: `401 ${longReason.slice(0, 200)}`, calls: 1 });
  });

  it('what Redis missed (a revocation, a rejection, a delete) is sent again once it is back, and read back by nothing before', async () => {
    const a = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })]);
    open.push(a);
    const scope = { cacheScope: 'scope' } as Provider;
    const names = ['revoked', 'rejected', 'deleted', 'probe'] as const;
    for (const name of names) await admin.set(redisKey(scope, name, 'v'), JSON.stringify(acceptance()), 'PX', 60_000);
    const announced: string[] = [];
    a.tier.onInvalidate((key) => announced.push(key));
    const rejected = rejection();
    // Every command is skipped at once, and kept for a retry.
    const opened = await whileBreakerOpen(a, async () => {
      await expect(a.tier.invalidate(cacheKey('scope', 'revoked'))).rejects.toMatchObject({ code: 'EUNAVAILABLE' });
      await expect(a.tier.set(cacheKey('scope', 'rejected'), rejected)).rejects.toMatchObject({ code: 'EUNAVAILABLE' });
      await expect(a.tier.set(cacheKey('scope', 'probe'), rejected)).rejects.toMatchObject({ code: 'EUNAVAILABLE' });
      await expect(a.tier.delete(cacheKey('scope', 'deleted'))).rejects.toMatchObject({ code: 'EUNAVAILABLE' });
    });
    // Past the breaker's cooldown, before the retry (a cooldown after the first command kept): this read is the
    // command that probes Redis, and what this instance heard rejected is not read back.
    await sleep(opened + 1100 - performance.now());
    expect(await a.tier.get(cacheKey('scope', 'probe'))).toBeUndefined();
    await sleep(1500); // the retry has run
    for (const name of names) expect(await admin.exists(redisKey(scope, name, 'v'))).toBe(0);
    // Only the revocation leaves a tombstone, and it was announced once, when it was asked for.
    expect(await admin.exists(redisKey(scope, 'revoked', 't'))).toBe(1);
    expect(await admin.exists(redisKey(scope, 'rejected', 't'))).toBe(0);
    expect(await admin.exists(redisKey(scope, 'deleted', 't'))).toBe(0);
    expect(announced).toEqual([cacheKey('scope', 'revoked')]);
  });

  /** Makers of an ioredis 6 and an ioredis 5 client with `options`, for the redis-server on a port. */
  const ioRedisClients = (options: { lazyConnect?: boolean; stringNumbers?: boolean }) =>
    [
      ['ioredis 6', (port: number) => new IoRedis6({ host: '127.0.0.1', port, ...options })],
      ['ioredis 5', (port: number) => new IoRedis5({ host: '127.0.0.1', port, ...options })],
    ] as const;
  it.each(ioRedisClients({ lazyConnect: true }))(
    '%s with lazyConnect: its subscription connects, and revocations from other instances reach it',
    async (_, connect) => {
      const client = connect(redis.port);
      client.on('error', () => {});
      await readyAndHearsRevocations(client, redis.port, 3000);
    },
  );

  it.each(ioRedisClients({ stringNumbers: true }))(
    '%s with stringNumbers: an instance waits for the lease holder, one upstream verification for both',
    async (_, connect) => {
      const clients = [connect(redis.port), connect(redis.port)];
      const tiers = clients.map((client) => redisCache(client, { timeout: 250 }));
      const gates = tiers.map((sharedCache) =>
        createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false, sharedCache }),
      );
      try {
        await Promise.all(tiers.map((tier) => tier.ready()));
        const token = `string-numbers-${_.replace(' ', '-')}`;
        mock.setToken(token, { id: 'u1', permissions: [READ] });
        mock.latency = 300;
        const first = gates[0]?.authenticate(bearer(token));
        await sleep(100); // the first instance holds the lease by now
        const second = gates[1]?.authenticate(bearer(token));
        expect((await first)?.subject).toBe('u1');
        expect((await second)?.subject).toBe('u1');
        expect(mock.calls.verify).toBe(1);
      } finally {
        await Promise.all(gates.map((gate) => gate.close()));
        await Promise.all(tiers.map((tier) => tier.close()));
        for (const client of clients) client.disconnect();
      }
    },
  );

  it('takes a node-redis client the app connects after making the tier', async () => {
    const client = createNodeRedis({ socket: { host: '127.0.0.1', port: redis.port } });
    client.on('error', () => {});
    const tier = redisCache(client);
    try {
      await client.connect();
      await tier.ready();
      const key = cacheKey('scope', 'connected-later');
      expect((await tier.lease(key, false)).state).toBe('claimed');
    } finally {
      await tier.close();
      client.destroy();
    }
  });

  it('ready() resolves for a node-redis client the app connects after its subscriber gave up probing (10 s)', {
    timeout: 30_000,
  }, async () => {
    const client = createNodeRedis({ socket: { host: '127.0.0.1', port: redis.port } });
    client.on('error', () => {});
    const tier = redisCache(client);
    let ready = false;
    void tier.ready().then(() => {
      ready = true;
    });
    try {
      await sleep(10_500);
      expect(ready).toBe(false);
      await client.connect();
      await eventually(async () => ready, 2000, 'ready');
    } finally {
      await tier.close();
      client.destroy();
    }
  });

  it('refuses a wrong option or a client it does not know, naming it', async () => {
    const client = adminClient(redis.port);
    try {
      expect(() => redisCache(client, { prefix: 'a{b}' })).toThrow(/redisCache: prefix: expected 1 to 64/);
      expect(() => redisCache(client, { timeout: 0 })).toThrow(RangeError);
      // A lease's expiry goes to Redis as PX, which takes whole ms: 1500.5 would fail every lease.
      expect(() => redisCache(client, { leaseTime: 1500.5 })).toThrow(
        'redisCache: leaseTime: expected an integer >= 10 and <= 60000, got 1500.5',
      );
      expect(() => redisCache(client, { ttl: 5 } as never)).toThrow(/redisCache: ttl: unknown option/);
      expect(() => redisCache({} as never)).toThrow(/expected an ioredis Redis or Cluster, or a node-redis client/);
      expect(() => redisCache(undefined as never)).toThrow(
        /expected an ioredis Redis or Cluster, or a node-redis client/,
      );
      // A URL where a client belongs: never shown (it may hold a password).
      expect(() => redisCache('redis://:SECRETpass@127.0.0.1:6379' as never)).toThrow(
        new TypeError(
          'redisCache: expected an ioredis Redis or Cluster, or a node-redis client, got a string: pass a client, redisCache(new Redis(url))',
        ),
      );
      const secretErrors = [
        [{ secret: 'SECRETshort' }, 'redisCache: secret: expected at least 32 characters'],
        [{ secret: [] }, 'redisCache: secret: expected at least one secret'],
        [{ secret: ['x'.repeat(32), 'SECRETshort'] }, 'redisCache: secret[1]: expected at least 32 characters'],
        [{ secret: true }, 'redisCache: secret: expected a string of at least 32 characters, or an array of them'],
      ] as const;
      for (const [options, message] of secretErrors) {
        expect(() => redisCache(client, options as never)).toThrow(new TypeError(message));
      }
    } finally {
      client.disconnect();
    }
  });

  it("an instance with a shorter ttl asks the provider again within its own ttl of the provider's answer, whatever the writer's ttl", async () => {
    const writer = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })], {
      gate: { cache: { ttl: 3000 } },
    });
    const reader = await startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })], {
      gate: { cache: { ttl: 300 } },
    });
    open.push(writer, reader);
    const token = knownToken();
    await writer.gate.authenticate(bearer(token));
    const answered = performance.now();
    await sleep(100);
    // The provider no longer knows the token: the reader, whose ttl is 300 ms, must find out by then (plus margin).
    mock.removeToken(token);
    const seen: Array<{ at: number; ok: boolean }> = [];
    while (performance.now() - answered < 1500) {
      const { ok } = await outcome(reader.gate.authenticate(bearer(token)));
      seen.push({ at: Math.round(performance.now() - answered), ok });
      await sleep(50);
    }
    const acceptedLate = seen.filter(({ at, ok }) => ok && at > 800);
    expect(acceptedLate).toEqual([]);
  });

  it("an instance with a shorter negativeTtl asks the provider again within its own negativeTtl of a rejection, whatever the writer's", async () => {
    const withNegativeTtl = (negativeTtl: number) =>
      startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })], {
        gate: { cache: { negativeTtl } },
      });
    const writer = await withNegativeTtl(60_000);
    const reader = await withNegativeTtl(300);
    const keepsNone = await withNegativeTtl(0);
    open.push(writer, reader, keepsNone);
    // Tokens the provider rejects once (not known to it yet), then accepts: a new token's first moments.
    const [token, other] = ['late', 'late-too'].map((name) => `tok-${name}-${Math.random().toString(36).slice(2)}`) as [
      string,
      string,
    ];
    for (const rejected of [token, other]) {
      expect(await outcome(writer.gate.authenticate(bearer(rejected)))).toEqual({ ok: false, code: 'invalid_token' });
      await stored(rejected);
      mock.setToken(rejected, { id: `id-${rejected}`, permissions: [READ] });
    }
    const known = performance.now();
    // With negativeTtl 0 an instance keeps no rejection: it asks the provider.
    expect(await outcome(keepsNone.gate.authenticate(bearer(other)))).toEqual({ ok: true, subject: `id-${other}` });
    const seen: Array<{ at: number; ok: boolean }> = [];
    while (performance.now() - known < 1500) {
      const { ok } = await outcome(reader.gate.authenticate(bearer(token)));
      seen.push({ at: Math.round(performance.now() - known), ok });
      await sleep(50);
    }
    // The reader, whose negativeTtl is 300 ms, asks again by then (plus margin).
    const rejectedLate = seen.filter(({ at, ok }) => !ok && at > 800);
    expect(rejectedLate).toEqual([]);
  });

  /** An instance that serves a stale copy up to a minute past its 200 ms `ttl`, and keeps a rejection `negativeTtl`. */
  const staleServing = (negativeTtl: number) =>
    startInstance('ioredis 6', redis.port, [onlineOrNot({ baseUrl: mock.url })], {
      gate: { cache: { ttl: 200, staleIfError: 60_000, negativeTtl } },
    });

  /** A token `instance` accepted and Redis holds, then revoked at the provider. */
  const heldThenRevoked = async (instance: Instance) => {
    const token = `tok-revoked-${Math.random().toString(36).slice(2)}`;
    mock.setToken(token, { id: 'id-revoked', permissions: [READ] });
    expect(await outcome(instance.gate.authenticate(bearer(token)))).toEqual({ ok: true, subject: 'id-revoked' });
    await stored(token);
    mock.removeToken(token);
    return token;
  };

  it("a rejection another instance stored stays a rejection for a stale copy here, past this instance's own negativeTtl: the provider down, no 200", async () => {
    const writer = await staleServing(60_000);
    const reader = await staleServing(300);
    open.push(writer, reader);
    const token = await heldThenRevoked(reader);
    // Revoked at the provider; past the ttl, the writer asks it and stores its rejection for a minute.
    await sleep(250);
    expect(await outcome(writer.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
    await eventually(
      async () => (await admin.get(redisKey(provider, token, 'v')))?.includes('"ok":false') === true,
      2000,
      'the rejection stored',
    );
    // Past the reader's negativeTtl (300 ms), the provider fails: the reader holds a stale copy of the token.
    await sleep(400);
    mock.fault = { kind: 'status', status: 503 };
    expect(await outcome(reader.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: expect.any(String) });
    expect(reader.gate.stats().stale).toBe(0);
  });

  it('a rejection that replaces an acceptance stays in Redis as long as that acceptance could be served stale: instances alike, past negativeTtl, the provider down, no 200', async () => {
    const holder = await staleServing(300);
    const rejecter = await staleServing(300);
    const keepsNone = await staleServing(0);
    open.push(holder, rejecter, keepsNone);
    const token = await heldThenRevoked(holder);
    const other = await heldThenRevoked(holder);
    const unknown = `tok-never-known-${Math.random().toString(36).slice(2)}`;
    // Past the ttl, another instance asks the provider, which rejects them (one of them keeps no rejection itself).
    await sleep(250);
    expect(await outcome(rejecter.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
    expect(await outcome(keepsNone.gate.authenticate(bearer(other)))).toEqual({ ok: false, code: 'invalid_token' });
    // A token that nothing accepted: its rejection lives negativeTtl, however long acceptances could be served.
    expect(await outcome(rejecter.gate.authenticate(bearer(unknown)))).toEqual({ ok: false, code: 'invalid_token' });
    const rejected = (secret: string) => async () =>
      (await admin.get(redisKey(provider, secret, 'v')))?.includes('"ok":false') === true;
    for (const secret of [token, other, unknown]) await eventually(rejected(secret), 2000, 'the rejection stored');
    expect(await admin.pttl(redisKey(provider, unknown, 'v'))).toBeLessThanOrEqual(300);
    expect(await admin.pttl(redisKey(provider, token, 'v'))).toBeGreaterThan(50_000);
    // Past every instance's negativeTtl, the provider rejects them again: the rejections still outlive the acceptances.
    await sleep(400);
    expect(await outcome(rejecter.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
    expect(await outcome(keepsNone.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: 'invalid_token' });
    expect(await outcome(keepsNone.gate.authenticate(bearer(other)))).toEqual({ ok: false, code: 'invalid_token' });
    await sleep(100);
    for (const secret of [token, other]) {
      expect(await admin.get(redisKey(provider, secret, 'v'))).toContain('"ok":false');
      expect(await admin.pttl(redisKey(provider, secret, 'v'))).toBeGreaterThan(50_000);
    }
    // Then the provider fails: the holder's stale copies are not served.
    mock.fault = { kind: 'status', status: 503 };
    for (const secret of [token, other]) {
      expect(await outcome(holder.gate.authenticate(bearer(secret)))).toEqual({ ok: false, code: expect.any(String) });
    }
    expect(holder.gate.stats().stale).toBe(0);
  });

  it("a rejection written without sight of an acceptance still outlives it in Redis, past the rejection's own time: the provider down, no 200", async () => {
    const holder = await staleServing(300);
    const blind = await staleServing(300);
    open.push(holder, blind);
    const token = await heldThenRevoked(holder);
    // What an instance whose provider call overlapped the holder's writes: a rejection for its own negativeTtl alone.
    const until = Date.now() + 300;
    await blind.tier.set(cacheKey(provider.cacheScope, token), {
      ok: false,
      reason: 'The access token is invalid',
      until,
    });
    expect(await admin.pttl(redisKey(provider, token, 'v'))).toBeGreaterThan(50_000);
    // Past that rejection's own time and the holder's negativeTtl, the provider fails: the stale copy is not served.
    await sleep(400);
    mock.fault = { kind: 'status', status: 503 };
    expect(await outcome(holder.gate.authenticate(bearer(token)))).toEqual({ ok: false, code: expect.any(String) });
    expect(holder.gate.stats().stale).toBe(0);
  });
});

describe.skipIf(redisServerMissing)('tokengate/redis on a Redis Cluster', () => {
  let redis: RedisServer;
  let admin: Redis;
  let mock: MockOnlineOrNot;

  beforeAll(async () => {
    redis = await startRedisClusterNode();
    admin = adminClient(redis.port);
    mock = await mockOnlineOrNot();
  });

  afterAll(async () => {
    admin?.disconnect();
    await mock?.close();
    await redis?.close();
  });

  const instances: Instance[] = [];
  const provider = () => onlineOrNot({ baseUrl: mock.url });
  let tokens = 0;

  /** Restarts the node and waits until the cluster takes writes again (a restarted node refuses them for a while). */
  async function restartRedis(): Promise<void> {
    await redis.restart();
    await eventually(() => clusterUp(admin), 10_000, 'cluster up again');
  }

  afterEach(async () => {
    await Promise.all(instances.splice(0).map((instance) => instance.close()));
  });

  /** A token the mock knows, new to every use. */
  function newToken(): string {
    const token = `cluster-${++tokens}`;
    mock.setToken(token, { id: `id-${tokens}`, permissions: [READ] });
    return token;
  }

  /** `count` instances, each with its own cluster client of `kind`, once their subscriptions are live. */
  async function start(kind: ClientKind, count: number, options?: InstanceOptions): Promise<Instance[]> {
    const started = await Promise.all(
      Array.from({ length: count }, () => startInstance(kind, redis.port, [provider()], options)),
    );
    instances.push(...started);
    return started;
  }

  /** The lines of Redis's CLIENT LIST of `type`. */
  const clientsOf = async (type: 'normal' | 'pubsub') =>
    String(await admin.call('CLIENT', 'LIST', 'TYPE', type))
      .split('\n')
      .filter(Boolean);

  /** Drops every pub/sub connection and waits until `count` are back. */
  async function dropSubscribers(count: number): Promise<void> {
    await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await eventually(async () => (await clientsOf('pubsub')).length === count, 5000, 'subscribed again');
  }

  /** Waits until Redis holds `token`'s verdict, then deletes it: only the instances' processes hold it then. */
  async function dropFromRedis(token: string): Promise<void> {
    const key = redisKey(provider(), token, 'v');
    await eventually(async () => (await admin.exists(key)) === 1, 2000, 'stored in Redis');
    await admin.del(key);
  }

  /** A node-redis Cluster instance (`kind`) holding a new token that only its process holds (Redis no longer does). */
  async function holdingOnlyInProcess(kind: ClientKind): Promise<{ a: Instance; token: string }> {
    const [a] = (await start(kind, 1, { redis: { localTtl: 60_000 } })) as [Instance];
    const token = newToken();
    await a.gate.authenticate(bearer(token));
    await dropFromRedis(token);
    return { a, token };
  }

  /** `a` and `b` both hold a new token in process; the provider has since removed it. */
  async function bothHoldingARemovedToken(a: Instance, b: Instance): Promise<string> {
    const token = newToken();
    await a.gate.authenticate(bearer(token));
    await b.gate.authenticate(bearer(token));
    mock.removeToken(token);
    return token;
  }

  it.each(CLUSTER_KINDS)(
    '%s: is ready, and shares verdicts and revocations (a key, its lease and its tombstone live in one slot)',
    async (kind) => {
      const [a, b] = (await start(kind, 2)) as [Instance, Instance];
      const callsBefore = mock.calls.verify;
      const token = newToken();
      expect((await a.gate.authenticate(bearer(token))).subject).toBe(`id-${tokens}`);
      expect((await b.gate.authenticate(bearer(token))).subject).toBe(`id-${tokens}`);
      expect([...sharedErrors(a.events), ...sharedErrors(b.events)]).toEqual([]);
      expect(mock.calls.verify - callsBefore).toBe(1);
      mock.removeToken(token);
      expect(await a.gate.revoke(bearer(token))).toBe(true);
      await eventually(rejects(b, token), 2000, 'rejected on the other instance');
    },
  );

  it.each(CLUSTER_KINDS)('%s: after its subscriber drops, revocations reach it again', async (kind) => {
    const [a, b] = (await start(kind, 2, { redis: { localTtl: 60_000 } })) as [Instance, Instance];
    const token = await bothHoldingARemovedToken(a, b);
    await dropSubscribers(2);
    expect(await a.gate.revoke(bearer(token))).toBe(true);
    await eventually(rejects(b, token), 2000, 'rejected on the other instance');
  });

  const nodeRedisClusters = CLUSTER_KINDS.filter((kind) => kind.startsWith('node-redis'));
  const ioRedisClusters = CLUSTER_KINDS.filter((kind) => kind.startsWith('ioredis'));

  it.each(nodeRedisClusters)('%s: forgets what it holds in process when its subscriber reconnects', async (kind) => {
    const { a, token } = await holdingOnlyInProcess(kind);
    mock.removeToken(token);
    expect((await outcome(a.gate.authenticate(bearer(token)))).ok).toBe(true);
    await dropSubscribers(1);
    await eventually(rejects(a, token), 3000, 'rejected after the subscriber reconnected');
  });

  it.each(nodeRedisClusters)(
    '%s: keeps what it holds in process when another of its connections reconnects',
    async (kind) => {
      const { a, token } = await holdingOnlyInProcess(kind);
      const connections = (await clientsOf('normal')).length;
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      await eventually(async () => (await clientsOf('normal')).length === connections, 5000, 'connected again');
      const callsBefore = mock.calls.verify;
      // Long enough for a probe to have come back through the subscription, which never dropped.
      await sleep(500);
      expect(await outcome(a.gate.authenticate(bearer(token)))).toEqual({ ok: true, subject: `id-${tokens}` });
      expect(mock.calls.verify).toBe(callsBefore);
      expect(sharedErrors(a.events)).toEqual([]);
    },
  );

  // An ioredis Cluster subscribes again on a new connection without a sign the tier could see: what an instance
  // holds then lasts until its localTtl, the bound every client keeps.
  it.each(ioRedisClusters)(
    '%s: after its subscriber drops, serves from process no longer than localTtl',
    async (kind) => {
      const localTtl = 2000;
      const [a, b] = (await start(kind, 2, { redis: { localTtl } })) as [Instance, Instance];
      const token = await bothHoldingARemovedToken(a, b);
      await dropFromRedis(token);
      await dropSubscribers(2);
      await eventually(rejects(a, token), localTtl + 1500, 'rejected within localTtl');
    },
  );

  it.each(CLUSTER_KINDS)('%s: closed at once after it was made, it leaves no connection open', async (kind) => {
    const connected = await connectClient(kind, redis.port);
    const count = async () => (await clientsOf('normal')).length + (await clientsOf('pubsub')).length;
    try {
      // Connections closed by earlier tests may still be listed for a moment: count once they are gone.
      await eventually(async () => (await count()) === (await sleep(100).then(count)), 5000, 'settled');
      const connections = await count();
      const tier = redisCache(connected.client);
      await tier.close();
      await sleep(500);
      expect(await count()).toBe(connections);
    } finally {
      await connected.close();
    }
  });

  it.each([
    ['ioredis 6', IoRedis6Cluster],
    ['ioredis 5', IoRedis5Cluster],
  ] as const)(
    '%s Cluster with enableOfflineQueue: false: subscribes, is ready, and revocations from other instances reach it',
    async (_, Cluster) => {
      const client = new Cluster([{ host: '127.0.0.1', port: redis.port }], { enableOfflineQueue: false });
      client.on('error', () => {});
      await new Promise((resolve) => client.once('ready', resolve));
      await readyAndHearsRevocations(client, redis.port, 5000);
    },
  );

  it.each(CLUSTER_KINDS)('%s: made while Redis is down, it subscribes once Redis is back', async (kind) => {
    const connected = await connectClient(kind, redis.port);
    await redis.kill();
    const tier = redisCache(connected.client);
    try {
      await sleep(300);
      await restartRedis();
      let ready = false;
      void tier.ready().then(() => {
        ready = true;
      });
      await eventually(async () => ready, 10_000, 'ready once Redis is back');
    } finally {
      await tier.close();
      await connected.close();
    }
  });

  it.each(CLUSTER_KINDS)(
    '%s: Redis killed and restarted, answered by the provider meanwhile, sharing and revocations resume',
    async (kind) => {
      const [a, b] = (await start(kind, 2)) as [Instance, Instance];
      await redis.kill();
      for (let i = 0; i < 5; i++) {
        expect(await outcome(b.gate.authenticate(bearer(newToken())))).toEqual({ ok: true, subject: `id-${tokens}` });
      }
      expect(sharedErrors(b.events).length).toBeGreaterThan(0);
      await restartRedis();
      await sharedAgain(mock, newToken, a, b, 15_000);
      const token = await bothHoldingARemovedToken(a, b);
      expect(await a.gate.revoke(bearer(token))).toBe(true);
      await eventually(rejects(b, token), 2000, 'rejected on the other instance');
    },
  );
});
