/**
 * The verdict store: what the gate knows about credentials it has asked
 * about, in tiers, with the expiry rules in one place and one upstream call
 * per key at a time.
 *
 * Tiers: an in-process LRU first (a hit never leaves the process), then an
 * optional {@link SharedTier} that several instances share (its policy in
 * store-shared.ts). A failing or slow shared tier is a miss, never a pass.
 * With a shared tier, an in-process answer is fresh at most its `localTtl`,
 * keys another instance invalidated are forgotten here too, and everything
 * in process is forgotten when the tier's link comes back after a break.
 *
 * Expiry rules:
 * - an accepted credential is fresh for `ttl`, never past its own `expiresAt`;
 * - with `staleIfError` it is kept that much longer, for the upstream
 *   policy to serve while the provider fails, still never past `expiresAt`;
 * - a rejection lives `negativeTtl`, short, so that a provider's wrong
 *   rejection (its own outage answered as a 401) heals soon; provider
 *   failures are not kept;
 * - reading an entry never extends its life.
 *
 * Local expiry is kept on the entries, in whole ms of `performance.now()`
 * (small integers, which V8 stores unboxed); lru-cache only keeps recency and
 * `max`, so no timer runs per entry. A credential's own `expiresAt` is also
 * compared with the wall clock on every hit ({@link Accepted.freshAt}), which
 * moves on while `performance.now()` stands still (the machine asleep).
 */

import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { AuthContext, type ContextOrigin, GrantsTable } from './context.js';
import type { SharedTier, SharedVerdict } from './shared-tier.js';
import {
  aliveUntilHere,
  freshUntilHere,
  type SharedFailureListener,
  type SharedFlight,
  SharedLink,
} from './store-shared.js';
import type { Principal } from './types.js';

/** Cache settings. Times are in milliseconds. */
export interface CacheOptions {
  /** Most accepted credentials remembered in process. Default 10 000; at most 10 000 000. */
  readonly max?: number | undefined;
  /**
   * Most rejected credentials remembered in process, in a space of their own:
   * a flood of unknown tokens evicts other rejections, never an accepted
   * credential. Default a tenth of `max` (at least 1); at most 10 000 000.
   */
  readonly negativeMax?: number | undefined;
  /** How long an accepted credential is trusted without asking the provider again, in ms. Default 60 000. */
  readonly ttl?: number | undefined;
  /** How long a rejected credential is remembered, in ms. 0 remembers none. Default 5 000. */
  readonly negativeTtl?: number | undefined;
  /**
   * How long past `ttl`, in ms, an accepted credential may still be served while the
   * provider is failing (unreachable, slow, 5xx, breaker open), flagged
   * `stale` on its context. Never past the credential's own expiry; never
   * for rejected credentials. Default 0 (off).
   */
  readonly staleIfError?: number | undefined;
}

/**
 * An accepted context with its expiry: fresh until `freshUntil`, kept until `until` (ms of
 * `performance.now()`). Most entries are fresh for as long as they are kept (no `staleIfError`, no
 * shared tier): those store one number, each field being 8 bytes of every cached entry.
 */
export class Accepted {
  constructor(
    readonly context: AuthContext,
    readonly until: number,
  ) {}

  /** An entry fresh until `freshUntil` and kept until `until`. */
  static of(context: AuthContext, freshUntil: number, until: number): Accepted {
    return freshUntil >= until ? new Accepted(context, until) : new AcceptedWithStaleWindow(context, freshUntil, until);
  }

  get freshUntil(): number {
    return this.until;
  }

  /**
   * Whether the entry is fresh at `now` (ms of `performance.now()`) and its credential has not expired by the wall
   * clock, which moves on while `performance.now()` stands still (the machine asleep) or is stepped forward.
   */
  freshAt(now: number): boolean {
    if (this.freshUntil <= now) return false;
    const expiresAt = this.context.expiresAtMs;
    return expiresAt === undefined || expiresAt > Date.now();
  }
}

/** An entry kept past its freshness: served only as a stale answer, or as a refresh's fallback, after `freshUntil`. */
class AcceptedWithStaleWindow extends Accepted {
  readonly #freshUntil: number;

  constructor(context: AuthContext, freshUntil: number, until: number) {
    super(context, until);
    this.#freshUntil = freshUntil;
  }

  override get freshUntil(): number {
    return this.#freshUntil;
  }
}

/** A remembered rejection, kept until `until` (ms of `performance.now()`). */
export class Rejection {
  constructor(
    readonly reason: string,
    readonly until: number,
  ) {}
}

export type StoreEntry = Accepted | Rejection;

