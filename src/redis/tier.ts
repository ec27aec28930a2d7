/**
 * The Redis tier: verdicts, leases and tombstones in Redis, invalidations
 * on a channel. Every command goes through the guard (its own timeout, a
 * breaker while Redis is down); nothing here ever turns Redis trouble into
 * more than a rejected promise, which the store takes as a miss.
 *
 * Invariants:
 * - keys, values and messages hold the store's digest and verdicts, never a
 *   credential or an API key;
 * - with a seal (`redisCache({ secret })`), a value is read only when it was
 *   sealed with the secret for its own key; any other value is a miss;
 * - a verdict is written only with a claim whose lease was taken after the
 *   key's last invalidation (its tombstone is the one the claim saw), and
 *   within {@link TOMBSTONE_MS} of taking it on Redis's own clock (however
 *   late the command reaches Redis), so that no answer older than a
 *   revocation is stored over it;
 * - an invalidation Redis did not take is retried until it is (at most
 *   {@link MAX_PENDING} keys waiting), on recovery and every breaker cooldown.
 */

import { randomBytes } from 'node:crypto';
import type { SharedClaim, SharedLease, SharedTier, SharedVerdict } from '../shared-tier.js';
import { encodeKey, type MessageKind, message, RedisBus } from './bus.js';
import { driverFor, type RedisClient, type RedisDriver } from './driver.js';
import { BREAKER_COOLDOWN_MS, RedisGuard } from './guard.js';
import { GET, INVALIDATE, LEASE, PEEK, RELEASE, SET } from './scripts.js';
import type { VerdictSeal } from './seal.js';

/** How long a tombstone lives, and so the longest upstream call whose answer may still be stored (ms). */
export const TOMBSTONE_MS = 10_000;
/** Longest value read as JSON; a longer one is foreign and unusable. */
const MAX_VALUE_LENGTH = 64 * 1024;
/** Most invalidations kept for a retry; the oldest goes first. */
const MAX_PENDING = 10_000;

/** The tier's settings, defaults filled in. */
export interface RedisTierSettings {
  readonly prefix: string;
  readonly timeout: number;
  readonly localTtl: number;
  readonly leaseTime: number;
  /** Seals every verdict written and opens every verdict read; none: values are plain JSON. */
  readonly seal: VerdictSeal | undefined;
}

/** Keys of one store key in Redis, all under one hash tag. */
interface KeySet {
  readonly encoded: string;
  readonly value: string;
  readonly lease: string;
  readonly tombstone: string;
}

const randomId = () => randomBytes(8).toString('hex');
const ignore = () => {};

/** A lease this instance holds: its id, the tombstone it saw, when it was taken (here, and on Redis's clock). */
class RedisClaim implements SharedClaim {
  #ended = false;
  constructor(
    readonly id: string,
    readonly tombstone: string,
    readonly takenAt: number,
    readonly redisTakenAt: string,
    readonly end: () => void,
  ) {}

  /** Marks the claim used; false when it already was. */
  take(): boolean {
    const first = !this.#ended;
    this.#ended = true;
    return first;
  }

  release(): void {
    if (this.take()) this.end();
  }
}

