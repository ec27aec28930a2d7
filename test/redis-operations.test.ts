/**
 * Two ways an operator can set the Redis tier up that the README describes, on real redis-servers:
 *
 * - the tier pointed at a replica: `ready()` resolves (its probe only publishes), every write fails `READONLY`, so
 *   each instance asks the provider for every new token and `revoke()` resolves false, while requests are answered;
 * - an ioredis client with a `keyPrefix`: the tier's keys get it in front, its channel does not (ioredis prefixes
 *   keys, not channels: the README's ACL patterns follow that), and revocations still reach the other instance.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, createGate, type Gate, onlineOrNot } from '../src/index.js';
import { redisCache } from '../src/redis/index.js';
import { type MockOnlineOrNot, mockOnlineOrNot } from '../src/testing/index.js';
import { adminClient } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
const PERMISSIONS = ['uptime_checks (read)'];

describe.skipIf(redisServerMissing)('the Redis tier as an operator may set it up', () => {
  let primary: RedisServer;
  let replica: RedisServer;
  let mock: MockOnlineOrNot;
  const open: Array<() => Promise<unknown> | unknown> = [];

  beforeAll(async () => {
    primary = await startRedisServer();
    replica = await startRedisServer(['--replicaof', '127.0.0.1', String(primary.port)]);
    mock = await mockOnlineOrNot({ tokens: {} });
  }, 30_000);
  afterAll(async () => {
    for (const close of open.reverse()) await close();
    await Promise.all([mock?.close(), replica?.close(), primary?.close()]);
  });

  /** A gate on `client`'s tier (awaited ready), closed after the tests. */
  async function instance(client: Redis): Promise<Gate> {
    const tier = redisCache(client);
    await tier.ready();
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], sharedCache: tier });
    open.push(
      () => gate.close(),
      () => tier.close(),
      () => client.disconnect(),
    );
    return gate;
  }

  it('on a replica: ready() resolves, nothing is shared (each instance asks the provider), revoke() resolves false', async () => {
    const [a, b] = [
      await instance(new Redis(replica.port, '127.0.0.1')),
      await instance(new Redis(replica.port, '127.0.0.1')),
    ];
    const token = 'replica-token';
    mock.setToken(token, { id: 'tok_replica', permissions: PERMISSIONS });
    const before = mock.calls.verify;
    expect((await a.authenticate(bearer(token))).subject).toBe('tok_replica');
    expect((await b.authenticate(bearer(token))).subject).toBe('tok_replica');
    expect(mock.calls.verify - before).toBe(2);
    mock.removeToken(token);
    expect(await a.revoke(bearer(token))).toBe(false);
    await expect(a.authenticate(bearer(token))).rejects.toBeInstanceOf(AuthError);
  });

  it('under an ioredis keyPrefix: keys carry it, the channel does not, and revocations cross instances', async () => {
    const admin = adminClient(primary.port);
    open.push(() => admin.disconnect());
    const [a, b] = [
      await instance(new Redis({ port: primary.port, host: '127.0.0.1', keyPrefix: 'app1:' })),
      await instance(new Redis({ port: primary.port, host: '127.0.0.1', keyPrefix: 'app1:' })),
    ];
    expect(await admin.pubsub('CHANNELS', '*')).toEqual(['tokengate:bus']);
    const token = 'prefixed-token';
    mock.setToken(token, { id: 'tok_prefixed', permissions: PERMISSIONS });
    const before = mock.calls.verify;
    await a.authenticate(bearer(token));
    await b.authenticate(bearer(token));
    expect(mock.calls.verify - before).toBe(1);
    const keys = await admin.keys('*');
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((key) => key.startsWith('app1:tokengate:'))).toBe(true);
    mock.removeToken(token);
    expect(await a.revoke(bearer(token))).toBe(true);
    // The message reaches the other instance within milliseconds; it then asks the provider, which rejects.
    const since = performance.now();
    while (
      await b.authenticate(bearer(token)).then(
        () => true,
        () => false,
      )
    ) {
      if (performance.now() - since > 2000) throw new Error('b still accepts the revoked token after 2 s');
      await sleep(10);
    }
    await expect(b.authenticate(bearer(token))).rejects.toMatchObject({ code: 'invalid_token' });
  });
});
