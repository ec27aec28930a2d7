/**
 * @internal How a verification is cancelled. Providers are handed an
 * `AbortSignal` (see `Provider.verify`), but the built-in ones take the
 * gate's deadline directly, as a {@link Cancellation}: the same contract
 * without an `EventTarget`, so a cold verification creates no
 * `AbortController` and no listeners (what that saves: `npm run bench`
 * micro scenario).
 */
import type { ProviderFailure } from './provider-failure.js';
import type { Credential, Provider, Verdict } from './types.js';

/** What {@link verifierOf}'s verify is given: a {@link Cancellation}, and an `AbortSignal` made when one is asked for. */
type CancellationWithSignal = Cancellation & { readonly signal: AbortSignal };

/** What an in-flight request needs from a deadline: the contract of an `AbortSignal`, minus `EventTarget`. */
export interface Cancellation {
  readonly aborted: boolean;
  readonly reason: unknown;
  /**
   * Calls `listener` once, when cancelled (never, if that has already happened: check `aborted` first). A listener
   * whose work had already come to a failure before its end (an answer whose status decided it, its body still on its
   * way) returns that {@link ProviderFailure}: the gate's `Deadline` passing ends the attempt with it, not a timeout.
   */
  onCancel(listener: () => unknown): void;
  /** Forgets a listener added with `onCancel`. */
  offCancel(listener: () => unknown): void;
}

/** An `AbortSignal` as a {@link Cancellation}, for `verify(credential, signal)` called from outside the gate. */
function cancellationOf(signal: AbortSignal): Cancellation {
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

/** A {@link Cancellation} cancelled by hand ({@link cancel}), once: for work that several verifications share. */
export class ManualCancellation implements Cancellation {
  #aborted = false;
  readonly #listeners = new Set<() => unknown>();

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#aborted
      ? new DOMException('Every verification waiting for this work gave up', 'AbortError')
      : undefined;
  }

  onCancel(listener: () => unknown): void {
    if (!this.#aborted) this.#listeners.add(listener);
  }

  offCancel(listener: () => unknown): void {
    this.#listeners.delete(listener);
  }

  cancel(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    for (const listener of this.#listeners) listener();
    this.#listeners.clear();
  }
}

/** `provider.verify` as the gate calls it: the built-in providers' cancellation-taking twin when there is one. */
export function verifierOf(
  provider: Provider,
): (credential: Credential, deadline: CancellationWithSignal) => Promise<Verdict> {
  const within = (provider.verify as CancellableVerify<Credential, Verdict>)[VERIFY_WITHIN];
  if (typeof within === 'function') return within;
  return (credential, deadline) => provider.verify(credential, deadline.signal);
}
