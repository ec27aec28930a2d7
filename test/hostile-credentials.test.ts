/**
 * Hostile and malformed credentials: property-based tests of the
 * parsers, of `gate.authenticate` with arbitrary request objects, and of a
 * real Express app fed arbitrary `Authorization` headers and query strings
 * (over raw sockets where Node's HTTP client refuses the bytes).
 *
 * Every case the app sees must end in 400 or 401 with the right
 * `WWW-Authenticate`, never a 500, and a malformed credential must never
 * reach a provider. Some bytes (NUL, other control characters, DEL, a lone
 * CR) never reach the app: Node's HTTP parser answers 400 itself. Those
 * values are also handed to the gate directly, as a framework that does not
 * parse with Node would hand them over.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuthError,
  type CredentialRequest,
  createGate,
  extractBearer,
  extractConnection,
  type Gate,
  type HeaderCredential,
  headerExtractor,
  onlineOrNot,
  type Provider,
  partoo,
} from '../src/index.js';
import { type MockOnlineOrNot, type MockPartoo, mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { rejectionOf, thrownBy } from './support/catch-auth-error.js';
import { gatedApp, listen } from './support/gated-app.js';
import { type RawResponse, rawGet } from './support/raw-http.js';

const VALID_TOKEN = 'VALIDtok_0123456789';
const VALID_CONN = { user_id: 'user-1', token: 'conn-0123456789' };
const API_KEY = 'api-key-for-tests';
const NAMES = { userId: 'user_id', token: 'token' };
/** The longest Bearer token the gate accepts; a longer one is a 400. */
const MAX_BEARER_LENGTH = 4096;

// The RFC 6750 grammar, written out here independently of the parser.
const B64_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/';
const WELL_FORMED_BEARER = /^bearer +[A-Za-z0-9\-._~+/]+=*$/i;
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

const CHALLENGE_ONLY = 'Bearer realm="api"';
const INVALID_REQUEST =
  /^Bearer realm="api", error="invalid_request", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"$/;
const INVALID_TOKEN = /^Bearer realm="api", error="invalid_token", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"$/;

// ---- arbitraries ---------------------------------------------------------

const NASTY = [' ', '  ', '\t', '=', '==', '"', ',', ';', '\\', '\0', '\x01', '\x1b', '\x7f', '\r', '\n', 'é', 'ß'];
const NASTY_WIDE = [...NASTY, '\u0100', '\u2028', '\u{1F600}', '\uFEFF', '\uD800', '%00', 'Bearer', ':'];
const b64Char = fc.constantFrom(...B64_CHARS);
const tokenish = (nasty: readonly string[]) =>
  fc.string({
    unit: fc.oneof({ weight: 12, arbitrary: b64Char }, { weight: 1, arbitrary: fc.constantFrom(...nasty) }),
    maxLength: 40,
  });
const scheme = fc.constantFrom(
  'Bearer',
  'bearer',
  'BEARER',
  'BeArEr',
  'Basic',
  'Digest',
  'Token',
  'Bearer:',
  'Bearerx',
  'Bear',
  '',
);
const separator = fc.constantFrom(' ', '  ', '\t', '', ' \t', '   ');
const schemed = (nasty: readonly string[]) =>
  fc.tuple(scheme, separator, tokenish(nasty), fc.constantFrom('', '=', '==', ' ', '= ')).map((p) => p.join(''));
/** Tokens around the length limit. */
const longBearer = fc
  .tuple(fc.constantFrom('Bearer ', 'bearer  '), fc.integer({ min: MAX_BEARER_LENGTH - 3, max: MAX_BEARER_LENGTH + 3 }))
  .map(([prefix, length]) => prefix + 'a'.repeat(length));

/** Any Authorization value a caller could hand `gate.authenticate`. */
const anyAuthorization = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  schemed(NASTY_WIDE),
  schemed(NASTY_WIDE),
  longBearer,
);

