/** The faults a mock provider server can inject, and their checks. */
import { MAX_TIMER_MS, nearKey } from '../options.js';

/**
 * A fault a mock injects instead of (or into) its normal answer.
 *
 * `every` injects the fault only into every Nth verification counted from the
 * moment the fault was assigned: with `every: 2` the 1st verification is
 * answered normally, the 2nd gets the fault, the 3rd is normal and so on (a
 * flapping provider). Default 1: every verification gets the fault. A
 * verification is one request for the Partoo mock; for the OnlineOrNot mock it
 * is a `verify` and a `permissions` request with the same `Authorization`
 * header, in either order, and both get the decision made for it. A request
 * completes the verification whose request its connection carried last (a
 * client with one socket), else the oldest whose first request is still
 * unanswered (sent beside it), else the latest; one whose partner does not
 * come within a second of its answer counts as a verification of its own. A request that completes a verification
 * begun before the fault was assigned (a gate's second call, still on its way when a test sets the fault) gets that
 * verification's answer and is not counted. Requests to a path or with a method the mock
 * does not serve get its 404 or 405, and are not counted as verifications (`calls.total` alone counts them).
 *
 * `endpoints` limits the fault to requests to the named endpoints (the names
 * the mock counts in `calls`, e.g. `['permissions']`); the other requests of a
 * verification are answered normally, and requests that are no part of one
 * (the introspection mock's metadata, when `endpoints` is `['introspect']`)
 * are not counted. Default: every endpoint. A gate's retry is a verification
 * of its own to the mock: with `every`, give the gate `retry: false`.
 */
export type MockFault =
  /** Destroys the socket with a TCP RST without answering: the client sees `ECONNRESET`. */
  (
    | { readonly kind: 'reset' }
    /** Never answers; the request stays open until the client gives up or the mock closes. */
    | { readonly kind: 'hang' }
    /**
     * Answers `status` (e.g. 500, 502, 503, 429), with `Retry-After: <retryAfter>` (seconds)
     * when given. `body` is sent verbatim (as `application/json` when it parses as JSON, else
     * `text/plain`). By default the OnlineOrNot and Partoo mocks send their API's own error body
     * for that status, so a 4xx means to the gate what it means from the real API (OnlineOrNot
     * 401: the token is refused; Partoo 400, 403 or 404: refused, 401: the server's key is); the
     * introspection mock sends `{ "error": "<reason phrase>" }`. A 204, 205 or 304 has no content
     * (RFC 9110): it is sent without a body or `Content-Type`, and a non-empty `body` is refused.
     */
    | {
        readonly kind: 'status';
        readonly status: number;
        readonly retryAfter?: number | undefined;
        readonly body?: string | undefined;
      }
    /** 200 with `Content-Type: application/json` and a body that is not JSON. */
    | { readonly kind: 'garbage' }
    /** 200 JSON whose shape is not the endpoint's (`{"result":{"id":42}}`, `{"status":"maybe"}`). */
    | { readonly kind: 'wrong-shape' }
    /** The normal answer (status and body) with `Content-Type: text/html`. */
    | { readonly kind: 'wrong-content-type' }
    /** 200 `application/json`, chunked (no `Content-Length`), a valid JSON object of `bytes` bytes (at least 14). */
    | { readonly kind: 'huge'; readonly bytes: number }
    /** 200 `application/json` headers at once, then one space every `intervalMs`, never ending. */
    | { readonly kind: 'drip'; readonly intervalMs: number }
    /** 302 with `Location: <location>` and an empty body. */
    | { readonly kind: 'redirect'; readonly location: string }
    /** The normal answer, `ms` milliseconds late (on top of `latency`): a slow provider that does answer. */
    | { readonly kind: 'delay'; readonly ms: number }
  ) & {
    /** Inject the fault into every Nth verification only (positive integer, default 1). */
    readonly every?: number | undefined;
    /** Inject it only into requests to these endpoints (names as in `calls`, at least one). Default all. */
    readonly endpoints?: readonly string[] | undefined;
  };

/**
 * The statuses whose answer has no content (RFC 9110 §15.3.5, §15.3.6, §15.4.5): Node writes no body for 204 and
 * 304 (a `Content-Length` there would promise bytes that never come); a 205 says its empty content with
 * `Content-Length: 0`.
 */
const WITHOUT_CONTENT: ReadonlySet<number> = new Set([204, 205, 304]);

/** Whether an answer with `status` has no content (RFC 9110): a fault's `body` cannot go with it. */
export const hasNoContent = (status: number): boolean => WITHOUT_CONTENT.has(status);

const HUGE_CHUNK = 'x'.repeat(64 * 1024);

/** `{"padding":"xxx…"}` of exactly `bytes` bytes (at least 14), in 64 KiB pieces. */
export function* hugeJson(bytes: number): Generator<string> {
  yield '{"padding":"';
  for (let left = bytes - 14; left > 0; left -= HUGE_CHUNK.length) {
    yield left >= HUGE_CHUNK.length ? HUGE_CHUNK : HUGE_CHUNK.slice(0, left);
  }
  yield '"}';
}

