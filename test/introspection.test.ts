/**
 * introspection() against the introspection mock over real HTTP, through a
 * real gate: which answers pass (RFC 7662 §2.2), what the principal holds,
 * client authentication as it goes on the wire (RFC 6749 §2.3.1), how a
 * refusal of the client maps to a status.
 * Failures, options and Express are in introspection-failures.test.ts;
 * discovery (RFC 8414) and the cache in introspection-discovery.test.ts.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { request as undiciRequest } from 'undici';
import { describe, expect, it } from 'vitest';
import { createGate, type GateEvent, introspection } from '../src/index.js';
import { mockIntrospection } from '../src/testing/index.js';
import { reply, startAnswerServer } from './support/answer-server.js';
import { closeAfterEach } from './support/close-after-each.js';
import { startFormRecorder } from './support/form-recorder.js';
import {
  bearer,
  CLIENT_ID,
  CLIENT_SECRET,
  expectInvalidToken,
  expectMisconfigured,
  expectUnavailable,
  inSeconds,
  introspectionSetup,
  raw,
} from './support/introspection-setup.js';

const closeLater = closeAfterEach();
const setup = introspectionSetup(closeLater);
const ISSUER = 'http://127.0.0.1:9/realms/orders';

describe('introspection: which answers pass', () => {
  it('accepts an active token: subject from sub, permissions the scope, expiresAt the exp, details the answer', async () => {
    const exp = inSeconds(3600);
    const answer = {
      active: true,
      sub: 'user-42',
      scope: 'orders:read  orders:write',
      exp,
      client_id: 'web',
      tenant: 'a',
    };
    const { mock, gate } = await setup({ tokens: { 'tok-1': answer } });
    const auth = await gate.authenticate(bearer('tok-1'));
    expect(auth.provider).toBe('introspection');
    expect(auth.subject).toBe('user-42');
    expect(auth.permissions).toEqual(['orders:read', 'orders:write']);
    expect(auth.expiresAt?.getTime()).toBe(exp * 1000);
    expect(auth.details).toEqual(answer);
    expect(JSON.stringify(auth)).not.toContain('tok-1');
    expect(mock.calls.introspect).toBe(1);
  });

  it.each([
    ['username when there is no sub', { username: 'ada', client_id: 'web' }, 'ada'],
    ['client_id when there is neither sub nor username', { client_id: 'web' }, 'web'],
    ['username when sub is empty', { sub: '', username: 'ada' }, 'ada'],
  ])('takes the subject from %s', async (_, members, subject) => {
    const { gate } = await setup({ tokens: { 'tok-1': { active: true, ...members } } });
    const auth = await gate.authenticate(bearer('tok-1'));
    expect(auth.subject).toBe(subject);
    expect(auth.permissions).toEqual([]);
    expect(auth.expiresAt).toBeUndefined();
  });

  it.each([
    ['false', raw('{"active":false,"sub":"user-42"}')],
    ['the string "true"', raw('{"active":"true","sub":"user-42","scope":"orders:read"}')],
    ['the number 1', raw('{"active":1,"sub":"user-42"}')],
    ['null', raw('{"active":null,"sub":"user-42"}')],
  ])('answers 401 when active is %s', async (_, answer) => {
    const { mock, gate } = await setup({ tokens: { 'tok-1': answer } });
    await expectInvalidToken(gate.authenticate(bearer('tok-1')), 'The access token is not active');
    expect(mock.calls.introspect).toBe(1);
  });

  it('answers 401 to a token the server does not know ({"active":false})', async () => {
    const { gate } = await setup();
    await expectInvalidToken(gate.authenticate(bearer('unknown')), 'The access token is not active');
  });

  it.each([
    ['has no active member', raw('{"sub":"user-42","scope":"orders:read"}')],
    ['has a scope that is not a string', raw('{"active":true,"sub":"u","scope":["orders:read"]}')],
    ['has an exp that is not a number', raw('{"active":true,"sub":"u","exp":"tomorrow"}')],
    ['has an aud of numbers', raw('{"active":true,"sub":"u","aud":[1]}')],
    // A refresh or ID token's mark the gate cannot read says nothing: the token is not taken for an access token.
    ['has a token_use that is not a string', raw('{"active":true,"sub":"u","token_use":["refresh_token"]}')],
    ['has a Keycloak typ that is not a string', raw('{"active":true,"sub":"u","typ":{"name":"Refresh"}}')],
  ])('answers 503 when the answer %s (its schema)', async (_, answer) => {
    const { gate } = await setup({ tokens: { 'tok-1': answer } });
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
  });

  it('answers 401 to an active answer that names no subject, and it never opens the breaker', async () => {
    const { mock, gate } = await setup(
      { tokens: { odd: raw('{"active":true,"scope":"orders:read"}'), good: { active: true, sub: 'alice' } } },
      {},
      { breaker: { threshold: 2, cooldown: 10_000 }, cache: { negativeTtl: 0 } },
    );
    for (let i = 0; i < 3; i++) {
      await expectInvalidToken(
        gate.authenticate(bearer('odd')),
        'The access token names no subject (sub, username or client_id)',
      );
    }
    expect(mock.calls.introspect).toBe(3);
    expect(gate.stats().breakers).toEqual({ introspection: 'closed' });
    expect((await gate.authenticate(bearer('good'))).subject).toBe('alice');
  });

  const KEY_BOUND = 'The access token is bound to a key (cnf): it is not accepted as a bearer token';
  const NOT_BEARER = 'The token is not a bearer access token';
  it.each([
    [
      'bound to a DPoP key (RFC 9449)',
      raw('{"active":true,"sub":"u","token_type":"DPoP","cnf":{"jkt":"0ZcO"}}'),
      KEY_BOUND,
    ],
    [
      'bound to a certificate (RFC 8705)',
      raw('{"active":true,"sub":"u","token_type":"Bearer","cnf":{"x5t#S256":"bwc"}}'),
      KEY_BOUND,
    ],
    ['of token_type DPoP without cnf', raw('{"active":true,"sub":"u","token_type":"DPoP"}'), NOT_BEARER],
    ['of token_type n_a (RFC 8693)', raw('{"active":true,"sub":"u","token_type":"n_a"}'), NOT_BEARER],
    ['a refresh token (token_type)', raw('{"active":true,"sub":"u","token_type":"refresh_token"}'), NOT_BEARER],
    ['a refresh token (Keycloak typ)', raw('{"active":true,"sub":"u","typ":"Refresh"}'), NOT_BEARER],
    ['an offline token (Keycloak typ)', raw('{"active":true,"sub":"u","typ":"Offline"}'), NOT_BEARER],
    ['an ID token (Keycloak typ)', raw('{"active":true,"sub":"u","typ":"ID"}'), NOT_BEARER],
    ['a logout token (Keycloak typ)', raw('{"active":true,"sub":"u","typ":"Logout"}'), NOT_BEARER],
    ['of token_type mac', raw('{"active":true,"sub":"u","token_type":"mac"}'), NOT_BEARER],
    ['of token_type PoP', raw('{"active":true,"sub":"u","token_type":"PoP"}'), NOT_BEARER],
    ['of a token_type the gate does not know', raw('{"active":true,"sub":"u","token_type":"id_token"}'), NOT_BEARER],
    ['of token_type DPoP with a stray space', raw('{"active":true,"sub":"u","token_type":"DPoP "}'), NOT_BEARER],
    [
      'a refresh token (RFC 8693 token type URN)',
      raw('{"active":true,"sub":"u","token_type":"urn:ietf:params:oauth:token-type:refresh_token"}'),
      NOT_BEARER,
    ],
    ['a refresh token (token_use, any case)', raw('{"active":true,"sub":"u","token_use":"Refresh_Token"}'), NOT_BEARER],
    [
      'a refresh token (Ory token_use)',
      raw('{"active":true,"sub":"u","token_type":"Bearer","token_use":"refresh_token"}'),
      NOT_BEARER,
    ],
  ])('answers 401 to an active token: %s', async (_, answer, description) => {
    const { gate } = await setup({ tokens: { 'tok-1': answer } });
    await expectInvalidToken(gate.authenticate(bearer('tok-1')), description);
  });

  it.each([
    ['Bearer', raw('{"active":true,"sub":"u","token_type":"Bearer"}')],
    ['bearer (any case)', raw('{"active":true,"sub":"u","token_type":"bEaReR"}')],
    [
      'access_token (a server naming the use)',
      raw('{"active":true,"sub":"u","token_type":"access_token","token_use":"access_token"}'),
    ],
    [
      'the RFC 8693 access token URN',
      raw('{"active":true,"sub":"u","token_type":"urn:ietf:params:oauth:token-type:access_token"}'),
    ],
    ['absent', raw('{"active":true,"sub":"u","cnf":null}')],
    ['absent, with Keycloak typ Bearer', raw('{"active":true,"sub":"u","typ":"Bearer"}')],
  ])('accepts token_type %s', async (_, answer) => {
    const { gate } = await setup({ tokens: { 'tok-1': answer } });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('u');
  });

  it('answers 401 past exp and before nbf, and accepts the token between them', async () => {
    const { gate } = await setup({
      tokens: {
        expired: { active: true, sub: 'u', exp: inSeconds(-10) },
        early: { active: true, sub: 'u', nbf: inSeconds(600), exp: inSeconds(3600) },
        current: { active: true, sub: 'u', nbf: inSeconds(-600), exp: inSeconds(3600) },
      },
    });
    await expectInvalidToken(gate.authenticate(bearer('expired')), 'The access token has expired');
    await expectInvalidToken(gate.authenticate(bearer('early')), 'The access token is not valid yet');
    expect((await gate.authenticate(bearer('current'))).subject).toBe('u');
  });

  it('lets an nbf at most clockTolerance ahead pass (5 s by default), as the server said the token is active', async () => {
    const tokens = {
      fresh: { active: true, sub: 'u', nbf: inSeconds(3), exp: inSeconds(3600) },
      later: { active: true, sub: 'u', nbf: inSeconds(30), exp: inSeconds(3600) },
    };
    const { gate } = await setup({ tokens });
    expect((await gate.authenticate(bearer('fresh'))).subject).toBe('u');
    await expectInvalidToken(gate.authenticate(bearer('later')), 'The access token is not valid yet');
    const { gate: strict } = await setup({ tokens }, { clockTolerance: 0 });
    await expectInvalidToken(strict.authenticate(bearer('fresh')), 'The access token is not valid yet');
    const { gate: lenient } = await setup({ tokens }, { clockTolerance: 60 });
    expect((await lenient.authenticate(bearer('later'))).subject).toBe('u');
  });

  it('refuses an nbf half a second past clockTolerance (NumericDate may hold a fraction)', async () => {
    const nowSeconds = Date.now() / 1000;
    const tokens = {
      past: { active: true, sub: 'u', nbf: nowSeconds + 5.5, exp: inSeconds(3600) },
      within: { active: true, sub: 'u', nbf: nowSeconds + 4.5, exp: inSeconds(3600) },
    };
    const { gate } = await setup({ tokens });
    await expectInvalidToken(gate.authenticate(bearer('past')), 'The access token is not valid yet');
    expect((await gate.authenticate(bearer('within'))).subject).toBe('u');
  });

  it.each([-1, 301, Number.NaN, '5'])('refuses clockTolerance %s at startup, naming it', (clockTolerance) => {
    const options = { endpoint: 'http://127.0.0.1:9/introspect', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET };
    expect(() => introspection({ ...options, clockTolerance } as never)).toThrow(
      /^introspection: clockTolerance: expected a number >= 0 and <= 300, got /,
    );
  });

  it('reads times beyond what a Date holds (RFC 7519 allows any number): an exp that far is no expiry, an nbf not yet', async () => {
    const never = Number.MAX_SAFE_INTEGER;
    const { gate } = await setup({
      tokens: {
        forever: { active: true, sub: 'u', exp: never, iat: never },
        later: { active: true, sub: 'u', nbf: never },
        fraction: { active: true, sub: 'u', exp: inSeconds(3600) + 0.5 },
        latestDate: { active: true, sub: 'u', exp: 8.64e12 },
        pastLatestDate: { active: true, sub: 'u', exp: 8.64e12 + 1 },
      },
    });
    // The latest instant a Date holds is an expiry; one second past it, none.
    expect((await gate.authenticate(bearer('latestDate'))).expiresAt?.getTime()).toBe(8.64e15);
    expect((await gate.authenticate(bearer('pastLatestDate'))).expiresAt).toBeUndefined();
    const forever = await gate.authenticate(bearer('forever'));
    expect(forever.subject).toBe('u');
    expect(forever.expiresAt).toBeUndefined();
    await expectInvalidToken(gate.authenticate(bearer('later')), 'The access token is not valid yet');
    expect((await gate.authenticate(bearer('fraction'))).expiresAt).toBeInstanceOf(Date);
  });

  it('reads a JSON number too large for a double (1e400, Infinity to JSON.parse) as any other', async () => {
    const server = closeLater(await startAnswerServer());
    const answers: Record<string, string> = {
      forever: '{"active":true,"sub":"u","exp":1e400,"nbf":-1e400}',
      expired: '{"active":true,"sub":"u","exp":-1e400}',
      later: '{"active":true,"sub":"u","nbf":1e400}',
    };
    server.answer = (req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => reply(res, 200, answers[new URLSearchParams(body).get('token') ?? ''] ?? '{"active":false}'));
    };
    const provider = introspection({
      endpoint: `${server.url}/introspect`,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));
    const forever = await gate.authenticate(bearer('forever'));
    expect(forever.subject).toBe('u');
    expect(forever.expiresAt).toBeUndefined();
    await expectInvalidToken(gate.authenticate(bearer('expired')), 'The access token has expired');
    await expectInvalidToken(gate.authenticate(bearer('later')), 'The access token is not valid yet');
  });

  it('with audience, accepts an aud that is it or an array holding it, and refuses others or none', async () => {
    const { gate } = await setup(
      {
        tokens: {
          single: { active: true, sub: 'u', aud: 'orders' },
          list: { active: true, sub: 'u', aud: ['billing', 'orders'] },
          other: { active: true, sub: 'u', aud: ['billing', 'orders-v2'] },
          none: { active: true, sub: 'u' },
        },
      },
      { audience: 'orders' },
    );
    expect((await gate.authenticate(bearer('single'))).subject).toBe('u');
    expect((await gate.authenticate(bearer('list'))).details.aud).toEqual(['billing', 'orders']);
    await expectInvalidToken(gate.authenticate(bearer('other')), 'The access token is not meant for this API');
    await expectInvalidToken(gate.authenticate(bearer('none')), 'The access token is not meant for this API');
  });

  it('without audience, lets any aud through', async () => {
    const { gate } = await setup({ tokens: { other: { active: true, sub: 'u', aud: ['billing'] } } });
    expect((await gate.authenticate(bearer('other'))).subject).toBe('u');
  });

  it('with endpoint and issuer, requires iss to be the issuer', async () => {
    const { mock, gate } = await setup(
      {
        tokens: {
          ours: { active: true, sub: 'u', iss: ISSUER },
          theirs: { active: true, sub: 'u', iss: 'http://127.0.0.1:9/realms/billing' },
          unsaid: { active: true, sub: 'u' },
        },
      },
      { issuer: ISSUER },
    );
    expect((await gate.authenticate(bearer('ours'))).subject).toBe('u');
    await expectInvalidToken(gate.authenticate(bearer('theirs')), 'The access token is from another issuer');
    await expectInvalidToken(gate.authenticate(bearer('unsaid')), 'The access token is from another issuer');
    expect(mock.calls).toMatchObject({ oauthMetadata: 0, openidMetadata: 0, introspect: 3 });
  });
});

describe('introspection: client authentication on the wire', () => {
  const ODD_ID = 'orders:api%1';
  const ODD_SECRET = 'sé cret:+%';

  it('sends Basic with the id and secret each form-urlencoded first, and the form token=…&token_type_hint=access_token', async () => {
    const mock = closeLater(await mockIntrospection({ clientId: ODD_ID, clientSecret: ODD_SECRET }));
    mock.setToken('tok-1', { active: true, sub: 'u' });
    const recorder = closeLater(await startFormRecorder(mock.url));
    const provider = introspection({
      endpoint: `${recorder.url}/introspect`,
      clientId: ODD_ID,
      clientSecret: ODD_SECRET,
    });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));

    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('u');
    const [sent] = recorder.requests;
    expect(sent?.method).toBe('POST');
    expect(sent?.url).toBe('/introspect');
    expect(sent?.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(sent?.headers.authorization).toBe(
      `Basic ${Buffer.from('orders%3Aapi%251:s%C3%A9+cret%3A%2B%25').toString('base64')}`,
    );
    expect(sent?.body).toBe('token=tok-1&token_type_hint=access_token');
  });

  it('the mock refuses the same credentials joined and base64-encoded without form-encoding', async () => {
    const mock = closeLater(await mockIntrospection({ clientId: ODD_ID, clientSecret: ODD_SECRET }));
    const res = await undiciRequest(mock.endpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${ODD_ID}:${ODD_SECRET}`).toString('base64')}`,
      },
      body: 'token=tok-1',
    });
    expect(res.statusCode).toBe(401);
    expect(await res.body.json()).toEqual({ error: 'invalid_client' });
  });

  it("'post' sends client_id and client_secret in the form, and no Authorization header", async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: ODD_ID, clientSecret: ODD_SECRET, clientAuth: 'post' }),
    );
    mock.setToken('tok-1', { active: true, sub: 'u' });
    const recorder = closeLater(await startFormRecorder(mock.url));
    const endpoint = `${recorder.url}/introspect`;
    const provider = introspection({ endpoint, clientId: ODD_ID, clientSecret: ODD_SECRET, clientAuth: 'post' });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));

    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('u');
    const [sent] = recorder.requests;
    expect(sent?.headers.authorization).toBeUndefined();
    expect(Object.fromEntries(new URLSearchParams(sent?.body))).toEqual({
      token: 'tok-1',
      token_type_hint: 'access_token',
      client_id: ODD_ID,
      client_secret: ODD_SECRET,
    });
  });

  it.each([
    ['basic', 'post'],
    ['post', 'basic'],
  ] as const)('a %s client against a server that wants %s is a 500 provider_misconfigured', async (mine, theirs) => {
    const { gate } = await setup(
      { clientAuth: theirs, tokens: { 'tok-1': { active: true, sub: 'u' } } },
      { clientAuth: mine },
    );
    await expectMisconfigured(gate.authenticate(bearer('tok-1')));
  });

  it('after a refused secret, new tokens get the 500 for a second without the secret being sent again; then it is asked', async () => {
    const events: GateEvent[] = [];
    const { mock, gate } = await setup(
      { tokens: { 'tok-1': { active: true, sub: 'u' }, 'tok-2': { active: true, sub: 'v' } } },
      { clientSecret: 'not-the-secret' },
      { onEvent: (event) => events.push(event) },
    );
    await expectMisconfigured(gate.authenticate(bearer('tok-1')));
    await expectMisconfigured(gate.authenticate(bearer('tok-2')));
    await expectMisconfigured(gate.authenticate(bearer('tok-3')));
    expect(mock.calls.introspect).toBe(1);
    expect(events.filter((event) => event.type === 'held_back')).toEqual([
      expect.objectContaining({ reason: 'refused', provider: 'introspection' }),
      expect.objectContaining({ reason: 'refused', provider: 'introspection' }),
    ]);
    expect(gate.stats().heldBack).toBe(2);
    await sleep(1050);
    await expectMisconfigured(gate.authenticate(bearer('tok-2')));
    expect(mock.calls.introspect).toBe(2);
  });

  it('tokens already waiting for a connection when the secret is refused get the 500 without it being sent again', async () => {
    const { mock, gate } = await setup(
      { tokens: Object.fromEntries(['tok-1', 'tok-2', 'tok-3', 'tok-4'].map((token) => [token, { active: true }])) },
      { clientSecret: 'not-the-secret', connections: 1 },
    );
    mock.latency = 50;
    // One connection: the first token is asked, the other three wait for it.
    await Promise.all(
      ['tok-1', 'tok-2', 'tok-3', 'tok-4'].map((token) => expectMisconfigured(gate.authenticate(bearer(token)))),
    );
    expect(mock.calls.introspect).toBe(1);
    expect(gate.stats()).toMatchObject({ heldBack: 3, overloaded: 0 });
  });

  it('a refused secret (401) is a 500 not shown to the client, asked once despite retries', async () => {
    const { mock, gate } = await setup(
      { tokens: { 'tok-1': { active: true, sub: 'u' } } },
      { clientSecret: 'not-the-secret' },
      { retry: { retries: 2, baseDelay: 1 } },
    );
    await expectMisconfigured(gate.authenticate(bearer('tok-1')));
    expect(mock.calls.introspect).toBe(1);
  });

  it.each([
    ['401 with an empty text/plain body', 401, '', 'text/plain'],
    ['403 JSON', 403, '{"error":"unauthorized_client"}', 'application/json'],
    [
      '400 invalid_client (RFC 6749 §5.2, a client that sent no Authorization)',
      400,
      '{"error":"invalid_client"}',
      'application/json',
    ],
    ['400 unauthorized_client', 400, '{"error":"unauthorized_client"}', 'application/json'],
  ])('a %s is a 500 too', async (_, status, body, type) => {
    const server = closeLater(await startAnswerServer());
    server.answer = (_req, res) => reply(res, status, body, type);
    const provider = introspection({
      endpoint: `${server.url}/introspect`,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));
    await expectMisconfigured(gate.authenticate(bearer('tok-1')));
  });
});
