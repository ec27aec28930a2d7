/**
 * Retry with backoff and a per-provider circuit breaker: the two policies
 * that keep a failing provider from slowing every request down.
 */
import type { Cancellation } from './cancellation.js';
import type { BreakerState } from './events.js';

/**
 * Retries of failed upstream calls, only within the deadline: connection errors, 5xx and 429 from the built-in
 * providers, and any `ProviderFailure` a custom provider marks `retryable`.
 */
export interface RetryOptions {
  /** Retries after the first attempt. Default 2; at most 10. */
  readonly retries?: number | undefined;
  /**
   * Backoff base in ms; retry n (from 0) waits a random time in [0, min(maxDelay, baseDelay·2ⁿ)] ("full jitter").
   * Default 50; at most `maxDelay`.
   */
  readonly baseDelay?: number | undefined;
  /** Backoff ceiling in ms. A longer `Retry-After` from the provider wins over it. Default 1000. */
  readonly maxDelay?: number | undefined;
}

/** {@link RetryOptions} with every default filled in, as the gate applies them. */
export type RetryPolicy = { readonly [K in keyof RetryOptions]-?: NonNullable<RetryOptions[K]> };

/** Circuit breaker per provider. */
export interface BreakerOptions {
  /** Consecutive failed verifications that open the breaker. Default 5. */
  readonly threshold?: number | undefined;
  /** How long the breaker stays open before letting one probe through, in ms. Default 10 000. */
  readonly cooldown?: number | undefined;
}

/** Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff and Jitter"). */
export function backoffDelay(attempt: number, options: RetryPolicy, random = Math.random): number {
  return random() * Math.min(options.maxDelay, options.baseDelay * 2 ** attempt);
}

