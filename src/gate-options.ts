/**
 * The options of `createGate`, documented where they are defined, and the
 * schema that checks them once, at construction.
 */
import { z } from 'zod';
import type { EventListener } from './events.js';
import { checkOptions, durationOption, nameOption, numberOption, optionsObject, shown } from './options.js';
import { type BreakerOptions, DEFAULT_COOLDOWN_MS, type RetryOptions, type RetryPolicy } from './resilience.js';
import type { SharedTier } from './shared-tier.js';
import type { CacheOptions } from './store.js';
import type { CredentialRequest, Provider } from './types.js';

/** Options of `createGate`. Times are in milliseconds. */
export interface GateOptions {
  /**
   * Providers, in order. Each looks for its own kind of credential; the
   * first that finds one handles the request, and its rejection is final
   * (no fallback to the next). Credentials in two places at once are a 400.
   */
  readonly providers: readonly Provider[];
  /** `realm` of the `WWW-Authenticate` challenge: printable ASCII without `"` or `\`, at most 256 characters. Default `"api"`. */
  readonly realm?: string | undefined;
  /**
   * Overall deadline for verifying one credential, in ms, retries included. With a shared tier, a request that waited for
   * another instance's answer ends by `timeout` plus the tier's own `timeout`; its verification goes on meanwhile,
   * with a whole `timeout` of its own, and its answer is kept. Default 5000.
   */
  readonly timeout?: number | undefined;
  /** The in-process cache of verdicts; see {@link CacheOptions}. */
  readonly cache?: CacheOptions | undefined;
  /**
   * A cache tier shared by several instances of the app, asked after the
   * in-process cache and before the provider. A failing or slow tier is a
   * miss, never a pass. See {@link SharedTier}.
   */
  readonly sharedCache?: SharedTier | undefined;
  /** Retries of failed upstream calls; `false` turns them off. See {@link RetryOptions}. */
  readonly retry?: RetryOptions | false | undefined;
  /** Circuit breaker per provider; `false` turns it off. See {@link BreakerOptions}. */
  readonly breaker?: BreakerOptions | false | undefined;
  /** Admission of cold verifications to each provider; see {@link AdmissionOptions}. */
  readonly admission?: AdmissionOptions | undefined;
  /**
   * Longest `Retry-After` the gate passes on to clients in a 503, whatever a
   * provider asked for (whole seconds of it: 1500 sends at most 1), and longest pause it honours after a provider's 429
   * (the breaker pauses calls: with `breaker: false`, a 429 is only retried
   * after its backoff or `Retry-After`). In ms, at least 1000. Default the breaker's `cooldown` (10 000; also with `breaker: false`), or 1000 if that is less.
   */
  readonly maxRetryAfter?: number | undefined;
  /**
   * Receives gate events (cache, verify, retry, breaker, errors) for logs and metrics, synchronously on the request's
   * path (see {@link EventListener}: keep it cheap).
   */
  readonly onEvent?: EventListener | undefined;
}

/**
 * Admission: each provider serves at most `Provider.concurrency`
 * verifications at once (its pool's size); others wait, shared fairly
 * between clients, and past `maxWaiting` a new credential gets a fast 503
 * `overloaded` with `Retry-After: 1`, without an upstream call. Cached
 * answers never wait.
 */
export interface AdmissionOptions {
  /** Most verifications waiting per provider. Default four times its concurrency. */
  readonly maxWaiting?: number | undefined;
  /**
   * The client a request counts for, in fairness. Default the request's `ip`
   * (Express `req.ip`, Koa `ctx.ip`), else its connection's remote address;
   * an IPv6 address by its /56, an IPv4 one written as IPv6 (mapped, NAT64) as IPv4.
   * Called only for a verification that has to wait for a slot: fairness is
   * between waiters, and Express works `req.ip` out anew on each read. A
   * synchronous function: an async one is refused at startup, and a value
   * that is not a string (a header the client left out) counts the request
   * by its address, as by default.
   */
  readonly clientKey?: ((req: CredentialRequest) => string) | undefined;
}

