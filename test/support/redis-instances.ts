/**
 * App instances for the Redis tier tests, in one process: each has its own
 * Redis client (ioredis or node-redis), its own `redisCache` tier and its
 * own gate, as separate processes would; they share only Redis.
 */
import { Cluster, Redis } from 'ioredis';
import { createClient, createCluster } from 'redis';
import { createGate, type Gate, type GateEvent, type GateOptions, type Provider } from '../../src/index.js';
import { type RedisCache, type RedisCacheOptions, type RedisClient, redisCache } from '../../src/redis/index.js';

export type ClientKind = 'ioredis' | 'node-redis' | 'ioredis Cluster' | 'node-redis Cluster';
/** The clients of a single redis-server. */
export const CLIENT_KINDS: readonly ClientKind[] = ['ioredis', 'node-redis'];
/** The clients of a Redis Cluster. */
export const CLUSTER_KINDS: readonly ClientKind[] = ['ioredis Cluster', 'node-redis Cluster'];

export interface ConnectedClient {
  readonly client: RedisClient;
  close(): Promise<void>;
}

/**
 * A connected client of `kind` for the redis-server on `port` (for a Cluster kind, a cluster's node); it reconnects
 * every 50 to 200 ms while Redis is gone.
 */
export async function connectClient(kind: ClientKind, port: number): Promise<ConnectedClient> {
  const retryStrategy = (times: number) => Math.min(times * 50, 200);
  const reconnectStrategy = (retries: number) => Math.min((retries + 1) * 50, 200);
  switch (kind) {
    case 'ioredis': {
      const client = new Redis({ host: '127.0.0.1', port, retryStrategy });
      client.on('error', () => {});
      await client.ping();
      return { client, close: async () => client.disconnect() };
    }
    case 'ioredis Cluster': {
      const client = new Cluster([{ host: '127.0.0.1', port }], { clusterRetryStrategy: retryStrategy });
      client.on('error', () => {});
      await client.ping();
      return { client, close: async () => client.disconnect() };
    }
    case 'node-redis': {
      const client = createClient({ socket: { host: '127.0.0.1', port, reconnectStrategy } });
      client.on('error', () => {});
      await client.connect();
      return { client, close: async () => client.destroy() };
    }
    case 'node-redis Cluster': {
      const client = createCluster({
        rootNodes: [{ socket: { host: '127.0.0.1', port } }],
        defaults: { socket: { reconnectStrategy } },
      });
      client.on('error', () => {});
      await client.connect();
      return { client, close: async () => client.destroy() };
    }
  }
}

/** An ioredis connection for looking at Redis behind the tier's back (an admin's `redis-cli`). */
export function adminClient(port: number): Redis {
  const admin = new Redis({ host: '127.0.0.1', port, retryStrategy: (times) => Math.min(times * 50, 200) });
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
      await gate.close();
      await tier.close();
      await connected.close();
    },
  };
}

/** The `shared_cache_error` events among `events`, as `operation:reason`. */
export function sharedErrors(events: readonly GateEvent[]): string[] {
  return events.flatMap((event) => (event.type === 'shared_cache_error' ? [`${event.operation}:${event.reason}`] : []));
}
