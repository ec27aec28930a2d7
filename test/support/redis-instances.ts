/**
 * App instances for the Redis tier tests, in one process: each has its own
 * Redis client (ioredis or node-redis), its own `redisCache` tier and its
 * own gate, as separate processes would; they share only Redis.
 */
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as ioredis6 from 'ioredis';
import * as ioredis5 from 'ioredis5';
import * as nodeRedis6 from 'redis';
import * as nodeRedis5 from 'redis5';
import { createGate, type Gate, type GateEvent, type GateOptions, type Provider } from '../../src/index.js';
import { type RedisCache, type RedisCacheOptions, type RedisClient, redisCache } from '../../src/redis/index.js';
import { type RedisServer, startRedisServer } from './redis-server.js';

/** A client library at one of the majors the package supports (`ioredis5` and `redis5` are their 5.x, by alias). */
export type ClientLibrary = 'ioredis 6' | 'node-redis 6' | 'ioredis 5' | 'node-redis 5';
/** A client of a single redis-server, or (`… Cluster`) of a Redis Cluster. */
export type ClientKind = ClientLibrary | `${ClientLibrary} Cluster`;
/** The client libraries, each major. */
export const CLIENT_LIBRARIES: readonly ClientLibrary[] = ['ioredis 6', 'node-redis 6', 'ioredis 5', 'node-redis 5'];
/** The clients of a single redis-server. */
export const CLIENT_KINDS: readonly ClientKind[] = CLIENT_LIBRARIES;
/** The clients of a Redis Cluster. */
export const CLUSTER_KINDS: readonly ClientKind[] = [
  'ioredis 6 Cluster',
  'node-redis 6 Cluster',
  'ioredis 5 Cluster',
  'node-redis 5 Cluster',
];

export interface ConnectedClient {
  readonly client: RedisClient;
  close(): Promise<void>;
}

/** What connecting needs of an ioredis `Redis` or `Cluster`, whichever major. */
interface IoRedisConnection {
  on(event: 'error', listener: () => void): unknown;
  ping(): Promise<unknown>;
  disconnect(): void;
}

/** What connecting needs of a node-redis client or cluster, whichever major. */
interface NodeRedisConnection {
  on(event: 'error', listener: () => void): unknown;
  connect(): Promise<unknown>;
  destroy(): void;
}

async function connectIoRedis(client: IoRedisConnection): Promise<ConnectedClient> {
  client.on('error', () => {});
  await client.ping();
  return { client: client as unknown as RedisClient, close: async () => client.disconnect() };
}

async function connectNodeRedis(client: NodeRedisConnection): Promise<ConnectedClient> {
  client.on('error', () => {});
  await client.connect();
  return { client: client as unknown as RedisClient, close: async () => client.destroy() };
}

const retryStrategy = (times: number) => Math.min(times * 50, 200);
const reconnectStrategy = (retries: number) => Math.min((retries + 1) * 50, 200);
const ioRedisOptions = (port: number) => ({ host: '127.0.0.1', port, retryStrategy });
const ioRedisNodes = (port: number) => [{ host: '127.0.0.1', port }];
const ioRedisClusterOptions = { clusterRetryStrategy: retryStrategy };
const nodeRedisOptions = (port: number) => ({ socket: { host: '127.0.0.1', port, reconnectStrategy } });
const nodeRedisClusterOptions = (port: number) => ({
  rootNodes: [{ socket: { host: '127.0.0.1', port } }],
  defaults: { socket: { reconnectStrategy } },
});

const CONNECT: Record<ClientKind, (port: number) => Promise<ConnectedClient>> = {
  'ioredis 6': (port) => connectIoRedis(new ioredis6.Redis(ioRedisOptions(port))),
  'ioredis 5': (port) => connectIoRedis(new ioredis5.Redis(ioRedisOptions(port))),
  'ioredis 6 Cluster': (port) => connectIoRedis(new ioredis6.Cluster(ioRedisNodes(port), ioRedisClusterOptions)),
  'ioredis 5 Cluster': (port) => connectIoRedis(new ioredis5.Cluster(ioRedisNodes(port), ioRedisClusterOptions)),
  'node-redis 6': (port) => connectNodeRedis(nodeRedis6.createClient(nodeRedisOptions(port))),
  'node-redis 5': (port) => connectNodeRedis(nodeRedis5.createClient(nodeRedisOptions(port))),
  'node-redis 6 Cluster': (port) => connectNodeRedis(nodeRedis6.createCluster(nodeRedisClusterOptions(port))),
  'node-redis 5 Cluster': (port) => connectNodeRedis(nodeRedis5.createCluster(nodeRedisClusterOptions(port))),
};

