/**
 * The verdict store's side of a shared tier: when to ask it, for how long,
 * and what its answers are worth. The tier owns its commands; this file
 * owns the policy:
 *
 * - a flight spends at most `timeout` ms in `get` and `lease` together; on a
 *   failure, a late answer or a spent budget it asks the provider without
 *   the tier (reported through the failure listener, never an error);
 * - only a checked verdict that is still fresh (a rejection: still alive)
 *   stands in for the provider, and no longer after it was stored than this
 *   store's own `ttl` (a rejection: `negativeTtl`); anything else is replaced;
 * - with a leasing tier, an acceptance is stored only under the claim taken
 *   before the provider was asked, and a flight waits for another instance's
 *   answer in at most {@link ROUNDS} rounds before asking itself;
 * - a rejection is stored with or without a claim: whatever the tier held
 *   for the key, an acceptance the provider has since refused must not be
 *   adopted once this instance's own rejection is gone (with `negativeTtl`
 *   0, the key is deleted instead, unless an acceptance is to be outlived);
 * - a rejection outlives the acceptance it replaces (one the flight was
 *   shown, or the store held) and the rejection it replaces: every instance
 *   that reads it, past its own `negativeTtl`, still serves no stale copy of
 *   that acceptance; an acceptance the tier declined, which no rejection
 *   need outlive, is served no stale;
 * - waiting for another instance is bounded by the tier (its lease time),
 *   not by the tier's `timeout`, and all of a flight's waits together by the
 *   gate's `timeout` (plus the tier's); a flight that waited is marked so
 *   (`waited`), and its requests end by then while it goes on to ask;
 * - whatever the tier does (throw, answer a promise of garbage, answer
 *   something that is not a promise, settle late), a flight goes on without
 *   it: never an error of its own, never an unhandled rejection;
 * - a value the tier read that is no verdict (sealed with another secret,
 *   another version's, corrupt) is reported `unreadable` at most once per
 *   flight, however many of the flight's reads find it.
 */
import { setMaxListeners } from 'node:events';
import type { SharedFailureReason, SharedOperation } from './events.js';
import { MAX_TIMER_MS } from './options.js';
import type { SharedClaim, SharedLease, SharedTier, SharedVerdict } from './shared-tier.js';
import { SharedVerdictSchema } from './shared-tier.js';

/** Reports a shared tier operation that failed or timed out; the store carries on without it. */
export type SharedFailureListener = (operation: SharedOperation, reason: SharedFailureReason, provider: string) => void;

/** What the store's flights carry for this file. */
export interface SharedFlight {
  readonly key: string;
  readonly origin: { readonly provider: string };
  cancelled: boolean;
  /** The lease this flight holds, until its answer is stored or it ends. */
  claim?: SharedClaim | undefined;
  /** Whether the flight waited for another instance's answer before asking the provider itself. */
  waited?: boolean;
  /**
   * Whether the tier showed the flight a rejection past this store's `negativeTtl` (still kept there for the instance
   * that stored it, or for an acceptance it outlives): not an answer here, yet the provider rejected the credential
   * since whatever this store accepted.
   */
  rejected?: boolean;
  /**
   * Until when (epoch ms) an instance may hold an acceptance of the key it could serve stale, as far as the tier
   * showed the flight: the `until` of an acceptance no longer fresh here, or of a rejection past this store's
   * `negativeTtl` that stands for one. A rejection this flight stores stands at least that long, so that no instance
   * serves that acceptance stale after it.
   */
  staleUntil?: number;
  /** Whether the tier showed the flight a value that is no verdict (reported once, as `unreadable`). */
  unreadable?: boolean;
}

const DEFAULT_TIMEOUT_MS = 50;
/** Longest wait for another instance's answer when the store is given none (the gate's default `timeout`). */
const DEFAULT_WAIT_LIMIT_MS = 5000;
/** Lease-or-wait rounds before a flight asks the provider without a lease. */
const ROUNDS = 2;
const FAILED: unique symbol = Symbol('failed');

