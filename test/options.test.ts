/**
 * Misuse by a developer fails at construction, with the option named and
 * what was expected: every message below is what the developer reads.
 */

import { Redis as IoRedis } from 'ioredis';
import { createClient } from 'redis';
import { describe, expect, it } from 'vitest';
import {
  type CredentialRequest,
  createGate,
  type GateOptions,
  introspection,
  onlineOrNot,
  type PartooOptions,
  type Provider,
  partoo,
  type Verdict,
} from '../src/index.js';
import { redisCache } from '../src/redis/index.js';
import { stubProvider } from '../src/testing/index.js';

const provider = stubProvider({ tokens: {} });

/** createGate with a Redis client (never connected) passed as the shared tier itself. */
const gateOnClient = (make: () => object) => () => {
  const client = make() as { disconnect?: () => void };
  try {
    createGate({ providers: [provider], sharedCache: client as never });
  } finally {
    client.disconnect?.();
  }
};
/** The least shared tier: get, set and delete. */
const tier = { get: async () => undefined, set: async () => {}, delete: async () => {} };
const gateWith = (extra: Record<string, unknown>) => () =>
  createGate({ providers: [provider], ...extra } as unknown as GateOptions);

describe('createGate options', () => {
  it.each([
    [
      'no options at all',
      () => (createGate as (o?: unknown) => unknown)(),
      TypeError,
      'createGate: expected an options object with providers, got undefined',
    ],
    [
      'a factory instead of a provider',
      () => createGate({ providers: [onlineOrNot as never] }),
      TypeError,
      'createGate: providers[0]: expected a provider, got a function: call the factory (onlineOrNot(), not onlineOrNot)',
    ],
    [
      'another factory instead of a provider',
      () => createGate({ providers: [partoo as never] }),
      TypeError,
      'createGate: providers[0]: expected a provider, got a function: call the factory (partoo(), not partoo)',
    ],
    [
      'a function without a name instead of a provider',
      () => createGate({ providers: [(() => () => {})() as never] }),
      TypeError,
      'createGate: providers[0]: expected a provider, got a function: call its factory, such as onlineOrNot()',
    ],
    ['no provider', gateWith({ providers: [] }), TypeError, 'createGate: providers: expected at least one provider'],
    [
      'a provider left out by a condition (undefined in the list)',
      gateWith({ providers: [provider, undefined] }),
      TypeError,
      'createGate: providers[1]: expected a provider, got undefined',
    ],
    [
      'options not awaited',
      () => createGate(Promise.resolve({ providers: [provider] }) as never),
      TypeError,
      'createGate: got a promise (missing await?)',
    ],
    [
      // A proxy whose getPrototypeOf trap throws: the option is still named, not the trap's error thrown instead.
      'providers given as a hostile proxy',
      () =>
        createGate({
          providers: new Proxy(
            {},
            {
              getPrototypeOf() {
                throw new Error('trap');
              },
            },
          ),
        } as never),
      TypeError,
      'createGate: providers: expected an array of providers, got an object',
    ],
    [
      'a provider not awaited',
      gateWith({ providers: [Promise.resolve(provider)] }),
      TypeError,
      'createGate: providers[0]: got a promise (missing await?)',
    ],
    [
      'cache options not awaited',
      gateWith({ cache: Promise.resolve({ ttl: 5 }) }),
      TypeError,
      'createGate: cache: got a promise (missing await?)',
    ],
    [
      'a second Bearer provider, which the first always answers for',
      () =>
        createGate({
          providers: [
            partoo({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9' }),
            onlineOrNot({ baseUrl: 'http://127.0.0.1:9' }),
            stubProvider({ tokens: {} }),
          ],
        }),
      TypeError,
      'createGate: providers[2]: stub is never asked: providers[1] (onlineornot) finds every credential it would first; keep one of them',
    ],
    [
      'a second Partoo provider reading the same query parameters',
      () =>
        createGate({
          providers: [
            partoo({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9' }),
            partoo({ apiKey: 'other-key', baseUrl: 'http://127.0.0.1:9', name: 'second' }),
          ],
        }),
      TypeError,
      'createGate: providers[1]: second is never asked: providers[0] (partoo) finds every credential it would first; keep one of them',
    ],
    ['a top-level ttl', gateWith({ ttl: 5 }), TypeError, 'createGate: ttl: unknown option (did you mean cache.ttl?)'],
    [
      'cache.TTL',
      gateWith({ cache: { TTL: 5 } }),
      TypeError,
      'createGate: cache.TTL: unknown option (did you mean ttl?)',
    ],
    [
      'retry.retry, another ending of retries',
      gateWith({ retry: { retry: 2 } }),
      TypeError,
      'createGate: retry.retry: unknown option (did you mean retries?)',
    ],
    [
      'cache.negativeTTL, nearest negativeTtl though negativeMax is near too',
      gateWith({ cache: { negativeTTL: 5 } }),
      TypeError,
      'createGate: cache.negativeTTL: unknown option (did you mean negativeTtl?)',
    ],
    [
      'cache.ttl 0',
      gateWith({ cache: { ttl: 0 } }),
      RangeError,
      'createGate: cache.ttl: expected a number >= 1, got 0',
    ],
    [
      'cache.ttl past the largest safe integer, which has no upper bound of its own',
      gateWith({ cache: { ttl: 1e16 } }),
      RangeError,
      'createGate: cache.ttl: expected a number >= 1 and <= 9007199254740991, got 10000000000000000',
    ],
    [
      'cache.max 1.5',
      gateWith({ cache: { max: 1.5 } }),
      RangeError,
      'createGate: cache.max: expected an integer >= 1 and <= 10000000, got 1.5',
    ],
    [
      'retry.retries -1',
      gateWith({ retry: { retries: -1 } }),
      RangeError,
      'createGate: retry.retries: expected an integer >= 0 and <= 10, got -1',
    ],
    [
      'retry.retries past 10 (each is a provider call for one request)',
      gateWith({ retry: { retries: 1_000_000, baseDelay: 0 } }),
      RangeError,
      'createGate: retry.retries: expected an integer >= 0 and <= 10, got 1000000',
    ],
    [
      'a cache.max the cache could not set aside room for',
      gateWith({ cache: { max: 2 ** 32 + 1 } }),
      RangeError,
      'createGate: cache.max: expected an integer >= 1 and <= 10000000, got 4294967297',
    ],
    [
      'a cache.negativeMax as large',
      gateWith({ cache: { negativeMax: 1e9 } }),
      RangeError,
      'createGate: cache.negativeMax: expected an integer >= 1 and <= 10000000, got 1000000000',
    ],
    [
      'retry.baseDelay above retry.maxDelay (every backoff would be cut to maxDelay)',
      gateWith({ retry: { baseDelay: 5000, maxDelay: 10 } }),
      RangeError,
      'createGate: retry.baseDelay: expected at most maxDelay (10), got 5000',
    ],
    [
      "retry.baseDelay above maxDelay's default",
      gateWith({ retry: { baseDelay: 2000 } }),
      RangeError,
      'createGate: retry.baseDelay: expected at most maxDelay (1000, its default), got 2000',
    ],
    [
      'onEvent a number (a wrong type, not a number out of range)',
      gateWith({ onEvent: 5 }),
      TypeError,
      'createGate: onEvent: expected a function, got 5',
    ],
    [
      'admission.clientKey a number',
      gateWith({ admission: { clientKey: 5 } }),
      TypeError,
      'createGate: admission.clientKey: expected a function, got 5',
    ],
    [
      'retry as a string',
      gateWith({ retry: 'no' }),
      TypeError,
      'createGate: retry: expected false or a retry options object, got a string',
    ],
    [
      'breaker.threshold 0',
      gateWith({ breaker: { threshold: 0 } }),
      RangeError,
      'createGate: breaker.threshold: expected an integer >= 1, got 0',
    ],
    [
      'timeout Infinity',
      gateWith({ timeout: Number.POSITIVE_INFINITY }),
      RangeError,
      'createGate: timeout: expected a number >= 1 and <= 2147483647, got Infinity',
    ],
    [
      "a timeout past Node's timers (which would fire at once)",
      gateWith({ timeout: 2 ** 31 }),
      RangeError,
      'createGate: timeout: expected a number >= 1 and <= 2147483647, got 2147483648',
    ],
    [
      'a breaker cooldown past them',
      gateWith({ breaker: { cooldown: 30 * 86_400_000 } }),
      RangeError,
      'createGate: breaker.cooldown: expected a number >= 0 and <= 2147483647, got 2592000000',
    ],
    [
      'a realm with a quote',
      gateWith({ realm: 'a"b' }),
      TypeError,
      'createGate: realm: expected printable ASCII without " or \\',
    ],
    [
      'an async admission.clientKey (its key would be a promise)',
      gateWith({ admission: { clientKey: async () => 'tenant' } }),
      TypeError,
      'createGate: admission.clientKey: expected a function returning a string, got an async function',
    ],
    [
      'a realm too long for every challenge to carry',
      gateWith({ realm: 'r'.repeat(257) }),
      TypeError,
      'createGate: realm: expected at most 256 characters',
    ],
    [
      'onEvent not a function',
      gateWith({ onEvent: 'log' }),
      TypeError,
      'createGate: onEvent: expected a function, got a string',
    ],
    [
      'a shared cache without methods',
      gateWith({ sharedCache: {} }),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }) such as redisCache(client), got an object without get, set, delete',
    ],
    [
      'a client with get, set and del but no delete',
      gateWith({ sharedCache: { get() {}, set() {}, del() {} } }),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }) such as redisCache(client), got an object without delete',
    ],
    [
      'an ioredis client instead of a tier',
      gateOnClient(() => new IoRedis({ lazyConnect: true })),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }), got a Redis client: wrap it, sharedCache: redisCache(client) from tokengate/redis',
    ],
    [
      'a node-redis client instead of a tier',
      gateOnClient(() => createClient()),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }), got a Redis client: wrap it, sharedCache: redisCache(client) from tokengate/redis',
    ],
    [
      'the tier factory itself',
      gateWith({ sharedCache: redisCache as never }),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }), got a function: call the factory (redisCache(client), not redisCache)',
    ],
    [
      'a tier that leases but cannot wait',
      gateWith({ sharedCache: { ...tier, lease() {} } }),
      TypeError,
      'createGate: sharedCache.waitFor: expected lease and waitFor together, or neither',
    ],
    [
      "a tier's timeout as a string",
      gateWith({ sharedCache: { ...tier, timeout: '50' } }),
      TypeError,
      'createGate: sharedCache.timeout: expected a number >= 1 and <= 2147483647, got a string',
    ],
    [
      "a tier's negative localTtl",
      gateWith({ sharedCache: { ...tier, localTtl: -5 } }),
      RangeError,
      'createGate: sharedCache.localTtl: expected a number >= 0, got -5',
    ],
    [
      "a tier's invalidate that is no function",
      gateWith({ sharedCache: { ...tier, invalidate: true } }),
      TypeError,
      'createGate: sharedCache.invalidate: expected a function, got true',
    ],
    [
      'a provider with an empty name',
      gateWith({ providers: [{ ...provider, name: '' }] }),
      TypeError,
      'createGate: providers[0].name: expected a non-empty string, got an empty string',
    ],
    [
      'a provider serving 0 verifications at once',
      gateWith({ providers: [{ ...provider, concurrency: 0 }] }),
      RangeError,
      'createGate: providers[0].concurrency: expected an integer >= 1, got 0',
    ],
    [
      'a provider reading an unnamed header',
      gateWith({ providers: [{ ...provider, source: 'header:' }] }),
      TypeError,
      'createGate: providers[0].source: expected a non-empty string, header:<lowercase field name> for a header, got a string',
    ],
    [
      'a provider reading a header named as it is sent, not as Node keys it',
      gateWith({ providers: [{ ...provider, source: 'header:Authorization' }] }),
      TypeError,
      'createGate: providers[0].source: expected a non-empty string, header:<lowercase field name> for a header, got a string',
    ],
    [
      'a provider whose name is a number: the wrong type, not a number out of range',
      gateWith({ providers: [{ ...provider, name: 5 }] }),
      TypeError,
      'createGate: providers[0].name: expected a non-empty string, got 5',
    ],
    [
      'a shared tier that is a number',
      gateWith({ sharedCache: 5 }),
      TypeError,
      'createGate: sharedCache: expected a shared tier ({ get, set, delete }), got 5',
    ],
    [
      'a provider without verify',
      gateWith({ providers: [{ ...provider, verify: undefined }] }),
      TypeError,
      'createGate: providers[0].verify: expected a function, got undefined',
    ],
    [
      'a top-level negativeMax',
      gateWith({ negativeMax: 5 }),
      TypeError,
      'createGate: negativeMax: unknown option (did you mean cache.negativeMax?)',
    ],
    [
      'a top-level maxWaiting',
      gateWith({ maxWaiting: 5 }),
      TypeError,
      'createGate: maxWaiting: unknown option (did you mean admission.maxWaiting?)',
    ],
  ])('%s', (_name, make, type, message) => {
    expect(make).toThrow(type);
    expect(make).toThrow(message);
  });

  it('takes promises where the options do not describe the value: a provider or a shared tier of its own', () => {
    const withJwks = { ...provider, jwks: Promise.resolve({ keys: [] }) };
    const readyTier = { ...tier, ready: Promise.resolve() };
    const gate = createGate({ providers: [withJwks], sharedCache: readyTier });
    return gate.close();
  });

  it('accepts every documented option, none of them at its default', async () => {
    const events: string[] = [];
    const gate = createGate({
      providers: [provider],
      realm: 'orders',
      timeout: 1000,
      cache: { max: 10, negativeMax: 5, ttl: 1000, negativeTtl: 0, staleIfError: 500 },
      retry: { retries: 1, baseDelay: 10, maxDelay: 100 },
      breaker: { threshold: 3, cooldown: 2000 },
      admission: { maxWaiting: 8, clientKey: () => 'one' },
      maxRetryAfter: 3000,
      sharedCache: tier,
      onEvent: (event) => events.push(event.type),
    });
    expect(gate.realm).toBe('orders');
    await expect(gate.authenticate({ headers: { authorization: 'Bearer SECRETnone1' } })).rejects.toMatchObject({
      status: 401,
      headers: { 'WWW-Authenticate': expect.stringMatching(/^Bearer realm="orders", error="invalid_token"/) },
    });
    expect(events).toContain('verify');
    return gate.close();
  });
});

