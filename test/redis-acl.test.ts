/**
 * The Redis tier as a Redis ACL user sees it (Redis 6 and later): with the
 * rules the README gives, every instance's gate shares answers and hears
 * revocations; with an ACL that leaves out the tier's channel (Redis 7 gives
 * a new user no channel), `ready()` rejects, naming what to grant, instead of
 * revocations being lost in silence. Through each client library, and each one's cluster client with the README's
 * two rules for a cluster.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as ioredis6 from 'ioredis';
import * as ioredis5 from 'ioredis5';
import * as nodeRedis6 from 'redis';
import * as nodeRedis5 from 'redis5';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGate, onlineOrNot } from '../src/index.js';
import { isRefusal } from '../src/redis/driver.js';
import { type RedisClient, redisCache } from '../src/redis/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { adminClient, CLIENT_LIBRARIES, type ClientLibrary, startRedisClusterNode } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const PASSWORD = 'acl-user-password-0123456789';
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** The README's rules for the tier's user, for the default prefix `tokengate:`: nothing more than the tier runs. */
const README_RULES = [
  'resetchannels',
  '~tokengate:*',
  '&tokengate:bus',
  '+evalsha',
  '+eval',
  '+subscribe',
  '+publish',
  '+get',
  '+set',
  '+del',
  '+exists',
  '+type',
  '+strlen',
  '+pttl',
  '+pexpire',
  '+hget',
  '+hset',
  '+hdel',
  '+hlen',
  '+time',
  '+info',
];

/** What a cluster client also runs, beside the README's rules: the slots map, and (ioredis) its ready check. */
const README_CLUSTER_RULES = [...README_RULES, '+cluster|slots', '+cluster|info'];

/** A cluster client of `library` logged in as `username` on every node, connected. */
async function connectClusterAs(
  library: ClientLibrary,
  port: number,
  username: string,
): Promise<{ client: RedisClient; close(): void }> {
  if (library === 'node-redis 6' || library === 'node-redis 5') {
    const options = {
      rootNodes: [{ socket: { host: '127.0.0.1', port } }],
      defaults: { username, password: PASSWORD },
    };
    const client = library === 'node-redis 6' ? nodeRedis6.createCluster(options) : nodeRedis5.createCluster(options);
    client.on('error', () => {});
    await client.connect();
    return { client: client as unknown as RedisClient, close: () => client.destroy() };
  }
  const nodes = [{ host: '127.0.0.1', port }];
  const options = { redisOptions: { username, password: PASSWORD } };
  const client = library === 'ioredis 6' ? new ioredis6.Cluster(nodes, options) : new ioredis5.Cluster(nodes, options);
  client.on('error', () => {});
  await new Promise((resolve) => client.once('ready', resolve));
  return { client: client as unknown as RedisClient, close: () => client.disconnect() };
}

/** A client of `library` logged in as `username`, connected. */
async function connectAs(
  library: ClientLibrary,
  port: number,
  username: string,
): Promise<{ client: RedisClient; close(): void }> {
  const options = { socket: { host: '127.0.0.1', port }, username, password: PASSWORD };
  if (library === 'node-redis 6' || library === 'node-redis 5') {
    const client = library === 'node-redis 6' ? nodeRedis6.createClient(options) : nodeRedis5.createClient(options);
    client.on('error', () => {});
    await client.connect();
    return { client: client as unknown as RedisClient, close: () => client.destroy() };
  }
  const ioOptions = { host: '127.0.0.1', port, username, password: PASSWORD };
  const client = library === 'ioredis 6' ? new ioredis6.Redis(ioOptions) : new ioredis5.Redis(ioOptions);
  client.on('error', () => {});
  await new Promise((resolve) => client.once('ready', resolve));
  return { client: client as unknown as RedisClient, close: () => client.disconnect() };
}

/**
 * Two instances on clients from `connect`, each with its own tier and gate: a new token costs one upstream call
 * between them, and a revocation on one reaches the other, which kept the answer in process for a minute.
 */
async function sharesAndRevokes(connect: () => Promise<{ client: RedisClient; close(): void }>, timeout: number) {
  const mock = await mockOnlineOrNot({ tokens: { 'tok-acl': { id: 'id-acl', permissions: [] } } });
  const clients = await Promise.all([0, 1].map(connect));
  const tiers = clients.map(({ client }) => redisCache(client, { timeout, localTtl: 60_000 }));
  const gates = tiers.map((tier) =>
    createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], sharedCache: tier, retry: false }),
  );
  try {
    await Promise.all(tiers.map((tier) => tier.ready()));
    const [a, b] = gates as [(typeof gates)[0], (typeof gates)[0]];
    expect((await a.authenticate(bearer('tok-acl'))).subject).toBe('id-acl');
    expect((await b.authenticate(bearer('tok-acl'))).subject).toBe('id-acl');
    expect(mock.calls.verify).toBe(1);
    expect(await a.revoke(bearer('tok-acl'))).toBe(true);
    mock.removeToken('tok-acl');
    // Only the revocation's message can take b's answer back.
    let status = 200;
    for (let tries = 0; tries < 50 && status === 200; tries++) {
      status = await b.authenticate(bearer('tok-acl')).then(
        () => 200,
        (error: { status: number }) => error.status,
      );
      if (status === 200) await sleep(20);
    }
    expect(status).toBe(401);
  } finally {
    await Promise.all(gates.map((gate) => gate.close()));
    await Promise.all(tiers.map((tier) => tier.close()));
    for (const { close } of clients) close();
    await mock.close();
  }
}

