import { connect } from 'node:net';
import { type Dispatcher, Pool, request } from 'undici';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { createGate, type Gate, onlineOrNot, partoo } from '../src/index.js';
import { type MockProvider, mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { rejectionOf } from './support/catch-auth-error.js';
import { watchTimers } from './support/live-timers.js';

interface Reply {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  text: string;
  json(): unknown;
}

interface GetOptions {
  headers?: Record<string, string>;
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
}

async function get(url: string, options: GetOptions = {}): Promise<Reply> {
  const res = await request(url, options);
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
}

const open: MockProvider[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((m) => m.close()));
});
function track<T extends MockProvider>(mock: T): T {
  open.push(mock);
  return mock;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const UNAUTHORIZED = {
  result: null,
  success: false,
  errors: [{ code: 10000, message: 'Authentication error' }],
  messages: [],
};

describe('mockOnlineOrNot', () => {
  const start = () =>
    mockOnlineOrNot({
      tokens: {
        good: { id: 'a1b2c3d4', permissions: ['uptime_checks (read)'] },
        off: { id: 'dead', status: 'disabled' },
      },
    }).then(track);

  it('listens on 127.0.0.1, url without trailing slash', async () => {
    const mock = await start();
    expect(mock.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('verifies a known token', async () => {
    const mock = await start();
    const res = await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('good') });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json(;|$)/);
    expect(res.json()).toEqual({
      result: { id: 'a1b2c3d4', status: 'active' },
      success: true,
      errors: [],
      messages: [],
    });
  });

  it('answers 200 with the status of a disabled token', async () => {
    const mock = await start();
    const res = await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('off') });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ result: { id: 'dead', status: 'disabled' }, success: true, errors: [], messages: [] });
  });

  it('lists permissions (default [])', async () => {
    const mock = await start();
    const good = await get(`${mock.url}/v1/tokens/permissions`, { headers: bearer('good') });
    expect(good.status).toBe(200);
    expect(good.json()).toEqual({
      result: { permissions: ['uptime_checks (read)'] },
      success: true,
      errors: [],
      messages: [],
    });
    const off = await get(`${mock.url}/v1/tokens/permissions`, { headers: { authorization: 'bearer  off' } });
    expect(off.json()).toEqual({ result: { permissions: [] }, success: true, errors: [], messages: [] });
  });

  it.each([
    ['unknown token', { authorization: 'Bearer nope' }],
    ['no header', {}],
    ['another scheme', { authorization: 'Basic Z29vZA==' }],
    ['no token', { authorization: 'Bearer' }],
    ['two tokens', { authorization: 'Bearer good good' }],
    ['bad characters', { authorization: 'Bearer go"od' }],
  ])('answers 401 on both endpoints: %s', async (_, headers) => {
    const mock = await start();
    for (const path of ['/v1/tokens/verify', '/v1/tokens/permissions']) {
      const res = await get(`${mock.url}${path}`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(res.json()).toEqual(UNAUTHORIZED);
    }
  });

  it('answers 404 JSON on other paths and 405 on other methods', async () => {
    const mock = await start();
    const res = await get(`${mock.url}/v1/tokens`, { headers: bearer('good') });
    expect(res.status).toBe(404);
    expect(res.json()).toEqual({ error: 'Not Found' });
    const post = await request(`${mock.url}/v1/tokens/verify`, { method: 'POST', headers: bearer('good') });
    expect(post.statusCode).toBe(405);
    expect(post.headers.allow).toBe('GET');
    await post.body.dump();
  });

  it('setToken and removeToken change the answers', async () => {
    const mock = await start();
    mock.setToken('fresh', { id: 'f1', permissions: ['a', 'b'], status: 'active' });
    expect((await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('fresh') })).status).toBe(200);
    expect(mock.removeToken('fresh')).toBe(true);
    expect(mock.removeToken('fresh')).toBe(false);
    expect((await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('fresh') })).status).toBe(401);
    expect(() => mock.setToken('has space', { id: 'x' })).toThrow(TypeError);
  });

  it('refuses options and token definitions it would not read, naming them and never the token', async () => {
    await expect(mockOnlineOrNot({ token: { SECRETt1: { id: 'a' } } } as never)).rejects.toThrow(
      'mockOnlineOrNot: token: unknown option (did you mean tokens?)',
    );
    await expect(mockOnlineOrNot({ tokens: { SECRETt1: { permissions: ['p'] } as never } })).rejects.toThrow(
      'mockOnlineOrNot: tokens (entry 1): id',
    );
    await expect(mockOnlineOrNot({ tokens: { SECRETt1: { id: 'a', perms: ['p'] } as never } })).rejects.toThrow(
      'mockOnlineOrNot: tokens (entry 1): perms: unknown option',
    );
    await expect(mockOnlineOrNot({ tokens: { SECRETt1: { id: 'a', permissions: 'p' as never } } })).rejects.toThrow(
      'mockOnlineOrNot: tokens (entry 1): permissions: expected an array of strings, got a string',
    );
    await expect(mockOnlineOrNot({ tokens: [] as never })).rejects.toThrow(
      'mockOnlineOrNot: tokens: expected an object of tokens, got an array',
    );
    // What the API could answer, for the gate to judge, is taken: empty strings too.
    track(await mockOnlineOrNot({ tokens: { SECRETt1: { id: '', permissions: [''], status: '' } } }));
    const mock = track(await mockOnlineOrNot());
    expect(() => mock.setToken('SECRETt1', { id: 7 } as never)).toThrow(/^mockOnlineOrNot: setToken: id/);
    expect(() => mock.setToken('SECRET t1', { id: 'a' })).toThrow(
      'mockOnlineOrNot: setToken: a bearer token must be b64token syntax',
    );
  });

  it('counts calls per endpoint and in total', async () => {
    const mock = await start();
    expect(mock.calls).toEqual({ verify: 0, permissions: 0, total: 0 });
    await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('good') });
    await get(`${mock.url}/v1/tokens/verify`);
    await get(`${mock.url}/v1/tokens/permissions`, { headers: bearer('good') });
    await get(`${mock.url}/elsewhere`);
    expect(mock.calls).toEqual({ verify: 2, permissions: 1, total: 4 });
    mock.resetCalls();
    expect(mock.calls).toEqual({ verify: 0, permissions: 0, total: 0 });
  });

  it('reset() puts it back as it started: its tokens, no fault, no latency, counts at 0', async () => {
    const mock = await start();
    mock.setToken('added', { id: 'new' });
    mock.setToken('good', { id: 'changed' });
    mock.removeToken('off');
    mock.latency = 50;
    mock.fault = { kind: 'status', status: 500 };
    await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('good') });
    mock.reset();
    expect(mock.calls).toEqual({ verify: 0, permissions: 0, total: 0 });
    expect(mock.fault).toBeUndefined();
    expect(mock.latency).toBe(0);
    const verify = async (token: string) => {
      const res = await get(`${mock.url}/v1/tokens/verify`, { headers: bearer(token) });
      return [res.status, (res.json() as { result: unknown }).result];
    };
    expect(await verify('good')).toEqual([200, { id: 'a1b2c3d4', status: 'active' }]);
    expect(await verify('off')).toEqual([200, { id: 'dead', status: 'disabled' }]);
    expect(await verify('added')).toEqual([401, null]);
    // A token set again after a reset is not the one the mock started with.
    mock.setToken('good', { id: 'again' });
    expect(await verify('good')).toEqual([200, { id: 'again', status: 'active' }]);
    mock.reset();
    expect(await verify('good')).toEqual([200, { id: 'a1b2c3d4', status: 'active' }]);
  });
});

