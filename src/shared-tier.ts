/**
 * The interface of a shared verdict tier: a cache that several instances of
 * an app share (Redis, say), behind each instance's in-process LRU. The
 * store asks it on a local miss, before the provider, and tells it every
 * answer the provider gave.
 *
 * What crosses it is plain JSON keyed by the store's SHA-256 key: never a
 * raw credential or key. Times are epoch milliseconds, so that instances
 * agree on them. What comes back is checked against the shape of {@link SharedVerdict};
 * anything else (corrupt, foreign, another version) is a miss, reported as a
 * `shared_cache_error` with `reason: 'unreadable'`, and the provider's answer
 * overwrites it.
 *
 * Only `get`, `set` and `delete` are required. A tier that also offers
 * `lease` and `waitFor` gets one upstream call per key across every
 * instance; `invalidate` and `onInvalidate` carry revocations to every
 * instance; `onReconnect` lets each instance drop what it may have missed.
 */
import { z } from 'zod';
import { frozenDetails } from './details.js';
import { MAX_REASON_LENGTH } from './types.js';

/**
 * A verdict as a shared tier keeps it. One read back is used only with exactly these members, `freshUntil` at most
 * `until`, and `until` at most `expiresAt`. Times are the storing instance's wall clock: a tier that keeps a verdict
 * `until - Date.now()` ms, read on the instance that calls `set`, needs no clock of its own.
 */
export type SharedVerdict =
  | {
      /** An acceptance. */
      readonly ok: true;
      /** The principal's subject, as the provider named it. */
      readonly subject: string;
      /** The principal's permissions, as the provider listed them. */
      readonly permissions: readonly string[];
      /** When the credential itself expires (epoch ms), if the provider said. */
      readonly expiresAt?: number | undefined;
      /** The principal's `details` (plain JSON, at most 64 levels deep). */
      readonly details: Readonly<Record<string, unknown>>;
      /** Served as it is until then (epoch ms). */
      readonly freshUntil: number;
      /** Forgotten then (epoch ms); between `freshUntil` and `until` only served while the provider fails. */
      readonly until: number;
      /**
       * When the provider gave it (epoch ms; the store sets it, a tier may put the moment it stored it instead): an
       * instance that reads it trusts it fresh at most its own `ttl` from then, whatever the `ttl` of the instance
       * that stored it. Absent (a tier that drops it), only `freshUntil` bounds it.
       */
      readonly storedAt?: number | undefined;
    }
  | {
      /** A rejection. */
      readonly ok: false;
      /** The rejection's `error_description`. */
      readonly reason: string;
      /**
       * Forgotten then (epoch ms): the store writes `negativeTtl` after the provider gave it, or later, up to the
       * `until` of an acceptance it replaces: until then, an instance that reads it past its own `negativeTtl` serves
       * no stale copy of that acceptance.
       */
      readonly until: number;
      /**
       * When the provider gave it (epoch ms; the store sets it, a tier may put the moment it stored it instead): an
       * instance that reads it takes it at most its own `negativeTtl` from then, whatever the `negativeTtl` of the
       * instance that stored it. Absent, only `until` bounds it.
       */
      readonly storedAt?: number | undefined;
    };

/** What a shared tier must hold to for its answers to be used. */
export const SharedVerdictSchema = z.union([
  z
    .strictObject({
      ok: z.literal(true),
      subject: z.string(),
      permissions: z.array(z.string()),
      // What a `Date` holds: a context's `expiresAt` is one.
      expiresAt: z.number().int().min(0).max(8.64e15).optional(),
      // A frozen copy, as a provider's are; one nested too deep is not an answer.
      details: z
        .record(z.string(), z.unknown())
        .transform((details) => frozenDetails(details))
        .refine((details) => details !== undefined),
      freshUntil: z.number(),
      until: z.number(),
      storedAt: z.number().optional(),
    })
    // As the store writes them: fresh, then stale, never past the credential's own expiry.
    .refine(
      (verdict) =>
        verdict.freshUntil <= verdict.until && !(verdict.expiresAt !== undefined && verdict.until > verdict.expiresAt),
    ),
  z.strictObject({
    ok: z.literal(false),
    reason: z.string().max(MAX_REASON_LENGTH),
    until: z.number(),
    storedAt: z.number().optional(),
  }),
]);

