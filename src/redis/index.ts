/**
 * `tokengate/redis`: a shared verdict tier in Redis, for apps that run on
 * several processes or machines. One upstream verification per credential
 * across every instance, and a revocation on one instance reaches all.
 *
 *   const gate = createGate({ providers, sharedCache: redisCache(redis) });
 *
 * The client is the app's own (ioredis `Redis` or `Cluster`, or a node-redis
 * client or cluster, which the app connects, before or after); the tier opens
 * a client of its own (`duplicate()`) for its subscription and closes it in
 * `close()`.
 */
import { z } from 'zod';
import { checkOptions, durationOption, numberOption, optionsObject } from '../options.js';
import type { SharedTier } from '../shared-tier.js';
import type { RedisClient } from './driver.js';
import { MAX_LEASE_MS } from './scripts.js';
import { VerdictSeal } from './seal.js';
import { RedisTier } from './tier.js';

export type { IoRedisClient, IoRedisSubscriber, NodeRedisClient, NodeRedisSubscriber, RedisClient } from './driver.js';

/** Options of {@link redisCache}. Times are in milliseconds. */
export interface RedisCacheOptions {
  /**
   * Start of every key and of the channel name, so that several apps (or
   * versions) can share one Redis without seeing each other's entries.
   * 1 to 64 letters, digits or `:_.-`. Default `'tokengate:'`.
   */
  readonly prefix?: string | undefined;
  /** Longest wait for any one Redis command, in ms; past it, the gate carries on without Redis. Default 50. */
  readonly timeout?: number | undefined;
  /**
   * Longest time, in ms, an instance serves an answer from its in-process cache
   * without looking at Redis again: the bound on how long a revocation
   * message that was lost (Redis partitioned, subscriber down) can matter.
   * Default 5000.
   */
  readonly localTtl?: number | undefined;
  /**
   * How long one instance's upstream call holds the others waiting for its
   * answer for the same credential; past it, they ask the provider
   * themselves. Should cover most provider answers. Whole ms, at least 10;
   * default 2000, at most 60000 (a longer lease in Redis is taken for a
   * foreign one and replaced).
   */
  readonly leaseTime?: number | undefined;
  /**
   * Seals every verdict the tier stores in Redis (an HMAC-SHA256 over its
   * key and value) and trusts only values sealed with it: whoever can write
   * to Redis without the secret cannot forge a verdict, or move one
   * from one token to another (they can still replay a verdict for the same
   * token within its lifetime, and slow or stop the sharing through leases,
   * lease lists, tombstones and messages, which are not sealed). Give every instance
   * the same secret, at least 32 characters of random (keep it out of the
   * code, like a session secret). An array rotates: the first secret seals,
   * every one is trusted. Default: none; values are plain JSON, and Redis is
   * trusted as a whole.
   */
  readonly secret?: string | readonly string[] | undefined;
}

/** The Redis tier: a {@link SharedTier} with every optional part (`lease`, `invalidate`…), and `ready()` and `close()`. */
export interface RedisCache extends Required<SharedTier> {
  /** Longest wait for any one Redis command, in ms (the option, default 50). */
  readonly timeout: number;
  /** Longest an instance serves an answer from process without asking Redis, in ms (the option, default 5000). */
  readonly localTtl: number;
  /**
   * Deletes the value under `key`, and refuses the answer of every lease taken before (the lease itself runs on):
   * not announced; retried if Redis fails. A revocation is {@link RedisCache.invalidate}.
   */
  delete(key: string): Promise<void>;
  /**
   * Resolves once invalidations from other instances reach this one: its
   * subscription is confirmed live (a message it published came back); or
   * once the tier is closed. Need not be awaited: the tier works meanwhile,
   * and whatever the gate cached before that moment is dropped then.
   *
   * Rejects when Redis refuses the client's user the tier's channel or
   * commands (`NOPERM`: an ACL without `&<prefix>bus`), when the client is in
   * subscriber mode under RESP2, or when Redis knows no EVALSHA or EVAL
   * (`rename-command`), and while it does: revocations would then reach no
   * other instance. Await it at startup to fail there.
   */
  ready(): Promise<void>;
  /** Closes the tier's own subscriber connection; the app's client stays open (quit it yourself). */
  close(): Promise<void>;
}

const secretSchema = z
  .string({ error: 'expected a string of at least 32 characters' })
  .min(32, { error: 'expected at least 32 characters' });

const RedisCacheOptionsSchema = optionsObject(
  {
    prefix: z
      .string({ error: 'expected a string' })
      .regex(/^[A-Za-z0-9:_.-]{1,64}$/, { error: 'expected 1 to 64 letters, digits or :_.-' })
      .optional(),
    timeout: durationOption(1).optional(),
    localTtl: numberOption(0).optional(),
    // Sent to Redis as a PX expiry, which takes whole ms.
    leaseTime: numberOption(10, { integer: true, max: MAX_LEASE_MS }).optional(),
    secret: z
      .union(
        [
          secretSchema,
          z
            .array(secretSchema, { error: 'expected a string of at least 32 characters, or an array of them' })
            .min(1, { error: 'expected at least one secret' }),
        ],
        {
          error: 'expected a string of at least 32 characters, or a non-empty array of them',
        },
      )
      .optional(),
  },
  'a redisCache options object',
);

/**
 * A shared tier in Redis for `createGate({ sharedCache })`.
 * @throws TypeError naming a wrong option (RangeError for a number out of its range), or when `client`
 *   is not an ioredis or node-redis client.
 */
export function redisCache(client: RedisClient, options: RedisCacheOptions = {}): RedisCache {
  checkOptions(RedisCacheOptionsSchema, options, 'redisCache');
  return new RedisTier(client, {
    prefix: options.prefix ?? 'tokengate:',
    timeout: options.timeout ?? 50,
    localTtl: options.localTtl ?? 5000,
    leaseTime: options.leaseTime ?? 2000,
    seal: options.secret === undefined ? undefined : new VerdictSeal([options.secret].flat()),
  });
}