/** Time left for a flight's calls to the tier; waiting for another instance is not counted. */
interface Budget {
  left: number;
}

export class SharedLink {
  /**
   * With a leasing tier, the ms after which a flight has ended all its waits for other instances (the wait
   * limit plus the tier's own `timeout`); undefined when flights never wait.
   */
  readonly waitBound: number | undefined;
  readonly #tier: SharedTier;
  readonly #onFailure: SharedFailureListener;
  readonly #timeout: number;
  readonly #leasing: boolean;
  /** The store's `ttl`: an acceptance is fresh here at most that long after it was stored. */
  readonly #ttl: number;
  /** The store's `negativeTtl`: a rejection stands here at most that long after it was stored. */
  readonly #negativeTtl: number;
  /** Aborted by {@link close}: the signal each `waitFor` is given, one listener per wait under way. */
  readonly #closing = new AbortController();
  /** Ends each tier call under way (as FAILED, unreported): {@link close} calls them all. */
  readonly #underWay = new Set<() => void>();

  /**
   * `waitLimit`: the longest wait for another instance's answer, should the tier's `waitFor` not end sooner; `ttl`:
   * the store's, past which (from its `storedAt`) a stored acceptance is not fresh here; `negativeTtl`: the same for
   * a stored rejection.
   */
  constructor(
    tier: SharedTier,
    onFailure: SharedFailureListener,
    waitLimit = DEFAULT_WAIT_LIMIT_MS,
    ttl = Number.POSITIVE_INFINITY,
    negativeTtl = Number.POSITIVE_INFINITY,
  ) {
    this.#tier = tier;
    this.#ttl = ttl;
    this.#negativeTtl = negativeTtl;
    this.#onFailure = onFailure;
    this.#timeout = tier.timeout ?? DEFAULT_TIMEOUT_MS;
    this.#leasing = typeof tier.lease === 'function' && typeof tier.waitFor === 'function';
    this.waitBound = this.#leasing ? Math.min(MAX_TIMER_MS, waitLimit + this.#timeout) : undefined;
    // As many waits as run at once listen to it, each until it ends: no leak to warn about.
    setMaxListeners(0, this.#closing.signal);
  }

  /**
   * The tier's usable verdict for `flight`'s key, or undefined: the flight
   * then asks the provider, holding `flight.claim` when it took the lease.
   */
  async lookup(flight: SharedFlight): Promise<SharedVerdict | undefined> {
    const tier = this.#tier;
    const budget: Budget = { left: this.#timeout };
    if (!this.#leasing) {
      const value = await this.#call('get', flight, budget, () => tier.get(flight.key));
      return value === FAILED ? undefined : this.#usable('get', value, flight);
    }
    // A lease taken after this flight gave up on it is released at once: no instance waits on it.
    const lease = (replace: boolean) =>
      this.#call(
        'lease',
        flight,
        budget,
        () => (tier.lease as NonNullable<SharedTier['lease']>)(flight.key, replace).then(checkedLease),
        (late) => (late.state === 'claimed' ? release(late.claim) : undefined),
      );
    const waitUntil = performance.now() + (this.waitBound as number);
    for (let round = 1; round <= ROUNDS && !flight.cancelled; round++) {
      let found = await lease(false);
      if (found === FAILED) return undefined;
      if (found.state === 'stored') {
        const verdict = this.#usable('lease', found.value, flight);
        if (verdict !== undefined) return verdict;
        found = await lease(true);
        if (found === FAILED) return undefined;
      }
      if (found.state === 'claimed') {
        flight.claim = found.claim;
        return undefined;
      }
      if (found.state !== 'held') return undefined;
      // The holder's own flight ends within the gate's timeout, after its lookups (the tier's timeout).
      const waitLeft = waitUntil - performance.now();
      if (waitLeft <= 0) return undefined;
      const waitBudget = { left: Math.min(MAX_TIMER_MS, waitLeft) };
      flight.waited = true;
      const waited = await this.#call('wait', flight, waitBudget, () =>
        (tier.waitFor as NonNullable<SharedTier['waitFor']>)(flight.key, this.#closing.signal),
      );
      if (waited === FAILED) return undefined;
      const verdict = this.#usable('wait', waited, flight);
      if (verdict !== undefined) return verdict;
    }
    return undefined;
  }

  /**
   * Stores the provider's answer for `flight`: under its claim, with a leasing tier; a rejection also without one.
   * `undefined` is a rejection not to be kept: the key is deleted. `declined` runs when the tier does not take an
   * acceptance while it answers (it said `false`, or the flight waited for another instance and holds no claim): a
   * rejection stored meanwhile, or since, need not outlive it.
   */
  share(flight: SharedFlight, verdict: SharedVerdict | undefined, declined?: () => void): void {
    const claim = flight.claim;
    const provider = flight.origin.provider;
    if (verdict === undefined) {
      attempt(() => this.#tier.delete(flight.key)).catch((error: unknown) => this.#failed('delete', error, provider));
      return;
    }
    if (this.#leasing && claim === undefined && verdict.ok) {
      if (flight.waited === true) declined?.();
      return;
    }
    flight.claim = undefined;
    attempt(() => this.#tier.set(flight.key, verdict, claim))
      .then(
        (stored) => {
          if (stored === false) declined?.();
        },
        (error: unknown) => this.#failed('set', error, provider),
      )
      .catch(ignore); // `declined` throws nothing; no rejection is left unhandled.
  }

  /** Ends `flight`'s lease when its answer was not stored, so that waiting instances go on at once. */
  end(flight: SharedFlight): void {
    const claim = flight.claim;
    flight.claim = undefined;
    release(claim);
  }

  /** Gives up every tier call under way at once (they end as misses, unreported), and makes no more. */
  close(): void {
    this.#closing.abort();
    for (const end of [...this.#underWay]) end();
  }

  /** Forgets `key` in the tier (on every instance, when the tier can); resolves whether the tier confirmed in time. */
  async invalidate(key: string, provider: string): Promise<boolean> {
    const tier = this.#tier;
    const operation = typeof tier.invalidate === 'function' ? 'invalidate' : 'delete';
    const flight = { key, origin: { provider }, cancelled: false };
    const budget = { left: this.#timeout };
    const done = await this.#call(operation, flight, budget, () =>
      operation === 'invalidate' ? (tier.invalidate as (key: string) => Promise<void>)(key) : tier.delete(key),
    );
    return done !== FAILED;
  }

  /**
   * `start()`'s answer, or FAILED (reported) when it fails or when `budget`
   * runs out first (an answer after that goes to `onLate`); the time it took
   * is taken from `budget`.
   */
  #call<T>(
    operation: SharedOperation,
    flight: SharedFlight,
    budget: Budget,
    start: () => Promise<T>,
    onLate?: (value: T) => void,
  ): Promise<T | typeof FAILED> {
    const provider = flight.origin.provider;
    if (this.#closing.signal.aborted) return Promise.resolve(FAILED);
    if (budget.left <= 0) {
      this.#onFailure(operation, 'timeout', provider);
      return Promise.resolve(FAILED);
    }
    const started = performance.now();
    return new Promise((resolve) => {
      let settled = false;
      const settle = (value: T | typeof FAILED) => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        this.#underWay.delete(closed);
        budget.left -= performance.now() - started;
        resolve(value);
        return true;
      };
      const closed = () => settle(FAILED);
      this.#underWay.add(closed);
      // As in the Redis tier's guard: an answer read in the I/O poll right after the timer still counts.
      const late = () => setImmediate(() => settle(FAILED) && this.#onFailure(operation, 'timeout', provider));
      const timer = setTimeout(late, budget.left);
      attempt(start).then(
        (value) => {
          if (settle(value)) return;
          try {
            onLate?.(value);
          } catch (error) {
            this.#failed(operation, error, provider);
          }
        },
        (error: unknown) => settle(FAILED) && this.#failed(operation, error, provider),
      );
    });
  }

  /**
   * `value`, as `operation` read it for `flight`, as a verdict that may stand in for the provider now (see
   * {@link usable}), or undefined. A value that is no verdict at all is reported `unreadable`, once per flight.
   */
  #usable(operation: SharedOperation, value: unknown, flight: SharedFlight): SharedVerdict | undefined {
    if (value === undefined || value === null) return undefined;
    const parsed = SharedVerdictSchema.safeParse(value);
    if (parsed.success) return usable(parsed.data as SharedVerdict, this.#ttl, this.#negativeTtl, flight);
    if (flight.unreadable !== true) {
      flight.unreadable = true;
      this.#onFailure(operation, 'unreadable', flight.origin.provider);
    }
    return undefined;
  }

  #failed(operation: SharedOperation, error: unknown, provider: string): void {
    const code = (error as { code?: unknown } | null)?.code;
    this.#onFailure(
      operation,
      code === 'ETIMEDOUT' ? 'timeout' : code === 'EUNAVAILABLE' ? 'unavailable' : 'error',
      provider,
    );
  }
}

/** `start()` as a promise, whatever it does: a throw is a rejection, a plain value a resolution. */
function attempt<T>(start: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(start()));
}

/** Ends `claim` if there is one; a claim's `release` never throws, and one that does changes nothing. */
function release(claim: SharedClaim | undefined): void {
  try {
    claim?.release();
  } catch {
    // Best effort by contract: the lease lapses on its own.
  }
}

const ignore = () => {};

/** `value` if it is a lease answer the store can act on. @throws TypeError otherwise (reported as the tier's error). */
function checkedLease(value: unknown): SharedLease {
  const lease = value as { state?: unknown; claim?: { release?: unknown } } | null | undefined;
  const state = lease?.state;
  if (state === 'stored' || state === 'held') return value as SharedLease;
  if (state === 'claimed' && typeof lease?.claim?.release === 'function') return value as SharedLease;
  throw new TypeError('shared tier: lease answered neither stored, claimed nor held');
}

/**
 * `verdict`, checked by the schema, if it may stand in for the provider now: accepted, still fresh (before its
 * `freshUntil`, and within `ttl` of its `storedAt` when it has one); rejected, still alive (before its `until`, and
 * within `negativeTtl` of its `storedAt` when it has one). Else undefined; a rejection the tier still holds marks
 * `flight` {@link SharedFlight.rejected}, and either verdict's `until` raises its {@link SharedFlight.staleUntil}.
 */
function usable(
  verdict: SharedVerdict,
  ttl: number,
  negativeTtl: number,
  flight: SharedFlight,
): SharedVerdict | undefined {
  const wallNow = Date.now();
  if (verdict.ok ? freshUntilHere(verdict, ttl) > wallNow : aliveUntilHere(verdict, negativeTtl) > wallNow) {
    return verdict;
  }
  if (!verdict.ok) flight.rejected = true;
  flight.staleUntil = Math.max(flight.staleUntil ?? 0, verdict.until);
  return undefined;
}

/**
 * Until when (epoch ms) a shared acceptance is fresh for a store whose `ttl` is `ttl`: its `freshUntil`, and at most
 * `ttl` past its `storedAt` when the tier gives it, whatever the `ttl` of the instance that stored it.
 */
export function freshUntilHere(verdict: Extract<SharedVerdict, { ok: true }>, ttl: number): number {
  return verdict.storedAt === undefined ? verdict.freshUntil : Math.min(verdict.freshUntil, verdict.storedAt + ttl);
}

/**
 * Until when (epoch ms) a shared rejection stands for a store whose `negativeTtl` is `negativeTtl`: its `until`, and
 * at most `negativeTtl` past its `storedAt` when the tier gives it, whatever the `negativeTtl` of the instance that
 * stored it.
 */
export function aliveUntilHere(verdict: Extract<SharedVerdict, { ok: false }>, negativeTtl: number): number {
  return verdict.storedAt === undefined ? verdict.until : Math.min(verdict.until, verdict.storedAt + negativeTtl);
}
