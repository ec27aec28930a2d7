/**
 * Option validation for `createGate` and the provider factories: every
 * option is checked once, at construction, and a mistake throws a
 * `TypeError` that names the option path and what was expected:
 *
 *   createGate: cache.ttl: expected a number >= 1, got 0
 *   onlineOrNot: baseUrl: expected an absolute http(s) URL, got "api.onlineornot.com"
 *
 * Unknown keys are refused (`cache.TTL`, a top-level `ttl`), with a
 * suggestion when one is near. String values are shown only where the
 * schema says so: an option may hold a secret.
 */
import { z } from 'zod';

/**
 * A number option in `[min, max]`; `integer` for counts. `max` defaults to `Number.MAX_SAFE_INTEGER`, which the
 * message names only for a value past it: a bound of the option's own it always names.
 */
export function numberOption(min: number, { integer = false, max = Number.MAX_SAFE_INTEGER } = {}) {
  const kind = integer ? 'an integer' : 'a number';
  const upper = (input: unknown) =>
    max < Number.MAX_SAFE_INTEGER || (typeof input === 'number' && input > max) ? ` and <= ${max}` : '';
  const error = (issue: { input?: unknown }) =>
    `expected ${kind} >= ${min}${upper(issue.input)}, got ${shown(issue.input)}`;
  const base = integer ? z.number({ error }).int({ error }) : z.number({ error });
  return base.min(min, { error }).max(max, { error });
}

/** The longest delay Node's timers keep (2^31 - 1 ms, about 24.8 days): a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/** A duration in ms that ends up as a timer's delay: in `[min, MAX_TIMER_MS]`. */
export const durationOption = (min: number) => numberOption(min, { max: MAX_TIMER_MS });

/** What a secret option was, without its value: `undefined`, `null` or its type. */
const secretKind = (value: unknown): string =>
  value === undefined || value === null ? String(value) : `a ${typeof value}`;

/** A non-empty string option; its value is never echoed in errors (only what it was, `undefined` say). */
export const secretOption = z
  .string({ error: (issue) => `expected a non-empty string, got ${secretKind(issue.input)}` })
  .min(1, { error: 'expected a non-empty string, got an empty string' });

/**
 * What keeps `value` out of an HTTP header value, as a message names it: a line break (a key read from a file), another
 * control character but tab, a character past U+00FF. Never the character itself nor where it is: the value is a secret.
 */
function headerValueFaults(value: unknown): string {
  const text = typeof value === 'string' ? value : '';
  const faults: string[] = [];
  if (/[\r\n]/.test(text)) faults.push('no line break (read from a file?)');
  if (/[^\t\n\r\x20-\x7e\x80-\uffff]/.test(text)) faults.push('no control character but tab');
  if (/[\u0100-\uffff]/.test(text)) faults.push('no character past U+00FF');
  return faults.length === 0 ? 'tab, printable ASCII or Latin-1' : faults.join(', ');
}

/**
 * A secret sent as an HTTP header value (an API key): tab, printable ASCII or Latin-1 (RFC 9110 §5.5, as
 * undici checks). A line break (a key read from a file) or another control character, or one past U+00FF,
 * cannot go in a header: the request would never leave the process, and every verification would look like
 * an outage. The message names which of these the value has.
 */
export const headerSecretOption = secretOption.regex(/^[\t\x20-\x7e\x80-\xff]+$/, {
  error: (issue) => `expected characters an HTTP header can carry: ${headerValueFaults(issue.input)}`,
});

/** A non-empty string option whose value may be shown in errors. */
export const nameOption = z
  .string({ error: (issue) => `expected a non-empty string, got ${shown(issue.input)}` })
  .min(1, { error: 'expected a non-empty string, got an empty string' });

