/**
 * introspection({ accessToken }): this server authenticating to the introspection endpoint with an access token of
 * its own (RFC 7662 §2.1), given as a string or by a function, against the mock over real HTTP. What goes on the
 * wire, a refusal of the token (the 500 of a refused client secret), the option checks, and a function that throws,
 * gives no token or never settles (a 503, nothing sent, the token and its error's message shown nowhere).
 */
import { inspect } from 'node:util';
import express from 'express';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { authenticate } from '../adapters/express.js';
import {
  AuthError,
  createGate,
  type GateEvent,
  type IntrospectionAccessToken,
  introspection,
  secretDigest,
} from '../src/index.js';
import { type MockIntrospectionOptions, mockIntrospection } from '../src/testing/index.js';
import { reply, startAnswerServer } from './support/answer-server.js';
import { closeAfterEach } from './support/close-after-each.js';
import { startFormRecorder } from './support/form-recorder.js';
import {
  bearer,
  CLIENT_ID,
  CLIENT_SECRET,
  expectMisconfigured,
  expectUnavailable,
} from './support/introspection-setup.js';

const closeLater = closeAfterEach();
/** This server's own access token at the authorization server (b64token, a JWT's alphabet). */
const RS_TOKEN = 'rs-token.eyJzdWIiOiJvcmRlcnMtYXBpIn0.c2lnbmF0dXJl';
const ACTIVE = { active: true, sub: 'user-42', scope: 'orders:read' };

/** A mock that takes `RS_TOKEN` alone, and a gate whose provider authenticates with `accessToken`. */
async function setup(
  accessToken: IntrospectionAccessToken,
  gateOptions: { timeout?: number; retry?: false | { retries: number; baseDelay: number } } = {},
  mockOptions: Partial<MockIntrospectionOptions> = {},
) {
  const mock = closeLater(
    await mockIntrospection({ accessToken: RS_TOKEN, tokens: { 'tok-1': ACTIVE }, ...mockOptions }),
  );
  const events: GateEvent[] = [];
  const gate = closeLater(
    createGate({
      providers: [introspection({ endpoint: mock.endpoint, accessToken })],
      retry: false,
      onEvent: (event) => events.push(event),
      ...gateOptions,
    }),
  );
  return { mock, gate, events };
}

/** Everything a failure shows (message, causes, stack) and the events, as text: where no secret may be. */
function shownOf(error: AuthError, events: readonly GateEvent[]): string {
  return `${inspect(error, { depth: null })}\n${error.message}\n${JSON.stringify(events)}`;
}