/** True for a delay Node keeps as a timer: above 0, at most {@link MAX_TIMER_MS} (a longer one fires at once). */
const isTimerDelay = (ms: number): boolean => typeof ms === 'number' && ms > 0 && ms <= MAX_TIMER_MS;

/** The fields of each fault kind, as {@link MockFault} names them, beside `kind`, `every` and `endpoints`. */
const FIELDS: Readonly<Record<MockFault['kind'], readonly string[]>> = {
  reset: [],
  hang: [],
  status: ['status', 'retryAfter', 'body'],
  garbage: [],
  'wrong-shape': [],
  'wrong-content-type': [],
  huge: ['bytes'],
  drip: ['intervalMs'],
  redirect: ['location'],
  delay: ['ms'],
};
/** The fault kinds. */
const KINDS: ReadonlySet<string> = new Set(Object.keys(FIELDS));

/**
 * A frozen copy of `fault`, its `endpoints` list copied and frozen too: the fault a mock keeps once checked, which
 * no later change to the object given can reach. Anything but an object is returned as it is, for
 * {@link checkFault} to refuse.
 */
export function frozenFault(fault: MockFault | undefined): MockFault | undefined {
  if (typeof fault !== 'object' || fault === null) return fault;
  const endpoints: unknown = fault.endpoints;
  return Object.freeze({
    ...fault,
    ...(Array.isArray(endpoints) ? { endpoints: Object.freeze([...endpoints]) } : {}),
  });
}

/**
 * Throws `TypeError` for anything but a fault object of a known kind (a misspelled kind would otherwise act as no
 * fault, or hang) or a fault with an option its kind does not take (a misspelled `endpoints` would hit every
 * endpoint), and `RangeError` for a fault with out-of-range numbers, a `Location` or `body` no answer can carry, or an
 * endpoint name not in `endpoints`.
 */
export function checkFault(fault: MockFault | undefined, endpoints: readonly string[]): void {
  if (fault === undefined) return;
  if (typeof fault !== 'object' || fault === null || !KINDS.has((fault as { kind?: unknown }).kind as string)) {
    const kind = (fault as { kind?: unknown } | null)?.kind;
    throw new TypeError(
      `Invalid mock fault: expected an object whose kind is one of ${[...KINDS].join(', ')}${typeof kind === 'string' ? `, got kind '${kind}'` : ''} (undefined clears the fault)`,
    );
  }
  const allowed = FIELDS[fault.kind];
  for (const key of Object.keys(fault)) {
    if (key === 'kind' || key === 'every' || key === 'endpoints' || allowed.includes(key)) continue;
    const options = [...allowed, 'every', 'endpoints'];
    const near = nearKey(key, options);
    throw new TypeError(
      `Invalid mock fault '${fault.kind}': unknown option ${key}${near === undefined ? '' : ` (did you mean ${near}?)`}; it takes ${options.join(', ')}`,
    );
  }
  const bad = (what: string): never => {
    throw new RangeError(`Invalid mock fault '${fault.kind}': ${what}`);
  };
  const every = fault.every ?? 1;
  if (!Number.isSafeInteger(every) || every < 1) bad('every must be a positive integer');
  if (fault.kind === 'status') {
    if (!Number.isInteger(fault.status) || fault.status < 200 || fault.status > 599) bad('status must be 200-599');
    if (fault.retryAfter !== undefined && !(Number.isSafeInteger(fault.retryAfter) && fault.retryAfter >= 0)) {
      // A header carries delta-seconds as digits: 1e21 would be written `1e+21`.
      bad('retryAfter must be a non-negative integer of at most 2^53 - 1 seconds');
    }
    if (fault.body !== undefined && typeof fault.body !== 'string') bad('body must be a string');
    if (fault.body !== undefined && fault.body !== '' && hasNoContent(fault.status)) {
      bad(`body must be absent: a ${fault.status} answer has no content`);
    }
  }
  // A header value as Node sends one: no control character but a tab (a line break would split the answer's head).
  if (
    fault.kind === 'redirect' &&
    !(typeof fault.location === 'string' && !/[^\t\x20-\x7e\x80-\xff]/.test(fault.location))
  ) {
    bad('location must be a string a header can carry (no line break or other control character)');
  }
  if (fault.kind === 'huge' && !(Number.isInteger(fault.bytes) && fault.bytes >= 14))
    bad('bytes must be an integer >= 14');
  if (fault.kind === 'drip' && !isTimerDelay(fault.intervalMs)) bad(`intervalMs must be > 0 and <= ${MAX_TIMER_MS}`);
  if (fault.kind === 'delay' && !isTimerDelay(fault.ms)) bad(`ms must be > 0 and <= ${MAX_TIMER_MS}`);
  if (fault.endpoints !== undefined) {
    if (!Array.isArray(fault.endpoints) || fault.endpoints.length === 0) bad('endpoints must be a non-empty array');
    for (const name of fault.endpoints) {
      if (!endpoints.includes(name)) bad(`endpoints must be among ${endpoints.join(', ')}`);
    }
  }
}