/**
 * A URL option's value as an error shows it: the origin (scheme, host, port) of an http(s) URL, never its path,
 * credentials, query or fragment, where a secret may sit (`https://user:password@host`, `/v2/<key>`,
 * `?client_secret=`). Anything else is not shown at all: it may be a secret given in the wrong place (`key:secret`
 * parses as a URL of scheme `key:`).
 */
function shownUrl(url: URL | undefined): string {
  if (url === undefined) return 'a string that is not a URL (write it with its scheme: https://...)';
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'a URL that is not http or https';
  return JSON.stringify(url.origin);
}

/** An absolute `http:` or `https:` URL without credentials or fragment, nor a query unless `query`. */
function httpUrlOption({ query }: { query: boolean }) {
  const refused = query ? 'credentials or fragment' : 'credentials, query or fragment';
  return z.string({ error: 'expected an absolute http(s) URL' }).superRefine((value, ctx) => {
    const url = URL.canParse(value) ? new URL(value) : undefined;
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      ctx.addIssue({ code: 'custom', message: `expected an absolute http(s) URL, got ${shownUrl(url)}` });
    } else if (url.username || url.password || (url.search && !query) || url.hash) {
      ctx.addIssue({ code: 'custom', message: `expected a URL without ${refused}` });
    }
  });
}

/** An absolute `http:` or `https:` URL without credentials, query or fragment. */
export const baseUrlOption = httpUrlOption({ query: false });

/** An absolute `http:` or `https:` URL without credentials or fragment; it may have a query (RFC 6749 §3.1). */
export const endpointUrlOption = httpUrlOption({ query: true });

/** Whether `url` is https, or http to this host (`localhost`, 127.0.0.0/8, `[::1]`), where it crosses no network. */
export function isSecureUrl(url: URL): boolean {
  if (url.protocol === 'https:') return true;
  const host = url.hostname;
  return (
    url.protocol === 'http:' &&
    (host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host))
  );
}

/** `allowInsecureRequests`: see {@link secureUrls}. */
export const allowInsecureRequestsOption = z.boolean({ error: 'expected a boolean' }).optional();

/**
 * A refinement that refuses, in the URL options named `keys`, plain `http:` to a host other than loopback (where it
 * would cross a network with tokens and this server's own secret in clear), unless `allowInsecureRequests` is true.
 */
export function secureUrls<K extends string>(keys: readonly K[]) {
  return (
    options: Partial<Record<K, unknown>> & { allowInsecureRequests?: boolean | undefined },
    ctx: z.RefinementCtx,
  ) => {
    for (const key of keys) {
      const value = options[key];
      if (typeof value !== 'string' || options.allowInsecureRequests === true || !URL.canParse(value)) continue;
      if (isSecureUrl(new URL(value))) continue;
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got ${shownUrl(new URL(value))}`,
      });
    }
  };
}

/** A list of non-empty strings (a single string is refused, not split into characters). */
export const stringListOption = z.array(nameOption, {
  error: (issue) => `expected an array of strings, got ${shown(issue.input)}`,
});

/**
 * Checks `value` against `schema` and returns it, or throws a `TypeError`
 * naming `where` and the first offending option. `hints` suggests where an
 * unknown key belongs (`{ ttl: 'cache.ttl' }`).
 */
export function checkOptions<T>(
  schema: z.ZodType,
  value: unknown,
  where: string,
  hints: Readonly<Record<string, string>> = {},
): T {
  const promised = promiseIn(value, schema, []);
  if (promised !== undefined) {
    const at = pathName(promised);
    throw new TypeError(`${where}: ${at === '' ? '' : `${at}: `}got a promise (missing await?)`);
  }
  const parsed = schema.safeParse(value, { reportInput: true });
  if (parsed.success) return value as T;
  const issue = misspelling(parsed.error.issues) ?? pickIssue(parsed.error.issues);
  const message = `${where}: ${describeIssue(schema, issue, hints)}`;
  // A number out of its range (NaN and Infinity included) is a RangeError, as Node's own option checks throw; a number
  // where one of a few values (`invalid_value`), another type (`invalid_type`) or a function (`custom`) belongs is a
  // TypeError.
  const numeric =
    issue?.code === 'too_small' ||
    issue?.code === 'too_big' ||
    issue?.code === 'not_multiple_of' ||
    (issue?.code === 'invalid_type' && (issue.expected === 'number' || issue.expected === 'int'));
  const outOfRange = typeof issue?.input === 'number' && numeric;
  throw outOfRange ? new RangeError(message) : new TypeError(message);
}

/**
 * The path of a promise (or other thenable) where `schema` has an option: `value` itself, or an option of an options
 * object within it, or an element of an option's list (a provider). An `await` forgotten there passes a promise, which
 * an options object would take as empty. Members of what the schema does not describe (a provider's own fields, a
 * shared tier's) are not read. `[]` for `value` itself; undefined when there is none.
 */
function promiseIn(value: unknown, schema: z.ZodType, path: PropertyKey[]): PropertyKey[] | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  if (typeof (value as { then?: unknown }).then === 'function') return path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = promiseIn(value[i], schema, [...path, i]);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  for (const key of keysAt(schema, path)) {
    if (!Object.hasOwn(value, key)) continue;
    const found = promiseIn((value as Record<string, unknown>)[key], schema, [...path, key]);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** `a.b[0].c`: a path as the messages name it. */
function pathName(path: readonly PropertyKey[]): string {
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`))
    .join('');
}