/** What Node's HTTP client agrees to send: HTAB, visible ASCII, space, and 0x80-0xFF. */
const sendableChar = fc.oneof(
  { weight: 10, arbitrary: b64Char },
  { weight: 3, arbitrary: fc.constantFrom(' ', '\t', '=', '"', ',', ':', '\\', '%') },
  { weight: 1, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
);
const sendableAuthorization = fc.oneof(
  fc.string({ unit: sendableChar, maxLength: 60 }),
  fc.tuple(scheme, separator, fc.string({ unit: sendableChar, maxLength: 40 })).map((p) => p.join('')),
  longBearer,
);

/** Bytes Node's client refuses: control characters (not CR/LF, which end the line) and raw UTF-8. */
const rawByteValue = fc
  .tuple(
    fc.constantFrom('Bearer ', 'bearer ', 'Basic ', '', 'Bearer'),
    fc.array(
      fc.oneof(
        fc
          .integer({ min: 0x00, max: 0x1f })
          .filter((c) => c !== 0x0a && c !== 0x0d)
          .map((c) => Buffer.from([c])),
        fc.constant(Buffer.from([0x7f])),
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 3 }).map((s) => Buffer.from(s, 'utf8')),
        b64Char.map((c) => Buffer.from(c, 'latin1')),
      ),
      { minLength: 1, maxLength: 20 },
    ),
  )
  .map(([prefix, parts]) => Buffer.concat([Buffer.from(prefix, 'latin1'), ...parts]));

const queryValue = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 20 }),
  tokenish(NASTY_WIDE),
  fc.constant(''),
  fc.array(tokenish(NASTY), { minLength: 0, maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
  fc.constantFrom(undefined, null, 0, 1, true, 'a'.repeat(2000)),
);

/** Arbitrary request objects, as any framework (or a bug in one) might hand them over. */
const anyRequest = fc
  .record(
    {
      authorization: fc.oneof(anyAuthorization, fc.array(anyAuthorization, { maxLength: 3 }), fc.constant(undefined)),
      repeated: fc.boolean(),
      query: fc.option(
        fc.record({ user_id: queryValue, token: queryValue, other: fc.string({ maxLength: 5 }) }, { requiredKeys: [] }),
        { nil: undefined },
      ),
    },
    { requiredKeys: ['authorization', 'repeated'] },
  )
  .map(({ authorization, repeated, query }): CredentialRequest => {
    const rawHeaders: string[] = ['Host', '127.0.0.1'];
    if (typeof authorization === 'string') {
      rawHeaders.push('Authorization', authorization);
      if (repeated) rawHeaders.push('authorization', authorization);
    }
    return { headers: { host: '127.0.0.1', authorization }, query, rawHeaders };
  });

// ---- the app and the mocks -------------------------------------------------

let oon: MockOnlineOrNot;
let pt: MockPartoo;
let gate: Gate;
let simple: Awaited<ReturnType<typeof listen>>;
let extended: Awaited<ReturnType<typeof listen>>;
/** Requests that Node parsed and handed to either app. */
let requestsParsed: number;
/**
 * Upstream calls that decide a credential. OnlineOrNot's `permissions` call
 * is left out: it is cancelled when `verify` rejects, and a cancelled request
 * may still reach the mock a moment later, during the next case.
 */
const upstreamCalls = () => oon.calls.verify + pt.calls.checkToken;

// Mocks, gate and apps per test: no count or cached answer carries over from another test.
beforeEach(async () => {
  oon = await mockOnlineOrNot({ tokens: { [VALID_TOKEN]: { id: 'tok-1', permissions: ['uptime_checks (read)'] } } });
  pt = await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: VALID_CONN.user_id, token: VALID_CONN.token }] });
  gate = createGate({
    providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: API_KEY, baseUrl: pt.url })],
    // No retries, no breaker, no negative cache: every well-formed credential asks its provider once.
    retry: false,
    breaker: false,
    cache: { negativeTtl: 0 },
  });
  simple = await listen(gatedApp(gate).app);
  extended = await listen(gatedApp(gate, { queryParser: 'extended' }).app);
  requestsParsed = 0;
  for (const app of [simple, extended]) app.server.on('request', () => requestsParsed++);
});

afterEach(async () => {
  await simple.close();
  await extended.close();
  await gate.close();
  await oon.close();
  await pt.close();
});

const port = (server: { url: string }) => Number(new URL(server.url).port);

/**
 * The contract for any answer to a request without a valid credential:
 * 400 invalid_request or 401 (challenge only, or invalid_token), the
 * matching challenge, and no upstream call unless the credential was
 * well-formed enough to be asked about (invalid_token).
 */
