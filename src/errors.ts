/**
 * The error of every failure the gate answers a request with (misuse, such
 * as a wrong option or a closed gate, throws a plain `TypeError` or `Error`
 * instead). Each instance carries what an HTTP framework needs to answer:
 * `status`, `headers` (with the RFC 6750 `WWW-Authenticate` challenge where
 * one is due) and `expose`, the flag Koa and http-errors use to decide
 * whether the message may reach the client.
 *
 * Messages are written by tokengate alone and never contain a token or a key.
 */

/** Machine-readable reason for an {@link AuthError}. */
export type AuthErrorCode =
  | 'credentials_required'
  | 'invalid_request'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'provider_unavailable'
  | 'overloaded'
  | 'provider_misconfigured';

/**
 * Marks the prototype of every copy of {@link AuthError} of this major version (the package's ESM and CommonJS builds
 * each hold one); another major's AuthError, whose shape may differ, carries another mark.
 */
const AUTH_ERROR = Symbol.for('tokengate.AuthError@2');

/**
 * Thrown by the gate and its guards; adapters hand it to the framework as is. `instanceof AuthError` holds for an
 * error from either build of the package, so an app that both imports and requires tokengate still recognises it.
 *
 * An AuthError is an answer to a client, not a fault in the app, and a client can make one as often as it sends a
 * request: it carries no stack frames (`stack` is `AuthError: <message>`), since capturing them costs V8 more than
 * the rest of a refusal does (where `Error.stackTraceLimit` is read-only, it has the frames V8 captures). `code`, `status` and `cause` say what happened; a 503's or 500's `cause` keeps the
 * stack of the provider's failure.
 */
export class AuthError extends Error {
  /** An AuthError of this copy of tokengate or of another one; a subclass is checked as usual. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class `instanceof` asks about, a subclass included.
    if (this !== AuthError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as { [AUTH_ERROR]?: unknown })[AUTH_ERROR] === true;
  }

  override readonly name = 'AuthError';
  /** HTTP status the response should carry. */
  readonly status: number;
  /** Same as `status`, for frameworks that read `statusCode`. */
  readonly statusCode: number;
  /** Machine-readable reason. */
  readonly code: AuthErrorCode;
  /** Response headers to send: `WWW-Authenticate` and, for 503, `Retry-After` when known. */
  readonly headers: Readonly<Record<string, string>>;
  /** Whether `message` is safe to show the client (false only for server-side misconfiguration). */
  readonly expose: boolean;

  /**
   * An error answered with `status` and `headers`; `expose: false` keeps `message` for the server's logs, and
   * `options.cause` (the provider's failure behind a 503 or 500) is for them alone too.
   */
  constructor(
    code: AuthErrorCode,
    status: number,
    message: string,
    headers: Readonly<Record<string, string>> = {},
    expose = true,
    options?: ErrorOptions,
  ) {
    // Everything that could throw is read first: `Error.stackTraceLimit` is back as it was once `super` returns.
    const text = message === undefined ? undefined : String(message);
    const cause = options !== undefined && 'cause' in options ? { cause: options.cause } : undefined;
    const limit = Error.stackTraceLimit;
    const limited = withoutStackFrames();
    super(text, cause);
    if (limited) Error.stackTraceLimit = limit;
    this.code = code;
    this.status = status;
    this.statusCode = status;
    this.headers = headers;
    this.expose = expose;
  }
}
Object.defineProperty(AuthError.prototype, AUTH_ERROR, { value: true });

/**
 * Sets `Error.stackTraceLimit` to 0; false where it is read-only (`node --frozen-intrinsics`, a frozen `Error`), where
 * an AuthError then has the frames V8 captures.
 */
function withoutStackFrames(): boolean {
  try {
    Error.stackTraceLimit = 0;
    return true;
  } catch {
    return false;
  }
}

/**
 * @internal `error` for one request alone: an {@link AuthError} that several requests share (the failure of the
 * verification they waited on) copied, its `headers` too, since frameworks and their middleware write to the error
 * they answer with (`@koa/cors` replaces `headers`, Koa sets `status`); anything else as it is.
 */
export function forOneRequest(error: unknown): unknown {
  if (!(error instanceof AuthError)) return error;
  const cause = error.cause === undefined ? undefined : { cause: error.cause };
  return new AuthError(error.code, error.status, error.message, { ...error.headers }, error.expose, cause);
}

/**
 * Quoted-string for an auth-param (RFC 9110 §5.6.4). RFC 6750 further limits
 * `error_description` and `scope` to printable ASCII without `"` and `\`, so
 * anything else is replaced rather than escaped.
 */
