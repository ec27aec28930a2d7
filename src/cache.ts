/**
 * The verdict cache: an `lru-cache` of accepted contexts and rejections,
 * keyed by a SHA-256 of provider scope + credential, with the expiry rules
 * in one place, and single flight for concurrent misses.
 *
 * Expiry rules:
 * - an accepted credential lives `ttl`, never past its own `expiresAt`;
 * - with `staleIfError`, it stays in the cache that much longer, but may only
 *   be served while the provider is failing, and still never past `expiresAt`;
 * - a rejection lives `negativeTtl` (short: providers have denied valid tokens
 *   while their own database was down);
 * - provider failures are not cached;
 * - reading an entry never extends its life.
 *
 * Expiry is kept on the entries themselves (`until` and `staleWindow`, in
 * whole ms of `performance.now()`), not in lru-cache's TTL: its clock re-arms a 1 ms
 * timer whenever it is read after a quiet millisecond, and those timers and
 * the event-loop wake-ups they cause cost the hot path several percent.
 * lru-cache does what it is best at, recency and the `max` bound.
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { AuthContext } from './context.js';

/** Cache settings. Times are in milliseconds. */
export interface CacheOptions {
  /** Most credentials remembered (accepted and rejected together). Default 10 000. */
  readonly max?: number;
  /** How long an accepted credential is trusted without asking the provider again. Default 60 000. */
  readonly ttl?: number;
  /** How long a rejected credential is remembered. Default 5 000. */
  readonly negativeTtl?: number;
  /**
   * How long past `ttl` an accepted credential may still be served while the
   * provider is failing (unreachable, slow, 5xx, breaker open), flagged
   * `stale` on its context. Never past the credential's own expiry; never
   * for rejected credentials. Default 0 (off).
   */
  readonly staleIfError?: number;
}

/** A remembered rejection, alive until `until` (ms of `performance.now()`). */
export class Rejection {
  constructor(
    readonly reason: string,
    readonly until: number,
  ) {}
}

export type CacheEntry = AuthContext | Rejection;

/** One upstream call under way for a key; `cancelled` once the key is invalidated meanwhile. */
export interface Flight {
  readonly key: string;
  cancelled: boolean;
  promise: Promise<unknown> | undefined;
}

/**
 * Cache key: SHA-256 over the provider's scope and the credential, so a raw
 * token never sits in memory as a key, and two providers (or two base URLs,
 * or two API keys) never share an answer. `scope` must not contain NUL.
 *
 * The 32 digest bytes are kept as a 32-character Latin-1 string (48 bytes on
 * the heap, against 64 for 43 base64url characters): the key is only ever
 * compared, never shown. There is no process-wide memo from raw token to
 * key (it would keep raw tokens in memory, which hashing the keys is there
 * to avoid); the gate only remembers the last key per connection (`keyFor`
 * in gate.ts).
 */
export function cacheKey(scope: string, secret: string): string {
  return hash('sha256', `${scope}\0${secret}`, 'binary'); // 'binary' is Node's name for Latin-1
}

/** Whether a cached context may be served as it is at `now`: before the stale-only tail of its life. */
export function isFresh(context: AuthContext, now: number): boolean {
  return context.until - context.staleWindow > now;
}

function checkDuration(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`cache.${name} must be a finite number >= ${min}`);
  return value;
}

export class VerdictCache {
  readonly ttl: number;
  readonly negativeTtl: number;
  readonly staleIfError: number;
  readonly #lru: LRUCache<string, CacheEntry>;
  readonly #inflight = new Map<string, Flight>();
  #generation = 0;

  constructor(options: CacheOptions = {}) {
    const max = checkDuration('max', options.max ?? 10_000, 1);
    this.ttl = checkDuration('ttl', options.ttl ?? 60_000, 1);
    this.negativeTtl = checkDuration('negativeTtl', options.negativeTtl ?? 5_000, 0);
    this.staleIfError = checkDuration('staleIfError', options.staleIfError ?? 0, 0);
    // Every way an entry leaves (eviction, delete, overwrite, clear) moves the generation on.
    this.#lru = new LRUCache<string, CacheEntry>({ max, dispose: () => this.#generation++ });
  }

  /**
   * Changes whenever an entry leaves the cache, for whatever reason. While it
   * stays the same, an entry read from the cache earlier is still the cache's
   * answer for its key (until its own expiry), so a holder may use it without
   * another lookup (the gate's per-connection fast path).
   */
  get generation(): number {
    return this.#generation;
  }

  /**
   * The entry for `key` if it is alive at `now` (ms of `performance.now()`): for contexts, fresh or
   * in their stale window (the last `staleWindow` ms before `until`). An expired entry is dropped.
   */
  get(key: string, now: number): CacheEntry | undefined {
    const entry = this.#lru.get(key);
    if (entry === undefined || entry.until > now) return entry;
    this.#lru.delete(key);
    return undefined;
  }

  /**
   * The cache lifetime for a context about to be stored, split into its
   * fresh part and its stale-only tail. `undefined` when the credential has
   * already expired.
   */
  lifetime(now: number, expiresAtMs: number | undefined): { fresh: number; staleWindow: number } | undefined {
    const remaining = expiresAtMs === undefined ? Number.POSITIVE_INFINITY : expiresAtMs - now;
    if (remaining <= 0) return undefined;
    const fresh = Math.min(this.ttl, remaining);
    return { fresh, staleWindow: Math.floor(Math.min(this.staleIfError, remaining - fresh)) };
  }

  /** Stores an accepted context (alive until its `until`), unless its flight was cancelled. */
  setAccepted(flight: Flight, context: AuthContext): void {
    if (flight.cancelled) return;
    this.#lru.set(flight.key, context);
  }

  /** Stores a rejection for `negativeTtl` (not at all when it is 0), unless its flight was cancelled. */
  setRejected(flight: Flight, reason: string): Rejection {
    const rejection = new Rejection(reason, Math.floor(performance.now() + this.negativeTtl));
    if (flight.cancelled) return rejection;
    if (this.negativeTtl > 0) this.#lru.set(flight.key, rejection);
    else this.#lru.delete(flight.key);
    return rejection;
  }

  /**
   * Forgets `key`, including an upstream call under way for it: that call's
   * answer still reaches the requests already waiting, but is not stored,
   * and the next request asks the provider again.
   */
  delete(key: string): boolean {
    const flight = this.#inflight.get(key);
    if (flight !== undefined) {
      flight.cancelled = true;
      this.#inflight.delete(key);
    }
    return this.#lru.delete(key) || flight !== undefined;
  }

  /** Forgets everything, upstream calls under way included (see {@link delete}). */
  clear(): void {
    for (const flight of this.#inflight.values()) flight.cancelled = true;
    this.#inflight.clear();
    this.#lru.clear();
  }

  /**
   * Single flight: the first caller for `key` runs `load`; callers that
   * arrive while it runs get the same promise (`joined: true`). `load`
   * must not reject (the gate resolves failures to values) and stores its
   * answer through the {@link Flight} it is given.
   */
  singleFlight<T>(key: string, load: (flight: Flight) => Promise<T>): { promise: Promise<T>; joined: boolean } {
    const running = this.#inflight.get(key);
    if (running !== undefined) return { promise: running.promise as Promise<T>, joined: true };
    const flight: Flight = { key, cancelled: false, promise: undefined };
    const promise = load(flight);
    flight.promise = promise;
    this.#inflight.set(key, flight);
    const land = () => {
      if (this.#inflight.get(key) === flight) this.#inflight.delete(key);
    };
    promise.then(land, land);
    return { promise, joined: false };
  }
}
