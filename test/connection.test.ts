/**
 * Connection credentials (`?user_id=…&token=…`): what `extractConnection`
 * reads, what is a 400, custom parameter names, and credentials sent in two
 * places at once.
 */
import { parse as parseQuery } from 'node:querystring';
import { describe, expect, it } from 'vitest';
import { type ConnectionQueryNames, createGate, extractConnection, onlineOrNot, partoo } from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { rejectionOf, thrownBy } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';

const closeLater = closeAfterEach();
const DEFAULT_NAMES: ConnectionQueryNames = { userId: 'user_id', token: 'token' };
const extract = (query: Record<string, unknown> | undefined, names = DEFAULT_NAMES) =>
  extractConnection({ headers: {}, query }, names, 'api');

/** The 400 for `query`, checked for status, code and challenge. */
function invalidRequestFor(query: Record<string, unknown>, names = DEFAULT_NAMES) {
  const error = thrownBy(() => extract(query, names));
  expect(error.status).toBe(400);
  expect(error.code).toBe('invalid_request');
  expect(error.headers['WWW-Authenticate']).toBe(
    `Bearer realm="api", error="invalid_request", error_description="${error.message}"`,
  );
  return error;
}

describe('extractConnection', () => {
  it('reads the user id and the token', () => {
    expect(extract({ user_id: 'u-42', token: 'af3e8951c1f4c42f' })).toMatchObject({
      source: 'query:connection',
      userId: 'u-42',
      token: 'af3e8951c1f4c42f',
    });
  });

  it('keeps visible ASCII such as & = + % as sent (the provider call encodes them)', () => {
    expect(extract({ user_id: 'u1', token: 'a&user_id=b+c%20' })?.token).toBe('a&user_id=b+c%20');
  });

  it('gives two different credentials different secrets even when the concatenations match', () => {
    const a = extract({ user_id: 'ab', token: 'c' });
    const b = extract({ user_id: 'a', token: 'bc' });
    expect(a?.secret).not.toBe(b?.secret);
  });

  it('returns undefined when neither parameter is present', () => {
    expect(extract({})).toBeUndefined();
    expect(extract({ page: '2', other: 'x' })).toBeUndefined();
    expect(extract(undefined)).toBeUndefined();
  });

  it('reads only what the query holds itself: names every plain object has (constructor) are no credential', () => {
    const names = { userId: 'toString', token: 'constructor' };
    expect(extract({}, names)).toBeUndefined();
    expect(extract({ page: '2' }, names)).toBeUndefined();
    expect(extract({ toString: 'u1', constructor: 't1' }, names)).toMatchObject({ userId: 'u1', token: 't1' });
  });

  it.each([
    ['only user_id', { user_id: 'u1' }],
    ['only token', { token: 't1' }],
  ])('answers 400 when one of the two is missing: %s', (_, query) => {
    expect(invalidRequestFor(query).message).toBe('Both user_id and token are required');
  });

  it('answers 400 to a repeated parameter (?token=a&token=b)', () => {
    const query = parseQuery('user_id=u1&token=a&token=b');
    expect(query.token).toEqual(['a', 'b']);
    expect(invalidRequestFor(query).message).toBe('token must appear once, as a plain value');
    expect(invalidRequestFor(parseQuery('user_id=u1&user_id=u2&token=t')).message).toMatch(/^user_id must appear once/);
  });

  it('names a number or boolean where a parameter belongs: a schema coerced the query', () => {
    expect(invalidRequestFor({ user_id: 7, token: 't1' }).message).toBe(
      'user_id must appear once, as a plain value (got a number)',
    );
    expect(invalidRequestFor({ user_id: 'u1', token: false }).message).toBe(
      'token must appear once, as a plain value (got a boolean)',
    );
  });

  it.each([
    ['nested object (token[x]=1)', { user_id: 'u1', token: { x: '1' } }],
    ['nested user id', { user_id: { $ne: '' }, token: 't1' }],
    ['number', { user_id: 42, token: 't1' }],
    ['null', { user_id: 'u1', token: null }],
    ['boolean', { user_id: 'u1', token: true }],
  ])('answers 400 to a value that is not a plain string: %s', (_, query) => {
    invalidRequestFor(query);
  });

  it.each([
    ['empty token', { user_id: 'u1', token: '' }, 'token is empty'],
    ['empty user id', { user_id: '', token: 't1' }, 'user_id is empty'],
  ])('answers 400 to an empty value: %s', (_, query, message) => {
    expect(invalidRequestFor(query).message).toBe(message);
  });

  it.each([
    ['NUL', 'a\u0000b'],
    ['newline', 'a\nb'],
    ['CR LF', 'a\r\nb'],
    ['tab', 'a\tb'],
    ['DEL', 'a\u007f'],
    ['space', 'a b'],
    ['unicode', 'tökén'],
    ['emoji', '\u{1F511}'],
  ])('answers 400 to characters other than visible ASCII: %s', (_, value) => {
    expect(invalidRequestFor({ user_id: 'u1', token: value }).message).toBe(
      'token holds characters that are not allowed',
    );
    expect(invalidRequestFor({ user_id: value, token: 't1' }).message).toBe(
      'user_id holds characters that are not allowed',
    );
  });

  it('answers 400 to over-long values and accepts the longest allowed', () => {
    expect(extract({ user_id: 'u'.repeat(256), token: 't'.repeat(1024) })).toBeDefined();
    expect(invalidRequestFor({ user_id: 'u'.repeat(257), token: 't1' }).message).toBe('user_id is too long');
    expect(invalidRequestFor({ user_id: 'u1', token: 't'.repeat(1025) }).message).toBe('token is too long');
  });

  it('never puts the token in the error', () => {
    const secret = 'c0nnection-s3cret';
    for (const query of [
      { token: secret },
      { user_id: 'u1', token: `${secret}\n` },
      { user_id: 'u1', token: secret.repeat(100) },
    ]) {
      const error = invalidRequestFor(query);
      expect(`${error.message} ${JSON.stringify(error.headers)}`).not.toContain(secret);
    }
  });

  it('reads custom parameter names and ignores the default ones', () => {
    const names = { userId: 'uid', token: 'ct' };
    expect(extract({ uid: 'u1', ct: 't1' }, names)).toMatchObject({ userId: 'u1', token: 't1' });
    expect(extract({ user_id: 'u1', token: 't1' }, names)).toBeUndefined();
    expect(invalidRequestFor({ uid: 'u1' }, names).message).toBe('Both uid and ct are required');
  });
});