type Issue = z.core.$ZodIssue;

function describeIssue(schema: z.ZodType, issue: Issue | undefined, hints: Readonly<Record<string, string>>): string {
  if (issue === undefined) return 'invalid options';
  const at = pathName(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    const name = at === '' ? key : `${at}.${key}`;
    const hint = hints[name] ?? nearKey(key, keysAt(schema, issue.path));
    return `${name}: unknown option${hint === undefined ? '' : ` (did you mean ${hint}?)`}`;
  }
  const message =
    issue.code === 'invalid_type' && !/^expected /.test(issue.message)
      ? `expected ${issue.expected}, got ${shown(issue.input)}`
      : issue.message;
  return at === '' ? message : `${at}: ${message}`;
}

/**
 * An unknown key that is a near spelling of a required option reported missing beside it (`apikey` for `apiKey`): the
 * mistake to name, rather than the missing option.
 */
function misspelling(issues: readonly Issue[]): Issue | undefined {
  for (const missing of issues) {
    if (missing.code !== 'invalid_type' || missing.input !== undefined) continue;
    const name = missing.path.at(-1);
    if (typeof name !== 'string') continue;
    const parent = missing.path.slice(0, -1);
    const unknown = issues.find(
      (issue) =>
        issue.code === 'unrecognized_keys' &&
        issue.path.length === parent.length &&
        issue.path.every((part, i) => part === parent[i]) &&
        issue.keys.some((key) => nearKey(key, [name]) !== undefined),
    );
    if (unknown?.code === 'unrecognized_keys') {
      return { ...unknown, keys: unknown.keys.filter((key) => nearKey(key, [name]) !== undefined) };
    }
  }
  return undefined;
}

/** The issue to report: inside a union, the branch that got furthest into the value. */
function pickIssue(issues: readonly Issue[]): Issue | undefined {
  const first = issues[0];
  if (first?.code !== 'invalid_union') return first;
  // Deeper issues win, then those about a value of the right type; on a tie, the later branch (the object one).
  const weight = (issue: Issue) =>
    issue.path.length + (issue.code === 'invalid_type' || issue.code === 'invalid_value' ? 0 : 0.5);
  let best: Issue | undefined;
  for (const branch of first.errors) {
    const candidate = pickIssue(branch);
    if (candidate !== undefined && (best === undefined || weight(candidate) >= weight(best))) best = candidate;
  }
  return best === undefined ? first : { ...best, path: [...first.path, ...best.path] };
}

