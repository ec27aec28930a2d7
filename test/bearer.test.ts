/**
 * RFC 6750 §2.1 Bearer credentials: what `extractBearer` accepts, what is
 * somebody else's credential (no credential), and what is a 400
 * `invalid_request`, directly and through a gate behind a real HTTP server.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { AuthError, type CredentialRequest, createGate, extractBearer, onlineOrNot } from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { thrownBy } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';

const closeLater = closeAfterEach();

const withHeader = (authorization: string | string[] | undefined, rawHeaders?: string[]): CredentialRequest =>
  rawHeaders === undefined ? { headers: { authorization } } : { headers: { authorization }, rawHeaders };

const MALFORMED_CHALLENGE = 'Bearer realm="api", error="invalid_request", error_description="Malformed Bearer token"';

describe('extractBearer: accepted credentials', () => {
  it.each([
    ['Bearer abc', 'abc'],
    ['bearer abc', 'abc'],
    ['BEARER abc', 'abc'],
    ['bEaReR abc', 'abc'],
    ['Bearer   abc', 'abc'],
  ])('reads the scheme case-insensitively: %j', (header, token) => {
    expect(extractBearer(withHeader(header), 'api')).toEqual({ source: 'header:authorization', secret: token });
  });

  it('accepts the whole b64token alphabet, exactly as sent', () => {
    const token = 'AZaz09-._~+/';
    expect(extractBearer(withHeader(`Bearer ${token}`), 'api')?.secret).toBe(token);
  });

  it.each(['abc=', 'abc==', 'YWJjZA===='])('accepts trailing "=" padding: %s', (token) => {
    expect(extractBearer(withHeader(`Bearer ${token}`), 'api')?.secret).toBe(token);
  });

  it('accepts a token of exactly 4096 characters', () => {
    const token = 'a'.repeat(4096);
    expect(extractBearer(withHeader(`Bearer ${token}`), 'api')?.secret).toBe(token);
  });

  it('accepts a single Authorization header listed in rawHeaders', () => {
    const req = withHeader('Bearer abc', ['Host', 'example', 'Authorization', 'Bearer abc']);
    expect(extractBearer(req, 'api')?.secret).toBe('abc');
  });

  it('takes the value from headers (what middleware left there), and rawHeaders only to see a repeat', () => {
    const request = (authorization: string | undefined, rawHeaders: string[]): CredentialRequest => ({
      headers: authorization === undefined ? {} : { authorization },
      rawHeaders,
    });
    // Set by middleware from elsewhere (a cookie): the client sent none.
    expect(extractBearer(request('Bearer fromCookie', ['Host', 'example']), 'api')?.secret).toBe('fromCookie');
    // Replaced, or removed, by middleware.
    expect(extractBearer(request('Bearer replaced', ['Authorization', 'Bearer sent']), 'api')?.secret).toBe('replaced');
    expect(extractBearer(request(undefined, ['Authorization', 'Bearer sent']), 'api')).toBeUndefined();
    // Sent twice by the client: a 400, whatever headers kept.
    expect(() =>
      extractBearer(request('Bearer a', ['Authorization', 'Bearer a', 'authorization', 'Bearer b']), 'api'),
    ).toThrow('Only one Authorization header is allowed');
  });
});

describe('extractBearer: no credential', () => {
  it('returns undefined without an Authorization header', () => {
    expect(extractBearer({ headers: {} }, 'api')).toBeUndefined();
    expect(extractBearer(withHeader(undefined), 'api')).toBeUndefined();
  });

  it.each([
    ['Basic', 'Basic dXNlcjpwYXNz'],
    ['Digest', 'Digest username="u", realm="r", nonce="n", uri="/", response="x"'],
    ['a scheme that merely starts with Bearer', 'Bearertoken'],
    ['a scheme that merely starts with Bearer, with a token', 'Bearerx abc'],
    ['a bare scheme name', 'Negotiate'],
  ])('treats another scheme as no credential: %s', (_, header) => {
    expect(extractBearer(withHeader(header), 'api')).toBeUndefined();
  });
});

describe('extractBearer: 400 invalid_request', () => {
  it.each([
    ['"Bearer" alone', 'Bearer'],
    ['"Bearer" and a space', 'Bearer '],
    ['a tab as separator', 'Bearer\tabc'],
    ['two tokens', 'Bearer abc def'],
    ['a quote', 'Bearer ab"c'],
    ['a comma', 'Bearer abc,def'],
    ['a semicolon', 'Bearer abc;'],
    ['a backslash', 'Bearer ab\\c'],
    ['"=" inside the token', 'Bearer ab=c'],
    ['padding only', 'Bearer =='],
    ['unicode', 'Bearer tökén'],
    ['an emoji', 'Bearer abc\u{1F511}'],
    ['a NUL', 'Bearer ab\u0000c'],
    ['a trailing newline', 'Bearer abc\n'],
    ['CR LF and another header', 'Bearer abc\r\nX-Admin: 1'],
    ['DEL', 'Bearer abc\u007f'],
  ])('rejects a malformed Bearer credential: %s', (_, header) => {
    const error = thrownBy(() => extractBearer(withHeader(header), 'api'));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_request');
    expect(error.headers).toEqual({ 'WWW-Authenticate': MALFORMED_CHALLENGE });
  });

  it('rejects a token longer than 4096 characters', () => {
    const error = thrownBy(() => extractBearer(withHeader(`Bearer ${'a'.repeat(4097)}`), 'api'));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_request');
    expect(error.headers['WWW-Authenticate']).toBe(
      'Bearer realm="api", error="invalid_request", error_description="Bearer token is too long"',
    );
    expect(error.message).not.toContain('aaaa');
  });

  it('finds no credential in an empty Authorization header (a client that sends `token ?? ""`)', () => {
    expect(extractBearer(withHeader(''), 'api')).toBeUndefined();
    expect(extractBearer(withHeader('', ['Authorization', '']), 'api')).toBeUndefined();
  });

  it('still rejects an empty Authorization header repeated, or beside another', () => {
    for (const rawHeaders of [
      ['Authorization', '', 'Authorization', ''],
      ['Authorization', '', 'authorization', 'Bearer abc'],
    ]) {
      const error = thrownBy(() => extractBearer(withHeader('', rawHeaders), 'api'));
      expect(error.status).toBe(400);
      expect(error.message).toBe('Only one Authorization header is allowed');
    }
  });

  it('rejects a header with no scheme at all', () => {
    const error = thrownBy(() => extractBearer(withHeader(' abc'), 'api'));
    expect(error.status).toBe(400);
  });

  const REPEATED_CHALLENGE =
    'Bearer realm="api", error="invalid_request", error_description="Only one Authorization header is allowed"';

  it('rejects a repeated Authorization header seen in rawHeaders', () => {
    const req = withHeader('Bearer abc', ['Authorization', 'Bearer abc', 'authorization', 'Bearer other']);
    const error = thrownBy(() => extractBearer(req, 'api'));
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_request');
    expect(error.headers).toEqual({ 'WWW-Authenticate': REPEATED_CHALLENGE });
  });

  it('rejects a repeat even when the other one is another scheme', () => {
    const req = withHeader('Basic dXNlcjpwYXNz', [
      'AUTHORIZATION',
      'Basic dXNlcjpwYXNz',
      'Authorization',
      'Bearer abc',
    ]);
    expect(thrownBy(() => extractBearer(req, 'api')).status).toBe(400);
  });

  it('rejects an Authorization header given as an array', () => {
    const error = thrownBy(() => extractBearer(withHeader(['Bearer abc', 'Bearer def']), 'api'));
    expect(error.status).toBe(400);
    expect(error.headers).toEqual({ 'WWW-Authenticate': REPEATED_CHALLENGE });
  });

  it('names the realm it is given in the challenge', () => {
    const error = thrownBy(() => extractBearer(withHeader('Bearer a b'), 'billing'));
    expect(error.headers['WWW-Authenticate']).toBe(
      'Bearer realm="billing", error="invalid_request", error_description="Malformed Bearer token"',
    );
  });

  it('never puts the token in the error', () => {
    const secret = 'sup3r-s3cret-t0ken';
    for (const header of [`Bearer ${secret} x`, `Bearer ${secret}"`, `Bearer ${secret}${'x'.repeat(5000)}`]) {
      const error = thrownBy(() => extractBearer(withHeader(header), 'api'));
      expect(JSON.stringify({ message: error.message, headers: error.headers, stack: error.stack })).not.toContain(
        secret,
      );
    }
  });
});

describe('Bearer credentials over real HTTP', () => {
  /** A bare Node server that answers with the gate's verdict: subject, or the AuthError's status and headers. */
  async function serveGate(gate: ReturnType<typeof createGate>): Promise<string> {
    const server = createServer((req, res) => {
      gate.authenticate(req).then(
        (auth) => res.writeHead(200, { 'content-type': 'text/plain' }).end(auth.subject),
        (error: unknown) => {
          if (!(error instanceof AuthError)) return res.writeHead(500).end();
          res.writeHead(error.status, error.headers).end(error.code);
        },
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closeLater({
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    });
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  }

  async function setup() {
    const mock = closeLater(await mockOnlineOrNot({ tokens: { 'good-token': { id: 'tok_1' } } }));
    const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: mock.url })] }));
    return { mock, url: await serveGate(gate) };
  }

  async function send(url: string, headers: string[]) {
    const res = await request(url, { headers });
    return { status: res.statusCode, challenge: res.headers['www-authenticate'], body: await res.body.text() };
  }

  it('lets a lower-case scheme through to the provider', async () => {
    const { mock, url } = await setup();
    expect(await send(url, ['authorization', 'bearer good-token'])).toMatchObject({ status: 200, body: 'tok_1' });
    expect(mock.calls.verify).toBe(1);
  });

  it('answers 400 to two Authorization headers, without asking the provider', async () => {
    const { mock, url } = await setup();
    const res = await send(url, ['authorization', 'Bearer good-token', 'Authorization', 'Bearer other']);
    expect(res.status).toBe(400);
    expect(res.challenge).toBe(
      'Bearer realm="api", error="invalid_request", error_description="Only one Authorization header is allowed"',
    );
    expect(mock.calls.total).toBe(0);
  });

  it('answers Basic with the plain challenge (no error)', async () => {
    const { mock, url } = await setup();
    const res = await send(url, ['authorization', 'Basic dXNlcjpwYXNz']);
    expect(res.status).toBe(401);
    expect(res.challenge).toBe('Bearer realm="api"');
    expect(mock.calls.total).toBe(0);
  });

  it('answers a malformed Bearer token with 400, without asking the provider', async () => {
    const { mock, url } = await setup();
    const res = await send(url, ['authorization', 'Bearer good-token extra']);
    expect(res.status).toBe(400);
    expect(res.challenge).toBe(MALFORMED_CHALLENGE);
    expect(mock.calls.total).toBe(0);
  });
});