/** Resolves after `ms`, or early when `cancellation` fires; leaves no timer behind either way. */
export function sleep(ms: number, cancellation: Cancellation): Promise<void> {
  return new Promise((resolve) => {
    if (cancellation.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      cancellation.offCancel(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    cancellation.onCancel(done);
  });
}

/** How long an open breaker stays open when `cooldown` is not given, in ms. */
export const DEFAULT_COOLDOWN_MS = 10_000;

/**
 * Closed → (threshold failures in a row) → open → (cooldown) → half-open,
 * where exactly one call probes the provider: its success closes the
 * breaker, its failure opens it again for another cooldown.
 *
 * Only provider faults count as failures. A provider that asks us to slow
 * down (429 with `Retry-After`) is paused for that long instead: no call
 * goes out meanwhile, and its state and failure count stay as they are. A
 * provider that refuses one request as malformed or too large (400, 413,
 * 414, 422, 431) changes neither: what it refused may be the client's
 * token, and a client must not open the breaker for everyone else by
 * sending such tokens.
 */
export class CircuitBreaker {
  #state: BreakerState = 'closed';
  #failures = 0;
  #openedAt = 0;
  #probing = false;
  /** Probes let go so far: the current one's number while {@link #probing}. */
  #probeCount = 0;
  #pausedUntil = 0;
  readonly #threshold: number;
  readonly #cooldown: number;
  readonly #onChange: (state: BreakerState) => void;

  constructor(options: BreakerOptions, onChange: (state: BreakerState) => void) {
    this.#threshold = options.threshold ?? 5;
    this.#cooldown = options.cooldown ?? DEFAULT_COOLDOWN_MS;
    if (!(this.#threshold >= 1) || !(this.#cooldown >= 0))
      throw new RangeError('breaker: threshold >= 1 and cooldown >= 0');
    this.#onChange = onChange;
  }

  get state(): BreakerState {
    return this.#state;
  }

  /**
   * Asks to call the provider. Returns 0 when the call may go ahead, or the
   * ms the caller should wait before trying again (sent as `Retry-After`).
   */
  admit(now: number): number {
    // Paused: held back until both the pause and an open breaker's cooldown are over.
    if (this.#pausedUntil > now) return this.holdsBack(now);
    if (this.#state === 'closed') return 0;
    if (this.#state === 'open') {
      const remaining = this.#openedAt + this.#cooldown - now;
      if (remaining > 0) return remaining;
      this.#set('half-open');
    }
    if (this.#probing) return Math.max(1, this.#cooldown);
    this.#probing = true;
    this.#probeCount++;
    return 0;
  }

  /**
   * The ms calls are held back for at `now` (open, or paused), or 0; unlike {@link admit}, it
   * changes nothing. For a call admitted earlier that is about to go.
   */
  holdsBack(now: number): number {
    const paused = this.#pausedUntil - now;
    const open = this.#state === 'open' ? this.#openedAt + this.#cooldown - now : 0;
    return Math.max(0, paused, open);
  }

  /** Whether calls are paused at `now` after a 429 (whatever the breaker's state). */
  pausedAt(now: number): boolean {
    return this.#pausedUntil > now;
  }

  /** The ms left at `now` of a 429's pause (whatever the breaker's state), 0 when calls are not paused. */
  pauseLeft(now: number): number {
    return Math.max(0, this.#pausedUntil - now);
  }

  /** The provider answered (a verdict, or a refusal of our own credentials): it works. */
  succeeded(): void {
    this.#failures = 0;
    this.#probing = false;
    if (this.#state !== 'closed') this.#set('closed');
  }

  /** The provider failed to answer. */
  failed(now: number): void {
    this.#probing = false;
    this.#failures++;
    if (this.#state === 'half-open' || (this.#state === 'closed' && this.#failures >= this.#threshold)) {
      this.#openedAt = now;
      this.#set('open');
    }
  }

  /**
   * The provider refused this one request (400, 413, 414, 422, 431):
   * that tells nothing of its health, so the failure count and the state
   * stay as they are. When the call was the probe (`probe`, its number from
   * {@link probe}; undefined for a call that was not), the probe is over and
   * the next call probes again; a call that was not leaves the probe alone.
   */
  inconclusive(probe: number | undefined): void {
    this.#probeOver(probe);
  }

  /**
   * The provider asked for no calls during `ms` (429 `Retry-After`). When the call was the probe (`probe`, as for
   * {@link inconclusive}), the probe is over; a call that was not leaves the probe under way alone.
   */
  pause(now: number, ms: number, probe: number | undefined): void {
    this.#probeOver(probe);
    this.#pausedUntil = Math.max(this.#pausedUntil, now + ms);
  }

  /**
   * The probe under way, as {@link admit} let it go (a number that names it), or undefined when none is: to tell
   * {@link inconclusive} and {@link pause} which call they are about.
   */
  get probe(): number | undefined {
    return this.#probing ? this.#probeCount : undefined;
  }

  #probeOver(probe: number | undefined): void {
    if (probe === this.#probeCount) this.#probing = false;
  }

  /** Back to closed, with no failures counted and no pause. */
  reset(): void {
    this.#failures = 0;
    this.#probing = false;
    this.#pausedUntil = 0;
    if (this.#state !== 'closed') this.#set('closed');
  }

  #set(state: BreakerState): void {
    this.#state = state;
    this.#onChange(state);
  }
}

const CREDENTIAL_REFUSALS: ReadonlySet<number> = new Set([400, 413, 414, 422, 431]);

/**
 * Whether `status` is one a client's credential can cause by itself: the request that
 * carries it is malformed (400, 422) or too large (413, 414, 431) for the
 * provider or a proxy before it. They say nothing of the provider's health.
 * Any other 4xx (a 404 or 405 for every request: a wrong URL, a moved
 * endpoint) is a fault of the provider or of its configuration.
 */
export function refusesOneRequest(status: number | undefined): boolean {
  return status !== undefined && CREDENTIAL_REFUSALS.has(status);
}