describe('mockPartoo', () => {
  const API_KEY = 'k3y';
  const start = () =>
    mockPartoo({
      apiKey: API_KEY,
      tokens: [
        { userId: 'u1', token: 't1' },
        { userId: 'u1', token: 'a+b/c= d', status: 'consumed', expirationDate: null },
        { userId: 'u2', token: 't2', status: 'revoked', expirationDate: '2019-08-02T19:15:54.256000+02:00' },
        { userId: 'u3', token: 't3', expirationDate: new Date('2030-01-02T03:04:05.678Z') },
        { userId: 'u4', token: 't4', forbidden: true },
      ],
    }).then(track);
  const check = (mock: MockProvider, params: Record<string, string>, headers: Record<string, string> = {}) =>
    get(`${mock.url}/connection/check_token?${new URLSearchParams(params)}`, {
      headers: { 'x-APIKey': API_KEY, ...headers },
    });
  const DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/;

  it('has a base url ending in /v2', async () => {
    const mock = await start();
    expect(mock.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v2$/);
  });

  it('answers 200 with the token details', async () => {
    const mock = await start();
    const before = Date.now();
    const res = await check(mock, { user_id: 'u1', token: 't1' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = res.json() as Record<string, unknown>;
    expect(body).toEqual({
      token: 't1',
      expiration_date: expect.stringMatching(DATE),
      generated_by: '5309c3a237bbc544d8e26737',
      creation_date: expect.stringMatching(DATE),
      consumption_date: null,
      status: 'valid',
    });
    const expires = Date.parse(String(body.expiration_date));
    expect(expires - before).toBeGreaterThan(3_590_000);
    expect(expires - before).toBeLessThanOrEqual(3_600_000);
  });

  it('decodes query values exactly (URLSearchParams)', async () => {
    const mock = await start();
    const res = await check(mock, { user_id: 'u1', token: 'a+b/c= d' });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({
      token: 'a+b/c= d',
      status: 'consumed',
      expiration_date: null,
      consumption_date: expect.stringMatching(DATE),
    });
    // A raw '+' is a space in a query string.
    const raw = await get(`${mock.url}/connection/check_token?user_id=u1&token=a%2Bb%2Fc%3D+d`, {
      headers: { 'x-apikey': API_KEY },
    });
    expect(raw.status).toBe(200);
  });

  it('sends string expiration dates verbatim and formats Dates', async () => {
    const mock = await start();
    expect((await check(mock, { user_id: 'u2', token: 't2' })).json()).toMatchObject({
      status: 'revoked',
      expiration_date: '2019-08-02T19:15:54.256000+02:00',
    });
    expect((await check(mock, { user_id: 'u3', token: 't3' })).json()).toMatchObject({
      expiration_date: '2030-01-02T03:04:05.678000+00:00',
    });
  });

  it('answers 401 without the right x-APIKey (header name in any case)', async () => {
    const mock = await start();
    const body = { errors: { authentication: 'User not authenticated' } };
    const url = `${mock.url}/connection/check_token?user_id=u1&token=t1`;
    for (const headers of [{}, { 'x-apikey': 'wrong' }, { 'x-apikey': '' }]) {
      const res = await get(url, { headers });
      expect(res.status).toBe(401);
      expect(res.json()).toEqual(body);
    }
    expect((await get(url, { headers: { 'X-APIKEY': API_KEY } })).status).toBe(200);
  });

  it('answers 400 naming the missing fields', async () => {
    const mock = await start();
    const missing = ['Missing data for required field.'];
    expect((await check(mock, { token: 't1' })).json()).toEqual({ errors: { json: { user_id: missing } } });
    const noToken = await check(mock, { user_id: 'u1' });
    expect(noToken.status).toBe(400);
    expect(noToken.json()).toEqual({ errors: { json: { token: missing } } });
    const none = await check(mock, {});
    expect(none.status).toBe(400);
    expect(none.json()).toEqual({ errors: { json: { user_id: missing, token: missing } } });
  });

  it('answers 404 for an unknown user or a token of another user', async () => {
    const mock = await start();
    for (const params of [
      { user_id: 'nobody', token: 't1' },
      { user_id: 'u2', token: 't1' },
      { user_id: 'u1', token: '' },
    ]) {
      const res = await check(mock, params);
      expect(res.status).toBe(404);
      expect(res.json()).toEqual({ errors: { json: 'Resource not found' } });
    }
  });

  it('answers 403 for a forbidden entry', async () => {
    const mock = await start();
    const res = await check(mock, { user_id: 'u4', token: 't4' });
    expect(res.status).toBe(403);
    expect(res.json()).toEqual({ errors: { authorization: 'Operation not allowed' } });
  });

  it('setToken, removeToken and calls', async () => {
    const mock = await start();
    mock.setToken({ userId: 'u9', token: 't9', status: 'expired' });
    expect((await check(mock, { user_id: 'u9', token: 't9' })).json()).toMatchObject({ status: 'expired' });
    expect(mock.removeToken('u9', 't9')).toBe(true);
    expect(mock.removeToken('u9', 't9')).toBe(false);
    expect((await check(mock, { user_id: 'u9', token: 't9' })).status).toBe(404);
    await get(`${mock.url}/other`);
    expect(mock.calls).toEqual({ checkToken: 2, total: 3 });
  });

  it('an expired token given no expirationDate expired before it was asked, after it was created, as Partoo documents expired', async () => {
    // Partoo API docs, Check connection token: "`expired` means it has expired before being used".
    const mock = track(
      await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'u1', token: 't1', status: 'expired' }] }),
    );
    const body = (await check(mock, { user_id: 'u1', token: 't1' })).json() as Record<string, string>;
    expect(body).toMatchObject({ status: 'expired', expiration_date: expect.stringMatching(DATE) });
    expect(Date.parse(body.expiration_date as string)).toBeLessThan(Date.now());
    expect(Date.parse(body.creation_date as string)).toBeLessThan(Date.parse(body.expiration_date as string));
    // So a gate that accepts `expired` refuses it, as it refuses every expired token of the real API.
    const gate = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url, accept: ['valid', 'expired'] })],
      retry: false,
    });
    onTestFinished(() => gate.close());
    const error = await rejectionOf(gate.authenticate({ headers: {}, query: { user_id: 'u1', token: 't1' } }));
    expect([error.status, error.message]).toEqual([401, 'The access token has expired']);
  });

  it('reset() brings back the expiration date a token was given at start, whatever its Date object became since', async () => {
    const expirationDate = new Date('2099-08-02T19:15:54.256Z');
    const mock = track(await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'u1', token: 't1', expirationDate }] }));
    expirationDate.setTime(Number.NaN);
    mock.reset();
    expect((await check(mock, { user_id: 'u1', token: 't1' })).json()).toMatchObject({
      expiration_date: '2099-08-02T19:15:54.256000+00:00',
    });
  });

  it('reset() brings back its first tokens, their dates made anew, and forgets the others', async () => {
    const mock = await start();
    mock.setToken({ userId: 'u9', token: 't9' });
    expect(mock.removeToken('u1', 't1')).toBe(true);
    mock.fault = { kind: 'garbage' };
    await new Promise((resolve) => setTimeout(resolve, 20));
    const before = Date.now();
    mock.reset();
    expect(mock.fault).toBeUndefined();
    expect(mock.calls).toEqual({ checkToken: 0, total: 0 });
    expect((await check(mock, { user_id: 'u9', token: 't9' })).status).toBe(404);
    const first = (await check(mock, { user_id: 'u1', token: 't1' })).json() as { creation_date: string };
    expect(Date.parse(first.creation_date)).toBeGreaterThanOrEqual(before);
    expect((await check(mock, { user_id: 'u2', token: 't2' })).json()).toMatchObject({
      status: 'revoked',
      expiration_date: '2019-08-02T19:15:54.256000+02:00',
    });
    expect((await check(mock, { user_id: 'u4', token: 't4' })).status).toBe(403);
  });

  it('refuses an empty apiKey', async () => {
    await expect(mockPartoo({ apiKey: '' })).rejects.toThrow(TypeError);
  });

  it('refuses an apiKey no request can carry, as partoo() does, never showing it', async () => {
    for (const [apiKey, fault] of [
      ['SECRETkey\n', 'no line break (read from a file?)'],
      ['SECRETclé€', 'no character past U+00FF'],
    ] as const) {
      const message = `expected characters an HTTP header can carry: ${fault}`;
      expect(() => partoo({ apiKey })).toThrow(`partoo: apiKey: ${message}`);
      await expect(mockPartoo({ apiKey })).rejects.toThrow(new TypeError(`mockPartoo: apiKey: ${message}`));
    }
    await expect(mockPartoo({ apiKey: 42 as never })).rejects.toThrow(
      'mockPartoo: apiKey: expected a non-empty string, got a number',
    );
    // A Latin-1 key is one a header carries: the mock takes it, and a provider with it is let in.
    const mock = track(await mockPartoo({ apiKey: 'clé', tokens: [{ userId: 'u', token: 't' }] }));
    const gate = createGate({ providers: [partoo({ apiKey: 'clé', baseUrl: mock.url })], retry: false });
    onTestFinished(() => gate.close());
    expect((await gate.authenticate({ headers: {}, query: { user_id: 'u', token: 't' } })).subject).toBe('u');
  });

  it('refuses options and entries it would not read, naming them and never the token', async () => {
    await expect(
      mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 'SECRETc1', expiresAt: new Date() } as never] }),
    ).rejects.toThrow('mockPartoo: tokens (entry 1): expiresAt: unknown option');
    await expect(mockPartoo({ apiKey: 'k', tokens: {} as never })).rejects.toThrow(
      'mockPartoo: tokens: expected an array of token entries',
    );
    await expect(
      mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 'SECRETc1', expirationDate: new Date(Number.NaN) }] }),
    ).rejects.toThrow('mockPartoo: tokens (entry 1): expirationDate: expected a string, a valid Date or null');
    for (const past9999 of [
      new Date('+010000-01-01T00:00:00Z'),
      new Date(8.64e15),
      new Date('-000001-12-31T00:00:00Z'),
    ]) {
      await expect(
        mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 'SECRETc1', expirationDate: past9999 }] }),
      ).rejects.toThrow(
        'mockPartoo: tokens (entry 1): expirationDate: expected a Date in the years 0000 to 9999, which Partoo writes with four digits (a string is sent as it is)',
      );
    }
    await expect(
      mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 'SECRETc1', status: 'gone' as never }] }),
    ).rejects.toThrow('mockPartoo: tokens (entry 1): status: expected one of valid, consumed, revoked, expired');
    await expect(
      mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 'SECRETc1', forbidden: 'yes' as never }] }),
    ).rejects.toThrow('mockPartoo: tokens (entry 1): forbidden: expected true or false');
    const mock = track(await mockPartoo({ apiKey: 'k' }));
    expect(() => mock.setToken({ token: 'SECRETc1' } as never)).toThrow('mockPartoo: setToken: userId');
    for (const thrown of await Promise.allSettled([
      mockPartoo({ apiKey: 'k', tokens: [{ token: 'SECRETc1' } as never] }),
    ])) {
      expect(thrown.status === 'rejected' && String(thrown.reason)).not.toContain('SECRETc1');
    }
  });
});

