/**
 * AuthError as users meet it: one per code, produced by a real gate against
 * the mock providers, with the fields frameworks read (status, statusCode,
 * code, headers, expose), the gate's realm in every challenge, and no
 * secret in any message. Also createGate's option checks.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AuthError, type AuthErrorCode, createGate, onlineOrNot, partoo, requires } from '../src/index.js';
import { mockOnlineOrNot, mockPartoo, stubProvider } from '../src/testing/index.js';
import { rejectionOf, thrownBy } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';

const closeLater = closeAfterEach();
const TOKEN = 'Zm9vYmFyLXNlY3JldC10b2tlbg==';
const API_KEY = 'partoo-server-key-do-not-leak';
const CONNECTION_TOKEN = 'af3e8951c1f4c42f9cc53116b3fc855b';

/** A gate over both mocks, holding TOKEN (OnlineOrNot, no permissions) and a Partoo connection token. */
async function setup(realm?: string) {
  const oon = closeLater(await mockOnlineOrNot({ tokens: { [TOKEN]: { id: 'tok_1' } } }));
  const ptoo = closeLater(
    await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'user-1', token: CONNECTION_TOKEN }] }),
  );
  const gate = closeLater(
    createGate({
      providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: API_KEY, baseUrl: ptoo.url })],
      retry: false,
      breaker: false,
      timeout: 300,
      ...(realm === undefined ? {} : { realm }),
    }),
  );
  return { oon, ptoo, gate };
}

const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** What a client-facing layer could ever print about an error. */
const printable = (error: AuthError) =>
  `${error.message}\n${error.stack}\n${JSON.stringify(error.headers)}\n${JSON.stringify(error)}\n${String(error)}`;

function expectFields(error: AuthError, code: AuthErrorCode, status: number, expose: boolean) {
  expect(error).toBeInstanceOf(Error);
  expect(error.name).toBe('AuthError');
  expect(error.code).toBe(code);
  expect(error.status).toBe(status);
  expect(error.statusCode).toBe(status);
  expect(error.expose).toBe(expose);
  // An answer to a client, made as often as clients ask: no stack frames are captured for it.
  expect(error.stack).toBe(`AuthError: ${error.message}`);
  expect(printable(error)).not.toContain(TOKEN);
  expect(printable(error)).not.toContain(CONNECTION_TOKEN);
  expect(printable(error)).not.toContain(API_KEY);
}