/** One upstream call under way for a key; `cancelled` once the key is forgotten meanwhile. */
export interface Flight extends SharedFlight {
  readonly origin: ContextOrigin;
  promise: Promise<unknown> | undefined;
  /**
   * What the flight's requests wait for, when the gate may end them before the flight (its own field;
   * the store only gives it a place).
   */
  requests: Promise<unknown> | undefined;
  /** Ends the requests waiting on `requests` so far with `error`; undefined when there is nothing to end. */
  end: ((error: Error) => void) | undefined;
  /** Whether the shared tier answered: another instance's verdict was adopted, and no provider was asked. */
  fromShared: boolean;
}

/**
 * Cache key: SHA-256 over the provider's scope and the credential, kept as
 * 32 Latin-1 characters (only ever compared, never shown). A raw credential
 * is never a key, and two providers (or base URLs, or API keys) never share
 * an answer. `scope` must not contain NUL.
 */
export function cacheKey(scope: string, secret: string): string {
  return hash('sha256', `${scope}\0${secret}`, 'binary'); // 'binary' is Node's name for Latin-1
}

export class VerdictStore {
  readonly ttl: number;
  readonly negativeTtl: number;
  readonly staleIfError: number;
  /** Accepted credentials: the only space whose departures move the generation on. */
  readonly #accepted: LRUCache<string, Accepted>;
  readonly #rejected: LRUCache<string, Rejection>;
  readonly #inflight = new Map<string, Flight>();
  readonly #grants = new GrantsTable();
  readonly #shared: SharedLink | undefined;
  /** Longest in-process freshness (ms): the shared tier's `localTtl`, else unbounded. */
  readonly #localTtl: number;
  /** With a leasing shared tier, the ms by which a flight has ended its waits for other instances (see SharedLink). */
  readonly waitBound: number | undefined;
  readonly #detach: Array<() => void> = [];
  #generation = 0;

  /** `sharedWaitLimit`: the longest wait for another instance's answer through `shared` (the gate's `timeout`). */
  constructor(
    options: CacheOptions = {},
    shared?: SharedTier,
    onSharedFailure: SharedFailureListener = () => {},
    sharedWaitLimit?: number,
  ) {
    this.ttl = options.ttl ?? 60_000;
    this.negativeTtl = options.negativeTtl ?? 5_000;
    this.staleIfError = options.staleIfError ?? 0;
    this.#shared =
      shared === undefined
        ? undefined
        : new SharedLink(shared, onSharedFailure, sharedWaitLimit, this.ttl, this.negativeTtl);
    this.#localTtl = shared?.localTtl ?? Number.POSITIVE_INFINITY;
    this.waitBound = this.#shared?.waitBound;
    const max = options.max ?? 10_000;
    // Every way an accepted entry leaves (eviction, delete, overwrite, clear) moves the generation on.
    this.#accepted = new LRUCache<string, Accepted>({ max, dispose: () => this.#generation++ });
    this.#rejected = new LRUCache<string, Rejection>({ max: options.negativeMax ?? Math.max(1, Math.floor(max / 10)) });
    if (shared !== undefined) this.#subscribe(shared);
  }

