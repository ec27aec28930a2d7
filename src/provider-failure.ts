/**
 * What a provider throws when it cannot decide, and any error a provider threw made into one whose causes hold no
 * message that could carry a secret.
 */

import { MAX_RETRY_AFTER_S, retryAfterSeconds } from './retry-after.js';

/** Kinds of provider failure; only `misconfigured` is not a 503. */
export type ProviderFailureKind = 'unreachable' | 'timeout' | 'status' | 'invalid_answer' | 'misconfigured';

/** Details of a {@link ProviderFailure}. */
export interface ProviderFailureOptions {
  /** Whether trying again may help (connection errors, 5xx, 429). Default: true for `unreachable` only. */
  readonly retryable?: boolean | undefined;
  /**
   * How long the provider asked us to wait: seconds, or its `Retry-After` header as sent (delay-seconds or an
   * HTTP-date: `res.headers.get('retry-after')`). Anything but a finite number >= 0, or a header of either form, is
   * taken as none; more than 1e9 seconds is taken as 1e9, as a header's value is.
   */
  readonly retryAfter?: number | string | null | undefined;
  /**
   * Upstream HTTP status, when there was one. A 429 pauses calls to the
   * provider; a 400, 413, 414, 422 or 431 never counts toward the breaker
   * (the provider refused one request as malformed or too large, which a
   * client's credential can cause, not every request).
   */
  readonly status?: number | undefined;
  /** The underlying error, for debugging; never shown to clients. */
  readonly cause?: unknown | undefined;
}

/**
 * Thrown by `Provider.verify` when the provider could not decide. The gate
 * turns it into a 503 (or a 500 for `misconfigured`) and never into a pass.
 *
 * @example
 * throw new ProviderFailure('status', 'idp answered 502', { retryable: true, status: 502 });
 */
export class ProviderFailure extends Error {
  override readonly name = 'ProviderFailure';
  /** What went wrong. */
  readonly kind: ProviderFailureKind;
  /** Whether trying again may help. */
  readonly retryable: boolean;
  /** Seconds the provider asked us to wait (`Retry-After`). */
  readonly retryAfter: number | undefined;
  /** Upstream HTTP status, when there was one. */
  readonly upstreamStatus: number | undefined;

  /**
   * @param kind - What went wrong: `misconfigured` is a 500 (the provider refused this server's own credentials), any
   *   other kind a 503.
   * @param message - For logs and the `provider_error` event, never shown to clients: it must hold no token or key.
   * @param options - Whether to retry, the provider's `Retry-After`, its HTTP status, and the underlying error.
   */
  constructor(kind: ProviderFailureKind, message: string, options?: ProviderFailureOptions);
  /** @deprecated Pass an options object: `{ retryable, retryAfter, status }`. */
  constructor(kind: ProviderFailureKind, message: string, retryable: boolean, retryAfter?: number, status?: number);
  constructor(
    kind: ProviderFailureKind,
    message: string,
    options: ProviderFailureOptions | boolean = {},
    retryAfter?: number,
    status?: number,
  ) {
    const details = typeof options === 'boolean' ? { retryable: options, retryAfter, status } : options;
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = kind;
    this.retryable = details.retryable ?? kind === 'unreachable';
    const given = details.retryAfter;
    const seconds = typeof given === 'string' ? retryAfterSeconds(given) : given;
    // Only a real wait: NaN (a `Number()` of an HTTP-date), a negative or an infinite value says nothing.
    this.retryAfter =
      typeof seconds === 'number' && seconds >= 0 && Number.isFinite(seconds)
        ? Math.min(seconds, MAX_RETRY_AFTER_S)
        : undefined;
    this.upstreamStatus = details.status;
  }
}

/** What {@link asFailure} reads of the verification's deadline. */
interface DeadlineState {
  /** Whether the deadline passed, or the verification was cut short. */
  readonly aborted: boolean;
  /** The failure of a verification past its deadline. */
  timedOut(): ProviderFailure;
}

/**
 * Any error from verify as a ProviderFailure: unexpected errors fail closed too. A failure's `cause` that is not itself
 * a `ProviderFailure` is kept by its class, code and stack alone (see {@link withoutMessage}).
 */
export function asFailure(error: unknown, deadline: DeadlineState): ProviderFailure {
  if (error instanceof ProviderFailure) {
    try {
      return withSafeCause(error, 0);
    } catch {
      // A cause that cannot be read (a getter that throws): the provider's answer cannot be read either.
      return new ProviderFailure(
        'invalid_answer',
        'provider verify threw a ProviderFailure whose cause cannot be read',
      );
    }
  }
  if (deadline.aborted) return deadline.timedOut();
  return new ProviderFailure('invalid_answer', 'provider verify threw', {
    cause: withoutMessage(error, 'thrown by verify'),
  });
}

/** How deep a chain of `ProviderFailure` causes is followed before the rest is dropped. */
const MAX_CAUSES = 8;

/** `failure`, or a copy of it whose causes hold no message but a `ProviderFailure`'s own. */
function withSafeCause(failure: ProviderFailure, depth: number): ProviderFailure {
  const cause: unknown = failure.cause;
  if (cause === undefined) return failure;
  let safe: Error | undefined;
  if (depth < MAX_CAUSES) {
    safe = cause instanceof ProviderFailure ? withSafeCause(cause, depth + 1) : withoutMessage(cause, 'caused it');
  }
  if (safe === cause) return failure;
  const copy = new ProviderFailure(failure.kind, failure.message, {
    retryable: failure.retryable,
    retryAfter: failure.retryAfter,
    status: failure.upstreamStatus,
    cause: safe,
  });
  if (failure.stack !== undefined) copy.stack = failure.stack;
  return copy;
}

/**
 * What a provider threw, for logs: its class and where it was thrown, not its message, which may hold a secret (an
 * HTTP client's error names the URL it asked, token and all; `JSON.parse` quotes what it read). A provider that means
 * its message for logs throws a `ProviderFailure` from `verify`, an `AuthError` from `extract`.
 */
export function withoutMessage(thrown: unknown, what: string): Error {
  let name: string = typeof thrown;
  let code: string | undefined;
  let frames: string[] = [];
  try {
    // A short code (`ECONNREFUSED`, `UND_ERR_SOCKET`) says what failed and holds no secret.
    const thrownCode: unknown = (thrown as { code?: unknown } | null)?.code;
    if (typeof thrownCode === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(thrownCode)) code = thrownCode;
    // The class's own name: an error's `name` and `message` can be set to anything, a class's hardly.
    const className: unknown = (thrown as { constructor?: { name?: unknown } } | null)?.constructor?.name;
    if (typeof className === 'string' && /^[A-Za-z_$][\w$]{0,63}$/.test(className)) name = className;
    const { stack, message } = thrown as { stack?: unknown; message?: unknown };
    if (typeof stack === 'string') {
      // The stack opens with `name: message`, as many lines as the message has; the frames follow.
      const header = typeof message === 'string' ? message.split('\n').length : 1;
      frames = stack
        .split('\n')
        .slice(header)
        .filter((line) => /^ {4}at /.test(line));
    }
  } catch {
    // A getter that throws: the class alone, then.
  }
  const error = new Error(
    `${name}${code === undefined ? '' : ` (${code})`} ${what} (its message is withheld: it may hold a secret)`,
  );
  if (code !== undefined) Object.assign(error, { code });
  error.stack = [`Error: ${error.message}`, ...frames].join('\n');
  return error;
}