describe('introspection with an access token of its own', () => {
  it('sends it as Authorization: Bearer, and no client credentials', async () => {
    const mock = closeLater(await mockIntrospection({ accessToken: RS_TOKEN, tokens: { 'tok-1': ACTIVE } }));
    const recorder = closeLater(await startFormRecorder(mock.url));
    const provider = introspection({ endpoint: `${recorder.url}/introspect`, accessToken: RS_TOKEN });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));

    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    const [sent] = recorder.requests;
    expect(sent?.headers.authorization).toBe(`Bearer ${RS_TOKEN}`);
    expect(sent?.body).toBe('token=tok-1&token_type_hint=access_token');
  });

  it('asks a function for the token before each introspection request, and sends what it gives then', async () => {
    let current = RS_TOKEN;
    let asked = 0;
    const { mock, gate } = await setup(async () => {
      asked++;
      return current;
    });
    mock.setToken('tok-2', { active: true, sub: 'user-7' });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect((await gate.authenticate(bearer('tok-2'))).subject).toBe('user-7');
    expect(asked).toBe(2);
    // A cached answer asks neither the function nor the server.
    await gate.authenticate(bearer('tok-1'));
    expect(asked).toBe(2);

    // Rotated at the function: the next request carries the new token (which this mock does not take: a 500).
    current = 'rs-token-2';
    mock.setToken('tok-3', ACTIVE);
    await expectMisconfigured(gate.authenticate(bearer('tok-3')));
    expect(asked).toBe(3);
  });

  it('takes a function that returns the token itself, not a promise', async () => {
    const { gate } = await setup(() => RS_TOKEN);
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
  });

  it('a refused token (401) is the 500 of a refused client secret: not shown, held a second without a request', async () => {
    const { mock, gate, events } = await setup('not-the-rs-token', { retry: { retries: 2, baseDelay: 1 } });
    mock.setToken('tok-2', ACTIVE);
    const error = await expectMisconfigured(gate.authenticate(bearer('tok-1')));
    expect(error.cause).toMatchObject({
      kind: 'misconfigured',
      upstreamStatus: 401,
      message: "introspection refused this server's access token (check accessToken)",
    });
    await expectMisconfigured(gate.authenticate(bearer('tok-2')));
    expect(mock.calls.introspect).toBe(1);
    expect(events.filter((event) => event.type === 'held_back')).toEqual([
      expect.objectContaining({ reason: 'refused', provider: 'introspection' }),
    ]);
    expect(shownOf(error, events)).not.toContain('not-the-rs-token');
  });

  it('a token the function rotated is asked for again once the refusal no longer holds', async () => {
    let current = 'rs-token-old';
    const { mock, gate } = await setup(() => current);
    await expectMisconfigured(gate.authenticate(bearer('tok-1')));
    current = RS_TOKEN;
    gate.reset(); // lifts the second's hold, as its end would
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(mock.calls.introspect).toBe(2);
  });

  it.each([
    ['403', 403, '{"error":"insufficient_scope"}'],
    ['400 invalid_client', 400, '{"error":"invalid_client"}'],
    ['401 with an empty body', 401, ''],
  ])('a %s for the token is a 500 too', async (_, status, body) => {
    const server = closeLater(await startAnswerServer());
    server.answer = (_req, res) => reply(res, status, body, body === '' ? 'text/plain' : 'application/json');
    const provider = introspection({ endpoint: `${server.url}/introspect`, accessToken: () => RS_TOKEN });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));
    const error = await expectMisconfigured(gate.authenticate(bearer('tok-1')));
    expect(inspect(error, { depth: null })).not.toContain(RS_TOKEN);
  });

  it('with issuer, discovers the endpoint whatever methods its metadata lists (the token goes to its own issuer)', async () => {
    const mock = closeLater(
      await mockIntrospection({
        accessToken: RS_TOKEN,
        tokens: { 'tok-1': ACTIVE },
        metadata: { introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'] },
      }),
    );
    const gate = closeLater(
      createGate({ providers: [introspection({ issuer: mock.issuer, accessToken: RS_TOKEN })], retry: false }),
    );
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(mock.calls).toMatchObject({ oauthMetadata: 1, introspect: 1 });
  });

  it('cacheScope holds a token given as a string only as its digest, and a function not at all', () => {
    const endpoint = 'http://127.0.0.1:9/introspect';
    const provider = introspection({ endpoint, accessToken: RS_TOKEN });
    expect(inspect(provider, { depth: null })).not.toContain(RS_TOKEN);
    expect(JSON.stringify(provider)).not.toContain(RS_TOKEN);
    const fixed = provider.cacheScope;
    expect(fixed).not.toContain(RS_TOKEN);
    expect(fixed).toContain(secretDigest(RS_TOKEN));
    const other = introspection({ endpoint, accessToken: 'rs-token-2' }).cacheScope;
    const asked = introspection({ endpoint, accessToken: () => RS_TOKEN }).cacheScope;
    const asSecret = introspection({ endpoint, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET }).cacheScope;
    expect(new Set([fixed, other, asked, asSecret]).size).toBe(4);
    // Another function is the same scope: a rotated token keeps the cache.
    expect(introspection({ endpoint, accessToken: async () => 'x' }).cacheScope).toBe(asked);
    expect(introspection({ endpoint, accessToken: () => RS_TOKEN, audience: 'orders' }).cacheScope).not.toBe(asked);
  });
});

describe('introspection({ accessToken }): hostile option values are refused at construction, never shown', () => {
  const endpoint = 'http://127.0.0.1:9/introspect';
  const expected =
    'introspection: accessToken: expected a bearer token (RFC 6750 b64token: letters, digits and -._~+/, then = padding) or a function returning one, got';

  it.each<[string, unknown, string]>([
    ['an empty string', '', 'an empty string'],
    [
      'a token read from a file (a final line break)',
      `${RS_TOKEN}\n`,
      'a string with a line break (read from a file?)',
    ],
    [
      'CR LF inside (a header smuggled in)',
      `${RS_TOKEN}\r\nX-Injected: 1`,
      'a string with a line break (read from a file?), white space, a character b64token does not allow (such as , " or @)',
    ],
    ['a space', 'rs token', 'a string with white space'],
    ['a tab', 'rs\ttoken', 'a string with white space'],
    [
      'the scheme given too',
      `Bearer ${RS_TOKEN}`,
      'a string that starts with the scheme (give the token alone, without Bearer)',
    ],
    ['a NUL', 'rs\0token', 'a string with a control character'],
    ['a DEL', 'rs\x7ftoken', 'a string with a control character'],
    [
      'a terminal escape',
      'rs\x1b[31mtoken',
      'a string with a control character, a character b64token does not allow (such as , " or @)',
    ],
    ['non-ASCII', 'rs-tökén', 'a string with a character past ASCII'],
    ['a U+2028 line separator', 'rs\u2028token', 'a string with a character past ASCII'],
    ['a comma and a quote', 'rs,"token"', 'a string with a character b64token does not allow (such as , " or @)'],
    ['= inside', 'rs=token', 'a string with = other than as padding at its end'],
    ['= alone', '==', 'a string with = other than as padding at its end'],
    ['a number', 42, '42'],
    ['null', null, 'null'],
    ['an object', { token: RS_TOKEN }, 'an object'],
  ])('%s', (_, accessToken, got) => {
    let message = 'no error';
    try {
      introspection({ endpoint, accessToken } as never);
    } catch (error) {
      expect(error).toBeInstanceOf(TypeError);
      message = (error as Error).message;
    }
    expect(message).toBe(`${expected} ${got}`);
    if (typeof accessToken === 'string' && accessToken !== '') expect(message).not.toContain(accessToken.trim());
  });

  it('a promise (a function called instead of passed)', () => {
    const promise = Promise.resolve(RS_TOKEN);
    expect(() => introspection({ endpoint, accessToken: promise } as never)).toThrow(
      new TypeError('introspection: accessToken: got a promise (missing await?)'),
    );
  });

  it.each<[string, Record<string, unknown>, string]>([
    [
      'with clientId and clientSecret',
      { accessToken: RS_TOKEN, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET },
      'introspection: accessToken: expected accessToken, or clientId and clientSecret (with clientAuth), not both: got clientId, clientSecret too',
    ],
    [
      'with clientAuth alone',
      { accessToken: () => RS_TOKEN, clientAuth: 'basic' },
      'introspection: accessToken: expected accessToken, or clientId and clientSecret (with clientAuth), not both: got clientAuth too',
    ],
    [
      'neither accessToken nor clientId and clientSecret',
      {},
      'introspection: clientId: expected a non-empty string, got undefined (or give accessToken)',
    ],
    [
      'clientSecret alone',
      { clientSecret: CLIENT_SECRET },
      'introspection: clientId: expected a non-empty string, got undefined',
    ],
    [
      'a misspelt accessToken',
      { acessToken: RS_TOKEN },
      'introspection: acessToken: unknown option (did you mean accessToken?)',
    ],
  ])('refuses accessToken %s', (_, options, message) => {
    expect(() => introspection({ endpoint, ...options } as never)).toThrow(new TypeError(message));
  });

  it('refuses it at createGate too, naming the provider option', () => {
    expect(() => createGate({ providers: [introspection({ endpoint, accessToken: ' ' } as never)] })).toThrow(
      /^introspection: accessToken: expected a bearer token/,
    );
  });
});