/**
 * This instance's lease on a key: the right to ask the provider about it
 * on behalf of every instance, and to store the answer ({@link SharedTier.set}).
 */
export interface SharedClaim {
  /**
   * Ends the lease without an answer (the provider failed, or the answer is
   * not to be kept): instances waiting on it stop waiting at once. Best
   * effort, never throws; a no-op once the claim's answer was stored.
   */
  release(): void;
}

/** What {@link SharedTier.lease} found. */
export type SharedLease =
  /** A value is stored under the key (unchecked: the store checks it). */
  | { readonly state: 'stored'; readonly value: unknown }
  /** No value, and this instance now holds the key's lease. */
  | { readonly state: 'claimed'; readonly claim: SharedClaim }
  /** No value, and another instance holds the lease: its answer is on the way ({@link SharedTier.waitFor}). */
  | { readonly state: 'held' };

/**
 * Ways a tier may reject a call, named by the error's `code`: `ETIMEDOUT`
 * (it gave up waiting for its backend), `EUNAVAILABLE` (it did not try: its
 * backend is known to be down). Any other rejection counts as an error.
 */
export type SharedFailureCode = 'ETIMEDOUT' | 'EUNAVAILABLE';

/**
 * A shared tier. Every method may be slow and may fail: the store gives a
 * `get`, a `lease` and an `invalidate` at most `timeout` ms before it carries
 * on without them, treats what fails as a miss, and reports it as an event.
 * A shared tier can never let a request through on its own: it only ever
 * stands in for an answer the provider gave.
 *
 * For a tier's author:
 * - A key is 32 Latin-1 characters, the SHA-256 digest's bytes (NUL and `/` included), not hex: encode it for a
 *   store that takes text (`Buffer.from(key, 'latin1').toString('base64url')`). An encoding that loses bits makes
 *   tokens share verdicts.
 * - The store checks a value's shape, not which key it was stored under, nor who wrote it: hand back only what
 *   was stored under that very key (keep the key beside the value, or seal both with an HMAC when others can write
 *   to the backend), and bound the size of what you read (the Redis tier refuses values over 192 KiB).
 * - A method that throws counts as one that rejects; a rejection's `code` ({@link SharedFailureCode}) names the
 *   event's `reason`. The store cancels nothing it stops waiting for (only `waitFor` gets a signal): time out your
 *   own requests, at `timeout` or so. No request waits for `set`; `delete` is waited for by `revoke()` on a tier
 *   without `invalidate`. A lookup comes before the provider is asked, so a miss answers within `timeout` plus the
 *   gate's own.
 * - Without `invalidate` and `onInvalidate`, a revocation deletes the key and no other instance hears of it: they
 *   serve what they hold in process until `localTtl` (or the cache's `ttl`).
 * - The `claim` that `set` is given is the very object `lease` answered: a tier may keep on it what it needs to
 *   check it (its lease's id), and declare its own type for it (`set(key, verdict, claim?: MyClaim)`).
 * - A key is a digest of the provider's `cacheScope` and the credential: instances share a verdict only when their
 *   providers are configured alike, `name` included.
 */
