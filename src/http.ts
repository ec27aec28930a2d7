/**
 * The one way providers talk HTTP: a keep-alive undici `Pool` per provider,
 * a deadline ({@link Cancellation}) that covers connect, headers and body, a cap on
 * answer size, and no redirects. Everything that is not a clean JSON answer
 * becomes a {@link ProviderFailure}, so callers only see status + JSON.
 */
import { type Dispatcher, Pool } from 'undici';
import type { Cancellation } from './cancellation.js';
import { durationOption, numberOption } from './options.js';
import { ProviderFailure } from './provider-failure.js';
import { retryAfterSeconds } from './retry-after.js';

/** Connection settings shared by the HTTP providers. */
export interface HttpOptions {
  /** Most sockets open to the provider at once, at most 1024. Default 16 (OnlineOrNot: 32, two per verification). */
  readonly connections?: number | undefined;
  /** Answers larger than this many bytes are cut off and count as a provider failure. Default 65 536. */
  readonly maxBodyBytes?: number | undefined;
  /**
   * How long an idle keep-alive socket stays open at most, in ms; a server's `Keep-Alive: timeout` hint, less 2 s,
   * wins when shorter. Default 10 000.
   */
  readonly keepAliveTimeout?: number | undefined;
}

/** The schema of {@link HttpOptions}, for the providers' own option schemas. */
export const httpOptionsShape = {
  connections: numberOption(1, { integer: true, max: 1024 }).optional(),
  maxBodyBytes: numberOption(1, { integer: true }).optional(),
  keepAliveTimeout: durationOption(1).optional(),
};

/** A provider answer that parsed as JSON. */
export interface JsonAnswer {
  readonly status: number;
  readonly body: unknown;
}

const DEFAULT_MAX_BODY_BYTES = 64 * 1024;
/** The smallest buffer an answer that came in several chunks is copied into. */
const MIN_BODY_BUFFER = 1024;
const EMPTY = Buffer.alloc(0);
/** Sockets per provider pool when `connections` is not given. */
export const DEFAULT_CONNECTIONS = 16;

/** How a provider configured by `baseUrl` ends the message of a 404: the path is not the API's. */
export const BASE_URL_HINT = ' (check baseUrl)';

/** A pool to one provider origin, plus the base path the provider's API lives under. */
export class ProviderHttp {
  readonly #pool: Pool;
  readonly #basePath: string;
  readonly #origin: string;
  readonly #provider: string;
  readonly #maxBodyBytes: number;
  readonly #notFoundHint: string;

  /**
   * `baseUrl` and `options` are checked by the provider's option schema. `notFoundHint` ends the message of a 404
   * that is not JSON (a path the API does not serve: a server's own page), naming the option to check.
   */
  constructor(provider: string, baseUrl: string, options: HttpOptions = {}, notFoundHint = '') {
    const url = new URL(baseUrl);
    this.#provider = provider;
    this.#notFoundHint = notFoundHint;
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#origin = url.origin;
    this.#maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const keepAlive = options.keepAliveTimeout ?? 10_000;
    this.#pool = new Pool(url.origin, {
      connections: options.connections ?? DEFAULT_CONNECTIONS,
      // The longest an idle socket is kept: undici takes a server's `Keep-Alive: timeout` hint (less a margin) over
      // `keepAliveTimeout`, and bounds the hint by `keepAliveMaxTimeout` alone.
      keepAliveTimeout: keepAlive,
      keepAliveMaxTimeout: keepAlive,
      pipelining: 1,
      maxResponseSize: this.#maxBodyBytes,
    });
  }

  /**
   * GETs `path` (relative to the base URL, query included) and returns the
   * status and parsed JSON body for 2xx and 4xx answers.
   *
   * @throws ProviderFailure for connection errors and the deadline
   *   (`unreachable`, `timeout`), 3xx/5xx/429 (`status`, with `Retry-After`),
   *   and bodies that are too large, not JSON, or not labelled JSON (`invalid_answer`).
   */
  getJson(path: string, headers: Record<string, string>, cancellation: Cancellation): Promise<JsonAnswer> {
    return this.#dispatch('GET', path, headers, null, cancellation);
  }

  /**
   * POSTs `form` as an `application/x-www-form-urlencoded` body to `path`
   * (relative to the base URL) and reads the answer as {@link getJson} does,
   * with the same failures.
   */
  postForm(
    path: string,
    form: URLSearchParams,
    headers: Record<string, string>,
    cancellation: Cancellation,
  ): Promise<JsonAnswer> {
    const formHeaders = { 'content-type': 'application/x-www-form-urlencoded', ...headers };
    return this.#dispatch('POST', path, formHeaders, form.toString(), cancellation);
  }

  #dispatch(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    body: string | null,
    cancellation: Cancellation,
  ): Promise<JsonAnswer> {
    if (cancellation.aborted) return Promise.reject(transportFailure(this, cancellation.reason, cancellation));
    return new Promise<JsonAnswer>((resolve, reject) => {
      // undici's dispatch API rather than request(): the answer is small and read whole, so the
      // Readable stream that request() builds around every body is pure overhead on the cold path.
      this.#pool.dispatch(
        { method, path: this.#basePath + path, headers: { accept: 'application/json', ...headers }, body },
        new JsonAnswerReader(this, method, path, cancellation, resolve, reject),
      );
    });
  }

  /** @internal */
  get provider(): string {
    return this.#provider;
  }

  /** @internal The origin every request goes to, as messages name it. */
  get origin(): string {
    return this.#origin;
  }

  /**
   * A request as a failure's message names it, with its provider: `onlineornot GET /v1/tokens/verify`, its path
   * under the base URL. Never the base URL's own path nor the query, where a key or a token may sit; nor a POST's
   * path, which is an endpoint URL's own (introspection's).
   */
  named(method: 'GET' | 'POST', path?: string): string {
    if (method === 'POST' || path === undefined) return `${this.#provider} ${method} to its endpoint`;
    const query = path.indexOf('?');
    return `${this.#provider} ${method} ${query === -1 ? path : path.slice(0, query)}`;
  }

  /** @internal */
  get notFoundHint(): string {
    return this.#notFoundHint;
  }

  /** @internal */
  get maxBodyBytes(): number {
    return this.#maxBodyBytes;
  }

  /**
   * Closes the pool at once: requests still under way are aborted, as a call left running by a verification that
   * had its answer (OnlineOrNot's second call) would otherwise hold the close until the deadline.
   */
  close(): Promise<void> {
    return this.#pool.destroy();
  }
}