describe('faults', () => {
  const start = () => mockOnlineOrNot({ tokens: { good: { id: 'a1', permissions: ['p'] } } }).then(track);
  const verify = (mock: MockProvider, options: GetOptions = {}) =>
    get(`${mock.url}/v1/tokens/verify`, { headers: bearer('good'), ...options });
  const OK = { result: { id: 'a1', status: 'active' }, success: true, errors: [], messages: [] };

  it('reset: the request rejects', async () => {
    const mock = await start();
    mock.fault = { kind: 'reset' };
    await expect(verify(mock)).rejects.toMatchObject({ code: expect.stringMatching(/ECONNRESET|UND_ERR_SOCKET/) });
    expect(mock.calls.verify).toBe(1);
  });

  it('hang: only an abort ends the request', async () => {
    const mock = await start();
    mock.fault = { kind: 'hang' };
    const started = Date.now();
    await expect(verify(mock, { signal: AbortSignal.timeout(150) })).rejects.toMatchObject({
      name: expect.stringMatching(/TimeoutError|AbortError/),
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it("status: 503 with the API's own error body by default", async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 503 };
    const res = await verify(mock);
    expect(res.status).toBe(503);
    expect(res.json()).toEqual({
      result: null,
      success: false,
      errors: [{ code: 503, message: 'Service Unavailable' }],
      messages: [],
    });
    expect(res.headers['retry-after']).toBeUndefined();
  });

  it('a 4xx status fault means to a gate what the same status means from the real API', async () => {
    const oon = await start();
    const pt = track(await mockPartoo({ apiKey: 'mock-key', tokens: [{ userId: 'u1', token: 't1' }] }));
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: 'mock-key', baseUrl: pt.url })],
      retry: false,
    });
    onTestFinished(() => gate.close());
    const outcome = (req: Parameters<typeof gate.authenticate>[0]) =>
      gate.authenticate(req).then(
        () => 200,
        (error: { status: number }) => error.status,
      );
    const connection = (i: number) => ({ headers: {}, query: { user_id: 'u1', token: `t${i}` } });
    oon.fault = { kind: 'status', status: 401 };
    expect(await outcome({ headers: bearer('good') })).toBe(401); // OnlineOrNot: the token is refused
    for (const [status, expected] of [
      [400, 401], // Partoo: a request it cannot read, a rejection
      [404, 401], // Partoo: not found, a rejection
      [403, 401], // Partoo: not allowed, a rejection
      [401, 500], // Partoo: the server's API key is refused
    ] as const) {
      pt.fault = { kind: 'status', status };
      expect(await outcome(connection(status))).toBe(expected);
    }
  });

  it('status: 429 with Retry-After', async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 429, retryAfter: 7 };
    const res = await verify(mock);
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('7');
  });

  it('status: custom body, text/plain when not JSON', async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 502, body: '<h1>Bad Gateway</h1>' };
    const res = await verify(mock);
    expect(res.status).toBe(502);
    expect(res.text).toBe('<h1>Bad Gateway</h1>');
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
  });

  it.each([204, 205, 304])('status: %i, which has no content, is answered cleanly without a body', async (status) => {
    const mock = await start();
    mock.fault = { kind: 'status', status, retryAfter: 3 };
    const res = await verify(mock);
    expect(res.status).toBe(status);
    expect(res.text).toBe('');
    expect(res.headers['retry-after']).toBe('3');
    expect(res.headers['content-type']).toBeUndefined();
    expect(res.headers['content-length']).toBe(status === 205 ? '0' : undefined);
    // The connection stays usable: the next answer is read whole.
    mock.fault = undefined;
    expect((await verify(mock)).json()).toEqual(OK);
  });

  it.each([204, 304])('status: %i reaches a gate as that status, a 503 as a 500 would be', async (status) => {
    const mock = await start();
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false });
    onTestFinished(() => gate.close());
    for (const fault of [500, status]) {
      mock.fault = { kind: 'status', status: fault };
      const error = await rejectionOf(gate.authenticate({ headers: bearer('good') }));
      expect(error).toMatchObject({ code: 'provider_unavailable', status: 503 });
      expect((error.cause as Error).message).toMatch(new RegExp(`^onlineornot GET /v1/\\S+ answered ${fault}\\b`));
    }
  });

  it('status: refuses a body for a status that has no content', async () => {
    const mock = await start();
    for (const status of [204, 205, 304]) {
      expect(() => {
        mock.fault = { kind: 'status', status, body: '{}' };
      }).toThrow(new RangeError(`Invalid mock fault 'status': body must be absent: a ${status} answer has no content`));
    }
    expect(mock.fault).toBeUndefined();
    mock.fault = { kind: 'status', status: 204, body: '' };
    expect((await verify(mock)).status).toBe(204);
  });

  it('garbage: 200 application/json that is not JSON', async () => {
    const mock = await start();
    mock.fault = { kind: 'garbage' };
    const res = await verify(mock);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(() => res.json()).toThrow(SyntaxError);
  });

  it('wrong-shape: 200 JSON of another shape, for each mock', async () => {
    const mock = await start();
    mock.fault = { kind: 'wrong-shape' };
    const res = await verify(mock);
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ result: { id: 42 } });

    const partoo = track(await mockPartoo({ apiKey: 'k' }));
    partoo.fault = { kind: 'wrong-shape' };
    expect((await get(`${partoo.url}/connection/check_token`)).json()).toEqual({ status: 'maybe' });
  });

  it('wrong-content-type: text/html with the correct body', async () => {
    const mock = await start();
    mock.fault = { kind: 'wrong-content-type' };
    const res = await verify(mock);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.json()).toEqual(OK);
  });

  it('huge: valid JSON of the requested size, without Content-Length', async () => {
    const mock = await start();
    mock.fault = { kind: 'huge', bytes: 3_000_000 };
    const res = await verify(mock);
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBeUndefined();
    expect(Buffer.byteLength(res.text)).toBe(3_000_000);
    expect(res.json()).toEqual({ padding: expect.any(String) });
  });

  it('drip: headers at once, then a byte per interval, never finishing', async () => {
    const mock = await start();
    mock.fault = { kind: 'drip', intervalMs: 20 };
    const res = await request(`${mock.url}/v1/tokens/verify`, { signal: AbortSignal.timeout(300) });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    let received = 0;
    await expect(
      (async () => {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
      })(),
    ).rejects.toMatchObject({ name: expect.stringMatching(/TimeoutError|AbortError/) });
    expect(received).toBeGreaterThan(3);
  });

  it('redirect: 302 with Location', async () => {
    const mock = await start();
    mock.fault = { kind: 'redirect', location: 'http://127.0.0.1:1/elsewhere' };
    const res = await verify(mock);
    expect(res.status).toBe(302);
    expect(res.headers.location).toBe('http://127.0.0.1:1/elsewhere');
  });

  it('every: 2 alternates (flapping), counted from when the fault is set', async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 500, every: 2 };
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await verify(mock)).status);
    expect(statuses).toEqual([200, 500, 200, 500]);

    mock.fault = { kind: 'reset', every: 2 };
    expect((await verify(mock)).status).toBe(200);
    await expect(verify(mock)).rejects.toThrow();
    expect((await verify(mock)).status).toBe(200);

    mock.fault = undefined;
    expect((await verify(mock)).json()).toEqual(OK);
    expect(mock.calls.verify).toBe(8);
  });

  it('every counts OnlineOrNot verifications: verify and permissions with the same Authorization are one', async () => {
    const mock = await start();
    mock.setToken('other', { id: 'a2' });
    const ask = (endpoint: 'verify' | 'permissions', token: string) =>
      get(`${mock.url}/v1/tokens/${endpoint}`, { headers: bearer(token) }).then((res) => res.status);
    mock.fault = { kind: 'status', status: 500, every: 2 };
    // 1st verification: both answered normally; 2nd: both get the fault; 3rd, permissions first: normal.
    expect([await ask('verify', 'good'), await ask('permissions', 'good')]).toEqual([200, 200]);
    expect([await ask('verify', 'other'), await ask('permissions', 'other')]).toEqual([500, 500]);
    expect([await ask('permissions', 'good'), await ask('verify', 'good')]).toEqual([200, 200]);
    // Interleaved: the 4th (good) gets the fault, the 5th (other) does not, whatever the order of arrival.
    expect(await ask('verify', 'good')).toBe(500);
    expect(await ask('verify', 'other')).toBe(200);
    expect(await ask('permissions', 'other')).toBe(200);
    expect(await ask('permissions', 'good')).toBe(500);
    // A second verify of the same token is a new verification, not the partner of the first.
    mock.fault = { kind: 'status', status: 500, every: 2 };
    expect([await ask('verify', 'good'), await ask('verify', 'good')]).toEqual([200, 500]);
  });

  /** Each token's answer from `gate`, one after the other: the subject, or the error's status. */
  async function outcomesOf(gate: Gate, tokens: readonly string[]): Promise<Array<string | number>> {
    const outcomes: Array<string | number> = [];
    for (const token of tokens) {
      outcomes.push(
        await gate.authenticate({ headers: bearer(token) }).then(
          (auth) => auth.subject,
          (error: { status: number }) => error.status,
        ),
      );
    }
    return outcomes;
  }

  it('every: 2 on OnlineOrNot fails every second verification through a real gate, not all', async () => {
    const mock = await start();
    const tokens = Array.from({ length: 6 }, (_, i) => `token-${i}`);
    for (const [i, token] of tokens.entries()) mock.setToken(token, { id: `id-${i}`, permissions: ['p'] });
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false });
    try {
      mock.fault = { kind: 'status', status: 502, every: 2 };
      const outcomes = await outcomesOf(gate, tokens);
      expect(outcomes).toEqual(['id-0', 503, 'id-2', 503, 'id-4', 503]);
      expect(mock.calls).toMatchObject({ verify: 6, permissions: 6 });
    } finally {
      await gate.close();
    }
  });

  it('pairs the two requests of a gate with one socket, the second sent once the first is answered past a second', async () => {
    const mock = await start();
    const tokens = Array.from({ length: 3 }, (_, i) => `one-socket-${i}`);
    for (const [i, token] of tokens.entries()) mock.setToken(token, { id: `id-${i}`, permissions: ['p'] });
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: mock.url, connections: 1 })],
      retry: false,
      breaker: false,
      timeout: 10_000,
    });
    try {
      mock.fault = { kind: 'status', status: 502, every: 2 };
      mock.latency = 1050;
      const outcomes = await outcomesOf(gate, tokens);
      expect(outcomes).toEqual(['id-0', 503, 'id-2']);
    } finally {
      mock.latency = 0;
      await gate.close();
    }
  }, 20_000);

  it.each([
    ['more than a second', 1100],
    ['just', 0],
  ])(
    "a lone request (the app's own call) %s before a gate's verifications of its token is no partner for theirs",
    async (_when, wait) => {
      const mock = await start();
      mock.setToken('lone', { id: 'id-lone', permissions: ['p'] });
      const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false });
      try {
        mock.fault = { kind: 'status', status: 502, every: 2 };
        // Verification 1: a verify request alone, as a health check of the app's own might send.
        expect((await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('lone') })).status).toBe(200);
        await new Promise((resolve) => setTimeout(resolve, wait));
        const outcomes: Array<string | number> = [];
        for (let i = 0; i < 4; i++) {
          gate.clear();
          outcomes.push(...(await outcomesOf(gate, ['lone'])));
        }
        expect(outcomes).toEqual([503, 'id-lone', 503, 'id-lone']);
        expect(mock.calls).toMatchObject({ verify: 5, permissions: 4 });
      } finally {
        await gate.close();
      }
    },
  );

  it.each([1, 4])(
    'pairs the requests of two gates verifying one token at once (%i connections each): one of each two fails',
    async (connections) => {
      const mock = await start();
      mock.setToken('shared', { id: 'id-shared', permissions: ['p'] });
      const gates = [0, 1].map(() =>
        createGate({ providers: [onlineOrNot({ baseUrl: mock.url, connections })], retry: false, breaker: false }),
      );
      try {
        for (let round = 0; round < 3; round++) {
          mock.fault = { kind: 'status', status: 502, every: 2 };
          const outcomes = await Promise.all(gates.map((gate) => outcomesOf(gate, ['shared'])));
          for (const gate of gates) gate.clear();
          expect(outcomes.flat().map(String).sort()).toEqual(['503', 'id-shared']);
        }
      } finally {
        await Promise.all(gates.map((gate) => gate.close()));
      }
    },
  );

  it('a request completing a verification begun before the fault was set is not counted, nor faulted', async () => {
    const mock = await start();
    const tokens = Array.from({ length: 4 }, (_, i) => `after-${i}`);
    for (const [i, token] of tokens.entries()) mock.setToken(token, { id: `id-${i}`, permissions: ['p'] });
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false });
    try {
      // A gate's verification of a rejected token: its verify answered, its permissions still on the way (the gate
      // decided on verify's 401 and left the other call running) when the test sets the fault.
      expect((await get(`${mock.url}/v1/tokens/verify`, { headers: bearer('rejected') })).status).toBe(401);
      mock.fault = { kind: 'status', status: 502, every: 2 };
      const late = await get(`${mock.url}/v1/tokens/permissions`, { headers: bearer('rejected') });
      expect(late.status).toBe(401);
      expect(await outcomesOf(gate, tokens)).toEqual(['id-0', 503, 'id-2', 503]);
    } finally {
      await gate.close();
    }
  });

  it('a path or method the mock does not serve gets its 404 or 405 and is not counted', async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 500, every: 2 };
    expect((await get(`${mock.url}/healthz`)).status).toBe(404);
    expect((await request(`${mock.url}/v1/tokens/verify`, { method: 'POST' })).statusCode).toBe(405);
    expect([(await verify(mock)).status, (await verify(mock)).status]).toEqual([200, 500]);
    mock.fault = { kind: 'status', status: 500 };
    expect((await get(`${mock.url}/healthz`)).status).toBe(404);
  });

  it('endpoints: the fault only on the named endpoints, the rest of the verification normal', async () => {
    const mock = await start();
    mock.fault = { kind: 'status', status: 503, endpoints: ['permissions'] };
    expect((await verify(mock)).json()).toEqual(OK);
    const permissions = await get(`${mock.url}/v1/tokens/permissions`, { headers: bearer('good') });
    expect(permissions.status).toBe(503);

    const partooMock = track(await mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 't' }] }));
    partooMock.fault = { kind: 'status', status: 502, endpoints: ['checkToken'] };
    const checked = await get(`${partooMock.url}/connection/check_token?user_id=u&token=t`, {
      headers: { 'x-apikey': 'k' },
    });
    expect(checked.status).toBe(502);
  });

  it('delay: the normal answer, late', async () => {
    const mock = await start();
    mock.fault = { kind: 'delay', ms: 120 };
    const started = Date.now();
    expect((await verify(mock)).json()).toEqual(OK);
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
  });

  it('rejects out-of-range faults', async () => {
    const mock = await start();
    expect(() => {
      mock.fault = { kind: 'hang', every: 0 };
    }).toThrow(RangeError);
    expect(() => {
      mock.fault = { kind: 'status', status: 42 };
    }).toThrow(RangeError);
    expect(() => {
      mock.fault = { kind: 'huge', bytes: 3 };
    }).toThrow(RangeError);
    expect(() => {
      mock.fault = { kind: 'delay', ms: 0 };
    }).toThrow(RangeError);
    // Node fires a timer longer than 2^31-1 ms at once: such a delay or drip would answer at once, not late.
    for (const fault of [
      { kind: 'delay', ms: 2 ** 31 },
      { kind: 'delay', ms: Number.POSITIVE_INFINITY },
      { kind: 'drip', intervalMs: 2 ** 31 },
      { kind: 'drip', intervalMs: Number.NaN },
      { kind: 'drip', intervalMs: 0 },
    ] as const) {
      expect(() => {
        mock.fault = fault;
      }).toThrow(RangeError);
    }
    // Retry-After is delta-seconds, digits: a number JavaScript writes with an exponent is no such header.
    expect(() => {
      mock.fault = { kind: 'status', status: 429, retryAfter: 1e21 };
    }).toThrow(
      new RangeError(
        "Invalid mock fault 'status': retryAfter must be a non-negative integer of at most 2^53 - 1 seconds",
      ),
    );
    expect(() => {
      mock.fault = { kind: 'hang', every: 1e21 };
    }).toThrow(RangeError);
    expect(() => {
      mock.fault = { kind: 'hang', endpoints: [] };
    }).toThrow(RangeError);
    expect(() => {
      mock.fault = { kind: 'hang', endpoints: ['checkToken'] };
    }).toThrow(RangeError);
    // A header the answer could not carry, a body that is not text.
    for (const fault of [
      { kind: 'redirect', location: 'http://127.0.0.1:9/\r\nx-injected: 1' },
      { kind: 'redirect' },
      { kind: 'status', status: 503, body: { error: 'x' } },
    ]) {
      expect(() => {
        mock.fault = fault as never;
      }).toThrow(RangeError);
    }
    expect(mock.fault).toBeUndefined();
  });

  it('keeps the fault as it was checked: changing the object assigned afterwards changes nothing', async () => {
    const mock = await start();
    const fault: { kind: 'status'; status: number; endpoints: string[] } = {
      kind: 'status',
      status: 503,
      endpoints: ['verify'],
    };
    mock.fault = fault;
    fault.status = 99;
    fault.endpoints.push('permissions');
    fault.endpoints[0] = 'nowhere';
    expect(mock.fault).toEqual({ kind: 'status', status: 503, endpoints: ['verify'] });
    expect(Object.isFrozen(mock.fault)).toBe(true);
    expect(Object.isFrozen(mock.fault?.endpoints)).toBe(true);
    expect((await verify(mock)).status).toBe(503);
    const permissions = await get(`${mock.url}/v1/tokens/permissions`, { headers: bearer('good') });
    expect(permissions.status).toBe(200);
    // What is read back is the copy: changing it throws rather than reach the mock.
    expect(() => {
      (mock.fault as { status: number }).status = 99;
    }).toThrow(TypeError);
    expect((await verify(mock)).status).toBe(503);
  });

  it('refuses a fault of an unknown kind, or no fault object, rather than hang or do nothing', async () => {
    const mock = await start();
    for (const fault of [{ kind: 'timout' }, { status: 503 }, null, 'reset']) {
      expect(() => {
        mock.fault = fault as never;
      }).toThrow(TypeError);
    }
    expect(() => {
      mock.fault = { kind: 'timout' } as never;
    }).toThrow(
      "Invalid mock fault: expected an object whose kind is one of reset, hang, status, garbage, wrong-shape, wrong-content-type, huge, drip, redirect, delay, got kind 'timout'",
    );
    expect(mock.fault).toBeUndefined();
    expect((await verify(mock)).json()).toEqual(OK);
    // An option the fault's kind does not take (a misspelling, built in a table where TypeScript cannot see it).
    const misspelled: Array<[object, string]> = [
      [
        { kind: 'status', status: 503, endpoint: ['permissions'] },
        "Invalid mock fault 'status': unknown option endpoint (did you mean endpoints?); it takes status, retryAfter, body, every, endpoints",
      ],
      [
        { kind: 'status', status: 503, evry: 2 },
        "Invalid mock fault 'status': unknown option evry (did you mean every?)",
      ],
      [{ kind: 'status', status: 429, retry_after: 5 }, 'unknown option retry_after (did you mean retryAfter?)'],
      [{ kind: 'hang', status: 503 }, "Invalid mock fault 'hang': unknown option status; it takes every, endpoints"],
    ];
    for (const [fault, message] of misspelled) {
      expect(() => {
        mock.fault = fault as never;
      }).toThrow(new TypeError(message).message);
    }
    expect(mock.fault).toBeUndefined();
    // A Location Node can send is taken, an empty one too.
    mock.fault = { kind: 'redirect', location: '' };
    expect((await verify(mock)).status).toBe(302);
  });

  it('rejects a latency that is not a timer Node keeps, and keeps the one it had', async () => {
    const mock = await start();
    mock.latency = 30;
    for (const [latency, got] of [
      [-1, '-1'],
      [Number.NaN, 'NaN'],
      [2 ** 31, '2147483648'],
      [Number.POSITIVE_INFINITY, 'Infinity'],
      ['5', 'a string'], // not the number 5, which would be taken
      [undefined, 'undefined'],
      [{}, 'an object'],
    ] as const) {
      expect(() => {
        mock.latency = latency as number;
      }).toThrow(new RangeError(`Invalid mock latency: expected 0 to 2147483647 ms, got ${got}`));
    }
    expect(mock.latency).toBe(30);
    const started = Date.now();
    expect((await verify(mock)).json()).toEqual(OK);
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
  });

  it('a client leaving during the latency does not disturb the mock', async () => {
    const mock = await start();
    mock.latency = 80;
    await expect(verify(mock, { signal: AbortSignal.timeout(20) })).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 120));
    mock.latency = 0;
    expect((await verify(mock)).json()).toEqual(OK);
  });

  it('latency delays every answer', async () => {
    const mock = await start();
    mock.latency = 120;
    const started = Date.now();
    expect((await verify(mock)).status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(110);
  });
});