export interface SharedTier {
  /** Ms the store waits for `get` and `lease` together, and for `invalidate`. Default 50. */
  readonly timeout?: number | undefined;
  /**
   * Longest time (ms) an instance serves an answer from its in-process LRU
   * without asking this tier again: bounds how long a missed invalidation
   * can matter. Default none (the cache's own `ttl`).
   */
  readonly localTtl?: number | undefined;
  /**
   * The value stored under `key` (unchecked: the store checks it), or `undefined` when there is none. Hand back a
   * value you found but cannot read (one whose seal does not open, say) as something that is no verdict, never as
   * `undefined`: the store reports it (`unreadable`), so a fleet that cannot read its own values is seen.
   */
  get(key: string): Promise<unknown>;
  /**
   * Stores `verdict` under `key` until `verdict.until`. A tier with `lease`
   * is given acceptances only with the `claim` that was taken before the
   * provider was asked (the object its `lease` answered); it must drop an acceptance when `key` was
   * invalidated since that claim was taken, and tell instances waiting for
   * `key` (checking the claim, storing, ending its lease and telling them
   * are one atomic step). A rejection is stored in any case, with or without a claim (the
   * flight could not take one): it replaces whatever `key` holds, no
   * acceptance under a claim taken before it may be stored after it, and a
   * tier that expires values keeps it at least as long as the value it
   * replaces would have been kept.
   *
   * Resolves `false` when the tier did not store an acceptance (its claim
   * ended or lapsed, an invalidation since): the store then serves that
   * acceptance no stale, as no rejection in the tier need outlive it. Any
   * other answer means stored (a wrapper around another tier passes its
   * answer on).
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a tier that stores whatever it is given resolves void.
  set(key: string, verdict: SharedVerdict, claim?: SharedClaim): Promise<boolean | void>;
  /**
   * Forgets the value under `key`, and (a tier with `lease`) lets no acceptance under a claim taken before be stored
   * after it. The store calls it after a rejection it does not keep (`negativeTtl: 0`) that outlives no acceptance,
   * and, on a tier without `invalidate`, for a revocation.
   */
  delete(key: string): Promise<void>;
  /**
   * Cluster-wide single flight: the value stored under `key`, or else the
   * key's lease when no other instance holds it. With `replace` (the stored
   * value is unusable: corrupt, foreign, only stale), the value is not read
   * and the lease is taken over it. A lease lapses on its own after a time
   * of the tier's choosing, so that an instance that dies holding one holds
   * up the others at most that long.
   */
  lease?(key: string, replace: boolean): Promise<SharedLease>;
  /**
   * Waits for the answer of the instance that holds `key`'s lease. Resolves
   * with the value it stored (unchecked), or `undefined` when the lease ended
   * without one (released, lapsed, invalidated) or after the tier's lease time.
   * A value stored before the wait (the one a `replace` lease is taken over)
   * is not an answer: it is not resolved while the lease is held. `signal` is
   * aborted when the gate closes: the wait should then end at once, with no
   * answer, leaving nothing running (a tier that ignores it is simply no
   * longer waited for). Reject as soon as the backend is seen failing (poll it,
   * rather than hold one request open for the whole lease): the store then asks
   * the provider, while a wait still under way when the gate's `timeout` (plus
   * the tier's) runs out answers the request with a 503.
   */
  waitFor?(key: string, signal?: AbortSignal): Promise<unknown>;
  /**
   * Forgets `key` on every instance: deletes it, sees to it that no answer
   * already under way elsewhere is stored over it (however late it comes),
   * and tells every instance's `onInvalidate` listeners. Resolves once the tier
   * has taken it; a tier that could not may keep retrying on its own (the store
   * does not retry: `revoke()` resolves `false`).
   */
  invalidate?(key: string): Promise<void>;
  /**
   * Calls `listener` with each key invalidated through this tier or by another
   * instance (a listener may hear of its own invalidation). Returns a function that stops it. Called once, when
   * the gate is made: a throw there fails `createGate`.
   */
  onInvalidate?(listener: (key: string) => void): () => void;
  /**
   * Calls `listener` when the tier's link to the others comes back after a
   * break (invalidations may have been missed meanwhile), a backend that restarted and lost what it held
   * included. Returns a function that stops it.
   */
  onReconnect?(listener: () => void): () => void;
  /** Releases the tier's connections. */
  close?(): Promise<void>;
}
