/**
 * The Redis tier given a client that can never run its scripts: one in
 * subscriber mode under RESP2 (it ran SUBSCRIBE), or a Redis whose EVALSHA
 * and EVAL were renamed away. `ready()`, which the README says to await at
 * startup, rejects naming what is wrong, rather than staying pending forever
 * while nothing is shared; and the gate still answers from its provider.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as ioredis6 from 'ioredis';
import * as ioredis5 from 'ioredis5';
import * as nodeRedis6 from 'redis';
import * as nodeRedis5 from 'redis5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGate } from '../src/index.js';
import { unusableClient } from '../src/redis/driver.js';
import { type RedisClient, redisCache } from '../src/redis/index.js';
import { stubProvider } from '../src/testing/index.js';
import { CLIENT_LIBRARIES, type ClientLibrary, connectClient } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const SUBSCRIBER_MODE = 'tokengate/redis: the client given to redisCache() is in subscriber mode (it ran SUBSCRIBE)';
const NO_SCRIPTS = 'tokengate/redis: Redis knows no EVALSHA or EVAL (renamed or disabled with rename-command)';

/** How `promise` settled within `ms`: its rejection's message, `resolved`, or `pending`. */
function settledWithin(promise: Promise<unknown>, ms: number): Promise<string> {
  return Promise.race([
    promise.then(
      () => 'resolved',
      (error: Error) => error.message,
    ),
    sleep(ms).then(() => 'pending'),
  ]);
}

/** A client of `library` speaking RESP2 (the default of the 5s), connected, that has subscribed to a channel. */
async function subscribedClient(library: ClientLibrary, port: number): Promise<{ client: RedisClient; close(): void }> {
  if (library === 'node-redis 6' || library === 'node-redis 5') {
    const options = { socket: { host: '127.0.0.1', port }, RESP: 2 as const };
    const client = library === 'node-redis 6' ? nodeRedis6.createClient(options) : nodeRedis5.createClient(options);
    client.on('error', () => {});
    await client.connect();
    await client.subscribe('the-apps-own-channel', () => {});
    return { client: client as unknown as RedisClient, close: () => client.destroy() };
  }
  const options = { host: '127.0.0.1', port, protocol: 2 as const };
  const client = library === 'ioredis 6' ? new ioredis6.Redis(options) : new ioredis5.Redis(options);
  client.on('error', () => {});
  await client.subscribe('the-apps-own-channel');
  return { client: client as unknown as RedisClient, close: () => client.disconnect() };
}

describe('what counts as a client that can never run the tier', () => {
  it.each([
    [
      'ioredis in subscriber mode',
      'Connection in subscriber mode, only subscriber commands may be used',
      SUBSCRIBER_MODE,
    ],
    [
      'Redis 6.2 and later, subscribed',
      "ERR Can't execute 'evalsha': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
      SUBSCRIBER_MODE,
    ],
    [
      'Redis 5 and 6.0, subscribed',
      'ERR only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT allowed in this context',
      SUBSCRIBER_MODE,
    ],
    ['Redis 7, EVALSHA renamed', "ERR unknown command 'evalsha', with args beginning with: 'abc' '3'", NO_SCRIPTS],
    ['Redis 6, EVAL renamed', 'ERR unknown command `EVAL`, with args beginning with: ', NO_SCRIPTS],
  ])('%s', (_, message, named) => {
    expect(unusableClient(new Error(message))).toContain(named);
  });

  it.each([
    'LOADING Redis is loading the dataset in memory',
    'Connection is closed.',
    'The client is closed',
    "ERR unknown command 'foo', with args beginning with: ",
    'NOSCRIPT No matching script. Please use EVAL.',
  ])('not %s', (message) => {
    expect(unusableClient(new Error(message))).toBeUndefined();
  });
});

describe.skipIf(redisServerMissing)('tokengate/redis given a client that cannot run its scripts', () => {
  let redis: RedisServer;
  let renamed: RedisServer;

  beforeAll(async () => {
    [redis, renamed] = await Promise.all([
      startRedisServer(),
      startRedisServer(['--rename-command', 'EVALSHA', '', '--rename-command', 'EVAL', '']),
    ]);
  });

  afterAll(async () => {
    await Promise.all([redis?.close(), renamed?.close()]);
  });

  describe.each(CLIENT_LIBRARIES)('with %s', (library) => {
    it('in subscriber mode (RESP2): ready() rejects naming it, and the gate answers from its provider', async () => {
      const { client, close } = await subscribedClient(library, redis.port);
      const tier = redisCache(client, { timeout: 250 });
      const gate = createGate({
        providers: [stubProvider({ tokens: { 'tok-sub': { subject: 'ada', permissions: [] } } })],
        sharedCache: tier,
      });
      try {
        expect(await settledWithin(tier.ready(), 3000)).toContain(SUBSCRIBER_MODE);
        // And again for a later caller.
        expect(await settledWithin(tier.ready(), 100)).toContain(SUBSCRIBER_MODE);
        expect((await gate.authenticate({ headers: { authorization: 'Bearer tok-sub' } })).subject).toBe('ada');
      } finally {
        await gate.close();
        await tier.close();
        close();
      }
    });

    it('on a Redis whose EVALSHA and EVAL were renamed away: ready() rejects naming them', async () => {
      const { client, close } = await connectClient(library, renamed.port);
      const tier = redisCache(client, { timeout: 250 });
      try {
        expect(await settledWithin(tier.ready(), 3000)).toContain(NO_SCRIPTS);
      } finally {
        await tier.close();
        await close();
      }
    });
  });
});