describe('what counts as Redis refusing the ACL user', () => {
  it.each([
    ['a command (NOPERM)', 'NOPERM this user has no permissions to access one of the channels used as arguments'],
    [
      'a command in a script, Redis 6.2 and 7.0',
      "ERR The user executing the script can't publish to the channel mentioned in the command script: 9ddb5d56, on @user_script:1.",
    ],
    [
      'a command in a script, Redis 7.2 and later',
      "ERR ACL failure in script: User tier has no permissions to run the 'publish' command script: 7a4e5b1c, on @user_script:1.",
    ],
  ])('%s', (_, message) => {
    expect(isRefusal(new Error(message))).toBe(true);
  });

  it.each([
    'LOADING Redis is loading the dataset in memory',
    'ERR max number of clients reached',
    'Connection is closed.',
  ])('not %s', (message) => {
    expect(isRefusal(new Error(message))).toBe(false);
  });
});

describe.skipIf(redisServerMissing)('tokengate/redis as a Redis ACL user', () => {
  let redis: RedisServer;
  let admin: ioredis6.Redis;

  beforeAll(async () => {
    redis = await startRedisServer();
    admin = adminClient(redis.port);
    await admin.call('ACL', 'SETUSER', 'tier', 'on', `>${PASSWORD}`, ...README_RULES);
    // What a least-privilege user often looks like: its keys and every command, and (Redis 7) no channel.
    await admin.call('ACL', 'SETUSER', 'nochannel', 'on', `>${PASSWORD}`, 'resetchannels', '~tokengate:*', '+@all');
  });

  afterAll(async () => {
    admin?.disconnect();
    await redis?.close();
  });

  it('a refused node-redis subscriber is made anew after pauses that double, not every second', async () => {
    const connections = async () =>
      Number(/total_connections_received:(\d+)/.exec(String(await admin.call('INFO', 'stats')))?.[1]);
    const { client, close } = await connectAs('node-redis 6', redis.port, 'nochannel');
    const tier = redisCache(client, { timeout: 250 });
    try {
      await expect(tier.ready()).rejects.toThrow('NOPERM');
      const before = await connections();
      await sleep(7500);
      // Tries again about 1, 3 and 7 s after the first refusal (each a new connection); every second would be 7.
      expect((await connections()) - before).toBeLessThanOrEqual(4);
    } finally {
      await tier.close();
      close();
    }
  });

  describe.each(CLIENT_LIBRARIES)('with %s', (library) => {
    it("with the README's rules: one upstream call for two instances, and a revocation reaches the other", () =>
      sharesAndRevokes(() => connectAs(library, redis.port, 'tier'), 250));

    it("without the tier's channel: ready() rejects, naming the channel to grant", async () => {
      const { client, close } = await connectAs(library, redis.port, 'nochannel');
      const tier = redisCache(client, { timeout: 250 });
      try {
        await expect(tier.ready()).rejects.toThrow(
          "tokengate/redis: Redis refused this client's user the channel tokengate:bus or the commands the tier runs (NOPERM): grant its ACL user &tokengate:bus and the commands the README lists, or revocations reach no other instance",
        );
        // And again while it does, for a later caller.
        await expect(tier.ready()).rejects.toThrow('NOPERM');
      } finally {
        await tier.close();
        close();
      }
    });

    it('once the channel is granted, ready() resolves: the subscription is tried again', async () => {
      const user = `granted-later-${library.replace(/\W/g, '')}`;
      await admin.call('ACL', 'SETUSER', user, 'on', `>${PASSWORD}`, 'resetchannels', '~tokengate:*', '+@all');
      const { client, close } = await connectAs(library, redis.port, user);
      const tier = redisCache(client, { timeout: 250 });
      try {
        await expect(tier.ready()).rejects.toThrow('NOPERM');
        await admin.call('ACL', 'SETUSER', user, '&tokengate:bus');
        let live = false;
        for (let tries = 0; tries < 40 && !live; tries++) {
          await sleep(100);
          live = await tier.ready().then(
            () => true,
            () => false,
          );
        }
        expect(live).toBe(true);
      } finally {
        await tier.close();
        close();
        await admin.call('ACL', 'DELUSER', user);
      }
    });
  });
});

describe.skipIf(redisServerMissing)('tokengate/redis as a Redis ACL user on a Redis Cluster', () => {
  let redis: RedisServer;

  beforeAll(async () => {
    redis = await startRedisClusterNode();
    const admin = adminClient(redis.port);
    await admin.call('ACL', 'SETUSER', 'tier', 'on', `>${PASSWORD}`, ...README_CLUSTER_RULES);
    admin.disconnect();
  });

  afterAll(async () => {
    await redis?.close();
  });

  it.each(CLIENT_LIBRARIES)(
    "%s Cluster, with the README's rules and its two for a cluster: one upstream call for two instances, and a revocation reaches the other",
    (library) => sharesAndRevokes(() => connectClusterAs(library, redis.port, 'tier'), 500),
  );
});