describe('introspection({ accessToken }): a function that fails is a 503, and nothing is sent', () => {
  const SECRET_IN_ERROR = 'leaked-rs-token-in-message';

  it.each<[string, () => unknown]>([
    [
      'throws',
      () => {
        throw new Error(`token service refused ${SECRET_IN_ERROR}`);
      },
    ],
    ['rejects', () => Promise.reject(new TypeError(`fetch failed for ${SECRET_IN_ERROR}`))],
    ['rejects with a string', () => Promise.reject(SECRET_IN_ERROR)],
  ])('one that %s: its message is shown nowhere', async (_, source) => {
    const { mock, gate, events } = await setup(source as () => string);
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect(error.cause).toMatchObject({
      kind: 'unreachable',
      message: 'introspection accessToken() failed: the introspection endpoint was not asked',
    });
    expect(mock.calls.introspect).toBe(0);
    expect(shownOf(error, events)).not.toContain(SECRET_IN_ERROR);
    expect(events).toContainEqual(expect.objectContaining({ type: 'provider_error', reason: 'unreachable' }));
  });

  it.each<[string, unknown, string]>([
    ['an empty string', '', 'an empty string'],
    ['a token with CR LF', `${RS_TOKEN}\r\n`, 'a string with a line break (read from a file?)'],
    ['a token with a NUL', `${RS_TOKEN}\0`, 'a string with a control character'],
    ['undefined (a token not fetched yet)', undefined, 'undefined'],
    ['a number', 7, '7'],
    ['an object', { access_token: RS_TOKEN }, 'an object'],
  ])('one that gives %s: named, never shown, not sent', async (_, given, named) => {
    const { mock, gate, events } = await setup(async () => given as string);
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect((error.cause as Error).message).toBe(
      `introspection accessToken() gave ${named}, not a bearer token: the introspection endpoint was not asked`,
    );
    expect(mock.calls.introspect).toBe(0);
    expect(shownOf(error, events)).not.toContain(RS_TOKEN);
  });

  it('one that threw is asked again by a retry; one that gave no token is not', async () => {
    let calls = 0;
    const flaky = await setup(
      () => {
        calls++;
        if (calls === 1) throw new Error('token service down a moment');
        return RS_TOKEN;
      },
      { retry: { retries: 2, baseDelay: 1 } },
    );
    expect((await flaky.gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(calls).toBe(2);

    let given = 0;
    const empty = await setup(
      () => {
        given++;
        return '';
      },
      { retry: { retries: 2, baseDelay: 1 } },
    );
    await expectUnavailable(empty.gate.authenticate(bearer('tok-1')));
    expect(given).toBe(1);
  });

  it('one that never settles: a 503 at the gate timeout, through a real Express app', async () => {
    const { mock, gate } = await setup(() => new Promise<string>(() => {}), { timeout: 300 });
    const app = express();
    app.get('/orders', authenticate(gate), (_req, res) => res.json({ ok: true }));
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      if (!(error instanceof AuthError)) throw error;
      res.status(error.status).set(error.headers).json({ error: error.code });
    });
    const res = await request(app).get('/orders').set('authorization', 'Bearer tok-1');
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ error: 'provider_unavailable' });
    expect(mock.calls.introspect).toBe(0);
    const error = await expectUnavailable(gate.authenticate(bearer('tok-2')));
    expect(error.cause).toMatchObject({ kind: 'timeout' });
  });
});
