/**
 * Every Redis command of the tier goes through a guard: its own timeout,
 * and a circuit breaker that skips Redis while it is down. Redis is down
 * when commands time out or fail ({@link BREAKER_THRESHOLD} in a row), and
 * from the moment the client says it lost its connection until it is ready
 * again: no command is sent to wait in the client's offline queue. A skipped
 * or late command rejects with an error whose `code` the store reads
 * (`EUNAVAILABLE`, `ETIMEDOUT`); no command holds a caller past the timeout
 * and the I/O poll that follows it.
 */
import { CircuitBreaker } from '../resilience.js';
import type { SharedFailureCode } from '../shared-tier.js';

/** Consecutive failed commands that open the breaker. */
const BREAKER_THRESHOLD = 3;
/** Ms the breaker stays open before one command probes Redis again. */
export const BREAKER_COOLDOWN_MS = 1000;

/** An error with the `code` the store reads. */
export function failure(code: SharedFailureCode, message: string): Error {
  return Object.assign(new Error(message), { code });
}

export class RedisGuard {
  readonly #timeout: number;
  readonly #breaker: CircuitBreaker;
  readonly #onRecovered: () => void;
  /** The client lost its connection and is not ready again yet. */
  #disconnected = false;
  /** Gives up each command under way. */
  readonly #underWay = new Set<() => void>();

  /** `onRecovered` runs when the breaker closes again after Redis was down. */
  constructor(timeout: number, onRecovered: () => void) {
    this.#timeout = timeout;
    this.#onRecovered = onRecovered;
    this.#breaker = new CircuitBreaker({ threshold: BREAKER_THRESHOLD, cooldown: BREAKER_COOLDOWN_MS }, (state) => {
      if (state === 'closed') onRecovered();
    });
  }

  /**
   * `command()`'s answer (an async function: it rejects, never throws), within the timeout. `onLate` runs when the timeout
   * passed first, or the connection was lost first (the command may still reach Redis later: undo what it would do).
   */
  run<T>(command: () => Promise<T>, onLate?: () => void): Promise<T> {
    if (this.#disconnected || this.#breaker.admit(performance.now()) > 0) {
      return Promise.reject(failure('EUNAVAILABLE', 'Redis is down: command skipped'));
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const giveUp = (error: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#underWay.delete(lost);
        onLate?.();
        reject(error);
      };
      const lost = () => giveUp(failure('EUNAVAILABLE', 'Redis connection lost: command given up'));
      // Late only when no answer came by the first I/O poll after the timeout: a busy event
      // loop that runs the timer before reading an answer already there is not a slow Redis.
      const timer = setTimeout(
        () =>
          setImmediate(() => {
            if (!settled) this.#breaker.failed(performance.now());
            giveUp(failure('ETIMEDOUT', 'Redis did not answer in time'));
          }),
        this.#timeout,
      );
      this.#underWay.add(lost);
      const answered = (ok: boolean) => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        this.#underWay.delete(lost);
        if (ok) this.#breaker.succeeded();
        else this.#breaker.failed(performance.now());
        return true;
      };
      command().then(
        (value) => answered(true) && resolve(value),
        (error: unknown) => answered(false) && reject(error),
      );
    });
  }

  /**
   * The client lost its connection: skip Redis until {@link reconnected}, and give up the commands under
   * way, which the client would otherwise hold until it reconnects (or their timeout).
   */
  disconnected(): void {
    this.#disconnected = true;
    for (const lost of [...this.#underWay]) lost();
  }

  /** The client is connected again: let commands through at once. */
  reconnected(): void {
    const reconnected = this.#disconnected;
    const opened = this.#breaker.state !== 'closed';
    this.#disconnected = false;
    this.#breaker.reset();
    // A breaker closed all along reports nothing when reset: what waited for Redis goes now.
    if (reconnected && !opened) this.#onRecovered();
  }
}
