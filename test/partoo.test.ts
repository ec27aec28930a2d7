/**
 * partoo() against the Partoo mock over real HTTP: which connection tokens
 * pass, what the principal holds, how each answer of check_token maps to a
 * status, and what actually goes on the wire (key header, URL encoding).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createGate, type GateEvent, onlineOrNot, type PartooOptions, partoo } from '../src/index.js';
import { type MockPartoo, mockPartoo, type PartooTokenEntry } from '../src/testing/index.js';
import { rejectionOf } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';
import { startRecordingProxy } from './support/recording-proxy.js';

const closeLater = closeAfterEach();
const API_KEY = 'partoo-server-key-0123456789';
const EXPIRES = new Date('2030-01-02T03:04:05.678Z');
const connection = (userId: string, token: string) => ({ headers: {}, query: { user_id: userId, token } });

async function setup(tokens: PartooTokenEntry[] = [], options: Partial<PartooOptions> = {}) {
  const mock = closeLater(await mockPartoo({ apiKey: API_KEY, tokens }));
  const gate = closeLater(
    createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url, ...options })], retry: false }),
  );
  return { mock, gate };
}

async function expectInvalidToken(mock: MockPartoo, promise: Promise<unknown>, description: string) {
  const error = await rejectionOf(promise);
  expect(error.status).toBe(401);
  expect(error.code).toBe('invalid_token');
  expect(error.headers).toEqual({
    'WWW-Authenticate': `Bearer realm="api", error="invalid_token", error_description="${description}"`,
  });
  expect(mock.calls.checkToken).toBeGreaterThan(0);
}

describe('partoo', () => {
  it('accepts a valid token: subject is the user id, expiresAt the expiration_date, details without token', async () => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1', expirationDate: EXPIRES }]);
    const auth = await gate.authenticate(connection('user-1', 'conn-token-1'));
    expect(auth.provider).toBe('partoo');
    expect(auth.subject).toBe('user-1');
    expect(auth.expiresAt?.toISOString()).toBe(EXPIRES.toISOString());
    expect(auth.permissions).toEqual([]);
    expect(auth.details).toMatchObject({
      status: 'valid',
      expiration_date: '2030-01-02T03:04:05.678000+00:00',
      generated_by: expect.any(String),
      creation_date: expect.any(String),
      consumption_date: null,
    });
    expect(auth.details).not.toHaveProperty('token');
    expect(JSON.stringify(auth)).not.toContain('conn-token-1');
    expect(mock.calls.checkToken).toBe(1);
  });

  it('accepts a token with no expiration_date (null) and leaves expiresAt undefined', async () => {
    const { gate } = await setup([{ userId: 'user-1', token: 'conn-token-1', expirationDate: null }]);
    const auth = await gate.authenticate(connection('user-1', 'conn-token-1'));
    expect(auth.expiresAt).toBeUndefined();
  });

  it("accepts the mock's latest writable expiration date, the last instant of 9999", async () => {
    const last = new Date('9999-12-31T23:59:59.999Z');
    const { gate } = await setup([{ userId: 'user-1', token: 'conn-token-1', expirationDate: last }]);
    expect((await gate.authenticate(connection('user-1', 'conn-token-1'))).expiresAt).toEqual(last);
  });

  it('grants the fixed permissions option to accepted tokens', async () => {
    const { gate } = await setup([{ userId: 'user-1', token: 'conn-token-1' }], { permissions: ['reviews (read)'] });
    const auth = await gate.authenticate(connection('user-1', 'conn-token-1'));
    expect(auth.permissions).toEqual(['reviews (read)']);
    expect(auth.can('reviews (read)')).toBe(true);
  });

  it.each(['consumed', 'revoked', 'expired'] as const)('answers 401 to a %s token', async (status) => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1', status }]);
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'conn-token-1')),
      `The connection token is ${status}`,
    );
  });

  it("with accept: ['expired'], a token so marked passes only while its expiration_date is ahead", async () => {
    const { mock, gate } = await setup(
      [
        { userId: 'user-1', token: 'marked-token', status: 'expired', expirationDate: EXPIRES },
        { userId: 'user-1', token: 'past-token', status: 'expired', expirationDate: new Date(Date.now() - 60_000) },
      ],
      { accept: ['valid', 'expired'] },
    );
    expect((await gate.authenticate(connection('user-1', 'marked-token'))).details.status).toBe('expired');
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'past-token')),
      'The access token has expired',
    );
  });

  it("lets a consumed token through with accept: ['valid', 'consumed'], still not a revoked one", async () => {
    const { mock, gate } = await setup(
      [
        { userId: 'user-1', token: 'used-token', status: 'consumed' },
        { userId: 'user-1', token: 'revoked-token', status: 'revoked' },
      ],
      { accept: ['valid', 'consumed'] },
    );
    const auth = await gate.authenticate(connection('user-1', 'used-token'));
    expect(auth.subject).toBe('user-1');
    expect(auth.details.status).toBe('consumed');
    expect(auth.details.consumption_date).toEqual(expect.any(String));
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'revoked-token')),
      'The connection token is revoked',
    );
  });

  it('answers 401 to an unknown token (404)', async () => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1' }]);
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'not-a-token')),
      'The connection token was not accepted',
    );
  });

  it("answers 401 to another user's token (404)", async () => {
    const { mock, gate } = await setup([
      { userId: 'user-1', token: 'token-of-1' },
      { userId: 'user-2', token: 'token-of-2' },
    ]);
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'token-of-2')),
      'The connection token was not accepted',
    );
  });

  it("answers 401 when the server's key may not check that user (403)", async () => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1', forbidden: true }]);
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'conn-token-1')),
      'The connection token was not accepted',
    );
  });

  it('answers 401 to a 400 from check_token', async () => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1' }]);
    mock.fault = {
      kind: 'status',
      status: 400,
      body: JSON.stringify({ errors: { json: { token: ['Missing data for required field.'] } } }),
    };
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'conn-token-1')),
      'The connection token was not accepted',
    );
  });

  it('answers 503, never 401, to a 404 that is not a Partoo error answer', async () => {
    const { mock, gate } = await setup([{ userId: 'user-1', token: 'conn-token-1' }]);
    mock.fault = { kind: 'status', status: 404, body: JSON.stringify({ message: 'no route' }) };
    const error = await rejectionOf(gate.authenticate(connection('user-1', 'conn-token-1')));
    expect(error.status).toBe(503);
  });

  it('answers 401 to a valid status whose expiration_date has passed', async () => {
    const { mock, gate } = await setup([
      { userId: 'user-1', token: 'conn-token-1', expirationDate: '2019-08-02T19:15:54.256000+02:00' },
    ]);
    await expectInvalidToken(
      mock,
      gate.authenticate(connection('user-1', 'conn-token-1')),
      'The access token has expired',
    );
  });

  it('reads an expiration_date without an offset as UTC', async () => {
    const { gate } = await setup([
      { userId: 'user-1', token: 'conn-token-1', expirationDate: '2099-08-02T19:15:54.256000' },
    ]);
    const auth = await gate.authenticate(connection('user-1', 'conn-token-1'));
    expect(auth.expiresAt?.toISOString()).toBe('2099-08-02T19:15:54.256Z');
  });

  it.each([
    'x 2099',
    '12/31/2099',
    'Sun, 02 Aug 2099 19:15:54 GMT',
    '2099-02-30T19:15:54.256000+00:00',
    '2099-13-02T19:15:54.256000+00:00',
    '2099-08-02T24:00:00.000000+00:00',
    '2099-08-02T19:15:54.256000+0000',
    '2099-08-02',
    '',
  ])('answers 503, never a pass or a 401, to the expiration_date %j', async (expirationDate) => {
    const events: GateEvent[] = [];
    const mock = closeLater(
      await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'user-1', token: 'conn-token-1', expirationDate }] }),
    );
    const gate = closeLater(
      createGate({
        providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url })],
        retry: false,
        onEvent: (event) => events.push(event),
      }),
    );
    const error = await rejectionOf(gate.authenticate(connection('user-1', 'conn-token-1')));
    expect(error.status).toBe(503);
    expect(error.code).toBe('provider_unavailable');
    expect(events).toContainEqual(expect.objectContaining({ type: 'provider_error', reason: 'invalid_answer' }));
  });

  it('gives the same expiresAt for an offset-less expiration_date whatever the server time zone', async () => {
    const probe = fileURLToPath(new URL('./support/partoo-expiry-probe.ts', import.meta.url));
    const run = async (tz: string) => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', probe, '2099-08-02T19:15:54.256000'],
        { env: { ...process.env, TZ: tz } },
      );
      return JSON.parse(stdout) as { expiresAtMs: number; localOffsetMinutes: number };
    };
    const [kiritimati, losAngeles] = await Promise.all([run('Pacific/Kiritimati'), run('America/Los_Angeles')]);
    // The zones really differ in the children (UTC+14 and, in August, UTC-7)…
    expect(kiritimati.localOffsetMinutes).toBe(-14 * 60);
    expect(losAngeles.localOffsetMinutes).toBe(7 * 60);
    // …and the token expires at the same instant in both.
    expect(kiritimati.expiresAtMs).toBe(Date.UTC(2099, 7, 2, 19, 15, 54, 256));
    expect(losAngeles.expiresAtMs).toBe(kiritimati.expiresAtMs);
  }, 60_000); // two Node processes that compile TypeScript at start

  it("answers 500 provider_misconfigured, not exposed and without the key, when the server's key is refused", async () => {
    const mock = closeLater(
      await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'user-1', token: 'conn-token-1' }] }),
    );
    const wrongKey = 'wrong-server-key-9876543210';
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: wrongKey, baseUrl: mock.url })] }));
    const error = await rejectionOf(gate.authenticate(connection('user-1', 'conn-token-1')));
    expect(error.status).toBe(500);
    expect(error.code).toBe('provider_misconfigured');
    expect(error.expose).toBe(false);
    expect(error.headers).toEqual({});
    const everything = `${error.message} ${JSON.stringify(error.headers)} ${error.stack}`;
    expect(everything).not.toContain(wrongKey);
    expect(everything).not.toContain(API_KEY);
    expect(everything).not.toContain('conn-token-1');
    // Not retried: a refused key does not get better by asking again.
    expect(mock.calls.checkToken).toBe(1);
  });

  it('sends the API key as x-APIKey and asks GET /v2/connection/check_token', async () => {
    const mock = closeLater(
      await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'user-1', token: 'conn-token-1' }] }),
    );
    const proxy = closeLater(await startRecordingProxy(mock.url));
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: proxy.url })] }));
    await gate.authenticate(connection('user-1', 'conn-token-1'));
    expect(proxy.requests).toHaveLength(1);
    const [sent] = proxy.requests;
    expect(sent?.method).toBe('GET');
    expect(sent?.headers['x-apikey']).toBe(API_KEY);
    const url = new URL(sent?.url ?? '', 'http://unused.invalid');
    expect(url.pathname).toBe('/v2/connection/check_token');
    expect([...url.searchParams]).toEqual([
      ['user_id', 'user-1'],
      ['token', 'conn-token-1'],
    ]);
  });

  it('URL-encodes the token: a token cannot rewrite user_id', async () => {
    const attack = 'abc&user_id=victim';
    const { mock } = await setup();
    // The attacker holds a real token for themselves whose text tries to name the victim; the victim
    // has a token "abc". Unencoded, the query would read user_id=attacker&token=abc&user_id=victim.
    mock.setToken({ userId: 'attacker', token: attack });
    mock.setToken({ userId: 'victim', token: 'abc' });
    const proxy = closeLater(await startRecordingProxy(mock.url));
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: proxy.url })] }));

    const auth = await gate.authenticate(connection('attacker', attack));
    expect(auth.subject).toBe('attacker');
    const url = new URL(proxy.requests[0]?.url ?? '', 'http://unused.invalid');
    expect(url.searchParams.getAll('user_id')).toEqual(['attacker']);
    expect(url.searchParams.getAll('token')).toEqual([attack]);
    expect(url.search).not.toContain('&user_id=victim');

    // The same text for a user who does not own it is refused: the mock saw the literal token.
    const error = await rejectionOf(gate.authenticate(connection('victim', attack)));
    expect(error.status).toBe(401);
  });

  it('URL-encodes a user id that tries to add a token', async () => {
    const { mock } = await setup([{ userId: 'victim', token: 'victim-token' }]);
    const proxy = closeLater(await startRecordingProxy(mock.url));
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: proxy.url })] }));
    const error = await rejectionOf(gate.authenticate(connection('victim&token=victim-token', 'guess')));
    expect(error.status).toBe(401);
    const url = new URL(proxy.requests[0]?.url ?? '', 'http://unused.invalid');
    expect(url.searchParams.getAll('user_id')).toEqual(['victim&token=victim-token']);
    expect(url.searchParams.getAll('token')).toEqual(['guess']);
  });

  it('passes + / = % through literally', async () => {
    const token = 'a+b/c=d%20e';
    const { gate } = await setup([{ userId: 'user-1', token }]);
    expect((await gate.authenticate(connection('user-1', token))).subject).toBe('user-1');
  });

  it('requires an apiKey', () => {
    expect(() => partoo({ apiKey: '' })).toThrow(TypeError);
  });

  it('maxBodyBytes must be a positive integer (partoo and onlineOrNot)', () => {
    for (const maxBodyBytes of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => partoo({ apiKey: 'k', maxBodyBytes })).toThrow(RangeError);
      expect(() => onlineOrNot({ maxBodyBytes })).toThrow(RangeError);
    }
  });
});

describe('partoo cacheScope', () => {
  const base: PartooOptions = { apiKey: 'SECRETscopeKey1', baseUrl: 'http://127.0.0.1:9/v2' };

  it('changes with everything that decides the answer, and holds the API key only as its digest', () => {
    const scope = partoo(base).cacheScope;
    expect(scope).not.toContain('SECRETscopeKey1');
    expect(partoo({ ...base }).cacheScope).toBe(scope);
    // The same statuses in another order accept the same tokens.
    expect(partoo({ ...base, accept: ['consumed', 'valid'] }).cacheScope).toBe(
      partoo({ ...base, accept: ['valid', 'consumed'] }).cacheScope,
    );
    const variants: PartooOptions[] = [
      { ...base, baseUrl: 'http://127.0.0.1:9/v3' },
      { ...base, apiKey: 'SECRETscopeKey2' },
      { ...base, accept: ['valid', 'consumed'] },
      { ...base, permissions: ['orders:read'] },
      { ...base, name: 'partoo-eu' },
    ];
    const scopes = new Set([scope, ...variants.map((options) => partoo(options).cacheScope)]);
    expect(scopes.size).toBe(variants.length + 1);
  });
});
