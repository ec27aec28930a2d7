/**
 * introspection() when the server fails (every failure a 503, never a pass),
 * its option checks and what it declares to the gate (source, concurrency,
 * cacheScope), secretDigest, and a real Express app in front of the mock.
 */
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import express from 'express';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { authenticate, requires } from '../adapters/express.js';
import { createGate, type Gate, introspection, partoo, secretDigest } from '../src/index.js';
import type { MockFault } from '../src/testing/index.js';
import { reply, startAnswerServer } from './support/answer-server.js';
import { closeAfterEach } from './support/close-after-each.js';
import {
  bearer,
  CLIENT_ID,
  CLIENT_SECRET,
  expectUnavailable,
  introspectionSetup,
} from './support/introspection-setup.js';

const closeLater = closeAfterEach();
const setup = introspectionSetup(closeLater);
const ACTIVE = { active: true, sub: 'user-42', scope: 'orders:read' };

describe('introspection: failures are 503s', () => {
  it.each<[string, MockFault]>([
    ['500', { kind: 'status', status: 500 }],
    ['502 with an HTML body', { kind: 'status', status: 502, body: '<html>Bad Gateway</html>' }],
    ['garbage (not JSON)', { kind: 'garbage' }],
    ['a JSON answer without active', { kind: 'wrong-shape' }],
    ['the right answer as text/html', { kind: 'wrong-content-type' }],
    ['a redirect', { kind: 'redirect', location: 'http://127.0.0.1:9/elsewhere' }],
    ['a connection reset', { kind: 'reset' }],
    ['an answer over maxBodyBytes', { kind: 'huge', bytes: 100_000 }],
    [
      'active named twice, false then true (RFC 8259 §4: each reader picks one)',
      { kind: 'status', status: 200, body: '{"active":false,"sub":"user-42","active":true}' },
    ],
  ])('%s', async (_, fault) => {
    const { mock, gate } = await setup({ tokens: { 'tok-1': ACTIVE } });
    mock.fault = fault;
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
    mock.fault = undefined;
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
  });

  it("names the provider once in the failure's message (the 503's cause)", async () => {
    const { mock, gate } = await setup({ tokens: { 'tok-1': ACTIVE } });
    mock.fault = { kind: 'status', status: 500 };
    expect((await expectUnavailable(gate.authenticate(bearer('tok-1')))).cause).toMatchObject({
      message: 'introspection POST to its endpoint answered 500',
    });
    mock.fault = { kind: 'wrong-shape' };
    expect((await expectUnavailable(gate.authenticate(bearer('tok-1')))).cause).toMatchObject({
      message: 'introspection answer does not match its schema',
    });
  });

  it('429 with its Retry-After', async () => {
    const { mock, gate } = await setup({ tokens: { 'tok-1': ACTIVE } });
    mock.fault = { kind: 'status', status: 429, retryAfter: 3 };
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect(error.headers['Retry-After']).toBe('3');
  });

  it('a server that does not answer within the timeout', async () => {
    const { mock, gate } = await setup({ tokens: { 'tok-1': ACTIVE } }, {}, { timeout: 300 });
    mock.fault = { kind: 'hang' };
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
  });

  it('a real answer larger than maxBodyBytes, which passes under the default cap', async () => {
    const big = { ...ACTIVE, note: 'x'.repeat(3000) };
    const capped = await setup({ tokens: { 'tok-1': big } }, { maxBodyBytes: 2048 });
    await expectUnavailable(capped.gate.authenticate(bearer('tok-1')));
    const roomy = await setup({ tokens: { 'tok-1': big } });
    expect((await roomy.gate.authenticate(bearer('tok-1'))).details.note).toHaveLength(3000);
  });

  it('400 from the server (a request it did not understand)', async () => {
    const server = closeLater(await startAnswerServer());
    server.answer = (_req, res) => reply(res, 400, '{"error":"invalid_request"}');
    const provider = introspection({
      endpoint: `${server.url}/oauth/introspect`,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect(server.paths).toEqual(['/oauth/introspect']);
  });
});

describe('introspection: options and what the gate is told', () => {
  const base = { endpoint: 'http://127.0.0.1:9/introspect', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET };

  it.each<[string, Record<string, unknown>, string]>([
    [
      'neither endpoint nor issuer',
      { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET },
      'introspection: expected endpoint or issuer',
    ],
    [
      'no clientSecret',
      { endpoint: base.endpoint, clientId: CLIENT_ID },
      'introspection: clientSecret: expected a non-empty string, got undefined',
    ],
    [
      'an empty clientId',
      { ...base, clientId: '' },
      'introspection: clientId: expected a non-empty string, got an empty string',
    ],
    ['an unknown clientAuth', { ...base, clientAuth: 'jwt' }, 'introspection: clientAuth: expected basic or post'],
    [
      'an endpoint that is no http(s) URL',
      { ...base, endpoint: 'ftp://127.0.0.1/introspect' },
      'introspection: endpoint: expected an absolute http(s) URL, got a URL that is not http or https',
    ],
    [
      'an issuer with a query',
      { ...base, issuer: 'http://127.0.0.1:9/?tenant=a' },
      'introspection: issuer: expected a URL without credentials, query or fragment',
    ],
    [
      'an endpoint over plain http to another host',
      { ...base, endpoint: 'http://idp.example.com/introspect' },
      'introspection: endpoint: expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got "http://idp.example.com"',
    ],
    [
      'an issuer over plain http to another host',
      { ...base, endpoint: undefined, issuer: 'http://idp.example.com' },
      'introspection: issuer: expected an https URL, or http on a loopback host (allowInsecureRequests: true takes any), got "http://idp.example.com"',
    ],
    [
      'allowInsecureRequests that is not a boolean',
      { ...base, allowInsecureRequests: 'yes' },
      'introspection: allowInsecureRequests: expected a boolean',
    ],
    [
      'a misspelt option',
      { ...base, clientSecrets: 'x' },
      'introspection: clientSecrets: unknown option (did you mean clientSecret?)',
    ],
  ])('refuses %s at construction', (_, options, message) => {
    expect(() => introspection(options as never)).toThrow(new TypeError(message));
  });

  it.each<[string, Record<string, unknown>]>([
    ['https to any host', { endpoint: 'https://idp.example.com/introspect' }],
    ['http to localhost', { endpoint: 'http://localhost:9/introspect' }],
    ['http to 127.0.0.0/8', { endpoint: 'http://127.1.2.3:9/introspect', issuer: 'http://127.0.0.1:9' }],
    ['http to [::1]', { endpoint: 'http://[::1]:9/introspect' }],
    ['http to another host, allowed', { endpoint: 'http://idp.internal/introspect', allowInsecureRequests: true }],
    ['an endpoint with a query (RFC 6749 §3.1)', { endpoint: 'https://idp.example.com/introspect?tenant=a' }],
  ])('takes %s', (_, where) => {
    const provider = introspection({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, ...where });
    return provider.close?.();
  });

  it('posts to an endpoint with a query, query included', async () => {
    const server = closeLater(await startAnswerServer());
    server.answer = (_req, res) => reply(res, 200, JSON.stringify(ACTIVE));
    const endpoint = `${server.url}/oauth/introspect?tenant=acme`;
    const gate = closeLater(
      createGate({ providers: [introspection({ endpoint, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET })] }),
    );
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(server.paths).toEqual(['/oauth/introspect?tenant=acme']);
  });

  it('never shows the client secret in an option error', () => {
    const secret = 'very-secret-value-42';
    const messageOf = (options: Record<string, unknown>) => {
      try {
        introspection(options as never);
      } catch (error) {
        return (error as Error).message;
      }
      return 'no error';
    };
    for (const wrong of [
      { endpoint: 'not a url' },
      { audience: 7 },
      { clientSecret: [secret] },
      { clientSecret: `${secret}`, extra: secret },
    ]) {
      const message = messageOf({ ...base, clientSecret: secret, ...wrong });
      expect(message).toMatch(/^introspection: /);
      expect(message).not.toContain(secret);
    }
  });

  it('reads the Bearer header alone, and serves as many verifications as its pool has sockets', () => {
    expect(introspection(base).source).toBe('header:authorization');
    expect(introspection(base).concurrency).toBe(16);
    expect(introspection({ ...base, connections: 5 }).concurrency).toBe(5);
  });

  it('cacheScope changes with everything that decides the answer and holds the secret only as its digest', () => {
    const scope = introspection(base).cacheScope;
    expect(scope).not.toContain(CLIENT_SECRET);
    expect(scope).toContain(secretDigest(CLIENT_SECRET));
    expect(introspection({ ...base }).cacheScope).toBe(scope);
    const variants = [
      { ...base, endpoint: 'http://127.0.0.1:9/other' },
      { ...base, clientId: 'other-client' },
      { ...base, clientSecret: 'other-secret' },
      { ...base, clientAuth: 'post' as const },
      { ...base, audience: 'orders' },
      { ...base, clockTolerance: 0 },
      { ...base, issuer: 'http://127.0.0.1:9' },
      { ...base, name: 'idp' },
    ];
    const scopes = new Set([scope, ...variants.map((options) => introspection(options).cacheScope)]);
    expect(scopes.size).toBe(variants.length + 1);
  });

  it('shows no key the endpoint URL carries (a query such as ?code=): not in cacheScope, nor where the provider is logged', async () => {
    const key = 'function-key-0123456789';
    const endpoint = `https://idp.example.com/api/introspect?code=${key}`;
    const provider = introspection({ ...base, endpoint });
    expect(provider.cacheScope).not.toContain(key);
    expect(inspect(provider, { depth: null })).not.toContain(key);
    expect(JSON.stringify(provider)).not.toContain(key);
    // Still a scope of its own: another query is another endpoint.
    const other = introspection({ ...base, endpoint: `${endpoint}0` });
    expect(other.cacheScope).not.toBe(provider.cacheScope);
    await Promise.all([provider.close?.(), other.close?.()]);
  });

  it('secretDigest is the base64url SHA-256 of the secret, and what partoo puts in its cacheScope', () => {
    expect(secretDigest('key')).toBe(createHash('sha256').update('key').digest('base64url'));
    expect(secretDigest('key')).toHaveLength(43);
    expect(secretDigest('key')).not.toBe(secretDigest('key2'));
    const scope = partoo({ apiKey: 'partoo-key', baseUrl: 'http://127.0.0.1:9/v2' }).cacheScope;
    expect(scope).toContain(secretDigest('partoo-key'));
    expect(scope).not.toContain('partoo-key"');
  });
});

describe('introspection: through a real Express app', () => {
  function ordersApp(gate: Gate) {
    const app = express();
    app.get('/orders', authenticate(gate), requires('orders:read'), (req, res) => {
      res.json({ subject: req.auth?.subject, permissions: req.auth?.permissions });
    });
    return app;
  }

  it('lets an active token with the scope through; 403 without the scope, 401 inactive or absent', async () => {
    const { mock, gate } = await setup({
      tokens: {
        reader: ACTIVE,
        writer: { active: true, sub: 'user-7', scope: 'orders:write' },
        old: { active: false },
      },
    });
    const app = ordersApp(gate);
    const ok = await request(app).get('/orders').set('authorization', 'Bearer reader');
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ subject: 'user-42', permissions: ['orders:read'] });

    const forbidden = await request(app).get('/orders').set('authorization', 'Bearer writer');
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers['www-authenticate']).toBe(
      'Bearer realm="api", error="insufficient_scope", error_description="Requires: orders:read", scope="orders:read"',
    );
    const inactive = await request(app).get('/orders').set('authorization', 'Bearer old');
    expect(inactive.status).toBe(401);
    expect(inactive.headers['www-authenticate']).toContain('error_description="The access token is not active"');
    const anonymous = await request(app).get('/orders');
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toBe('Bearer realm="api"');
    expect(mock.calls.introspect).toBe(3);
  });

  it('answers 500 when the server refuses our client, 503 when it fails; neither shows the secret', async () => {
    const { mock, gate } = await setup({ tokens: { reader: ACTIVE } }, { clientSecret: 'wrong-secret-value' });
    const app = ordersApp(gate);
    const refused = await request(app).get('/orders').set('authorization', 'Bearer reader');
    expect(refused.status).toBe(500);
    expect(refused.text).not.toContain('wrong-secret-value');
    expect(refused.text).not.toContain(CLIENT_SECRET);

    // The refusal holds for a second (see introspection.test.ts); reset() lifts it.
    gate.reset();
    mock.fault = { kind: 'status', status: 503 };
    const down = await request(app).get('/orders').set('authorization', 'Bearer reader');
    expect(down.status).toBe(503);
    expect(down.text).not.toContain('wrong-secret-value');
  });
});