/**
 * The known key nearest `key`, ignoring case, `_` and `-`: within two edits (`TTL` for `ttl`, `optinal` for
 * `optional`), or three when both begin with the same four characters (`retry` for `retries`).
 */
export function nearKey(key: string, known: readonly string[]): string | undefined {
  const plain = (name: string) => name.toLowerCase().replace(/[-_]/g, '');
  const typed = plain(key);
  let nearest: string | undefined;
  let least = Number.POSITIVE_INFINITY;
  for (const name of known) {
    const option = plain(name);
    const distance = editDistance(option, typed);
    // A slip of a letter or two, or another ending of the same word (`retry` for `retries`).
    const near = distance <= Math.min(2, name.length >> 2) || (distance <= 3 && commonStart(option, typed) >= 4);
    if (near && distance < least) {
      nearest = name;
      least = distance;
    }
  }
  return nearest;
}

/** How many characters `a` and `b` begin with alike. */
function commonStart(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** Levenshtein distance (option names are short). */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        (row[j] ?? 0) + 1,
        (next[j - 1] ?? 0) + 1,
        (row[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length] ?? 0;
}

/** The keys the object schema at `path` knows (through optionals, unions and arrays). */
function keysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let found: unknown[] = [schema];
  for (const part of [...path, undefined]) {
    const next: unknown[] = [];
    for (const candidate of found.flatMap(unwrap)) {
      if (candidate instanceof z.ZodObject) {
        if (part === undefined) return Object.keys(candidate.shape);
        const child = (candidate.shape as Record<string, unknown>)[String(part)];
        if (child !== undefined) next.push(child);
      } else if (candidate instanceof z.ZodArray && typeof part === 'number') {
        next.push(candidate.element);
      }
    }
    found = next;
  }
  return [];
}

function unwrap(schema: unknown): unknown[] {
  if (schema instanceof z.ZodOptional) return unwrap(schema.unwrap());
  if (schema instanceof z.ZodUnion) return (schema.options as unknown[]).flatMap(unwrap);
  return [schema];
}

/**
 * How a value is named in a message: numbers and literals as they are, strings by type only, an instance of a class by
 * its class (`a Map`), never by what it holds.
 */
export function shown(value: unknown): string {
  if (value === null || value === undefined || typeof value === 'number' || typeof value === 'boolean') {
    return String(value);
  }
  if (typeof value === 'function') return 'a function';
  if (value === '') return 'an empty string';
  if (typeof value !== 'object') return `a ${typeof value}`;
  try {
    if (value instanceof Promise) return 'a promise (missing await?)';
    if (Array.isArray(value)) return 'an array';
    const name = className(value);
    return name === undefined ? 'an object' : `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}`;
  } catch {
    return 'an object'; // a proxy whose trap throws
  }
}

/** The name of the class `value` was made by, or undefined for a plain object. */
function className(value: object): string | undefined {
  const prototype: unknown = Object.getPrototypeOf(value);
  if (prototype === null || prototype === Object.prototype) return undefined;
  const name: unknown = Object.getOwnPropertyDescriptor(prototype, 'constructor')?.value?.name;
  return typeof name === 'string' && /^[A-Za-z_$][\w$]{0,63}$/.test(name) && name !== 'Object' ? name : undefined;
}

/**
 * An object of any string-keyed members, each checked apart by its user (`tokens` keyed by the token itself), whose
 * wrong-type message says what was `expected` (`an object of tokens`).
 */
export function recordOption(expected: string) {
  return z.record(z.string(), z.unknown(), { error: (issue) => `expected ${expected}, got ${shown(issue.input)}` });
}

/** `z.strictObject` whose wrong-type message says what was `expected` (`an options object with apiKey`). */
export function optionsObject<Shape extends z.core.$ZodLooseShape>(shape: Shape, expected: string) {
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'invalid_type' ? `expected ${expected}, got ${shown(issue.input)}` : undefined),
  });
}