/**
 * A connected client of `kind` for the redis-server on `port` (for a Cluster kind, a cluster's node); it reconnects
 * every 50 to 200 ms while Redis is gone.
 */
export function connectClient(kind: ClientKind, port: number): Promise<ConnectedClient> {
  return CONNECT[kind](port);
}

let clusterNodes = 0;

/** Whether the cluster `admin` is connected to takes writes (every slot served). */
export async function clusterUp(admin: ioredis6.Redis): Promise<boolean> {
  return String(await admin.call('CLUSTER', 'INFO')).includes('cluster_state:ok');
}

/**
 * A one-node Redis Cluster holding every slot, on a free loopback port, once it takes writes; `close()` removes its
 * nodes file too.
 */
export async function startRedisClusterNode(): Promise<RedisServer> {
  const nodesFile = path.join(os.tmpdir(), `tokengate-nodes-${process.pid}-${++clusterNodes}.conf`);
  const args = ['--cluster-enabled', 'yes', '--cluster-config-file', nodesFile, '--cluster-announce-ip', '127.0.0.1'];
  const redis = await startRedisServer(args);
  const admin = adminClient(redis.port);
  try {
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    for (let tries = 0; !(await clusterUp(admin)); tries++) {
      if (tries === 100) throw new Error(`the cluster on port ${redis.port} did not come up`);
      await sleep(50);
    }
  } finally {
    admin.disconnect();
  }
  return {
    ...redis,
    close: async () => {
      await redis.close();
      rmSync(nodesFile, { force: true });
    },
  };
}

/** An ioredis connection for looking at Redis behind the tier's back (an admin's `redis-cli`). */
export function adminClient(port: number): ioredis6.Redis {
  const admin = new ioredis6.Redis(ioRedisOptions(port));
  admin.on('error', () => {});
  return admin;
}

export interface Instance {
  /** The instance's own Redis client (the app's), which the tier uses. */
  readonly client: RedisClient;
  readonly gate: Gate;
  readonly tier: RedisCache;
  /** Every event the gate reported. */
  readonly events: GateEvent[];
  close(): Promise<void>;
}

export interface InstanceOptions {
  readonly redis?: RedisCacheOptions;
  readonly gate?: Partial<GateOptions>;
}

/** One app instance: a client of `kind`, a tier on it, a gate over `providers` with the tier as its shared cache. */
export async function startInstance(
  kind: ClientKind,
  port: number,
  providers: readonly Provider[],
  options: InstanceOptions = {},
): Promise<Instance> {
  const connected = await connectClient(kind, port);
  // A generous Redis timeout unless a test sets one: these tests are about what is shared, on machines
  // whose load can delay an answer past the default 50 ms (a late answer is, by design, not waited for).
  const tier = redisCache(connected.client, { timeout: 250, ...options.redis });
  await tier.ready();
  const events: GateEvent[] = [];
  const gate = createGate({
    providers,
    retry: false,
    breaker: false,
    sharedCache: tier,
    onEvent: (event) => events.push(event),
    ...options.gate,
  });
  return {
    client: connected.client,
    gate,
    tier,
    events,
    close: async () => {
      // The gate, unless the test closed it itself (a closed gate's methods throw).
      if (!isClosed(gate)) await gate.close();
      await tier.close();
      await connected.close();
    },
  };
}

/** The `shared_cache_error` events among `events`, as `operation:reason`. */
export function sharedErrors(events: readonly GateEvent[]): string[] {
  return events.flatMap((event) => (event.type === 'shared_cache_error' ? [`${event.operation}:${event.reason}`] : []));
}

/** Whether `gate` was closed: its methods throw then. */
function isClosed(gate: Gate): boolean {
  try {
    gate.stats();
    return false;
  } catch {
    return true;
  }
}