function quoteParam(value: string): string {
  return `"${value.replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?')}"`;
}

/** Builds a `Bearer` challenge: `Bearer realm="api", error="…", …`. */
function bearerChallenge(realm: string, params?: Readonly<Record<string, string>>): string {
  let challenge = `Bearer realm=${quoteParam(realm)}`;
  if (params) for (const [name, value] of Object.entries(params)) challenge += `, ${name}=${quoteParam(value)}`;
  return challenge;
}

/** 401 without `error`: the request carried no credential (RFC 6750 §3.1). */
export function credentialsRequired(realm: string): AuthError {
  return new AuthError('credentials_required', 401, 'Authentication required', {
    'WWW-Authenticate': bearerChallenge(realm),
  });
}

/**
 * 400 `invalid_request`: a credential was sent, but malformed or sent twice; what a provider's `extract` throws for
 * one, with the Bearer challenge of `realm` (the gate passes its realm to `extract`). `description` is for the client
 * (`error_description`): keep the credential out of it; anything but printable ASCII without `"` and `\` is shown
 * as `?` in the header.
 *
 * @example
 * if (key.length > 64) throw invalidRequest(realm, 'The X-Api-Key header is malformed');
 */
export function invalidRequest(realm: string, description: string): AuthError {
  return new AuthError('invalid_request', 400, description, {
    'WWW-Authenticate': bearerChallenge(realm, { error: 'invalid_request', error_description: description }),
  });
}

/** 401 `invalid_token`: the provider rejected the credential. */
export function invalidToken(realm: string, description: string): AuthError {
  return new AuthError('invalid_token', 401, description, {
    'WWW-Authenticate': bearerChallenge(realm, { error: 'invalid_token', error_description: description }),
  });
}

/** What a scope token may not hold as it is (RFC 6749 §3.3 NQCHAR), and `%`, which starts an escape. */
const NOT_IN_SCOPE_TOKEN = /[^\x21\x23\x24\x26-\x5b\x5d-\x7e]/gu;

/**
 * Encodes permission names as RFC 6749 §3.3 scope tokens, joined by one
 * space. A name keeps every character a scope token allows (`orders:read`,
 * `api://x/.default` stay as they are); a space, `"`, `\`, `%`, a control
 * character or a non-ASCII one is percent-encoded as UTF-8, so that
 * `decodeURIComponent` gives the name back (a lone surrogate comes back as U+FFFD).
 */
export function formatScope(permissions: readonly string[]): string {
  return permissions.map((permission) => permission.replace(NOT_IN_SCOPE_TOKEN, encodeScopeChar)).join(' ');
}

/** One character as UTF-8 escapes; a lone surrogate, which has no UTF-8 form, as U+FFFD's. */
function encodeScopeChar(char: string): string {
  const code = char.charCodeAt(0);
  return char.length === 1 && code >= 0xd800 && code <= 0xdfff ? '%EF%BF%BD' : encodeURIComponent(char);
}

/** 403 `insufficient_scope`, naming the permissions the guard asked for. */
export function insufficientScope(realm: string, permissions: readonly string[], all: boolean): AuthError {
  const description = `${all ? 'Requires' : 'Requires one of'}: ${permissions.join(', ')}`;
  return new AuthError('insufficient_scope', 403, description, {
    'WWW-Authenticate': bearerChallenge(realm, {
      error: 'insufficient_scope',
      error_description: description,
      scope: formatScope(permissions),
    }),
  });
}

/** 503: the provider could not give a trustworthy answer in time. Never a pass. `cause`: its failure, for logs. */
export function providerUnavailable(provider: string, retryAfterSeconds?: number, cause?: Error): AuthError {
  const headers: Record<string, string> = {};
  if (retryAfterSeconds !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(retryAfterSeconds)));
  const message = `Token provider ${provider} is unavailable`;
  return new AuthError('provider_unavailable', 503, message, headers, true, cause && { cause });
}

/**
 * 503 `overloaded`: more verifications wait for the provider than the gate
 * lets wait, or the request's time went to that wait. The provider is not
 * at fault; the client may try again shortly.
 */
export function overloaded(provider: string): AuthError {
  return new AuthError('overloaded', 503, `Too many credentials are waiting for token provider ${provider}`, {
    'Retry-After': '1',
  });
}

/** 500: the provider refused this server's own credentials (e.g. its API key). Not shown to clients. */
export function providerMisconfigured(provider: string, cause?: Error): AuthError {
  const message = `Token provider ${provider} refused this server's credentials; check its configuration`;
  return new AuthError('provider_misconfigured', 500, message, {}, false, cause && { cause });
}