describe('AuthError for each code', () => {
  it('credentials_required: 401, challenge without error', async () => {
    const { gate } = await setup();
    const error = await rejectionOf(gate.authenticate({ headers: {} }));
    expectFields(error, 'credentials_required', 401, true);
    expect(error.headers).toEqual({ 'WWW-Authenticate': 'Bearer realm="api"' });
  });

  it('invalid_request: 400, error="invalid_request"', async () => {
    const { gate } = await setup();
    const error = await rejectionOf(gate.authenticate(bearer(`${TOKEN} ${TOKEN}`)));
    expectFields(error, 'invalid_request', 400, true);
    expect(error.headers).toEqual({
      'WWW-Authenticate': 'Bearer realm="api", error="invalid_request", error_description="Malformed Bearer token"',
    });
  });

  it('invalid_token: 401, error="invalid_token"', async () => {
    const { gate } = await setup();
    const error = await rejectionOf(gate.authenticate(bearer(`x${TOKEN}`)));
    expectFields(error, 'invalid_token', 401, true);
    expect(error.headers).toEqual({
      'WWW-Authenticate': 'Bearer realm="api", error="invalid_token", error_description="The access token is invalid"',
    });
  });

  it('invalid_token for a connection token', async () => {
    const { gate } = await setup();
    const error = await rejectionOf(
      gate.authenticate({ headers: {}, query: { user_id: 'user-2', token: CONNECTION_TOKEN } }),
    );
    expectFields(error, 'invalid_token', 401, true);
  });

  it('insufficient_scope: 403, error="insufficient_scope" with scope', async () => {
    const { gate } = await setup();
    const auth = await gate.authenticate(bearer(TOKEN));
    const error = thrownBy(() => gate.authorize(auth, requires('monitors (write)')));
    expectFields(error, 'insufficient_scope', 403, true);
    expect(error.headers).toEqual({
      'WWW-Authenticate':
        'Bearer realm="api", error="insufficient_scope", error_description="Requires: monitors (write)", scope="monitors%20(write)"',
    });
  });

  it('provider_unavailable: 503 for a 5xx, without a challenge', async () => {
    const { oon, gate } = await setup();
    oon.fault = { kind: 'status', status: 502 };
    const error = await rejectionOf(gate.authenticate(bearer(TOKEN)));
    expectFields(error, 'provider_unavailable', 503, true);
    expect(error.headers).toEqual({});
    expect(error.message).toBe('Token provider onlineornot is unavailable');
    // What failed upstream keeps its frames, for the server's logs.
    expect((error.cause as Error).stack).toMatch(/\n {4}at /);
  });

  it('provider_unavailable: 503 when the provider does not answer within timeout', async () => {
    const { ptoo, gate } = await setup();
    ptoo.fault = { kind: 'hang' };
    const started = performance.now();
    const error = await rejectionOf(
      gate.authenticate({ headers: {}, query: { user_id: 'user-1', token: CONNECTION_TOKEN } }),
    );
    expectFields(error, 'provider_unavailable', 503, true);
    expect(error.message).toBe('Token provider partoo is unavailable');
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('provider_unavailable: 503 with Retry-After for a 503 that names one', async () => {
    const { oon, gate } = await setup();
    oon.fault = { kind: 'status', status: 503, retryAfter: 7 };
    const error = await rejectionOf(gate.authenticate(bearer(TOKEN)));
    expectFields(error, 'provider_unavailable', 503, true);
    expect(error.headers).toEqual({ 'Retry-After': '7' });
  });

  it('provider_unavailable: 503 when the provider is not listening', async () => {
    const { oon, gate } = await setup();
    await oon.close();
    const error = await rejectionOf(gate.authenticate(bearer(TOKEN)));
    expectFields(error, 'provider_unavailable', 503, true);
  });

  it('provider_misconfigured: 500, expose false, no challenge, no key', async () => {
    const ptoo = closeLater(
      await mockPartoo({ apiKey: 'the-right-key', tokens: [{ userId: 'user-1', token: CONNECTION_TOKEN }] }),
    );
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: ptoo.url })] }));
    const error = await rejectionOf(
      gate.authenticate({ headers: {}, query: { user_id: 'user-1', token: CONNECTION_TOKEN } }),
    );
    expectFields(error, 'provider_misconfigured', 500, false);
    expect(error.headers).toEqual({});
    expect(printable(error)).not.toContain('the-right-key');
  });

  it('can be built directly, with empty headers and expose true by default', () => {
    const error = new AuthError('invalid_token', 401, 'nope');
    expect(error).toMatchObject({ code: 'invalid_token', status: 401, statusCode: 401, expose: true, headers: {} });
    expect(error.message).toBe('nope');
    expect(new AuthError('provider_misconfigured', 500, 'x', {}, false).expose).toBe(false);
  });

  it('captures no stack frames, keeps its cause, and leaves Error.stackTraceLimit as it was', () => {
    const limit = Error.stackTraceLimit;
    const cause = new Error('upstream');
    const error = new AuthError('provider_unavailable', 503, 'down', {}, true, { cause });
    expect(error.stack).toBe('AuthError: down');
    expect(error.cause).toBe(cause);
    expect(Object.hasOwn(new AuthError('invalid_token', 401, 'nope', {}, true, {}), 'cause')).toBe(false);
    expect(Error.stackTraceLimit).toBe(limit);
    expect(new Error('after').stack).toMatch(/\n {4}at /);
    // A message that throws when made a string (from JavaScript) throws before the limit is touched.
    const hostile = {
      toString: () => {
        throw new Error('no string');
      },
    } as unknown as string;
    expect(() => new AuthError('invalid_token', 401, hostile)).toThrow('no string');
    expect(Error.stackTraceLimit).toBe(limit);
  });

  it('is still made, with frames, where Error.stackTraceLimit is read-only (a frozen Error)', () => {
    // A process of its own: freezing Error here would reach every other test.
    const script = `
      Object.freeze(Error);
      const { AuthError } = await import('./src/errors.ts');
      const error = new AuthError('invalid_token', 401, 'nope');
      console.log(JSON.stringify({ code: error.code, frames: /\\n {4}at /.test(error.stack) }));`;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual({ code: 'invalid_token', frames: true });
  });
});

describe('realm', () => {
  it('shows up in every challenge the gate sends', async () => {
    const { gate } = await setup('uptime');
    const missing = await rejectionOf(gate.authenticate({ headers: {} }));
    expect(missing.headers['WWW-Authenticate']).toBe('Bearer realm="uptime"');
    const malformed = await rejectionOf(gate.authenticate(bearer('a b')));
    expect(malformed.headers['WWW-Authenticate']).toMatch(/^Bearer realm="uptime", error="invalid_request"/);
    const rejected = await rejectionOf(gate.authenticate(bearer('unknown')));
    expect(rejected.headers['WWW-Authenticate']).toMatch(/^Bearer realm="uptime", error="invalid_token"/);
    const connection = await rejectionOf(gate.authenticate({ headers: {}, query: { token: 'x' } }));
    expect(connection.headers['WWW-Authenticate']).toMatch(/^Bearer realm="uptime", error="invalid_request"/);
    const auth = await gate.authenticate(bearer(TOKEN));
    const forbidden = thrownBy(() => gate.authorize(auth, requires('x')));
    expect(forbidden.headers['WWW-Authenticate']).toMatch(/^Bearer realm="uptime", error="insufficient_scope"/);
    expect(thrownBy(() => gate.authorize(undefined, requires('x'))).headers['WWW-Authenticate']).toBe(
      'Bearer realm="uptime"',
    );
    expect(gate.realm).toBe('uptime');
  });

  it('writes only its own parameters, whatever another package added to Object.prototype', async () => {
    const { gate } = await setup();
    const prototype = Object.prototype as Record<string, unknown>;
    prototype.polluted = 'x';
    try {
      const rejected = await rejectionOf(gate.authenticate(bearer('unknown')));
      expect(rejected.headers['WWW-Authenticate']).toBe(
        'Bearer realm="api", error="invalid_token", error_description="The access token is invalid"',
      );
    } finally {
      delete prototype.polluted;
    }
  });

  it('defaults to "api"', async () => {
    const { gate } = await setup();
    expect(gate.realm).toBe('api');
  });
});

