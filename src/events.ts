/**
 * Events the gate reports through `onEvent`, for logs and metrics. None
 * carries a token, a key or a cache key: only the provider name, outcomes
 * and durations.
 */

/** A breaker's state: `closed` lets calls through, `open` fails fast, `half-open` lets one probe through. */
export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * How a credential's cache lookup went: `hit`, answered from this process's cache, an acceptance or a rejection
 * (the 401 that follows a rejection tells them apart); `miss`, not there (a shared tier, when there is one, is asked
 * next, then the provider); `coalesced`, joined a verification under way.
 */
export type CacheResult = 'hit' | 'miss' | 'coalesced';

/** A shared tier operation, as reported in `shared_cache_error` events. */
export type SharedOperation = 'get' | 'set' | 'delete' | 'lease' | 'wait' | 'invalidate';

/**
 * Why a shared tier operation was given up: it failed (`error`), answered too late (`timeout`), its tier skipped it
 * while its backend was down (`unavailable`), or the tier held a value for the credential that this instance cannot
 * read (`unreadable`: sealed with a `secret` it does not hold, written without one or by another version, or
 * corrupt), which the provider's answer then replaces.
 */
export type SharedFailureReason = 'error' | 'timeout' | 'unavailable' | 'unreadable';

/** Everything `onEvent` can receive. `provider` is the provider's name. */
export type GateEvent =
  /** A credential was looked up in the cache. `coalesced`: it joined an upstream call already under way. */
  | { readonly type: 'cache'; readonly provider: string; readonly result: CacheResult }
  /** An upstream verification ended (after any retries). */
  | {
      readonly type: 'verify';
      readonly provider: string;
      readonly outcome: 'accepted' | 'rejected' | 'failed';
      readonly durationMs: number;
      readonly attempts: number;
    }
  /**
   * One upstream attempt failed; `reason` is the failure kind (`timeout`, `unreachable`, `status`, …), `message` the
   * provider's own account of it (a `ProviderFailure`'s message; a built-in provider's never holds a token or key).
   */
  | {
      readonly type: 'provider_error';
      readonly provider: string;
      readonly reason: string;
      readonly message: string;
      readonly status?: number;
      readonly durationMs: number;
    }
  /** A failed attempt will be retried after `delayMs`. */
  | { readonly type: 'retry'; readonly provider: string; readonly attempt: number; readonly delayMs: number }
  /** A provider's circuit breaker changed state. */
  | { readonly type: 'breaker'; readonly provider: string; readonly state: BreakerState }
  /**
   * A verification was not sent: the provider's breaker is `open`, `half-open` with its one probe under way, or calls
   * are `paused` after a 429: the request gets a 503 with `Retry-After` (`retryAfterMs`), or a stale answer. Or the
   * provider `refused` this server's own credentials (API key, client secret) less than a second ago: the request
   * gets that refusal's 500 `provider_misconfigured`, and the credentials are not sent again before `retryAfterMs`;
   * a verification sent before the refusal is told so too when the retry it would send is held back.
   */
  | {
      readonly type: 'held_back';
      readonly provider: string;
      readonly reason: 'open' | 'half-open' | 'paused' | 'refused';
      readonly retryAfterMs: number;
    }
  /** The provider failed and an accepted answer past its `ttl` (within `staleIfError`) was served. */
  | { readonly type: 'stale'; readonly provider: string }
  /**
   * A verification was refused a slot with the provider: `full`, no room to
   * wait; `expired`, the request's timeout passed while it waited, or once it
   * had waited, before the provider answered (the provider keeps its own
   * deadline from its slot, and its answer is kept for the next requests).
   * Our own load, not the provider's failure: the breaker is not told.
   */
  | { readonly type: 'overloaded'; readonly provider: string; readonly reason: 'full' | 'expired' }
  /**
   * The shared cache tier failed (`error`), answered too late (`timeout`) or
   * was skipped while known to be down (`unavailable`) for a credential of
   * `provider`, or what it read for it (`get`, `lease` or `wait`) was a value
   * this instance cannot read (`unreadable`; see {@link SharedFailureReason});
   * the gate carried on without it (the in-process cache and the provider).
   * `lease` and `wait` are its cluster-wide single flight, `invalidate` a
   * revocation told to every instance. Instances that cannot read each
   * other's values (their Redis `secret`s differ) share nothing, and report
   * `unreadable` on nearly every verification.
   */
  | {
      readonly type: 'shared_cache_error';
      readonly provider: string;
      readonly operation: SharedOperation;
      readonly reason: SharedFailureReason;
    };

/**
 * Receives gate events. Exceptions it throws are swallowed so that logging never breaks authentication. It is called
 * synchronously, on the path of the request that caused the event (a `cache` event for every request, cache hits
 * included): what it takes, every request takes, so count, or hand the event to something that writes later. An
 * async listener's work after its first `await` delays nothing.
 *
 * How often each fires: `cache` once per request; `verify`, `held_back`, `stale` and `overloaded` once per
 * verification, however many requests joined it; `provider_error` once per attempt; `retry` once per retry;
 * `breaker` once per change; `shared_cache_error` once per tier operation given up, but `unreadable` at most once per
 * verification (never on a hit in process): when instances cannot read each other's values, that is about every
 * verification, and as often while a Redis `secret` is being rolled out, so count it rather than log each one.
 */
export type EventListener = (event: GateEvent) => void;

/** `onEvent` made safe: a throwing or rejecting listener never fails authentication. */
export function safeListener(
  onEvent: ((event: GateEvent) => void) | undefined,
): ((event: GateEvent) => void) | undefined {
  if (onEvent === undefined) return undefined;
  return (event) => {
    try {
      const result: unknown = onEvent(event);
      // Any thenable (a promise of another realm too) that rejects is handled here, not by the process.
      if (typeof (result as { then?: unknown } | null)?.then === 'function') {
        Promise.resolve(result).catch(() => {});
      }
    } catch {
      // A failing logger must not fail authentication.
    }
  };
}
