/**
 * An instance reading a verdict another instance stored in Redis trusts it no longer than its own cache options allow,
 * against a real redis-server.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AuthContext, type CredentialRequest, onlineOrNot } from '../src/index.js';
import { type MockOnlineOrNot, mockOnlineOrNot } from '../src/testing/index.js';
import { adminClient, type Instance, startInstance } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const READ = 'uptime_checks (read)';
const bearer = (token: string): CredentialRequest => ({ headers: { authorization: `Bearer ${token}` } });
const outcome = (promise: Promise<AuthContext>) =>
  promise.then(
    (context) => ({ ok: true as const, subject: context.subject }),
    (error: { code?: string }) => ({ ok: false as const, code: error.code }),
  );

describe.skipIf(redisServerMissing)('a verdict read from Redis, by an instance with other cache options', () => {
  let redis: RedisServer;
  let admin: Redis;
  let mock: MockOnlineOrNot;
  const open: Instance[] = [];
  let tokens = 0;

  beforeAll(async () => {
    redis = await startRedisServer();
    admin = adminClient(redis.port);
    mock = await mockOnlineOrNot();
  });
  afterAll(async () => {
    admin?.disconnect();
    await mock?.close();
    await redis?.close();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((instance) => instance.close()));
    await admin.flushall();
    mock.resetCalls();
  });

  function knownToken(): string {
    const token = `tok-${++tokens}-${Math.random().toString(36).slice(2)}`;
    mock.setToken(token, { id: `id-${tokens}`, permissions: [READ] });
    return token;
  }

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
});
