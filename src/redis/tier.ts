/**
 * The Redis tier: verdicts, leases, claims and tombstones in Redis,
 * invalidations on a channel. Every command goes through the guard (its own timeout, a
 * breaker while Redis is down); nothing here ever turns Redis trouble into
 * more than a rejected promise, which the store takes as a miss.
 *
 * Invariants:
 * - keys, values and messages hold the store's digest and verdicts, never a
 *   credential or an API key;
 * - with a seal (`redisCache({ secret })`), a value is read only when it was
 *   sealed with the secret for its own key; any other value is a miss, handed
 *   to the store as no verdict (so reported), never as its JSON;
 * - a verdict is written under a claim only while Redis still lists the
 *   claim among those that may store; an invalidation deletes that list, so
 *   no answer asked for before a revocation is stored after it, however
 *   late it reaches Redis, and a list Redis lost (evicted, expired) only
 *   means the answer is not shared;
 * - a waiting instance reads a value beside a held lease only once told of
 *   an answer: before, it may be the unusable one the holder replaces;
 * - a rejection ends every claim on its key: no answer asked for before it
 *   is stored after it; a rejection is stored whatever the tombstone, and
 *   lives at least as long as the value it replaces;
 * - an invalidation that Redis did not take is retried until it is, and so
 *   is a rejection, as a deletion of the key's value and claims
 *   ({@link RetryQueues}); until Redis has taken it, this instance reads
 *   nothing of that key from Redis, and it reads no acceptance of a key the
 *   queues dropped stored before the drop.
 */

import { randomBytes } from 'node:crypto';
import type { SharedClaim, SharedLease, SharedTier, SharedVerdict } from '../shared-tier.js';
import { encodeKey, type MessageKind, message, RedisBus } from './bus.js';
import { driverFor, type RedisClient, type RedisDriver } from './driver.js';
import { RedisGuard } from './guard.js';
import { RetryQueues } from './retry-queues.js';
import { DEL, GET, INVALIDATE, LEASE, PEEK, RELEASE, SET } from './scripts.js';
import type { VerdictSeal } from './seal.js';

/** How long a tombstone lives (ms): a store without a claim waits it out. */
const TOMBSTONE_MS = 10_000;
/**
 * Least time (ms) a claim may store its answer after it was taken (the lease time, when longer): a verification
 * may wait for a slot up to the gate's `timeout`, then ask for another, and its answer is kept.
 */
const CLAIM_MS = 30_000;
/** Longest value written or read as JSON; a longer one read is foreign and unusable. */
const MAX_VALUE_LENGTH = 64 * 1024;

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
  readonly claims: string;
}

/**
 * What a read hands back for a value it found but cannot read (longer than any it writes, not JSON, or, with a seal,
 * not sealed for its key with a secret this instance holds): no verdict, so the store reports it (`unreadable`) and
 * asks the provider, as for none.
 */
const UNREADABLE = Object.freeze({ unreadable: true });

const randomId = () => randomBytes(8).toString('hex');
const ignore = () => {};

