/**
 * The Redis tier on a Redis that evicts keys (`--maxmemory` with
 * `--maxmemory-policy volatile-ttl`, as the README suggests): whatever Redis
 * evicts, an answer asked for before a revocation is never stored after it.
 */
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SharedVerdict } from '../src/shared-tier.js';
import { cacheKey } from '../src/store.js';
import { stubProvider } from '../src/testing/index.js';
import { adminClient, type Instance, startInstance } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

describe.skipIf(redisServerMissing)('tokengate/redis on a Redis that evicts keys', () => {
  let redis: RedisServer;
  let admin: Redis;
  const instances: Instance[] = [];

  beforeAll(async () => {
    redis = await startRedisServer(['--maxmemory', '4mb', '--maxmemory-policy', 'volatile-ttl']);
    admin = adminClient(redis.port);
  });

  afterAll(async () => {
    await Promise.all(instances.map((instance) => instance.close()));
    admin?.disconnect();
    await redis?.close();
  });

  it("an answer asked for before a revocation is not stored, after Redis evicted the revocation's tombstone", async () => {
    const providers = () => [stubProvider({ tokens: {} })];
    const started = await Promise.all([1, 2].map(() => startInstance('ioredis 6', redis.port, providers())));
    instances.push(...started);
    const [a, b] = started as [Instance, Instance];
    const key = cacheKey('scope', 'revoked-then-evicted');
    const encoded = Buffer.from(key, 'latin1').toString('base64url');
    const lease = await a.tier.lease(key, false);
    if (lease.state !== 'claimed') throw new Error(`expected a claim, got ${lease.state}`);
    await b.tier.invalidate(key);
    expect(await admin.exists(`tokengate:{${encoded}}:t`)).toBe(1);

    // Other apps' keys, living longer than the tombstone, until Redis has evicted it to make room.
    const filler = 'x'.repeat(16 * 1024);
    for (let i = 0; (await admin.exists(`tokengate:{${encoded}}:t`)) === 1; i++) {
      if (i === 2000) throw new Error('Redis evicted nothing');
      await admin.set(`other-app:${i}`, filler, 'PX', 600_000);
    }
    expect(Number(/evicted_keys:(\d+)/.exec(await admin.info('stats'))?.[1])).toBeGreaterThan(0);

    const until = Date.now() + 60_000;
    const verdict: SharedVerdict = { ok: true, subject: 'u1', permissions: [], details: {}, freshUntil: until, until };
    await a.tier.set(key, verdict, lease.claim);
    expect(await admin.exists(`tokengate:{${encoded}}:v`)).toBe(0);
    expect(await a.tier.get(key)).toBeUndefined();
  });
});