describe('createGate option checks', () => {
  const stub = () => stubProvider({ tokens: {} });

  it('needs at least one provider', () => {
    expect(() => createGate({ providers: [] })).toThrow(TypeError);
    expect(() => createGate({} as Parameters<typeof createGate>[0])).toThrow(TypeError);
  });

  it.each([
    ['a quote', 'my "api"'],
    ['a backslash', 'a\\b'],
    ['a newline', 'api\nx'],
    ['non-ASCII', 'réalm'],
    ['nothing', ''],
  ])('refuses a realm with %s', (_, realm) => {
    expect(() => createGate({ providers: [stub()], realm })).toThrow(TypeError);
  });

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])('refuses timeout %s', (timeout) => {
    expect(() => createGate({ providers: [stub()], timeout })).toThrow(RangeError);
  });

  it.each([
    ['ttl 0', { ttl: 0 }],
    ['negative negativeTtl', { negativeTtl: -1 }],
    ['max 0', { max: 0 }],
    ['NaN ttl', { ttl: Number.NaN }],
  ])('refuses cache %s', (_, cache) => {
    expect(() => createGate({ providers: [stub()], cache })).toThrow(RangeError);
  });

  it('accepts a realm with spaces and punctuation', async () => {
    const gate = closeLater(createGate({ providers: [stub()], realm: 'Uptime API (v1)' }));
    const error = await rejectionOf(gate.authenticate({ headers: {} }));
    expect(error.headers['WWW-Authenticate']).toBe('Bearer realm="Uptime API (v1)"');
  });

  it('refuses a provider baseUrl that is not http(s) or carries credentials', () => {
    expect(() => onlineOrNot({ baseUrl: 'ftp://127.0.0.1/' })).toThrow(TypeError);
    expect(() => onlineOrNot({ baseUrl: 'http://user:pass@127.0.0.1/' })).toThrow(TypeError);
  });
});

describe('optional authentication', () => {
  it('resolves undefined without a credential, still rejects a bad one', async () => {
    const { gate } = await setup();
    expect(await gate.authenticate({ headers: {} }, { optional: true })).toBeUndefined();
    expect(
      await gate.authenticate({ headers: { authorization: 'Basic dXNlcjpwYXNz' } }, { optional: true }),
    ).toBeUndefined();
    expect((await rejectionOf(gate.authenticate(bearer('unknown'), { optional: true }))).status).toBe(401);
    expect((await rejectionOf(gate.authenticate(bearer('a b'), { optional: true }))).status).toBe(400);
    expect((await gate.authenticate(bearer(TOKEN), { optional: true }))?.subject).toBe('tok_1');
  });
});

describe('instanceof AuthError', () => {
  it('holds for the AuthError of another copy of the package (ESM and CommonJS builds), not for other errors', () => {
    // What the other build's class looks like from here: another class whose prototype carries the shared brand.
    class OtherCopy extends Error {}
    Object.defineProperty(OtherCopy.prototype, Symbol.for('tokengate.AuthError@2'), { value: true });
    expect(new OtherCopy('x') instanceof AuthError).toBe(true);
    // Another major version's AuthError, whose shape may differ, is not this one.
    class OtherMajor extends Error {}
    Object.defineProperty(OtherMajor.prototype, Symbol.for('tokengate.AuthError@1'), { value: true });
    expect(new OtherMajor('x') instanceof AuthError).toBe(false);
    expect(new Error('x') instanceof AuthError).toBe(false);
    expect(Object.create(null) instanceof AuthError).toBe(false);
    expect(('AuthError' as unknown) instanceof AuthError).toBe(false);
  });

  it('checks a subclass as usual', () => {
    class AppAuthError extends AuthError {}
    expect(new AuthError('invalid_token', 401, 'x') instanceof AppAuthError).toBe(false);
    expect(new AppAuthError('invalid_token', 401, 'x') instanceof AppAuthError).toBe(true);
    expect(new AppAuthError('invalid_token', 401, 'x') instanceof AuthError).toBe(true);
  });
});