describe('provider options', () => {
  const partooWith = (options: Record<string, unknown>) => () => partoo(options as unknown as PartooOptions);

  it.each([
    [
      'partoo() without options',
      () => (partoo as (o?: unknown) => unknown)(),
      TypeError,
      'partoo: expected an options object with apiKey, got undefined',
    ],
    [
      'options not awaited',
      () => partoo(Promise.resolve({ apiKey: 'k' }) as never),
      TypeError,
      'partoo: got a promise (missing await?)',
    ],
    [
      'a number where one of a few names belongs',
      () =>
        introspection({ endpoint: 'http://127.0.0.1:9/i', clientId: 'a', clientSecret: 'b', clientAuth: 1 } as never),
      TypeError,
      'introspection: clientAuth: expected basic or post',
    ],
    [
      "an issuer given as its metadata document's URL",
      () =>
        introspection({
          issuer: 'https://127.0.0.1:9/realms/acme/.well-known/openid-configuration',
          clientId: 'a',
          clientSecret: 'b',
        }),
      TypeError,
      'introspection: issuer: expected the issuer identifier (the `issuer` its metadata names), not the URL of a metadata document under /.well-known/',
    ],
    [
      'a required option misspelled: the misspelling is named, not the option as missing',
      partooWith({ apikey: 'k' }),
      TypeError,
      'partoo: apikey: unknown option (did you mean apiKey?)',
    ],
    [
      'an apiKey of a number',
      partooWith({ apiKey: 123 }),
      TypeError,
      'partoo: apiKey: expected a non-empty string, got a number',
    ],
    [
      'an empty apiKey',
      partooWith({ apiKey: '' }),
      TypeError,
      'partoo: apiKey: expected a non-empty string, got an empty string',
    ],
    [
      'an apiKey read from a file with its newline',
      partooWith({ apiKey: 'SECRETkey\n' }),
      TypeError,
      'partoo: apiKey: expected characters an HTTP header can carry: no line break (read from a file?)',
    ],
    [
      'an apiKey with another control character',
      partooWith({ apiKey: 'SECRET\u0001key' }),
      TypeError,
      'partoo: apiKey: expected characters an HTTP header can carry: no control character but tab',
    ],
    [
      'an apiKey with a character past U+00FF (Latin-1 é is one a header can carry, € is not)',
      partooWith({ apiKey: 'SECRETclé€' }),
      TypeError,
      'partoo: apiKey: expected characters an HTTP header can carry: no character past U+00FF',
    ],
    [
      'an apiKey with all three',
      partooWith({ apiKey: 'SECRET\u2603\u007fkey\r\n' }),
      TypeError,
      'partoo: apiKey: expected characters an HTTP header can carry: no line break (read from a file?), no control character but tab, no character past U+00FF',
    ],
    [
      'permissions as a string',
      partooWith({ apiKey: 'k', permissions: 'read' }),
      TypeError,
      'partoo: permissions: expected an array of strings, got a string',
    ],
    [
      'the same query names',
      partooWith({ apiKey: 'k', query: { userId: 'id', token: 'id' } }),
      TypeError,
      'partoo: query: expected userId and token to differ',
    ],
    [
      'an unknown status',
      partooWith({ apiKey: 'k', accept: ['valid', 'maybe'] }),
      TypeError,
      'partoo: accept[1]: expected valid, consumed, revoked or expired',
    ],
    [
      'a URL without a scheme',
      () => onlineOrNot({ baseUrl: 'api.onlineornot.com' }),
      TypeError,
      'onlineOrNot: baseUrl: expected an absolute http(s) URL, got a string that is not a URL (write it with its scheme: https://...)',
    ],
    [
      'a secret given for the URL (a key in the wrong place)',
      () => onlineOrNot({ baseUrl: 'sk_live_SECRETwrongPlace' }),
      TypeError,
      'onlineOrNot: baseUrl: expected an absolute http(s) URL, got a string that is not a URL (write it with its scheme: https://...)',
    ],
    [
      'a key:secret pair given for the URL (a URL of scheme key: to the parser)',
      () => onlineOrNot({ baseUrl: 'admin:SECREThunter2' }),
      TypeError,
      'onlineOrNot: baseUrl: expected an absolute http(s) URL, got a URL that is not http or https',
    ],
    [
      'a URL of another scheme, its password not shown',
      () => onlineOrNot({ baseUrl: 'postgres://admin:SECRETpassword@127.0.0.1/db' }),
      TypeError,
      'onlineOrNot: baseUrl: expected an absolute http(s) URL, got a URL that is not http or https',
    ],
    [
      'plain http with a secret in the query: shown without it',
      () =>
        introspection({
          endpoint: 'http://idp.example/introspect?client_secret=SECRETinQuery',
          clientId: 'c',
          clientSecret: 's',
        }),
      TypeError,
      'introspection: endpoint: expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got "http://idp.example"',
    ],
    [
      'a URL with credentials',
      () => onlineOrNot({ baseUrl: 'https://u:p@127.0.0.1' }),
      TypeError,
      'onlineOrNot: baseUrl: expected a URL without credentials, query or fragment',
    ],
    [
      'connections 0',
      () => onlineOrNot({ connections: 0 }),
      RangeError,
      'onlineOrNot: connections: expected an integer >= 1 and <= 1024, got 0',
    ],
    [
      'plain http to a host across a network: every token would travel in clear',
      () => onlineOrNot({ baseUrl: 'http://api.onlineornot.example' }),
      TypeError,
      'onlineOrNot: baseUrl: expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got "http://api.onlineornot.example"',
    ],
    [
      'plain http to Partoo across a network: the API key too',
      partooWith({ apiKey: 'k', baseUrl: 'http://partoo.example/v2' }),
      TypeError,
      'partoo: baseUrl: expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got "http://partoo.example"',
    ],
    [
      'an unknown option',
      () => onlineOrNot({ baseURL: 'http://127.0.0.1' } as never),
      TypeError,
      'onlineOrNot: baseURL: unknown option (did you mean baseUrl?)',
    ],
  ])('%s', (_name, make, type, message) => {
    expect(make).toThrow(type);
    expect(make).toThrow(message);
  });

  it('takes plain http on loopback hosts, and anywhere with allowInsecureRequests', () => {
    for (const baseUrl of ['http://127.0.0.1:9', 'http://localhost:9', 'http://[::1]:9', 'https://partoo.example/v2']) {
      expect(() => onlineOrNot({ baseUrl })).not.toThrow();
      expect(() => partoo({ apiKey: 'k', baseUrl })).not.toThrow();
    }
    const baseUrl = 'http://partoo.internal/v2';
    expect(() => onlineOrNot({ baseUrl, allowInsecureRequests: true })).not.toThrow();
    expect(() => partoo({ apiKey: 'k', baseUrl, allowInsecureRequests: true })).not.toThrow();
  });

  it.each([
    [
      'stubProvider() without options',
      undefined,
      'stubProvider: expected an options object with tokens, got undefined',
    ],
    ['no tokens', { name: 'stub' }, 'stubProvider: tokens: expected an object of tokens, got undefined'],
    ['tokens misspelled', { token: {} }, 'stubProvider: token: unknown option (did you mean tokens?)'],
    // A class instance is named by its class, which tells a Map from the object expected; never by what it holds.
    [
      'tokens given as a Map',
      { tokens: new Map([['SECRETstub1', { subject: 'a' }]]) },
      'stubProvider: tokens: expected an object of tokens, got a Map',
    ],
    [
      'tokens given as bytes',
      { tokens: new Uint8Array(2) },
      'stubProvider: tokens: expected an object of tokens, got a Uint8Array',
    ],
    [
      'a token given as its subject',
      { tokens: { SECRETstub1: 'alice' } },
      'stubProvider: tokens (entry 1): expected a token ({ subject, permissions?, expiresAt? }), got a string',
    ],
    [
      'a key no Bearer header can carry',
      { tokens: { ok: { subject: 'a' }, 'SECRET stub': { subject: 'b' } } },
      'stubProvider: tokens (entry 2): expected a b64token (RFC 6750) as the key',
    ],
    [
      'an empty subject',
      { tokens: { SECRETstub1: { subject: '' } } },
      'stubProvider: tokens (entry 1): subject: expected a non-empty string, got an empty string',
    ],
    [
      'a misspelt field',
      { tokens: { SECRETstub1: { subject: 'a', permisions: ['read'] } } },
      'stubProvider: tokens (entry 1): permisions: unknown option (did you mean permissions?)',
    ],
    [
      'a date given as a string',
      { tokens: { SECRETstub1: { subject: 'a', expiresAt: '2099-01-01' } } },
      'stubProvider: tokens (entry 1): expiresAt: expected a valid Date, got a string',
    ],
    [
      'an invalid date',
      { tokens: { SECRETstub1: { subject: 'a', expiresAt: new Date('soon') } } },
      'stubProvider: tokens (entry 1): expiresAt: expected a valid Date, got Invalid Date',
    ],
    ['an unknown option', { tokens: {}, names: 'x' }, 'stubProvider: names: unknown option (did you mean name?)'],
  ])('%s', (_name, options, message) => {
    const make = () => stubProvider(options as never);
    expect(make).toThrow(TypeError);
    expect(make).toThrow(message);
    expect(make).not.toThrow(/SECRET/);
  });

  it('takes providers of one class, whose shared extract reads what each instance was made with', () => {
    class HeaderKey implements Provider {
      readonly cacheScope: string;
      constructor(
        readonly name: string,
        readonly header: string,
      ) {
        this.cacheScope = `header-key:${header}`;
      }
      extract(req: CredentialRequest) {
        const value = req.headers[this.header];
        return typeof value === 'string' ? { source: `header:${this.header}`, secret: value } : undefined;
      }
      async verify(): Promise<Verdict> {
        return { ok: true, principal: { subject: this.name, permissions: [], details: {} } };
      }
    }
    const gate = createGate({ providers: [new HeaderKey('a', 'x-a-key'), new HeaderKey('b', 'x-b-key')] });
    return expect(gate.authenticate({ headers: { 'x-b-key': 'k' } })).resolves.toMatchObject({ subject: 'b' });
  });

  it('never echoes an API key in an option error', () => {
    const make = partooWith({ apiKey: 42, baseUrl: 'nope' });
    expect(make).toThrow('partoo: apiKey: expected a non-empty string, got a number');
    expect(() => partoo({ apiKey: 'SECRETkey', baseUrl: 'nope' })).toThrow(/^partoo: baseUrl: .*not a URL/);
    expect(() => partoo({ apiKey: 'SECRETkey', baseUrl: 'SECRETkey' })).not.toThrow(/SECRET/);
    expect(() => partoo({ apiKey: 'SECRETkey', name: '' })).not.toThrow(/SECRET/);
    // A key a header cannot carry is named by what is wrong with it, never by the character nor where it is.
    expect(() => partoo({ apiKey: 'SECRETclé€\n' })).toThrow(/^partoo: apiKey: /);
    expect(() => partoo({ apiKey: 'SECRETclé€\n' })).not.toThrow(/SECRET|€|20AC/);
    expect(() => partoo({ apiKey: 'SECRETclé' })).not.toThrow();
  });
});

describe('two Partoo providers', () => {
  it('are both asked when they read different query parameters', async () => {
    const gate = createGate({
      providers: [
        stubProvider({ tokens: {} }),
        partoo({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9' }),
        partoo({ apiKey: 'k2', baseUrl: 'http://127.0.0.1:9', name: 'second', query: { userId: 'uid', token: 'ct' } }),
      ],
      retry: false,
      timeout: 200,
    });
    const statusOf = (query: Record<string, string>) =>
      gate.authenticate({ headers: {}, query }).then(
        () => 200,
        (error: { status: number; message: string }) => error.message,
      );
    expect(await statusOf({ user_id: 'u', token: 't' })).toBe('Token provider partoo is unavailable');
    expect(await statusOf({ uid: 'u', ct: 't' })).toBe('Token provider second is unavailable');
    await gate.close();
  });
});
