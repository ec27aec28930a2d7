/**
 * @internal One verification's deadline: the time it has, retries included,
 * and the {@link Cancellation} the built-in providers take directly. A real
 * `AbortSignal` is created, lazily, only for a provider that asks for one.
 */
import type { Cancellation } from './cancellation.js';
import { ProviderFailure } from './provider-failure.js';

const deadlinePassed = () => new DOMException('The verification deadline passed', 'TimeoutError');
const VERIFICATION_OVER = new DOMException('The verification is over', 'AbortError');

/**
 * One verification's deadline: cancelled when the time is up, or when the
 * gate ends a failed verification (so work it left running stops). A
 * provider that ignores it still cannot hold a request: {@link race} rejects
 * at the deadline. Driven by its own timer; the `AbortSignal` for providers
 * that take one is created only when asked for.
 *
 * A verification the gate ends with a verdict may leave work running (a
 * request whose answer the verdict did not need): while any `onCancel`
 * listener remains, the timer runs on and cancels it at the deadline; once
 * none remains, no timer is left behind, and `end`'s `onIdle` runs.
 */
export class Deadline implements Cancellation {
  #aborted = false;
  #reason: unknown;
  #listeners: Array<() => unknown> = [];
  #controller: AbortController | undefined;
  /** Armed while the deadline may still pass and something may still need telling. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the deadline passes, in `performance.now()` ms. */
  readonly #at: number;
  /** The gate's `timeout`, in ms, and the provider asked: what a timeout's failure names. */
  readonly #ms: number;
  readonly #provider: string;
  /** Set by `end`: the verification has its answer. */
  #ended = false;
  /** Rejects the attempt under way, if any. */
  #onExpiry: ((failure: ProviderFailure) => void) | undefined;
  /** Set by `end` while work still listens: runs once, when none does. */
  #onIdle: (() => void) | undefined;

  constructor(ms: number, provider = 'provider') {
    this.#at = performance.now() + ms;
    this.#ms = ms;
    this.#provider = provider;
    this.#timer = setTimeout(this.#expire, ms);
  }

  readonly #expire = (): void => {
    this.#timer = undefined;
    const decided = this.#cancel(deadlinePassed());
    this.#onExpiry?.(decided ?? this.timedOut());
  };

  /** The failure of an attempt the deadline ended: it names the provider and the gate's `timeout`, for logs. */
  timedOut(): ProviderFailure {
    return new ProviderFailure(
      'timeout',
      `${this.#provider} did not answer within the gate's timeout (${this.#ms} ms)`,
    );
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  /** An `AbortSignal` that follows this deadline, for providers outside the package. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  onCancel(listener: () => unknown): void {
    if (this.#aborted) return;
    this.#listeners.push(listener);
    // Work that starts after the verification ended is still bounded by its deadline.
    if (this.#ended && this.#timer === undefined) {
      this.#timer = setTimeout(this.#expire, Math.max(0, this.#at - performance.now()));
    }
  }

  offCancel(listener: () => unknown): void {
    const at = this.#listeners.indexOf(listener);
    if (at !== -1) this.#listeners.splice(at, 1);
    if (this.#ended && this.#listeners.length === 0) {
      this.#stopTimer();
      this.#idle();
    }
  }

  /** Settles with `promise`, or rejects when the deadline passes first. */
  race<T>(promise: Promise<T>): Promise<T> {
    if (this.#aborted) {
      promise.catch(() => {});
      return Promise.reject(this.timedOut());
    }
    return new Promise<T>((resolve, reject) => {
      this.#onExpiry = reject;
      promise.then(
        (value) => {
          this.#onExpiry = undefined;
          resolve(value);
        },
        (error: unknown) => {
          this.#onExpiry = undefined;
          reject(error);
        },
      );
    });
  }

  /** Passes the deadline now, with `failure` for the attempt under way: its gate is closing. */
  cut(failure: ProviderFailure): void {
    if (this.#aborted) return;
    this.#stopTimer();
    this.#cancel(deadlinePassed());
    this.#onExpiry?.(failure);
  }

  /**
   * Ends the verification. `cancel` tells the provider at once that it is
   * over (its work is cancelled); without it, work still listening is left
   * to finish, or to be cancelled when the deadline passes, and the timer
   * stops as soon as nothing listens. Returns whether work still listens;
   * `onIdle` then runs once, when the last of it ends or is cancelled.
   */
  end(cancel: boolean, onIdle?: () => void): boolean {
    this.#ended = true;
    if (cancel) {
      this.#stopTimer();
      this.#cancel(VERIFICATION_OVER);
    } else if (this.#listeners.length === 0) {
      this.#stopTimer();
    }
    if (this.#aborted || this.#listeners.length === 0) return false;
    this.#onIdle = onIdle;
    return true;
  }

  #idle(): void {
    const onIdle = this.#onIdle;
    this.#onIdle = undefined;
    onIdle?.();
  }

  #stopTimer(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Cancels the work listening; returns the first failure a listener had already come to (see `onCancel`). */
  #cancel(reason: unknown): ProviderFailure | undefined {
    if (this.#aborted) return undefined;
    this.#aborted = true;
    this.#reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    let decided: ProviderFailure | undefined;
    for (const listener of listeners) {
      try {
        const failure = listener();
        if (decided === undefined && failure instanceof ProviderFailure) decided = failure;
      } catch {
        // One listener's failure must not keep the others from stopping their work.
      }
    }
    this.#controller?.abort(reason);
    this.#idle();
    return decided;
  }
}