describe('connection credentials through a gate', () => {
  const API_KEY = 'server-key';

  it('reads custom query names configured on partoo()', async () => {
    const mock = closeLater(await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'u1', token: 't1' }] }));
    const gate = closeLater(
      createGate({
        providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url, query: { userId: 'uid', token: 'ct' } })],
      }),
    );
    const auth = await gate.authenticate({ headers: {}, query: { uid: 'u1', ct: 't1' } });
    expect(auth.subject).toBe('u1');
    // The provider still speaks the API's own names upstream.
    expect(mock.calls.checkToken).toBe(1);
    const missing = await rejectionOf(gate.authenticate({ headers: {}, query: { user_id: 'u1', token: 't1' } }));
    expect(missing.code).toBe('credentials_required');
  });

  it('rejects partoo() query names that collide', () => {
    expect(() => partoo({ apiKey: API_KEY, query: { userId: 'x', token: 'x' } })).toThrow(TypeError);
  });

  it('answers 400 to one of the two parameters without asking the provider', async () => {
    const mock = closeLater(await mockPartoo({ apiKey: API_KEY }));
    const gate = closeLater(createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: mock.url })] }));
    const error = await rejectionOf(gate.authenticate({ headers: {}, query: { token: 't1' } }));
    expect(error.status).toBe(400);
    expect(mock.calls.total).toBe(0);
  });

  it('answers 400 to a Bearer header and a connection token in the same request', async () => {
    const oon = closeLater(await mockOnlineOrNot({ tokens: { tok: { id: 'id1' } } }));
    const ptoo = closeLater(await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: 'u1', token: 't1' }] }));
    const gate = closeLater(
      createGate({
        providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: API_KEY, baseUrl: ptoo.url })],
      }),
    );
    const error = await rejectionOf(
      gate.authenticate({ headers: { authorization: 'Bearer tok' }, query: { user_id: 'u1', token: 't1' } }),
    );
    expect(error.status).toBe(400);
    expect(error.code).toBe('invalid_request');
    expect(error.message).toBe('Credentials were sent in more than one place');
    expect(oon.calls.total + ptoo.calls.total).toBe(0);
    // Each alone goes to its own provider.
    expect((await gate.authenticate({ headers: { authorization: 'Bearer tok' } })).provider).toBe('onlineornot');
    expect((await gate.authenticate({ headers: {}, query: { user_id: 'u1', token: 't1' } })).provider).toBe('partoo');
  });
});