  /**
   * Listens to `shared`'s invalidations and reconnections. A subscription that throws fails the gate's creation,
   * naming it, and ends the one made before it.
   */
  #subscribe(shared: SharedTier): void {
    const subscriptions = [
      ['onInvalidate', () => shared.onInvalidate?.((key) => this.#forget(key))],
      ['onReconnect', () => shared.onReconnect?.(() => this.clear())],
    ] as const;
    for (const [name, subscribe] of subscriptions) {
      let stop: unknown;
      try {
        stop = subscribe();
      } catch (error) {
        for (const stopped of this.#detach.splice(0)) {
          try {
            stopped();
          } catch {
            // The subscription that threw is the error to report; a stop that fails too ends nothing more.
          }
        }
        throw new Error(`createGate: sharedCache.${name} threw`, { cause: error });
      }
      if (typeof stop === 'function') this.#detach.push(stop as () => void);
    }
  }

  /**
   * Changes whenever an accepted entry leaves the in-process tier (a
   * rejection replacing it included). While it stays the same, an accepted
   * entry read earlier is still the store's answer for its key (until its
   * own expiry), so a holder may use it without another lookup.
   */
  get generation(): number {
    return this.#generation;
  }

  /** The in-process entry for `key` if alive at `now` (ms of `performance.now()`); an expired one is dropped. */
  get(key: string, now: number): StoreEntry | undefined {
    const accepted = this.#accepted.get(key);
    if (accepted !== undefined) {
      if (accepted.until > now) return accepted;
      this.#accepted.delete(key);
      return undefined;
    }
    const rejected = this.#rejected.get(key);
    if (rejected === undefined || rejected.until > now) return rejected;
    this.#rejected.delete(key);
    return undefined;
  }

  /**
   * Single flight: the first caller for `key` asks the shared tier, then
   * (on a miss there) runs `fetch`; callers that arrive meanwhile share its
   * promise (`joined`). `fetch` must not reject, and stores the provider's
   * answer through {@link accept} or {@link reject} with the flight it is given.
   */
  load<T>(
    key: string,
    origin: ContextOrigin,
    fetch: (flight: Flight) => Promise<T>,
  ): { promise: Promise<T | AuthContext | Rejection>; joined: boolean; flight: Flight } {
    const running = this.#inflight.get(key);
    if (running !== undefined) return { promise: running.promise as Promise<T>, joined: true, flight: running };
    const flight: Flight = {
      key,
      origin,
      cancelled: false,
      promise: undefined,
      requests: undefined,
      end: undefined,
      fromShared: false,
    };
    // The flight is under way before `fetch` starts: whatever `fetch` calls back into (a trace's subscriber
    // asking for the same key, or deleting it) finds it.
    let land!: (value: T | AuthContext | Rejection) => void;
    let fail!: (error: unknown) => void;
    const promise = new Promise<T | AuthContext | Rejection>((resolve, reject) => {
      // The flight is over for the store before anyone waiting on it hears the answer.
      const landed = () => {
        if (this.#inflight.get(key) === flight) this.#inflight.delete(key);
      };
      land = (value) => {
        landed();
        resolve(value);
      };
      fail = (error) => {
        landed();
        reject(error);
      };
    });
    flight.promise = promise;
    this.#inflight.set(key, flight);
    (this.#shared === undefined ? fetch(flight) : this.#loadShared(flight, fetch)).then(land, fail);
    return { promise, joined: false, flight };
  }

  /** Whether a flight for `key` is under way: a {@link load} now joins it. */
  hasFlight(key: string): boolean {
    return this.#inflight.has(key);
  }

  /** Stores a provider's acceptance; an already expired credential becomes a rejection. */
  accept(flight: Flight, principal: Principal): AuthContext | Rejection {
    const now = performance.now();
    const wallNow = Date.now();
    const expiresAt = principal.expiresAt?.getTime();
    const remaining = expiresAt === undefined ? Number.POSITIVE_INFINITY : expiresAt - wallNow;
    if (remaining <= 0) return this.reject(flight, 'The access token has expired');
    const fresh = Math.min(this.ttl, remaining);
    const stale = Math.floor(Math.min(this.staleIfError, remaining - fresh));
    const context = this.#context(flight.origin, principal, expiresAt);
    if (flight.cancelled) return context;
    const local = Math.min(fresh, this.#localTtl);
    const entry = Accepted.of(context, Math.floor(now + local), Math.floor(now + fresh + stale));
    this.#keep(flight.key, entry);
    this.#shared?.share(
      flight,
      {
        ok: true,
        subject: context.subject,
        permissions: context.permissions,
        expiresAt,
        details: context.details,
        freshUntil: Math.floor(wallNow + fresh),
        until: Math.floor(wallNow + fresh + stale),
        storedAt: wallNow,
      },
      () => this.#unshared(flight.key, entry),
    );
    return context;
  }

  /**
   * Ends the stale window of `entry`, if it is still `key`'s: the shared tier did not take it, so a rejection there
   * need not outlive it, and none is known to.
   */
  #unshared(key: string, entry: Accepted): void {
    if (entry.until > entry.freshUntil && this.#accepted.peek(key) === entry) {
      this.#accepted.set(key, Accepted.of(entry.context, entry.freshUntil, entry.freshUntil));
    }
  }

  /**
   * Stores a provider's rejection for `negativeTtl` (not at all when it is
   * 0). Whatever was accepted for the key before is gone: a credential the
   * provider has rejected is never served again, stale or not. In the shared
   * tier the rejection also stands as long as any acceptance it replaces could
   * be served (held here, or shown to the flight by the tier, directly or by
   * an older rejection), so that no instance serves that one stale after it.
   * A cancelled flight's rejection is not kept (the key was forgotten since:
   * the next request asks), but still removes, here and in the shared tier,
   * an acceptance stored since (a later request's, answered first).
   */
  reject(flight: Flight, reason: string): Rejection {
    const now = performance.now();
    const rejection = new Rejection(reason, Math.floor(now + Math.min(this.negativeTtl, this.#localTtl)));
    if (flight.cancelled) {
      this.#accepted.delete(flight.key);
      this.#shared?.share(flight, undefined);
      return rejection;
    }
    const wallNow = Date.now();
    const held = this.#accepted.peek(flight.key);
    const replaced = Math.max(flight.staleUntil ?? 0, held === undefined ? 0 : wallNow + (held.until - now));
    const until = Math.floor(Math.max(wallNow + this.negativeTtl, replaced));
    this.#keep(flight.key, this.negativeTtl > 0 ? rejection : undefined);
    this.#shared?.share(flight, until > wallNow ? { ok: false, reason, until, storedAt: wallNow } : undefined);
    return rejection;
  }

  /** Makes `entry` the in-process answer for `key` (none when undefined), in its own space. */
  #keep(key: string, entry: StoreEntry | undefined): void {
    if (entry instanceof Accepted) {
      this.#rejected.delete(key);
      this.#accepted.set(key, entry);
    } else {
      this.#accepted.delete(key);
      if (entry === undefined) this.#rejected.delete(key);
      else this.#rejected.set(key, entry);
    }
  }

  /**
   * Forgets `key` in every tier, including an upstream call under way for it:
   * that call's answer still reaches the requests already waiting, but is
   * not stored, and the next request asks again. The shared tier is told in
   * the background; {@link revoke} waits for it.
   */
  delete(key: string, origin: ContextOrigin): boolean {
    const found = this.#forget(key);
    void this.#shared?.invalidate(key, origin.provider);
    return found;
  }

  /**
   * {@link delete}, resolved once the shared tier confirmed it (true), or
   * false when it did not within its `timeout` (reported as an event).
   */
  revoke(key: string, origin: ContextOrigin): Promise<boolean> {
    this.#forget(key);
    return this.#shared?.invalidate(key, origin.provider) ?? Promise.resolve(true);
  }

  /** Forgets `key` in process, cancelling its upstream call; whether there was anything. */
  #forget(key: string): boolean {
    const flight = this.#inflight.get(key);
    if (flight !== undefined) {
      this.#cancel(flight);
      this.#inflight.delete(key);
    }
    const accepted = this.#accepted.delete(key);
    return this.#rejected.delete(key) || accepted || flight !== undefined;
  }

  /** Forgets everything in process, upstream calls under way included (see {@link delete}). */
  clear(): void {
    for (const flight of this.#inflight.values()) this.#cancel(flight);
    this.#inflight.clear();
    this.#accepted.clear();
    this.#rejected.clear();
  }

  /**
   * Marks `flight` cancelled: its answer still reaches the requests waiting on it, and is stored nowhere. Its lease
   * ends now, so that other instances waiting on it go on at once rather than wait for an answer never shared.
   */
  #cancel(flight: Flight): void {
    flight.cancelled = true;
    this.#shared?.end(flight);
  }

  /** {@link clear}, stops listening to the shared tier, and gives up every call to it under way. */
  close(): void {
    for (const stop of this.#detach.splice(0)) stop();
    this.#shared?.close();
    this.clear();
  }

  #context(origin: ContextOrigin, answer: Omit<Principal, 'expiresAt'>, expiresAt: number | undefined): AuthContext {
    const { subject, permissions, details } = answer;
    return AuthContext.of({ origin, subject, grants: this.#grants.intern(permissions), expiresAt, details });
  }

  async #loadShared<T>(flight: Flight, fetch: (flight: Flight) => Promise<T>): Promise<T | AuthContext | Rejection> {
    const shared = this.#shared as SharedLink;
    const found = await shared.lookup(flight);
    try {
      if (found !== undefined && !flight.cancelled) {
        flight.fromShared = true;
        return this.#adopt(flight, found);
      }
      // Another instance's rejection, too old to answer here, still ends what this store accepted: never served stale.
      if (flight.rejected === true) this.#accepted.delete(flight.key);
      return await fetch(flight);
    } finally {
      shared.end(flight);
    }
  }

  /** Keeps another instance's verdict in process, never longer than this store's own rules allow. */
  #adopt(flight: Flight, found: SharedVerdict): AuthContext | Rejection {
    const now = performance.now();
    const wallNow = Date.now();
    if (!found.ok) {
      const alive = Math.min(aliveUntilHere(found, this.negativeTtl) - wallNow, this.negativeTtl, this.#localTtl);
      const rejection = new Rejection(found.reason, Math.floor(now + alive));
      this.#keep(flight.key, this.negativeTtl > 0 ? rejection : undefined);
      return rejection;
    }
    const context = this.#context(flight.origin, found, found.expiresAt);
    // Fresh no longer than this store's ttl from when it was stored (when the tier says), and stale no longer than
    // this store's staleIfError past that freshness, whatever windows the instance that shared it had.
    const sharedFresh = freshUntilHere(found, this.ttl) - wallNow;
    const fresh = Math.min(sharedFresh, this.ttl, this.#localTtl);
    const kept = Math.max(fresh, Math.min(found.until - wallNow, Math.min(sharedFresh, this.ttl) + this.staleIfError));
    this.#keep(flight.key, Accepted.of(context, Math.floor(now + fresh), Math.floor(now + kept)));
    return context;
  }
}
