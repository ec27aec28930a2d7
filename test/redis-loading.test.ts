/**
 * The Redis tier on a Redis that restarts with a dataset to load (persistence on: an RDB file), and answers `-LOADING`
 * to scripts for longer than the tier's first probes of its subscription last (10 s), while it takes `SUBSCRIBE` and
 * `PUBLISH` already. `key-load-delay` (a Redis setting for its own tests) makes a small file load that slowly.
 *
 * ioredis waits for the load in its ready check; node-redis says `ready` at once, so its tier's first probes all meet
 * `LOADING`. Once Redis has loaded, every tier, made before the restart or during the load, is ready again, and what
 * each instance held in process before the break is dropped (a revocation sent meanwhile reached it through nothing).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onlineOrNot } from '../src/index.js';
import { redisCache } from '../src/redis/index.js';
import { type MockOnlineOrNot, mockOnlineOrNot } from '../src/testing/index.js';
import {
  adminClient,
  CLIENT_LIBRARIES,
  type ConnectedClient,
  connectClient,
  type Instance,
  startInstance,
} from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
/** Keys in the RDB file, each loaded 1 ms apart: a load of 12 s at least, past the tier's 10 s of first probes. */
const KEYS = 12_000;

describe.skipIf(redisServerMissing)('tokengate/redis on a Redis that is loading its dataset after a restart', () => {
  let redis: RedisServer;
  let admin: Redis;
  let mock: MockOnlineOrNot;
  let dir: string;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tokengate-loading-'));
    const slowLoad = ['--key-load-delay', '1000', '--loading-process-events-interval-bytes', '1024'];
    redis = await startRedisServer(['--dir', dir, ...slowLoad]);
    admin = adminClient(redis.port);
    mock = await mockOnlineOrNot();
  });

  afterAll(async () => {
    await Promise.all(open.map((each) => each.close()));
    admin?.disconnect();
    await mock?.close();
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('once Redis has loaded, every tier is ready again and drops what its instance held in process', {
    timeout: 60_000,
  }, async () => {
    for (let i = 0; i < KEYS; i += 1000) {
      await admin.mset(Object.fromEntries(Array.from({ length: 1000 }, (_, j) => [`other-app:${i + j}`, 'x'])));
    }
    await admin.save();
    const instances: Instance[] = [];
    for (const library of CLIENT_LIBRARIES) {
      const providers = [onlineOrNot({ baseUrl: mock.url })];
      instances.push(await startInstance(library, redis.port, providers, { redis: { localTtl: 60_000 } }));
    }
    open.push(...instances);
    mock.setToken('held-before-restart', { id: 'u1' });
    for (const instance of instances) await instance.gate.authenticate(bearer('held-before-restart'));
    // Removed at the provider while Redis is away: no message can tell the instances.
    mock.removeToken('held-before-restart');

    await redis.restart();
    // An app started while Redis loads, on each client library (ioredis connects once Redis has loaded).
    const started = CLIENT_LIBRARIES.map((library) =>
      connectClient(library, redis.port).then((connected: ConnectedClient) => {
        const tier = redisCache(connected.client);
        open.push(tier, connected);
        return tier;
      }),
    );
    for (const instance of instances) {
      // Answered by the provider meanwhile.
      mock.setToken('during-load', { id: 'u2' });
      expect((await instance.gate.authenticate(bearer('during-load'))).subject).toBe('u2');
    }
    await admin.ping(); // answered once Redis has loaded (ioredis's ready check waits for it)

    const tiers = [...instances.map((instance) => instance.tier), ...(await Promise.all(started))];
    const ready = await Promise.race([
      Promise.all(tiers.map((tier) => tier.ready())).then(() => 'ready'),
      sleep(5000).then(() => 'still waiting 5 s after Redis loaded'),
    ]);
    expect(ready).toBe('ready');
    for (const instance of instances) {
      await expect(instance.gate.authenticate(bearer('held-before-restart'))).rejects.toMatchObject({
        code: 'invalid_token',
      });
    }
  });
});
