/**
 * The Redis tier on a Redis at its `maxmemory`:
 *
 * - one that evicts keys (`--maxmemory-policy volatile-ttl`, as the README suggests): whatever Redis evicts, an answer
 *   asked for before a revocation is never stored after it;
 * - one that evicts nothing (`noeviction`, Redis's default policy), whose writes answer `OOM`: a revocation is still
 *   taken and reaches every instance (each script deletes before it writes, and Redis refuses only a script's first
 *   write), new tokens are answered by the provider, and sharing resumes once Redis has room.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onlineOrNot } from '../src/index.js';
import type { SharedVerdict } from '../src/shared-tier.js';
import { cacheKey } from '../src/store.js';
import { type MockOnlineOrNot, mockOnlineOrNot, stubProvider } from '../src/testing/index.js';
import {
  adminClient,
  CLIENT_LIBRARIES,
  type Instance,
  sharedErrors,
  startInstance,
} from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

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

describe.skipIf(redisServerMissing)('tokengate/redis on a Redis that is full and evicts nothing (OOM)', () => {
  let redis: RedisServer;
  let admin: Redis;
  let mock: MockOnlineOrNot;
  let tokens = 0;

  beforeAll(async () => {
    redis = await startRedisServer(['--maxmemory-policy', 'noeviction']);
    admin = adminClient(redis.port);
    mock = await mockOnlineOrNot();
  });

  afterAll(async () => {
    admin?.disconnect();
    await mock?.close();
    await redis?.close();
  });

  const knownToken = () => {
    const token = `oom-${++tokens}`;
    mock.setToken(token, { id: token });
    return token;
  };

  it.each(CLIENT_LIBRARIES)(
    '%s: a revocation reaches every instance, new tokens are answered, and sharing resumes once Redis has room',
    async (library) => {
      const instances = await Promise.all(
        [1, 2].map(() =>
          startInstance(library, redis.port, [onlineOrNot({ baseUrl: mock.url })], { redis: { localTtl: 60_000 } }),
        ),
      );
      const [a, b] = instances as [Instance, Instance];
      try {
        const revoked = knownToken();
        for (const instance of instances) await instance.gate.authenticate(bearer(revoked));
        mock.removeToken(revoked);
        await admin.config('SET', 'maxmemory', '1');
        expect(await a.gate.revoke(bearer(revoked))).toBe(true);
        // Told through Redis: the message comes a moment after Redis took the revocation.
        for (
          let tries = 0;
          await b.gate.authenticate(bearer(revoked)).then(
            () => true,
            () => false,
          );
          tries++
        ) {
          if (tries === 100) throw new Error('the other instance still accepts the revoked token after 1 s');
          await sleep(10);
        }

        const fresh = knownToken();
        for (const instance of instances) expect((await instance.gate.authenticate(bearer(fresh))).subject).toBe(fresh);
        expect(sharedErrors(a.events)).toContain('lease:error');

        await admin.config('SET', 'maxmemory', '0');
        for (let tries = 0; ; tries++) {
          const token = knownToken();
          const before = mock.calls.verify;
          for (const instance of instances) await instance.gate.authenticate(bearer(token));
          if (mock.calls.verify - before === 1) break;
          if (tries === 100) throw new Error('not shared again within 100 tries');
          await sleep(50);
        }
      } finally {
        await admin.config('SET', 'maxmemory', '0');
        await Promise.all(instances.map((instance) => instance.close()));
      }
    },
  );
});