/** A lease this instance holds: its id, and when it was taken. */
class RedisClaim implements SharedClaim {
  #ended = false;
  constructor(
    readonly id: string,
    readonly takenAt: number,
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
  /** How long a claim may store its answer (ms). */
  readonly #claimTime: number;
  /** The invalidations and deletions Redis has not taken yet: a read of a key settles its own first. */
  readonly #queues = new RetryQueues({
    invalidate: (key) => this.#invalidateNow(key),
    delete: (key) => this.#deleteNow(key),
  });
  /** Ends each wait under way (with no answer). */
  readonly #waits = new Set<() => void>();
  readonly #stopReady: () => void;
  #closed = false;

  constructor(client: RedisClient, settings: RedisTierSettings) {
    this.#settings = settings;
    this.#claimTime = Math.max(settings.leaseTime, CLAIM_MS);
    this.timeout = settings.timeout;
    this.localTtl = settings.localTtl;
    this.#driver = driverFor(client);
    this.#channel = `${settings.prefix}bus`;
    this.#guard = new RedisGuard(settings.timeout, () => void this.#queues.flush());
    this.#bus = new RedisBus(this.#driver, this.#channel, this.#instance);
    this.#stopReady = this.#driver.onConnection(
      () => {
        this.#guard.reconnected();
        this.#bus.probeIfNotLive();
      },
      () => this.#guard.disconnected(),
    );
  }

  async get(key: string): Promise<unknown> {
    await this.#queues.settle(key);
    const { value } = this.#keys(key);
    return this.#decode(key, value, await this.#guard.run(() => this.#driver.run(GET, [value], [])));
  }

  /**
   * Stores an acceptance under `claim` while Redis lists the claim and its time has not passed (without one, only
   * while `key` has no tombstone); stores a rejection in any case, ending every claim on `key`, and retries it later
   * if Redis fails. A rejection already expired, too long to store or that JSON cannot hold deletes `key`'s value
   * instead. Ends the claim's lease, whatever happens.
   * @returns false for an acceptance not stored: already expired, its claim used or past its time, or Redis refused
   *   it.
   * @throws Error for an acceptance longer than a value is read back (64 KiB) or that JSON cannot hold: it is not
   *   shared; and when Redis fails.
   */
  async set(key: string, verdict: SharedVerdict, claim?: SharedClaim): Promise<boolean> {
    const held = claim instanceof RedisClaim ? claim : undefined;
    if (held !== undefined && !held.take()) return false;
    const ms = Math.floor(verdict.until - Date.now());
    if (!verdict.ok && ms <= 0) {
      held?.end();
      await this.delete(key);
      return true;
    }
    // A claim past its time here is past it in Redis too (taken there before it was taken here): Redis would refuse.
    if (verdict.ok && (ms <= 0 || (held !== undefined && performance.now() - held.takenAt >= this.#claimTime))) {
      held?.end();
      return false;
    }
    const keys = this.#keys(key);
    let stored: string;
    try {
      // A custom provider's details may hold what JSON cannot (a BigInt, a cycle).
      const json = JSON.stringify({ ...verdict, storedAt: Date.now() });
      stored = this.#settings.seal === undefined ? json : this.#settings.seal.seal(keys.value, json);
    } catch (error) {
      held?.end();
      if (verdict.ok) throw error;
      await this.delete(key);
      return true;
    }
    if (stored.length > MAX_VALUE_LENGTH) {
      held?.end();
      // A rejection still replaces what Redis holds, if not with itself.
      if (!verdict.ok) {
        await this.delete(key);
        return true;
      }
      throw new Error(
        `tokengate: a verdict of ${stored.length} characters is not shared (at most ${MAX_VALUE_LENGTH})`,
      );
    }
    const messages = [this.#message('a', keys), this.#message('r', keys)];
    const args = [stored, String(ms), held?.id ?? '', this.#channel, ...messages, verdict.ok ? '' : '1'];
    try {
      const answer = await this.#guard.run(() =>
        this.#driver.run(SET, [keys.value, keys.lease, keys.tombstone, keys.claims], args),
      );
      return answer !== 0;
    } catch (error) {
      // Sent after the SET on its connection: a no-op when the SET landed, which ended the lease.
      held?.end();
      if (!verdict.ok) this.#queues.retryRejection(key);
      throw error;
    }
  }

  /**
   * Deletes `key`'s value and ends every claim on it, as the store asks when it must not leave an answer behind (a
   * rejection it does not keep); retried later if Redis fails, as a rejection is. Not announced: a revocation is
   * {@link invalidate}.
   */
  async delete(key: string): Promise<void> {
    await this.#queues.delete(key);
  }

  async lease(key: string, replace: boolean): Promise<SharedLease> {
    await this.#queues.settle(key);
    const keys = this.#keys(key);
    const id = randomId();
    const end = () => this.#release(keys, id);
    const args = [replace ? '1' : '', id, String(this.#settings.leaseTime), String(this.#claimTime)];
    // A lease command that reaches Redis after its timeout takes a lease no one will use: end it behind it.
    const answer = await this.#guard.run(
      () => this.#driver.run(LEASE, [keys.value, keys.lease, keys.claims], args),
      end,
    );
    // LEASE answers a table: {'s', value}, {'c'} or {'h'}.
    const [state, payload] = answer as [unknown, unknown];
    if (state === 's') return { state: 'stored', value: this.#decode(key, keys.value, payload) };
    if (state === 'c') return { state: 'claimed', claim: new RedisClaim(id, performance.now(), end) };
    if (state === 'h') return { state: 'held' };
    end();
    throw new Error('Redis answered a lease with an unexpected reply');
  }

  /**
   * Waits for the lease holder's answer: told by a message, checked once at
   * the start (an answer stored before this wait began watching sent its
   * message already) and by a poll as well (messages can be lost). A value
   * beside a held lease is taken only once a message told of an answer (a
   * holder whose lease lapsed stores beside the next one's). Ends with no
   * answer when the lease ends without one, after the lease time, or when
   * the tier closes or `signal` is aborted (its gate closed); rejects when
   * Redis fails meanwhile.
   */
  waitFor(key: string, signal?: AbortSignal): Promise<unknown> {
    if (this.#closed || signal?.aborted === true) return Promise.resolve(undefined);
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
        signal?.removeEventListener('abort', abandon);
        settle();
      };
      const abandon = () => finish(() => resolve(undefined));
      let answered = false;
      const peek = () => {
        this.#guard
          .run(() => this.#driver.run(PEEK, [keys.value, keys.lease], [answered ? '1' : '']))
          .then(
            (answer) => {
              // `held` is Redis's integer 1, or its string with ioredis's `stringNumbers`.
              const [value, held] = Array.isArray(answer) ? (answer as unknown[]) : [];
              if (typeof value === 'string' && value !== '') {
                finish(() => resolve(this.#decode(key, keys.value, value)));
              } else if (Number(held) !== 1) abandon();
            },
            (error: unknown) => finish(() => reject(error)),
          );
      };
      const stopWatching = this.#bus.watch(keys.encoded, (kind) => {
        if (kind !== 'a') return abandon();
        answered = true;
        peek();
      });
      const deadline = setTimeout(abandon, leaseTime);
      const poll = setInterval(peek, Math.max(10, Math.min(50, leaseTime / 4)));
      this.#waits.add(abandon);
      signal?.addEventListener('abort', abandon);
      peek();
    });
  }

  /**
   * Deletes `key`'s value, lease and claims (none taken before can store), leaves a tombstone, tells every
   * instance; retried later if Redis fails.
   */
  async invalidate(key: string): Promise<void> {
    // Gates sharing this tier in this process forget it at once; other instances hear it from Redis.
    this.#bus.announce(key);
    await this.#queues.invalidate(key);
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
    this.#queues.close();
    for (const abandon of [...this.#waits]) abandon();
    this.#stopReady();
    this.#bus.close();
  }

  #keys(key: string): KeySet {
    const encoded = encodeKey(key);
    const base = `${this.#settings.prefix}{${encoded}}:`;
    return { encoded, value: `${base}v`, lease: `${base}l`, tombstone: `${base}t`, claims: `${base}c` };
  }

  /**
   * The value stored at `redisKey` (of store key `key`) as the store reads it:
   * parsed JSON; undefined when there is none; {@link UNREADABLE} for one
   * that cannot be read. With a seal, only a value sealed for `redisKey` is
   * parsed. An acceptance of a key the queues may have dropped is read only
   * when stored after the last drop (else undefined: not foreign, only not
   * trusted here).
   */
  #decode(key: string, redisKey: string, value: unknown): unknown {
    if (typeof value !== 'string') return undefined;
    if (value.length > MAX_VALUE_LENGTH) return UNREADABLE;
    const json = this.#settings.seal === undefined ? value : this.#settings.seal.open(redisKey, value);
    if (json === undefined) return UNREADABLE;
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch {
      return UNREADABLE;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return parsed;
    const { storedAt, ...verdict } = parsed as { storedAt?: unknown; ok?: unknown };
    // A rejection is always safe to read; an acceptance of a dropped key only when it was stored after the drop.
    if (verdict.ok === true && !this.#queues.trustsAcceptance(key, storedAt)) return undefined;
    // A verdict keeps when it was stored: the reading store takes it at most its own ttl (or negativeTtl) from then.
    return storedAt !== undefined ? { ...verdict, storedAt } : verdict;
  }

  #message(kind: MessageKind, keys: KeySet): string {
    return message(kind, keys.encoded, this.#instance);
  }

  #release(keys: KeySet, id: string): void {
    this.#driver.run(RELEASE, [keys.lease, keys.claims], [id, this.#channel, this.#message('r', keys)]).catch(ignore);
  }

  #invalidateNow(key: string): Promise<unknown> {
    const keys = this.#keys(key);
    const args = [randomId(), String(TOMBSTONE_MS), this.#channel, this.#message('i', keys)];
    const all = [keys.value, keys.lease, keys.tombstone, keys.claims];
    return this.#guard.run(() => this.#driver.run(INVALIDATE, all, args));
  }

  #deleteNow(key: string): Promise<unknown> {
    const keys = this.#keys(key);
    return this.#guard.run(() => this.#driver.run(DEL, [keys.value, keys.claims], []));
  }
}