export class RedisTier implements SharedTier {
  readonly timeout: number;
  readonly localTtl: number;
  readonly #settings: RedisTierSettings;
  readonly #driver: RedisDriver;
  readonly #guard: RedisGuard;
  readonly #bus: RedisBus;
  readonly #channel: string;
  readonly #instance = randomId();
  /** Store keys whose invalidation Redis has not taken yet. */
  readonly #pending = new Set<string>();
  /** Ends each wait under way (with no answer). */
  readonly #waits = new Set<() => void>();
  readonly #stopReady: () => void;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(client: RedisClient, settings: RedisTierSettings) {
    this.#settings = settings;
    this.timeout = settings.timeout;
    this.localTtl = settings.localTtl;
    this.#driver = driverFor(client);
    this.#channel = `${settings.prefix}bus`;
    this.#guard = new RedisGuard(settings.timeout, () => this.#flush());
    this.#bus = new RedisBus(this.#driver, this.#channel, this.#instance);
    this.#stopReady = this.#driver.onConnection(
      () => this.#guard.reset(),
      () => this.#guard.disconnected(),
    );
  }

  async get(key: string): Promise<unknown> {
    const { value } = this.#keys(key);
    return this.#decode(value, await this.#guard.run(() => this.#driver.run(GET, [value], [])));
  }

  /** Stores `verdict` under `claim` (or, without one, only when `key` has no tombstone); ends the claim's lease. */
  async set(key: string, verdict: SharedVerdict, claim?: SharedClaim): Promise<void> {
    const held = claim instanceof RedisClaim ? claim : undefined;
    if (held !== undefined && !held.take()) return;
    const ms = Math.floor(verdict.until - Date.now());
    if (ms <= 0 || (held !== undefined && performance.now() - held.takenAt >= TOMBSTONE_MS)) {
      held?.end();
      return;
    }
    const keys = this.#keys(key);
    const answered = this.#message('a', keys);
    const released = this.#message('r', keys);
    const json = JSON.stringify(verdict);
    const stored = this.#settings.seal === undefined ? json : this.#settings.seal.seal(keys.value, json);
    const claimArgs = [held?.id ?? '', held?.tombstone ?? ''];
    const ageArgs = [held?.redisTakenAt ?? '', String(TOMBSTONE_MS)];
    const args = [stored, String(ms), ...claimArgs, this.#channel, answered, released, ...ageArgs];
    const run = () => this.#driver.run(SET, [keys.value, keys.lease, keys.tombstone], args);
    await this.#guard.run(run);
  }

  /** Invalidates `key` (see {@link invalidate}). */
  delete(key: string): Promise<void> {
    return this.invalidate(key);
  }

  async lease(key: string, replace: boolean): Promise<SharedLease> {
    const keys = this.#keys(key);
    const id = randomId();
    const end = () => this.#release(keys, id);
    const args = [replace ? '1' : '', id, String(this.#settings.leaseTime)];
    // A lease command that reaches Redis after its timeout takes a lease no one will use: end it behind it.
    const answer = await this.#guard.run(
      () => this.#driver.run(LEASE, [keys.value, keys.lease, keys.tombstone], args),
      end,
    );
    // LEASE answers a table: {'s', value}, {'c', tombstone id or '', Redis's time} or {'h'}.
    const [state, payload, redisTime] = answer as [unknown, unknown, unknown];
    if (state === 's') return { state: 'stored', value: this.#decode(keys.value, payload) };
    if (state === 'c' && typeof redisTime === 'string' && /^\d{1,16}$/.test(redisTime)) {
      return { state: 'claimed', claim: new RedisClaim(id, String(payload), performance.now(), redisTime, end) };
    }
    if (state === 'h') return { state: 'held' };
    end();
    throw new Error('Redis answered a lease with an unexpected reply');
  }

  /**
   * Waits for the lease holder's answer: told by a message, checked once at
   * the start (an answer stored before this wait began watching sent its
   * message already) and by a poll as well (messages can be lost). Ends with
   * no answer when the lease ends without one, after the lease time, or when
   * the tier closes; rejects when Redis fails meanwhile.
   */
  waitFor(key: string): Promise<unknown> {
    if (this.#closed) return Promise.resolve(undefined);
    const keys = this.#keys(key);
    const { leaseTime } = this.#settings;
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (settle: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        clearInterval(poll);
        stopWatching();
        this.#waits.delete(abandon);
        settle();
      };
      const abandon = () => finish(() => resolve(undefined));
      const peek = () => {
        this.#guard
          .run(() => this.#driver.run(PEEK, [keys.value, keys.lease], []))
          .then(
            (answer) => {
              const [value, held] = Array.isArray(answer) ? (answer as unknown[]) : [];
              if (typeof value === 'string' && value !== '') finish(() => resolve(this.#decode(keys.value, value)));
              else if (held !== 1) abandon();
            },
            (error: unknown) => finish(() => reject(error)),
          );
      };
      const stopWatching = this.#bus.watch(keys.encoded, (kind) => (kind === 'a' ? peek() : abandon()));
      const deadline = setTimeout(abandon, leaseTime);
      const poll = setInterval(peek, Math.max(10, Math.min(50, leaseTime / 4)));
      this.#waits.add(abandon);
      peek();
    });
  }

  /** Deletes `key`'s value and lease, leaves a tombstone, tells every instance; retried later if Redis fails. */
  async invalidate(key: string): Promise<void> {
    // Gates sharing this tier in this process forget it at once; other instances hear it from Redis.
    this.#bus.announce(key);
    this.#pending.delete(key);
    try {
      await this.#invalidateNow(key);
    } catch (error) {
      this.#queue(key);
      throw error;
    }
  }

  onInvalidate(listener: (key: string) => void): () => void {
    return this.#bus.onInvalidate(listener);
  }

  onReconnect(listener: () => void): () => void {
    return this.#bus.onReconnect(listener);
  }

  /** Resolves once invalidations from other instances reach this one (its subscription is live). */
  ready(): Promise<void> {
    return this.#bus.ready();
  }

  /** Closes the tier's own subscriber connection and ends waits under way; the app's client stays open. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#pending.clear();
    for (const abandon of [...this.#waits]) abandon();
    this.#stopReady();
    this.#bus.close();
  }

  #keys(key: string): KeySet {
    const encoded = encodeKey(key);
    const base = `${this.#settings.prefix}{${encoded}}:`;
    return { encoded, value: `${base}v`, lease: `${base}l`, tombstone: `${base}t` };
  }

  /**
   * The value stored at `redisKey` as the store reads it: parsed JSON, or
   * undefined (a miss) for anything else. With a seal, only a value sealed for
   * `redisKey` is parsed.
   */
  #decode(redisKey: string, value: unknown): unknown {
    if (typeof value !== 'string' || value.length > MAX_VALUE_LENGTH) return undefined;
    const json = this.#settings.seal === undefined ? value : this.#settings.seal.open(redisKey, value);
    if (json === undefined) return undefined;
    try {
      return JSON.parse(json);
    } catch {
      return undefined;
    }
  }

  #message(kind: MessageKind, keys: KeySet): string {
    return message(kind, keys.encoded, this.#instance);
  }

  #release(keys: KeySet, id: string): void {
    this.#driver.run(RELEASE, [keys.lease], [id, this.#channel, this.#message('r', keys)]).catch(ignore);
  }

  #invalidateNow(key: string): Promise<unknown> {
    const keys = this.#keys(key);
    const args = [randomId(), String(TOMBSTONE_MS), this.#channel, this.#message('i', keys)];
    return this.#guard.run(() => this.#driver.run(INVALIDATE, [keys.value, keys.lease, keys.tombstone], args));
  }

  #queue(key: string): void {
    if (this.#closed) return;
    this.#pending.add(key);
    if (this.#pending.size > MAX_PENDING)
      for (const oldest of this.#pending) {
        this.#pending.delete(oldest);
        break;
      }
    this.#retry ??= setTimeout(() => {
      this.#retry = undefined;
      this.#flush();
    }, BREAKER_COOLDOWN_MS).unref();
  }

  /** Tries every waiting invalidation again; those that fail wait for the next try. */
  #flush(): void {
    for (const key of [...this.#pending]) {
      this.#pending.delete(key);
      this.#invalidateNow(key).catch(() => this.#queue(key));
    }
  }
}
