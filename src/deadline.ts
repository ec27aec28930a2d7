/**
 * @internal One verification's deadline, and what the HTTP layer listens to
 * for the end of a verification.
 *
 * Providers are handed an `AbortSignal` (see `Provider.verify`), but the
 * built-in ones take the gate's {@link Deadline} directly, as a
 * {@link Cancellation}: the same contract without an `EventTarget`, so a cold
 * verification creates no `AbortController` and no listeners (what that
 * saves: `npm run bench` micro scenario). A real signal is created, lazily,
 * only for a provider that asks for one.
 */
import { ProviderFailure } from './types.js';

/** What an in-flight request needs from a deadline: the contract of an `AbortSignal`, minus `EventTarget`. */
export interface Cancellation {
  readonly aborted: boolean;
  readonly reason: unknown;
  /** Calls `listener` once, when cancelled (never, if that has already happened: check `aborted` first). */
  onCancel(listener: () => void): void;
  /** Forgets a listener added with `onCancel`. */
  offCancel(listener: () => void): void;
}

/** An `AbortSignal` as a {@link Cancellation}, for `verify(credential, signal)` called from outside the gate. */
export function cancellationOf(signal: AbortSignal): Cancellation {
  return {
    get aborted() {
      return signal.aborted;
    },
    get reason() {
      return signal.reason;
    },
    onCancel: (listener) => signal.addEventListener('abort', listener, { once: true }),
    offCancel: (listener) => signal.removeEventListener('abort', listener),
  };
}

/**
 * Marks a built-in provider's `verify` with its cancellation-taking twin. It
 * sits on the function itself, so that a provider whose `verify` a user wraps
 * or replaces is called through that `verify` (and its signal), never around it.
 */
export const VERIFY_WITHIN = Symbol('tokengate.verifyWithin');

/** A `verify` that also takes a {@link Cancellation} directly (see {@link VERIFY_WITHIN}). */
export type CancellableVerify<C, V> = ((credential: C, signal: AbortSignal) => Promise<V>) & {
  readonly [VERIFY_WITHIN]?: (credential: C, cancellation: Cancellation) => Promise<V>;
};

/** `verifyWithin` with its public twin taking an `AbortSignal`, marked for the gate. */
export function cancellableVerify<C, V>(
  verifyWithin: (credential: C, cancellation: Cancellation) => Promise<V>,
): CancellableVerify<C, V> {
  const verify = (credential: C, signal: AbortSignal) => verifyWithin(credential, cancellationOf(signal));
  return Object.defineProperty(verify, VERIFY_WITHIN, { value: verifyWithin });
}

const deadlinePassed = () => new DOMException('The verification deadline passed', 'TimeoutError');
const VERIFICATION_OVER = new DOMException('The verification is over', 'AbortError');

/**
 * One verification's deadline: cancelled when the time is up, or when the
 * gate ends a failed verification (so work it left running stops). A
 * provider that ignores it still cannot hold a request: {@link race} rejects
 * at the deadline. Driven by its own timer; the `AbortSignal` for providers
 * that take one is created only when asked for.
 */
export class Deadline implements Cancellation {
  #aborted = false;
  #reason: unknown;
  #listeners: Array<() => void> = [];
  #controller: AbortController | undefined;
  readonly #timer: ReturnType<typeof setTimeout>;
  /** Rejects the attempt under way, if any. */
  #onExpiry: ((failure: ProviderFailure) => void) | undefined;

  constructor(ms: number) {
    this.#timer = setTimeout(() => {
      this.#cancel(deadlinePassed());
      this.#onExpiry?.(new ProviderFailure('timeout', 'provider did not answer within the deadline'));
    }, ms);
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

  onCancel(listener: () => void): void {
    if (!this.#aborted) this.#listeners.push(listener);
  }

  offCancel(listener: () => void): void {
    const at = this.#listeners.indexOf(listener);
    if (at !== -1) this.#listeners.splice(at, 1);
  }

  /** Settles with `promise`, or rejects when the deadline passes first. */
  race<T>(promise: Promise<T>): Promise<T> {
    if (this.#aborted) {
      promise.catch(() => {});
      return Promise.reject(new ProviderFailure('timeout', 'deadline passed'));
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

  /** Stops the timer; `cancel` also tells the provider that the verification is over. */
  end(cancel: boolean): void {
    clearTimeout(this.#timer);
    if (cancel) this.#cancel(VERIFICATION_OVER);
  }

  #cancel(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const listener of listeners) {
      try {
        listener();
      } catch {
        // One listener's failure must not keep the others from stopping their work.
      }
    }
    this.#controller?.abort(reason);
  }
}