/** Gate options with every default filled in. */
export interface ResolvedGateOptions {
  readonly providers: readonly Provider[];
  readonly realm: string;
  readonly timeout: number;
  readonly cache: CacheOptions;
  readonly sharedCache: SharedTier | undefined;
  readonly retry: RetryPolicy | undefined;
  readonly breaker: BreakerOptions | undefined;
  readonly maxRetryAfter: number;
  readonly admission: AdmissionOptions;
  readonly onEvent: EventListener | undefined;
}

const fn = (what: string) =>
  z.custom<(...args: never[]) => unknown>((value) => typeof value === 'function', {
    error: (issue) => `expected ${what}, got ${shown(issue.input)}`,
  });

/** A `header:` source names one header as Node's `req.headers` keys it: a lowercase field name. */
const HEADER_SOURCE = /^header:[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** What a provider or shared tier must hold: each field wrong is an issue under its own name. */
type FieldCheck = readonly [field: string, schema: z.ZodType];

const PROVIDER_FIELDS: readonly FieldCheck[] = [
  ['name', nameOption],
  [
    'cacheScope',
    z
      .string({ error: (issue) => `expected a string without NUL, got ${shown(issue.input)}` })
      .refine((scope) => !scope.includes('\0'), { error: 'expected a string without NUL' }),
  ],
  ['extract', fn('a function')],
  ['verify', fn('a function')],
  [
    'source',
    z
      .string({ error: (issue) => `expected a non-empty string, got ${shown(issue.input)}` })
      .refine((source) => source !== '' && (!source.startsWith('header:') || HEADER_SOURCE.test(source)), {
        error: 'expected a non-empty string, header:<lowercase field name> for a header, got a string',
      })
      .optional(),
  ],
  ['concurrency', numberOption(1, { integer: true }).optional()],
  ['close', fn('a function').optional()],
];

const SHARED_TIER_FIELDS: readonly FieldCheck[] = [
  ...['lease', 'waitFor', 'invalidate', 'onInvalidate', 'onReconnect', 'close'].map(
    (method) => [method, fn('a function').optional()] as const,
  ),
  ['timeout', durationOption(1).optional()],
  ['localTtl', numberOption(0).optional()],
];

/**
 * An object (class instances included: methods may live on its prototype) whose `fields` pass their checks.
 * `factory` names what makes one, for the message when the factory itself was passed.
 */
function objectWith<T>(
  fields: readonly FieldCheck[],
  expected: string,
  factory: string,
  refine?: (value: T, context: z.RefinementCtx) => void,
) {
  return z.unknown().superRefine((value, context) => {
    if (typeof value !== 'object' || value === null) {
      context.addIssue({
        code: 'invalid_type',
        expected: 'object',
        input: value,
        message:
          typeof value === 'function'
            ? `expected ${expected}, got a function: ${callIt(value, factory)}`
            : `expected ${expected}, got ${shown(value)}`,
      });
      return;
    }
    const record = value as Record<string, unknown>;
    for (const [field, schema] of fields) {
      const checked = schema.safeParse(record[field]);
      const issue = checked.error?.issues[0];
      // Reported as the field's own check found it (its code says whether a number was out of range or of the wrong type).
      if (issue !== undefined)
        context.addIssue({ ...issue, path: [field, ...issue.path], input: record[field] } as never);
    }
    refine?.(value as T, context);
  }) as unknown as z.ZodType<T>;
}

/** The hint for a factory passed uncalled: named by the function's own name when it has one (`partoo`), else by `factory`. */
function callIt(value: { readonly name: string }, factory: string): string {
  if (!/^[A-Za-z_$][\w$]*$/.test(value.name)) return `call its factory, such as ${factory}`;
  const parameters = /\(.*\)$/.exec(factory)?.[0] ?? '()';
  return `call the factory (${value.name}${parameters}, not ${value.name})`;
}

const ProviderSchema = objectWith<Provider>(PROVIDER_FIELDS, 'a provider', 'onlineOrNot()');

const SharedTierSchema = objectWith<SharedTier>(
  SHARED_TIER_FIELDS,
  'a shared tier ({ get, set, delete })',
  'redisCache(client)',
  (tier, context) => {
    const missing = (['get', 'set', 'delete'] as const).filter((method) => typeof tier[method] !== 'function');
    if (missing.length > 0) {
      const client = tier as unknown as Record<string, unknown>;
      // ioredis and node-redis clients (and clusters) have `del` and `duplicate`, and no `delete`.
      const redisClient = typeof client.del === 'function' && typeof client.duplicate === 'function';
      context.addIssue({
        code: 'custom',
        message: redisClient
          ? 'expected a shared tier ({ get, set, delete }), got a Redis client: wrap it, sharedCache: redisCache(client) from tokengate/redis'
          : `expected a shared tier ({ get, set, delete }) such as redisCache(client), got an object without ${missing.join(', ')}`,
      });
      return;
    }
    // Single flight across instances takes both: a lease nobody can wait on would only add a command.
    if ((tier.lease === undefined) !== (tier.waitFor === undefined)) {
      context.addIssue({
        code: 'custom',
        path: [tier.lease === undefined ? 'lease' : 'waitFor'],
        message: 'expected lease and waitFor together, or neither',
      });
    }
  },
);

/**
 * The most entries `cache.max` and `cache.negativeMax` take: the cache sets aside room for all of them when it is made
 * (about 18 bytes each, before any entry), so a mistyped size fails here rather than run out of memory.
 */
const MAX_CACHE_ENTRIES = 10_000_000;
/** The most retries: each is a call to the provider for one request. */
const MAX_RETRIES = 10;
/** The longest realm: it is in every 401 and 403's `WWW-Authenticate`. */
const MAX_REALM_LENGTH = 256;

/** The least `maxRetryAfter`: `Retry-After` counts in whole seconds. */
const MIN_RETRY_AFTER_MS = 1000;

const CacheOptionsSchema = optionsObject(
  {
    max: numberOption(1, { integer: true, max: MAX_CACHE_ENTRIES }).optional(),
    negativeMax: numberOption(1, { integer: true, max: MAX_CACHE_ENTRIES }).optional(),
    ttl: numberOption(1).optional(),
    negativeTtl: numberOption(0).optional(),
    staleIfError: numberOption(0).optional(),
  },
  'a cache options object',
);

/**
 * Refuses a provider no request can reach: one whose `extract` is the very function of a provider
 * before it, with the same declared `source` (`onlineOrNot()` then `introspection()`: both take any
 * Bearer token, and the first always answers). A declared source promises that `extract` reads that
 * place alone, so the two find the same credentials; without one, a shared `extract` (a class's
 * method) may read what each provider was made with.
 */
function checkReachable(providers: readonly Provider[], context: z.RefinementCtx): void {
  providers.forEach((provider, index) => {
    // Elements that are not providers have an issue of their own already.
    if (typeof provider !== 'object' || provider === null || provider.source === undefined) return;
    const first = providers.findIndex(
      (other) => typeof other === 'object' && other?.extract === provider.extract && other.source === provider.source,
    );
    if (first === index) return;
    context.addIssue({
      code: 'custom',
      path: [index],
      message: `${provider.name} is never asked: providers[${first}] (${providers[first]?.name}) finds every credential it would first; keep one of them`,
    });
  });
}

/** Defaults of `retry.baseDelay` and `retry.maxDelay`, ms. */
const DEFAULT_BASE_DELAY_MS = 50;
const DEFAULT_MAX_DELAY_MS = 1000;

const GateOptionsSchema = optionsObject(
  {
    providers: z
      .array(ProviderSchema, { error: (issue) => `expected an array of providers, got ${shown(issue.input)}` })
      .min(1, { error: 'expected at least one provider' })
      .superRefine(checkReachable),
    realm: z
      .string({ error: 'expected a string' })
      .regex(/^[\x20\x21\x23-\x5b\x5d-\x7e]+$/, { error: 'expected printable ASCII without " or \\' })
      .max(MAX_REALM_LENGTH, { error: `expected at most ${MAX_REALM_LENGTH} characters` })
      .optional(),
    timeout: durationOption(1).optional(),
    cache: CacheOptionsSchema.optional(),
    sharedCache: SharedTierSchema.optional(),
    retry: z
      .union([
        z.literal(false),
        optionsObject(
          {
            retries: numberOption(0, { integer: true, max: MAX_RETRIES }).optional(),
            baseDelay: durationOption(0).optional(),
            maxDelay: durationOption(0).optional(),
          },
          'false or a retry options object',
        ).superRefine(({ baseDelay, maxDelay = DEFAULT_MAX_DELAY_MS }, context) => {
          // maxDelay caps every backoff: a baseDelay given above it would be cut to it without a word.
          if (baseDelay !== undefined && baseDelay > maxDelay) {
            context.addIssue({
              code: 'too_big',
              origin: 'number',
              maximum: maxDelay,
              inclusive: true,
              input: baseDelay,
              path: ['baseDelay'],
              message: `expected at most maxDelay (${maxDelay}${maxDelay === DEFAULT_MAX_DELAY_MS ? ', its default' : ''}), got ${baseDelay}`,
            });
          }
        }),
      ])
      .optional(),
    breaker: z
      .union([
        z.literal(false),
        optionsObject(
          { threshold: numberOption(1, { integer: true }).optional(), cooldown: durationOption(0).optional() },
          'false or a breaker options object',
        ),
      ])
      .optional(),
    maxRetryAfter: durationOption(MIN_RETRY_AFTER_MS).optional(),
    admission: optionsObject(
      {
        maxWaiting: numberOption(0, { integer: true }).optional(),
        // An async function's key would be a promise: every request a client of its own.
        clientKey: fn('a function')
          .refine((value) => value.constructor?.name !== 'AsyncFunction', {
            error: 'expected a function returning a string, got an async function',
          })
          .optional(),
      },
      'an admission options object',
    ).optional(),
    onEvent: fn('a function').optional(),
  },
  'an options object with providers',
);

/** Where unknown top-level keys most likely belong. */
const HINTS = {
  ttl: 'cache.ttl',
  max: 'cache.max',
  negativeMax: 'cache.negativeMax',
  negativeTtl: 'cache.negativeTtl',
  staleIfError: 'cache.staleIfError',
  retries: 'retry.retries',
  baseDelay: 'retry.baseDelay',
  maxDelay: 'retry.maxDelay',
  threshold: 'breaker.threshold',
  cooldown: 'breaker.cooldown',
  maxWaiting: 'admission.maxWaiting',
  clientKey: 'admission.clientKey',
  provider: 'providers',
  redis: 'sharedCache',
};

/**
 * Checks `options` and fills in the defaults.
 * @throws TypeError naming the first wrong option; RangeError when it is a number out of its range.
 */
export function resolveGateOptions(options: GateOptions): ResolvedGateOptions {
  checkOptions(GateOptionsSchema, options, 'createGate', HINTS);
  const { retry, breaker } = options;
  return {
    providers: options.providers,
    realm: options.realm ?? 'api',
    timeout: options.timeout ?? 5000,
    cache: options.cache ?? {},
    sharedCache: options.sharedCache,
    retry:
      retry === false
        ? undefined
        : {
            retries: retry?.retries ?? 2,
            baseDelay: retry?.baseDelay ?? DEFAULT_BASE_DELAY_MS,
            maxDelay: retry?.maxDelay ?? DEFAULT_MAX_DELAY_MS,
          },
    breaker: breaker === false ? undefined : (breaker ?? {}),
    maxRetryAfter:
      options.maxRetryAfter ??
      Math.max(MIN_RETRY_AFTER_MS, (breaker === false ? undefined : breaker?.cooldown) ?? DEFAULT_COOLDOWN_MS),
    admission: options.admission ?? {},
    onEvent: options.onEvent,
  };
}
