/**
 * mockIntrospection on its own, over real HTTP: what it answers to requests
 * a provider might get wrong (method, content type, two client
 * authentication methods, an oversized body), its metadata documents, and
 * its counts.
 */
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { createGate, introspection } from '../src/index.js';
import { mockIntrospection } from '../src/testing/index.js';
import { closeAfterEach } from './support/close-after-each.js';

const closeLater = closeAfterEach();
const BASIC = `Basic ${Buffer.from('client:secret').toString('base64')}`;
const FORM = 'application/x-www-form-urlencoded';

async function post(url: string, headers: Record<string, string>, body: string) {
  const res = await request(url, { method: 'POST', headers, body });
  return { status: res.statusCode, headers: res.headers, body: (await res.body.json()) as unknown };
}

const start = () =>
  mockIntrospection({ clientId: 'client', clientSecret: 'secret', tokens: { t1: { active: true, sub: 'u' } } }).then(
    closeLater,
  );

describe('mockIntrospection', () => {
  it('answers a known token, and {"active":false} for any other', async () => {
    const mock = await start();
    expect(mock.endpoint).toBe(`${mock.url}/introspect`);
    expect(await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, 'token=t1')).toMatchObject({
      status: 200,
      body: { active: true, sub: 'u' },
    });
    expect((await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, 'token=t2')).body).toEqual({
      active: false,
    });
    mock.setToken('t2', { active: true, sub: 'v' });
    expect(mock.removeToken('t1')).toBe(true);
    expect((await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, 'token=t2')).body).toEqual({
      active: true,
      sub: 'v',
    });
    expect(mock.calls).toEqual({ introspect: 3, oauthMetadata: 0, openidMetadata: 0, total: 3 });
    mock.latency = 10;
    mock.reset();
    expect(mock.calls).toEqual({ introspect: 0, oauthMetadata: 0, openidMetadata: 0, total: 0 });
    expect(mock.latency).toBe(0);
    const introspect = async (token: string) =>
      (await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, `token=${token}`)).body;
    expect(await introspect('t1')).toMatchObject({ active: true, sub: 'u' });
    expect(await introspect('t2')).toEqual({ active: false });
  });

  it('401 invalid_client with a Basic challenge for a wrong or missing client', async () => {
    const mock = await start();
    const wrong = `Basic ${Buffer.from('client:nope').toString('base64')}`;
    for (const headers of [{ authorization: wrong }, {}, { authorization: 'Bearer t1' }]) {
      const res = await post(mock.endpoint, { ...headers, 'content-type': FORM }, 'token=t1');
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ error: 'invalid_client' });
      expect(res.headers['www-authenticate']).toBe('Basic realm="mock"');
    }
  });

  it('with clientAuth post, a 401 carries a Basic challenge only when the client tried Basic (RFC 6749 §5.2)', async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: 'client', clientSecret: 'secret', clientAuth: 'post' }),
    );
    const triedBasic = await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, 'token=t1');
    expect(triedBasic.status).toBe(401);
    expect(triedBasic.headers['www-authenticate']).toBe('Basic realm="mock"');
    const wrongInBody = await post(
      mock.endpoint,
      { 'content-type': FORM },
      'token=t1&client_id=client&client_secret=no',
    );
    expect(wrongInBody.status).toBe(401);
    expect(wrongInBody.headers['www-authenticate']).toBeUndefined();
  });

  it('with accessToken alone, takes that Bearer token and no client: RFC 6750 §3 challenges for any other', async () => {
    const mock = closeLater(await mockIntrospection({ accessToken: 'rs-token', tokens: { t1: { active: true } } }));
    const introspect = (headers: Record<string, string>) =>
      post(mock.endpoint, { ...headers, 'content-type': FORM }, 'token=t1');
    expect(await introspect({ authorization: 'Bearer rs-token' })).toMatchObject({
      status: 200,
      body: { active: true },
    });
    expect(await introspect({ authorization: 'bearer   rs-token' })).toMatchObject({ status: 200 });
    for (const authorization of ['Bearer rs-token2', 'Bearer rs token', 'Bearer t1']) {
      const refused = await introspect({ authorization });
      expect(refused).toMatchObject({ status: 401, body: { error: 'invalid_token' } });
      expect(refused.headers['www-authenticate']).toBe('Bearer realm="mock", error="invalid_token"');
    }
    const anonymous = await introspect({});
    expect(anonymous).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(anonymous.headers['www-authenticate']).toBe('Bearer realm="mock"');
    const basic = await introspect({ authorization: BASIC });
    expect(basic).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(basic.headers['www-authenticate']).toBe('Basic realm="mock"');
    const both = await post(
      mock.endpoint,
      { authorization: 'Bearer rs-token', 'content-type': FORM },
      'token=t1&client_id=client&client_secret=secret',
    );
    expect(both).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    const metadata = await request(`${mock.url}/.well-known/oauth-authorization-server`);
    expect(await metadata.body.json()).toMatchObject({ introspection_endpoint_auth_methods_supported: ['Bearer'] });
  });

  it('with a client and accessToken, takes either, and lists both in its metadata', async () => {
    const mock = closeLater(
      await mockIntrospection({
        clientId: 'client',
        clientSecret: 'secret',
        accessToken: 'rs-token',
        tokens: { t1: { active: true } },
      }),
    );
    for (const authorization of [BASIC, 'Bearer rs-token']) {
      expect(await post(mock.endpoint, { authorization, 'content-type': FORM }, 'token=t1')).toMatchObject({
        status: 200,
        body: { active: true },
      });
    }
    const anonymous = await post(mock.endpoint, { 'content-type': FORM }, 'token=t1');
    expect(anonymous.headers['www-authenticate']).toBe('Basic realm="mock"');
    const metadata = await request(`${mock.url}/.well-known/openid-configuration`);
    expect(await metadata.body.json()).toMatchObject({
      introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'Bearer'],
    });
  });

  it('refuses an accessToken that is no bearer token, and credentials that are not a pair, naming the option', async () => {
    const refused = async (options: Record<string, unknown>) => {
      const error = await mockIntrospection(options as never).then(
        (mock) => mock.close().then(() => new Error('started')),
        (error: unknown) => error,
      );
      expect(error).toBeInstanceOf(TypeError);
      return (error as Error).message;
    };
    const message = await refused({ accessToken: 'rs token\n' });
    expect(message).toBe('mockIntrospection: accessToken: expected a bearer token (b64token syntax)');
    expect(await refused({ accessToken: '' })).toBe(
      'mockIntrospection: accessToken: expected a non-empty string, got an empty string',
    );
    expect(await refused({})).toBe('mockIntrospection: clientId: expected clientId and clientSecret, or accessToken');
    expect(await refused({ clientId: 'client', accessToken: 'rs-token' })).toBe(
      'mockIntrospection: clientSecret: expected a non-empty string, got undefined',
    );
    expect(await refused({ clientAuth: 'post', accessToken: 'rs-token' })).toBe(
      'mockIntrospection: clientAuth: expected clientId and clientSecret with it',
    );
  });

  it('400 invalid_request for another content type, two client methods or no token', async () => {
    const mock = await start();
    const cases = [
      [{ authorization: BASIC, 'content-type': 'application/json' }, '{"token":"t1"}'],
      [{ authorization: BASIC, 'content-type': FORM }, 'token=t1&client_id=client&client_secret=secret'],
      [{ authorization: BASIC, 'content-type': FORM }, 'token_type_hint=access_token'],
    ] as const;
    for (const [headers, body] of cases) {
      expect(await post(mock.endpoint, headers, body)).toMatchObject({
        status: 400,
        body: { error: 'invalid_request' },
      });
    }
  });

  it('405 naming POST in Allow for GET /introspect (RFC 9110 §15.5.6), 413 for a body over 64 KiB, both without counting as introspect', async () => {
    const mock = await start();
    const get = await request(mock.endpoint);
    expect(get.statusCode).toBe(405);
    expect(get.headers.allow).toBe('POST');
    await get.body.dump();
    const metadata = await request(`${mock.url}/.well-known/oauth-authorization-server`, { method: 'POST' });
    expect(metadata.statusCode).toBe(405);
    expect(metadata.headers.allow).toBe('GET');
    await metadata.body.dump();
    const huge = await post(
      mock.endpoint,
      { authorization: BASIC, 'content-type': FORM },
      `token=${'x'.repeat(70_000)}`,
    );
    expect(huge.status).toBe(413);
    expect(mock.calls).toMatchObject({ introspect: 1, oauthMetadata: 0, total: 3 });
  });

  it('serves both metadata documents for its issuer, with any members replaced', async () => {
    const mock = closeLater(
      await mockIntrospection({
        clientId: 'client',
        clientSecret: 'secret',
        clientAuth: 'post',
        issuerPath: '/realms/a/',
        metadata: { scopes_supported: ['orders:read'] },
      }),
    );
    expect(mock.issuer).toBe(`${mock.url}/realms/a/`);
    const expected = {
      issuer: mock.issuer,
      introspection_endpoint: mock.endpoint,
      introspection_endpoint_auth_methods_supported: ['client_secret_post'],
      response_types_supported: ['code'],
      scopes_supported: ['orders:read'],
    };
    for (const path of [
      '/.well-known/oauth-authorization-server/realms/a',
      '/.well-known/openid-configuration/realms/a',
      '/realms/a/.well-known/openid-configuration',
    ]) {
      const res = await request(mock.url + path);
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual(expected);
    }
    expect(mock.calls).toMatchObject({ oauthMetadata: 1, openidMetadata: 2 });
  });

  it('serves an issuer path with characters a URL escapes where a client asks for it', async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: 'c', clientSecret: 's', issuerPath: '/realms/my realm' }),
    );
    expect(mock.issuer).toBe(`${mock.url}/realms/my%20realm`);
    const res = await request(`${mock.url}/.well-known/oauth-authorization-server/realms/my%20realm`);
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ issuer: mock.issuer });
  });

  it.each([
    ['//evil.example/x', 'expected a path starting with a single / (// starts a host)'],
    ['/a?b', 'expected a path without ? or # (a query or fragment is no part of it)'],
    ['/realms/a#b', 'expected a path without ? or # (a query or fragment is no part of it)'],
    ['/a/../b', 'expected a path without . or .. segments (a URL resolves them away)'],
    ['/a/./b', 'expected a path without . or .. segments (a URL resolves them away)'],
    ['/a/..', 'expected a path without . or .. segments (a URL resolves them away)'],
    ['/a/%2E%2e/b', 'expected a path without . or .. segments (a URL resolves them away)'],
    ['/a\\b', 'expected a path a URL keeps as written: no \\, tab or line break, nor white space at its end'],
    ['/a\tb', 'expected a path a URL keeps as written: no \\, tab or line break, nor white space at its end'],
    ['/realms/a ', 'expected a path a URL keeps as written: no \\, tab or line break, nor white space at its end'],
  ])('refuses an issuerPath a URL would rewrite: %j', async (issuerPath, expected) => {
    await expect(mockIntrospection({ clientId: 'c', clientSecret: 's', issuerPath })).rejects.toThrow(
      new TypeError(`mockIntrospection: issuerPath: ${expected}`),
    );
  });

  it.each([
    ['/realms/a..b/.x', '/realms/a..b/.x'],
    ['/realms/100%', '/realms/100%'],
    ['/realms/my%20realm', '/realms/my%20realm'],
    ['/realms/é', '/realms/%C3%A9'],
  ])('takes an issuerPath a URL keeps but for percent-encoding: %j', async (issuerPath, served) => {
    const mock = closeLater(await mockIntrospection({ clientId: 'c', clientSecret: 's', issuerPath }));
    expect(mock.issuer).toBe(`${mock.url}${served}`);
    const res = await request(`${mock.url}/.well-known/oauth-authorization-server${served}`);
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ issuer: mock.issuer });
  });

  it('answers 404 for a document it was told not to serve, and refuses bad options', async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: 'c', clientSecret: 's', wellKnown: ['openid-configuration'] }),
    );
    const res = await request(`${mock.url}/.well-known/oauth-authorization-server`);
    expect(res.statusCode).toBe(404);
    await res.body.dump();
    await expect(mockIntrospection({ clientId: '', clientSecret: 's' })).rejects.toThrow(TypeError);
    await expect(mockIntrospection({ clientId: 'c', clientSecret: 's', issuerPath: 'realms' })).rejects.toThrow(
      'mockIntrospection: issuerPath: expected a path starting with /',
    );
    await expect(mockIntrospection({ clientId: 'c', clientSecret: 's', clientAuth: 'jwt' as never })).rejects.toThrow(
      "mockIntrospection: clientAuth: expected 'basic' or 'post'",
    );
    await expect(
      mockIntrospection({ clientId: 'c', clientSecret: 's', wellKnown: ['openid'] as never }),
    ).rejects.toThrow('mockIntrospection: wellKnown');
    await expect(
      mockIntrospection({ clientId: 'c', clientSecret: 's', tokens: { 'a b': { active: true } } }),
    ).rejects.toThrow('mockIntrospection: tokens (entry 1): a bearer token must be b64token syntax');
    await expect(
      mockIntrospection({ clientId: 'c', clientSecret: 's', tokens: { SECRETt1: 'active' as never } }),
    ).rejects.toThrow('mockIntrospection: tokens (entry 1): expected an introspection answer object, got a string');
    await expect(
      mockIntrospection({ clientId: 'c', clientSecret: 's', metadata: ['issuer'] as never }),
    ).rejects.toThrow('mockIntrospection: metadata: expected an object, got an array');
    expect(() => mock.setToken('SECRETt2', null as never)).toThrow('mockIntrospection: setToken: expected');
    const metadata = await request(`${mock.url}/.well-known/openid-configuration`);
    expect(await metadata.body.json()).toMatchObject({ response_types_supported: ['code'] });
  });

  it('refuses at once an answer JSON cannot write, naming it, and sends the answers as they were given', async () => {
    // A BigInt or a cycle would throw only when a request came, as an uncaught exception in the test process.
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await expect(
      mockIntrospection({ clientId: 'c', clientSecret: 's', tokens: { SECRETt1: { active: true, n: 1n } } }),
    ).rejects.toThrow(/^mockIntrospection: tokens \(entry 1\): expected an answer JSON can write/);
    await expect(mockIntrospection({ clientId: 'c', clientSecret: 's', metadata: { jwks: cyclic } })).rejects.toThrow(
      /^mockIntrospection: metadata: jwks: expected an answer JSON can write/,
    );
    const mock = await start();
    expect(() => mock.setToken('SECRETt2', { active: true, n: 2n })).toThrow(
      /^mockIntrospection: setToken: expected an answer JSON can write/,
    );
    // What the mock was given is what it answers, whatever the caller's object holds later, and what reset() restores.
    const answer: { active: boolean; sub: string; [member: string]: unknown } = { active: true, sub: 'v' };
    mock.setToken('t2', answer);
    answer.sub = 'changed';
    answer.n = 3n;
    const introspect = async (token: string) =>
      (await post(mock.endpoint, { authorization: BASIC, 'content-type': FORM }, `token=${token}`)).body;
    expect(await introspect('t2')).toEqual({ active: true, sub: 'v' });
    const tokens = { t3: { active: true, sub: 'w' } };
    const made = closeLater(await mockIntrospection({ clientId: 'client', clientSecret: 'secret', tokens }));
    tokens.t3.sub = 'changed';
    made.reset();
    expect((await post(made.endpoint, { authorization: BASIC, 'content-type': FORM }, 'token=t3')).body).toEqual({
      active: true,
      sub: 'w',
    });
    // A member left undefined still leaves the document's own out, as JSON writes it.
    const bare = closeLater(
      await mockIntrospection({ clientId: 'c', clientSecret: 's', metadata: { response_types_supported: undefined } }),
    );
    const document = await request(`${bare.url}/.well-known/oauth-authorization-server`);
    expect(await document.body.json()).not.toHaveProperty('response_types_supported');
  });

  it("counts, for every, only the requests a fault's endpoints aim at: discovery does not use up a count", async () => {
    const tokens = Object.fromEntries(['t1', 't2', 't3', 't4'].map((token) => [token, { active: true, sub: token }]));
    const mock = closeLater(await mockIntrospection({ clientId: 'c', clientSecret: 's', tokens }));
    const gate = createGate({
      providers: [introspection({ issuer: mock.issuer, clientId: 'c', clientSecret: 's' })],
      retry: false,
      breaker: false,
    });
    closeLater(gate);
    mock.fault = { kind: 'status', status: 503, every: 2, endpoints: ['introspect'] };
    const statuses: number[] = [];
    for (const token of ['t1', 't2', 't3', 't4']) {
      statuses.push(
        await gate.authenticate({ headers: { authorization: `Bearer ${token}` } }).then(
          () => 200,
          (error: { status: number }) => error.status,
        ),
      );
    }
    expect(statuses).toEqual([200, 503, 200, 503]);
    expect(mock.calls).toMatchObject({ introspect: 4, oauthMetadata: 1 });
  });
});