function expectRefusal(
  status: number,
  challenge: string | undefined,
  callsBefore: number,
): 'invalid_request' | 'credentials_required' | 'invalid_token' {
  expect([400, 401]).toContain(status);
  if (status === 400) {
    expect(challenge).toMatch(INVALID_REQUEST);
    expect(upstreamCalls()).toBe(callsBefore);
    return 'invalid_request';
  }
  if (challenge === CHALLENGE_ONLY) {
    expect(upstreamCalls()).toBe(callsBefore);
    return 'credentials_required';
  }
  expect(challenge).toMatch(INVALID_TOKEN);
  expect(upstreamCalls()).toBeGreaterThan(callsBefore);
  return 'invalid_token';
}

// ---- the parsers ----------------------------------------------------------------

/** Every `error_description` extractBearer gives a 400. */
const BEARER_REFUSALS = [
  'Only one Authorization header is allowed',
  'Bearer token is too long',
  'Malformed Bearer token',
  'Malformed Authorization header',
];

describe('extractBearer (property)', () => {
  it('returns a grammar-conforming token, nothing for other schemes, or a 400 with a challenge', () => {
    fc.assert(
      fc.property(anyAuthorization, fc.boolean(), (authorization, repeated) => {
        const rawHeaders = repeated ? ['Authorization', authorization, 'Authorization', authorization] : undefined;
        let result: ReturnType<typeof extractBearer>;
        try {
          result = extractBearer({ headers: { authorization }, rawHeaders }, 'api');
        } catch (error) {
          expect(error).toBeInstanceOf(AuthError);
          const authError = error as AuthError;
          expect(authError.status).toBe(400);
          expect(authError.code).toBe('invalid_request');
          expect(authError.headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
          // One of the parser's fixed messages: none can carry the token (a substring check could not tell a token
          // such as "Bearer " from the words of the message).
          expect(BEARER_REFUSALS).toContain(authError.message);
          return;
        }
        if (result === undefined) {
          // Only another scheme is ignored: never a Bearer credential, never a repeated header.
          expect(authorization.slice(0, 7).toLowerCase()).not.toMatch(/^bearer[ \t]/);
          expect(authorization.toLowerCase()).not.toBe('bearer');
          expect(repeated).toBe(false);
          return;
        }
        expect(repeated).toBe(false);
        expect(authorization).toMatch(WELL_FORMED_BEARER);
        expect(result.secret.length).toBeLessThanOrEqual(MAX_BEARER_LENGTH);
        expect(authorization.endsWith(` ${result.secret}`)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it(`accepts a token of ${MAX_BEARER_LENGTH} characters and refuses a longer one with a 400`, () => {
    const token = 'a'.repeat(MAX_BEARER_LENGTH);
    expect(extractBearer({ headers: { authorization: `Bearer ${token}` } }, 'api')?.secret).toBe(token);
    const error = thrownBy(() => extractBearer({ headers: { authorization: `Bearer ${token}a` } }, 'api'));
    expect(error.status).toBe(400);
    expect(error.headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
  });

  it('accepts every well-formed token up to the length limit', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('Bearer', 'bearer', 'BEARER', 'bEaReR'),
        fc.integer({ min: 1, max: 3 }),
        fc.string({ unit: b64Char, minLength: 1, maxLength: 64 }),
        fc.constantFrom('', '=', '=='),
        (name, spaces, body, padding) => {
          const token = body + padding;
          const credential = extractBearer(
            { headers: { authorization: `${name}${' '.repeat(spaces)}${token}` } },
            'api',
          );
          expect(credential).toEqual({ source: 'header:authorization', secret: token });
        },
      ),
    );
  });
});

describe('extractConnection (property)', () => {
  it('returns two visible-ASCII values, nothing when both are absent, or a 400', () => {
    fc.assert(
      fc.property(
        fc.record({ user_id: queryValue, token: queryValue, other: queryValue }, { requiredKeys: [] }),
        (query) => {
          let result: ReturnType<typeof extractConnection>;
          try {
            result = extractConnection({ headers: {}, query }, NAMES, 'api');
          } catch (error) {
            expect(error).toBeInstanceOf(AuthError);
            expect((error as AuthError).status).toBe(400);
            expect((error as AuthError).headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
            return;
          }
          if (result === undefined) {
            expect(query.user_id).toBeUndefined();
            expect(query.token).toBeUndefined();
            return;
          }
          expect(result.userId).toBe(query.user_id);
          expect(result.token).toBe(query.token);
          expect(result.userId).toMatch(VISIBLE_ASCII);
          expect(result.token).toMatch(VISIBLE_ASCII);
          expect(result.secret).toBe(`${result.userId}\0${result.token}`);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('headerExtractor (property)', () => {
  const extract = headerExtractor('X-Api-Key', { maxLength: 32 });
  const KEY_REFUSALS = ['Only one X-Api-Key header is allowed', 'The X-Api-Key header is malformed'];

  it('returns a visible-ASCII value of at most maxLength, nothing for an absent or empty header, or a 400', () => {
    fc.assert(
      fc.property(
        fc.option(tokenish(NASTY_WIDE), { nil: undefined }),
        fc.constantFrom('none', 'once', 'twice', 'twice, another case'),
        (value, raw) => {
          const rawHeaders =
            raw === 'none'
              ? undefined
              : raw === 'once'
                ? ['X-Api-Key', value ?? '']
                : ['X-Api-Key', value ?? '', raw === 'twice' ? 'X-Api-Key' : 'x-api-KEY', value ?? ''];
          const headers = value === undefined ? {} : { 'x-api-key': value };
          let result: ReturnType<typeof extract>;
          try {
            result = extract({ headers, rawHeaders: value === undefined ? undefined : rawHeaders }, 'api');
          } catch (error) {
            expect(error).toBeInstanceOf(AuthError);
            const authError = error as AuthError;
            expect(authError.status).toBe(400);
            expect(authError.headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
            expect(KEY_REFUSALS).toContain(authError.message);
            return;
          }
          if (result === undefined) {
            expect(value ?? '').toBe('');
            return;
          }
          expect(raw.startsWith('twice')).toBe(false);
          expect(result).toEqual({ source: 'header:x-api-key', secret: value });
          expect(value).toMatch(VISIBLE_ASCII);
          expect(value?.length).toBeLessThanOrEqual(32);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('takes a pattern for the whole value and a name in any case; refuses a name or an option it cannot use', () => {
    const keys = headerExtractor('x-API-key', { pattern: /^key_[a-z0-9]{8}$/ });
    expect(keys.source).toBe('header:x-api-key');
    expect(keys({ headers: { 'x-api-key': 'key_0123abcd' } }, 'api')?.secret).toBe('key_0123abcd');
    expect(thrownBy(() => keys({ headers: { 'x-api-key': 'key_0123abcd ' } }, 'api')).status).toBe(400);
    // The whole value, whatever the pattern's anchors and flags: a match inside it, or on one of its lines, is none.
    const unanchored = headerExtractor('X-Api-Key', { pattern: /key_[a-z0-9]{8}|k/i });
    expect(unanchored({ headers: { 'x-api-key': 'KEY_0123ABCD' } }, 'api')?.secret).toBe('KEY_0123ABCD');
    expect(unanchored({ headers: { 'x-api-key': 'k' } }, 'api')?.secret).toBe('k');
    expect(thrownBy(() => unanchored({ headers: { 'x-api-key': 'x key_0123abcd' } }, 'api')).status).toBe(400);
    expect(thrownBy(() => unanchored({ headers: { 'x-api-key': 'key_0123abcd, x' } }, 'api')).status).toBe(400);
    const multiline = headerExtractor('X-Api-Key', { pattern: /^key_[a-z0-9]{8}$/m });
    expect(thrownBy(() => multiline({ headers: { 'x-api-key': 'x y\nkey_0123abcd' } }, 'api')).status).toBe(400);
    // Node joins a repeated header with ", " when the raw headers are not at hand.
    expect(thrownBy(() => extract({ headers: { 'x-api-key': 'k1, k2' } }, 'api')).message).toBe(
      'The X-Api-Key header is malformed',
    );
    expect(() => headerExtractor('X Api Key')).toThrow(
      new TypeError(
        'headerExtractor: expected a header name (X-Api-Key), got a string with a character a header name cannot hold',
      ),
    );
    expect(() => headerExtractor('x-api-key', { pattern: /key/g })).toThrow(
      /headerExtractor: pattern: expected a RegExp without the g or y flag/,
    );
    expect(() => headerExtractor('x-api-key', { maxLength: 0 })).toThrow(RangeError);
    expect(() => headerExtractor('x-api-key', { max: 8 } as never)).toThrow(/headerExtractor: .*max/);
  });

  it('accepts every printable ASCII value up to maxLength by default, and takes an empty header for none', () => {
    const printable = Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i)).join('');
    const long = headerExtractor('X-Api-Key', { maxLength: printable.length });
    expect(long({ headers: { 'x-api-key': printable } }, 'api')?.secret).toBe(printable);
    expect(thrownBy(() => long({ headers: { 'x-api-key': `${printable}!` } }, 'api')).status).toBe(400);
    expect(extract({ headers: { 'x-api-key': '' }, rawHeaders: ['X-Api-Key', ''] }, 'api')).toBeUndefined();
    expect(extract({ headers: {} }, 'api')).toBeUndefined();
    expect(headerExtractor('X-Api-Key')({ headers: { 'x-api-key': 'k'.repeat(4096) } }, 'api')?.secret).toHaveLength(
      4096,
    );
    expect(
      thrownBy(() => headerExtractor('X-Api-Key')({ headers: { 'x-api-key': 'k'.repeat(4097) } }, 'api')).status,
    ).toBe(400);
  });

  it('refuses a value longer than maxLength before the pattern is run: a backtracking pattern costs nothing then', () => {
    // Run on these 26 characters, the pattern takes a second or two: a client's header would hold the event loop that long.
    const slow = headerExtractor('X-Api-Key', { pattern: /^(a+)+$/, maxLength: 24 });
    const started = performance.now();
    expect(thrownBy(() => slow({ headers: { 'x-api-key': `${'a'.repeat(25)}!` } }, 'api')).message).toBe(
      'The X-Api-Key header is malformed',
    );
    expect(performance.now() - started).toBeLessThan(500);
  });
});

describe('Express app: a provider of its own reading X-Api-Key with headerExtractor', () => {
  it('answers 200 for a key, and 400 with the challenge for a repeated key header or a key beside a Bearer token', async () => {
    const extract = headerExtractor('X-Api-Key');
    let verified = 0;
    const keys: Provider<HeaderCredential> = {
      name: 'keys',
      source: extract.source,
      cacheScope: 'keys',
      extract,
      async verify(credential) {
        verified++;
        if (credential.secret !== 'key-1') return { ok: false, reason: 'The API key is invalid' };
        return { ok: true, principal: { subject: 'svc-a', permissions: [], details: {} } };
      },
    };
    const keyGate = createGate({ providers: [onlineOrNot({ baseUrl: oon.url }), keys], realm: 'api' });
    const served = await listen(gatedApp(keyGate).app);
    try {
      const ok = await rawGet(port(served), '/me', ['X-Api-Key: key-1']);
      expect([ok.status, JSON.parse(ok.body)]).toEqual([200, expect.objectContaining({ subject: 'svc-a' })]);
      for (const lines of [
        ['X-Api-Key: key-1', 'x-api-key: key-1'],
        ['X-Api-Key: key-1', `Authorization: Bearer ${VALID_TOKEN}`],
      ]) {
        const refused = await rawGet(port(served), '/me', lines);
        expect(refused.status).toBe(400);
        expect(refused.headers['www-authenticate']).toEqual([expect.stringMatching(INVALID_REQUEST)]);
        expect(refused.body).not.toContain('key-1');
      }
      expect(verified).toBe(1);
    } finally {
      await served.close();
      await keyGate.close();
    }
  });
});

// ---- the gate, in process -----------------------------------------------------

describe('gate.authenticate with arbitrary request objects (property)', () => {
  it('is always a 400 or 401 with the right challenge; only well-formed credentials reach a provider', async () => {
    await fc.assert(
      fc.asyncProperty(anyRequest, async (req) => {
        const before = upstreamCalls();
        let error: unknown;
        try {
          const auth = await gate.authenticate(req);
          // Only the one valid token could pass; arbitrary input never produces it, but be exact.
          expect(req.headers.authorization).toMatch(new RegExp(` ${VALID_TOKEN}$`));
          expect(auth.subject).toBe('tok-1');
          return;
        } catch (caught) {
          error = caught;
        }
        expect(error).toBeInstanceOf(AuthError);
        const { status, headers } = error as AuthError;
        const kind = expectRefusal(status, headers['WWW-Authenticate'], before);

        const { authorization } = req.headers;
        const query = req.query ?? {};
        const noConnection = query.user_id === undefined && query.token === undefined;
        const repeated = (req.rawHeaders?.length ?? 0) > 4;
        if (authorization === undefined && noConnection) expect(kind).toBe('credentials_required');
        const wellFormedBearer =
          typeof authorization === 'string' &&
          !repeated &&
          WELL_FORMED_BEARER.test(authorization) &&
          (authorization.split(' ').at(-1)?.length ?? 0) <= MAX_BEARER_LENGTH;
        if (wellFormedBearer && noConnection) expect(kind).toBe('invalid_token');
        const wellFormedConnection =
          typeof query.user_id === 'string' &&
          typeof query.token === 'string' &&
          VISIBLE_ASCII.test(query.user_id) &&
          VISIBLE_ASCII.test(query.token) &&
          query.user_id.length <= 256 &&
          query.token.length <= 1024;
        if (wellFormedConnection && authorization === undefined) expect(kind).toBe('invalid_token');
      }),
      { numRuns: 600 },
    );
  });
});

describe("gate.authenticate with the bytes Node's parser refuses", () => {
  const values = [
    ['NUL', 'Bearer ab\u0000c'],
    ['ESC', 'Bearer ab\u001bc'],
    ['DEL', 'Bearer ab\u007fc'],
    ['a lone CR', 'Bearer ab\rc'],
    ['a lone LF', 'Bearer ab\nc'],
    ['NUL after the token', `Bearer ${VALID_TOKEN}\u0000`],
    ['NUL in the scheme', `Bea\u0000rer ${VALID_TOKEN}`],
  ] as const;

  it.each(values)('%s in headers.authorization: 400 invalid_request with its challenge', async (_name, value) => {
    const error = await rejectionOf(gate.authenticate({ headers: { authorization: value } }));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_request');
    expect(error.headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
    expect(upstreamCalls()).toBe(0);
  });

  it.each(values)('%s in rawHeaders: 400 invalid_request with its challenge', async (_name, value) => {
    for (const name of ['Authorization', 'authorization', 'AUTHORIZATION']) {
      const error = await rejectionOf(
        gate.authenticate({ headers: { authorization: value }, rawHeaders: ['Host', '127.0.0.1', name, value] }),
      );
      expect(error.status).toBe(400);
      expect(error.code).toBe('invalid_request');
      expect(error.headers['WWW-Authenticate']).toMatch(INVALID_REQUEST);
    }
    expect(upstreamCalls()).toBe(0);
  });

  it('the same requests without the byte pass (the 400 is about the byte)', async () => {
    const auth = await gate.authenticate({
      headers: { authorization: `Bearer ${VALID_TOKEN}` },
      rawHeaders: ['Authorization', `Bearer ${VALID_TOKEN}`],
    });
    expect(auth.subject).toBe('tok-1');
  });
});

// ---- a real Express app ----------------------------------------------------------

describe('Express app: Authorization headers', () => {
  it('arbitrary values that Node can send: 400 or 401, never 500 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(sendableAuthorization, fc.constantFrom('/me', '/checks'), async (authorization, path) => {
        const before = upstreamCalls();
        const res = await request(simple.server).get(path).set('Authorization', authorization);
        expectRefusal(res.status, res.headers['www-authenticate'], before);
      }),
      { numRuns: 150 },
    );
  });

  it('control characters and raw UTF-8, over a raw socket: 400 or 401, never 500 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(rawByteValue, async (value) => {
        const before = upstreamCalls();
        const res = await rawGet(port(simple), '/me', [Buffer.concat([Buffer.from('Authorization: '), value])]);
        if (res.headers['x-powered-by'] === undefined) {
          // Node's own HTTP parser refused the request before Express (and the gate) saw it.
          expect(res.status).toBe(400);
          expect(upstreamCalls()).toBe(before);
          return;
        }
        expectRefusal(res.status, res.headers['www-authenticate']?.[0], before);
      }),
      { numRuns: 120 },
    );
  });

  it('missing credentials and other schemes: 401 with the bare challenge', async () => {
    const before = upstreamCalls();
    for (const res of [
      await request(simple.server).get('/me'),
      await request(simple.server).get('/me').set('Authorization', 'Basic dXNlcjpwYXNz'),
      await request(simple.server).get('/me').set('Authorization', 'Digest username="a"'),
    ]) {
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe(CHALLENGE_ONLY);
    }
    expect(upstreamCalls()).toBe(before);
  });

  it.each([
    ['scheme only', 'Authorization: Bearer'],
    ['scheme and blanks', 'Authorization: Bearer    '],
    ['tab separator', 'Authorization: Bearer\tabc'],
    ['two tokens', 'Authorization: Bearer abc def'],
    ['padding inside', 'Authorization: Bearer ab=c'],
    ['quoted token', 'Authorization: Bearer "abc"'],
    ['no scheme', 'Authorization: =abc'],
    ['latin-1 byte', Buffer.from('Authorization: Bearer ab\xe9c', 'latin1')],
    ['UTF-8 bytes', Buffer.from('Authorization: Bearer ab\u00e9\u{1F600}', 'utf8')],
  ])('%s: 400 invalid_request, no upstream call', async (_name, line) => {
    const before = upstreamCalls();
    const res = await rawGet(port(simple), '/me', [line]);
    expect(res.status).toBe(400);
    expect(res.headers['www-authenticate']?.[0]).toMatch(INVALID_REQUEST);
    expect(upstreamCalls()).toBe(before);
  });

  it.each([
    ['NUL', Buffer.from('Authorization: Bearer ab\x00c', 'latin1')],
    ['ESC', Buffer.from('Authorization: Bearer ab\x1bc', 'latin1')],
    ['DEL', Buffer.from('Authorization: Bearer ab\x7fc', 'latin1')],
    ['a lone CR', Buffer.from('Authorization: Bearer ab\rc', 'latin1')],
  ])("Node's parser refuses %s in the value: its bare 400, no challenge, the app never runs", async (_name, line) => {
    const res = await rawGet(port(simple), '/me', [line]);
    expect(res.status).toBe(400);
    // Node's own answer: no Express header, no WWW-Authenticate, no body.
    expect(res.headers).toEqual({ connection: ['close'] });
    expect(res.body).toBe('');
    expect(requestsParsed).toBe(0);
    expect(upstreamCalls()).toBe(0);
    // The same request without the byte reaches the app (and the gate, which answers it).
    const clean = await rawGet(port(simple), '/me', ['Authorization: Bearer abc']);
    expect(clean.status).toBe(401);
    expect(requestsParsed).toBe(1);
  });

  it('repeated Authorization headers are a 400, even when both carry the valid token', async () => {
    const before = upstreamCalls();
    const cases: RawResponse[] = [
      await rawGet(port(simple), '/me', [
        `Authorization: Bearer ${VALID_TOKEN}`,
        `Authorization: Bearer ${VALID_TOKEN}`,
      ]),
      await rawGet(port(simple), '/me', [`authorization: Bearer ${VALID_TOKEN}`, 'AUTHORIZATION: Basic dXNlcjpwYXNz']),
      await rawGet(port(simple), '/me', ['Authorization: Basic dXNlcjpwYXNz', `Authorization: Bearer ${VALID_TOKEN}`]),
      await rawGet(port(simple), '/me', ['Authorization: Bearer a', 'X-Other: 1', 'Authorization: Bearer b']),
    ];
    for (const res of cases) {
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']?.[0]).toMatch(INVALID_REQUEST);
    }
    // Through Node's client too (an array value sends the header twice).
    const viaClient = await request(simple.server)
      .get('/me')
      .set('Authorization', [`Bearer ${VALID_TOKEN}`, 'Bearer other'] as unknown as string);
    expect(viaClient.status).toBe(400);
    expect(upstreamCalls()).toBe(before);
    // The token itself is fine.
    expect((await request(simple.server).get('/me').set('Authorization', `Bearer ${VALID_TOKEN}`)).status).toBe(200);
  });

  it('huge headers: 400 from the gate; past Node header limit, 431 from Node itself', async () => {
    const before = upstreamCalls();
    for (const length of [MAX_BEARER_LENGTH + 1, 10_000, 15_000]) {
      const res = await request(simple.server)
        .get('/me')
        .set('Authorization', `Bearer ${'a'.repeat(length)}`);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(INVALID_REQUEST);
    }
    const beyondNode = await rawGet(port(simple), '/me', [`Authorization: Bearer ${'a'.repeat(20_000)}`]);
    expect(beyondNode.status).toBe(431);

    // A server that raises Node's limit hands the gate the whole header: still a 400.
    const roomy = createServer({ maxHeaderSize: 1 << 20 }, gatedApp(gate).app);
    await new Promise<void>((resolve) => roomy.listen(0, '127.0.0.1', resolve));
    try {
      const res = await rawGet((roomy.address() as AddressInfo).port, '/me', [
        `Authorization: Bearer ${'a'.repeat(200_000)}`,
      ]);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']?.[0]).toMatch(INVALID_REQUEST);
    } finally {
      await new Promise<void>((resolve) => {
        roomy.close(() => resolve());
        roomy.closeAllConnections();
      });
    }
    expect(upstreamCalls()).toBe(before);
  });

  it('a bearer header and connection parameters together: 400, no upstream call', async () => {
    const before = upstreamCalls();
    const res = await request(simple.server).get('/me').set('Authorization', `Bearer ${VALID_TOKEN}`).query(VALID_CONN);
    expect(res.status).toBe(400);
    expect(res.headers['www-authenticate']).toMatch(INVALID_REQUEST);
    expect(upstreamCalls()).toBe(before);
  });
});

describe('Express app: connection parameters in the query', () => {
  const validQuery = `user_id=${VALID_CONN.user_id}&token=${VALID_CONN.token}`;

  it.each([
    ['duplicated token', `${validQuery}&token=b`, 'both'],
    ['duplicated user_id', `user_id=x&${validQuery}`, 'both'],
    ['token only', `token=${VALID_CONN.token}`, 'both'],
    ['user_id only', `user_id=${VALID_CONN.user_id}`, 'both'],
    ['empty values', 'user_id=&token=', 'both'],
    ['empty token', `user_id=${VALID_CONN.user_id}&token=`, 'both'],
    ['names without values', 'user_id&token', 'both'],
    ['NUL in the token', `user_id=${VALID_CONN.user_id}&token=ab%00c`, 'both'],
    ['space in the token', `user_id=${VALID_CONN.user_id}&token=ab%20c`, 'both'],
    ['non-ASCII user id', `user_id=%C3%A9&token=${VALID_CONN.token}`, 'both'],
    ['overlong token', `user_id=${VALID_CONN.user_id}&token=${'t'.repeat(1025)}`, 'both'],
    ['array syntax', `user_id=${VALID_CONN.user_id}&token[]=${VALID_CONN.token}`, 'extended'],
    ['indexed array', `user_id=${VALID_CONN.user_id}&token[0]=${VALID_CONN.token}`, 'extended'],
    ['nested object', `user_id[x]=${VALID_CONN.user_id}&token=${VALID_CONN.token}`, 'extended'],
  ] as const)('%s: 400 invalid_request, no upstream call', async (_name, query, parsers) => {
    const apps = parsers === 'both' ? [simple, extended] : [extended];
    for (const app of apps) {
      const before = upstreamCalls();
      const res = await request(app.server).get(`/me?${query}`);
      expect(res.status).toBe(400);
      expect(res.headers['www-authenticate']).toMatch(INVALID_REQUEST);
      expect(upstreamCalls()).toBe(before);
    }
  });

  it('the valid pair passes, in both query parsers', async () => {
    for (const app of [simple, extended]) {
      const res = await request(app.server).get(`/me?${validQuery}`);
      expect(res.status).toBe(200);
      expect(res.body.subject).toBe(VALID_CONN.user_id);
    }
  });

  it('arbitrary query strings: 400 or 401, never 500, in both query parsers (property)', async () => {
    const key = fc.constantFrom(
      'user_id',
      'token',
      'user_id[]',
      'token[]',
      'token[0]',
      'token[a]',
      'user_id[b][c]',
      '__proto__',
      'constructor',
      'user%5Fid',
      'tok%65n',
      'other',
    );
    const value = fc.oneof(
      fc.string({ unit: b64Char, maxLength: 12 }),
      fc.string({ unit: 'binary', maxLength: 12 }).map(encodeURIComponent),
      fc.constantFrom('', '%00', '%20', '%', '%zz', '&', '=', VALID_CONN.token, VALID_CONN.user_id),
    );
    const pair = fc.oneof(
      fc.tuple(key, value).map(([k, v]) => `${k}=${v}`),
      key,
    );
    await fc.assert(
      fc.asyncProperty(fc.array(pair, { maxLength: 5 }), fc.constantFrom(simple, extended), async (pairs, app) => {
        const before = upstreamCalls();
        const res = await request(app.server).get(`/me?${pairs.join('&')}`);
        if (res.status === 200) {
          // Only the one valid pair, once each, can pass.
          expect(res.body.subject).toBe(VALID_CONN.user_id);
          return;
        }
        expectRefusal(res.status, res.headers['www-authenticate'], before);
      }),
      { numRuns: 200 },
    );
  });
});