describe('connections and close', () => {
  it('counts TCP connections: keep-alive reuses one', async () => {
    const mock = track(await mockPartoo({ apiKey: 'k', tokens: [{ userId: 'u', token: 't' }] }));
    const pool = new Pool(new URL(mock.url).origin, { connections: 1 });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await get(`${mock.url}/connection/check_token?user_id=u&token=t`, {
          dispatcher: pool,
          headers: { 'x-apikey': 'k' },
        });
        expect(res.status).toBe(200);
      }
      expect(mock.connections).toBe(1);
      expect(mock.calls.checkToken).toBe(2);
    } finally {
      await pool.close();
    }
    const other = new Pool(new URL(mock.url).origin, { connections: 1 });
    await get(`${mock.url}/x`, { dispatcher: other });
    await other.close();
    expect(mock.connections).toBe(2);
  });

  it('close() without any connection releases the listening socket', async () => {
    const servers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'TCPServerWrap').length;
    const before = servers();
    const mock = await mockPartoo({ apiKey: 'k' });
    expect(servers()).toBe(before + 1);
    await mock.close();
    expect(servers()).toBe(before);
  });

  it('close() destroys pending requests and leaves no sockets or timers', async () => {
    // Timers are counted from the ones created here: the test runner's own come and go meanwhile.
    const timers = watchTimers();
    onTestFinished(() => timers.stop());
    const count = () => {
      const counts = { TCPServerWrap: 0, TCPSocketWrap: 0, Timeout: timers.pending() };
      for (const kind of process.getActiveResourcesInfo())
        if (kind === 'TCPServerWrap' || kind === 'TCPSocketWrap') counts[kind]++;
      return counts;
    };
    const before = count();
    expect(before.Timeout).toBe(0);
    const mock = await mockOnlineOrNot({ tokens: { good: { id: 'a1' } } });
    const pool = new Pool(new URL(mock.url).origin, { connections: 4 });
    const url = `${mock.url}/v1/tokens/verify`;
    const headers = bearer('good');

    expect((await get(url, { headers, dispatcher: pool })).status).toBe(200);
    // Settings are read when a request arrives: wait for each before changing them.
    const pending: Promise<unknown>[] = [];
    const send = async () => {
      const total = mock.calls.total;
      pending.push(get(url, { headers, dispatcher: pool }).catch((e: unknown) => e));
      while (mock.calls.total === total) await new Promise((resolve) => setImmediate(resolve));
    };
    mock.latency = 60_000;
    await send();
    mock.latency = 0;
    mock.fault = { kind: 'drip', intervalMs: 10_000 };
    await send();
    mock.fault = { kind: 'hang' };
    await send();

    const during = count();
    expect(during.TCPServerWrap).toBe(before.TCPServerWrap + 1);
    expect(during.Timeout).toBeGreaterThanOrEqual(before.Timeout + 2);
    expect(during.TCPSocketWrap).toBeGreaterThanOrEqual(before.TCPSocketWrap + 6);

    await mock.close();
    // Server side fully gone as soon as close() resolves.
    const after = count();
    expect(after.TCPServerWrap).toBe(before.TCPServerWrap);
    expect(after.Timeout).toBeLessThanOrEqual(before.Timeout);
    expect(after.TCPSocketWrap).toBeLessThanOrEqual(before.TCPSocketWrap + 3); // client ends still closing

    for (const outcome of await Promise.all(pending)) expect(outcome).toBeInstanceOf(Error);
    await pool.destroy();
    expect(count()).toEqual(before);

    await mock.close(); // idempotent
    const refused = connect(new URL(mock.url).port ? Number(new URL(mock.url).port) : 0, '127.0.0.1');
    await expect(
      new Promise((resolve, reject) => {
        refused.once('connect', resolve);
        refused.once('error', reject);
      }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