type HeaderField = string | string[] | undefined;

function transportFailure(
  http: ProviderHttp,
  error: unknown,
  cancellation: Cancellation,
  named?: string,
): ProviderFailure {
  if (cancellation.aborted) {
    return new ProviderFailure('timeout', `${http.provider} did not answer within the deadline`);
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') return tooLarge(named ?? http.provider);
  return new ProviderFailure(
    'unreachable',
    `${http.provider} at ${http.origin} is unreachable${typeof code === 'string' ? ` (${code})` : ''}`,
  );
}

/**
 * Reads one answer through undici's handler API: status and headers first
 * (a failure status or a non-JSON type is decided there, and its body only
 * drained so the keep-alive socket can serve the next request), then the
 * body into a buffer under the cap, parsed as JSON at the end. Aborts the
 * request when `cancellation` fires (the gate's deadline).
 */
class JsonAnswerReader implements Dispatcher.DispatchHandler {
  readonly #http: ProviderHttp;
  readonly #method: 'GET' | 'POST';
  /** The path asked, as its messages name it ({@link ProviderHttp.named}). */
  readonly #path: string;
  readonly #cancellation: Cancellation;
  readonly #resolve: (answer: JsonAnswer) => void;
  readonly #reject: (failure: ProviderFailure) => void;
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;
  /** Set when the status or headers already decided the answer; the body is then only drained. */
  #failure: ProviderFailure | undefined;
  /**
   * The body so far: its first chunk as undici gave it, then a buffer of its own that the next chunks are copied
   * into, grown by doubling. An answer sent a byte at a time holds its bytes, not an object per chunk.
   */
  #body: Buffer | undefined;
  /** Whether {@link #body} is that buffer of its own. */
  #owned = false;
  #size = 0;
  #settled = false;

  constructor(
    http: ProviderHttp,
    method: 'GET' | 'POST',
    path: string,
    cancellation: Cancellation,
    resolve: (answer: JsonAnswer) => void,
    reject: (failure: ProviderFailure) => void,
  ) {
    this.#http = http;
    this.#method = method;
    this.#path = path;
    this.#cancellation = cancellation;
    this.#resolve = resolve;
    this.#reject = reject;
    cancellation.onCancel(this.#onCancel);
  }

  /** This request as messages name it (only a failure builds it). */
  get #named(): string {
    return this.#http.named(this.#method, this.#path);
  }

  /** Ends the request; a failure its status already decided stands (a 429 whose body stalled is still that 429). */
  readonly #onCancel = (): ProviderFailure | undefined => {
    this.#controller?.abort(abortReason(this.#cancellation));
    this.#settle(
      undefined,
      this.#failure ?? transportFailure(this.#http, this.#cancellation.reason, this.#cancellation, this.#named),
    );
    return this.#failure;
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#settled) controller.abort(abortReason(this.#cancellation));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    status: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (status < 200) return; // 1xx: the real answer follows
    this.#status = status;
    if (status >= 500 || status === 429) {
      this.#failure = new ProviderFailure('status', `${this.#named} answered ${status}`, {
        retryable: true,
        retryAfter: retryAfterSeconds(headers['retry-after']),
        status: status,
      });
    } else if (status >= 300 && status < 400) {
      // A redirect is never followed (it could send the token elsewhere).
      this.#failure = new ProviderFailure('status', `${this.#named} answered ${status}`, { status: status });
    } else if (!isJsonContentType(headers['content-type'])) {
      this.#failure = new ProviderFailure(
        'invalid_answer',
        `${this.#named} answered ${status} without a JSON content type${status === 404 ? this.#http.notFoundHint : ''}`,
        { status: status },
      );
    } else {
      const declared = headers['content-length'];
      if (typeof declared === 'string' && Number(declared) > this.#http.maxBodyBytes) {
        const failure = tooLarge(this.#named);
        this.#settle(undefined, failure);
        this.#controller?.abort(failure);
      }
    }
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // Draining a decided answer, or past the deadline. The pool's maxResponseSize caps the body either way.
    if (this.#failure !== undefined || this.#settled) return;
    const size = this.#size + chunk.length;
    let body = this.#body;
    if (body === undefined) body = chunk;
    else {
      if (!this.#owned || size > body.length) {
        const capacity = Math.max(size, Math.min(2 * body.length, this.#http.maxBodyBytes), MIN_BODY_BUFFER);
        const grown = Buffer.allocUnsafeSlow(capacity);
        body.copy(grown, 0, 0, this.#size);
        body = grown;
        this.#owned = true;
      }
      chunk.copy(body, this.#size);
    }
    this.#body = body;
    this.#size = size;
  }

  onResponseEnd(): void {
    if (this.#failure !== undefined) {
      this.#settle(undefined, this.#failure);
      return;
    }
    const body = this.#body;
    let text: string;
    try {
      text = UTF8.decode(body === undefined ? EMPTY : this.#owned ? body.subarray(0, this.#size) : body);
    } catch {
      const failure = new ProviderFailure(
        'invalid_answer',
        `${this.#named} answered ${this.#status} with a body that is not UTF-8`,
        { status: this.#status },
      );
      this.#settle(undefined, failure);
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      const failure = new ProviderFailure(
        'invalid_answer',
        `${this.#named} answered ${this.#status} with malformed JSON`,
        { status: this.#status },
      );
      this.#settle(undefined, failure);
      return;
    }
    if (typeof json === 'object' && json !== null && hasRepeatedName(text, json)) {
      const failure = new ProviderFailure(
        'invalid_answer',
        `${this.#named} answered ${this.#status} with an object that names a member twice`,
        { status: this.#status },
      );
      this.#settle(undefined, failure);
      return;
    }
    this.#settle({ status: this.#status, body: json }, undefined);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    // A failure already decided by the status stands, even if draining its body then failed.
    this.#settle(undefined, this.#failure ?? transportFailure(this.#http, error, this.#cancellation, this.#named));
  }

  #settle(answer: JsonAnswer | undefined, failure: ProviderFailure | undefined): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#body = undefined;
    this.#cancellation.offCancel(this.#onCancel);
    if (failure !== undefined) this.#reject(failure);
    else this.#resolve(answer as JsonAnswer);
  }
}

/** What undici's `abort()` takes: the cancellation's reason when it is an Error (it always is from the gate). */
function abortReason(cancellation: Cancellation): Error {
  const reason = cancellation.reason;
  return reason instanceof Error ? reason : new DOMException('The verification was cancelled', 'AbortError');
}

/**
 * JSON is UTF-8 (RFC 8259 §8.1). A byte sequence that is not is an answer not to read: replacing it with U+FFFD
 * would make two subjects the same. A byte order mark is kept, and so makes malformed JSON.
 */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Whether `text`, a JSON text `JSON.parse` has read into `body`, has an object that names a member twice (after
 * unescaping: `"a"` and `"\u0061"` are one name). RFC 8259 §4 leaves what such an object means to each reader
 * (`JSON.parse` keeps the last, others the first), so an answer holding one has no single meaning to act on. Every
 * `:` outside a string in a JSON text follows a member's name, so the text names as many members as it has such
 * colons, and `body`'s objects hold fewer exactly when a name was repeated.
 */
function hasRepeatedName(text: string, body: object): boolean {
  let named = 0;
  for (let i = 0; i < text.length; i++) {
    const char = text.charCodeAt(i);
    if (char === 0x3a /* : */) named++;
    else if (char === 0x22 /* " */) {
      // To the closing quote, an escaped character skipped (the text is valid JSON: the quote comes).
      for (i++; text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
    }
  }
  return named !== memberCount(body);
}

/** The members of every object in `body`, nested ones included; iterative, as `body` may nest deep. */
function memberCount(body: object): number {
  let count = 0;
  const pending: object[] = [body];
  for (let value = pending.pop(); value !== undefined; value = pending.pop()) {
    const members: unknown[] = Array.isArray(value) ? value : Object.values(value);
    if (!Array.isArray(value)) count += members.length;
    for (const member of members) if (typeof member === 'object' && member !== null) pending.push(member);
  }
  return count;
}

function tooLarge(named: string): ProviderFailure {
  return new ProviderFailure('invalid_answer', `${named} answered more than its body size cap`);
}

function isJsonContentType(value: HeaderField): boolean {
  if (typeof value !== 'string') return false;
  if (value === 'application/json' || value === 'application/json; charset=utf-8') return true; // the usual two
  const type = value.split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}
