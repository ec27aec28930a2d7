/**
 * Guards: `requires` (all) and `requiresAny` (one), checked by
 * `gate.authorize`, and the 403 `insufficient_scope` challenge they produce.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import * as expressGate from '../adapters/express.js';
import { type AuthContext, type AuthError, createGate, formatScope, requires, requiresAny } from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';
import { thrownBy } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';

const closeLater = closeAfterEach();
const READ = 'uptime_checks (read)';
const WRITE = 'uptime_checks (write)';
const ADMIN = 'admin';

/** A gate over an in-process stub, and the context of a token holding `permissions`. */
async function contextWith(
  permissions: string[],
  realm?: string,
): Promise<{ auth: AuthContext; gate: ReturnType<typeof createGate> }> {
  const gate = closeLater(
    createGate({
      providers: [stubProvider({ tokens: { 'the-token': { subject: 'user-1', permissions } } })],
      ...(realm === undefined ? {} : { realm }),
    }),
  );
  const auth = await gate.authenticate({ headers: { authorization: 'Bearer the-token' } });
  return { auth, gate };
}

describe('requires and requiresAny', () => {
  it('requires() passes only with every permission', async () => {
    const { auth, gate } = await contextWith([READ, WRITE]);
    expect(() => gate.authorize(auth, requires(READ))).not.toThrow();
    expect(() => gate.authorize(auth, requires(READ, WRITE))).not.toThrow();
    expect(thrownBy(() => gate.authorize(auth, requires(READ, ADMIN))).status).toBe(403);
    expect(thrownBy(() => gate.authorize(auth, requires(ADMIN))).status).toBe(403);
  });

  it('requiresAny() passes with one of the permissions', async () => {
    const { auth, gate } = await contextWith([READ]);
    expect(() => gate.authorize(auth, requiresAny(ADMIN, READ))).not.toThrow();
    expect(() => gate.authorize(auth, requiresAny(READ))).not.toThrow();
    expect(thrownBy(() => gate.authorize(auth, requiresAny(ADMIN, WRITE))).status).toBe(403);
  });

  it('matches permission names exactly (case and spaces count)', async () => {
    const { auth, gate } = await contextWith([READ]);
    for (const near of ['Uptime_checks (read)', 'uptime_checks(read)', 'uptime_checks  (read)', 'uptime_checks']) {
      expect(thrownBy(() => gate.authorize(auth, requires(near))).status).toBe(403);
    }
  });

  it('a token without permissions passes no guard', async () => {
    const { auth, gate } = await contextWith([]);
    expect(thrownBy(() => gate.authorize(auth, requiresAny(READ, WRITE))).status).toBe(403);
  });

  it("one guard over many tokens in turn answers for each token's own permissions", async () => {
    const gate = closeLater(
      createGate({
        providers: [
          stubProvider({
            tokens: {
              reader: { subject: 'u1', permissions: [READ] },
              writer: { subject: 'u2', permissions: [WRITE] },
              'second-reader': { subject: 'u3', permissions: [READ] },
              nobody: { subject: 'u4', permissions: [] },
            },
          }),
        ],
      }),
    );
    const contextOf = (token: string) => gate.authenticate({ headers: { authorization: `Bearer ${token}` } });
    const turns = ['reader', 'writer', 'second-reader', 'nobody', 'reader', 'reader', 'writer', 'nobody'];
    const contexts = await Promise.all(turns.map(contextOf));
    const readGuard = requires(READ);
    const eitherGuard = requiresAny(ADMIN, WRITE);
    expect(contexts.map((auth) => readGuard.allows(auth))).toEqual([
      true,
      false,
      true,
      false,
      true,
      true,
      false,
      false,
    ]);
    expect(contexts.map((auth) => eitherGuard.allows(auth))).toEqual([
      false,
      true,
      false,
      false,
      false,
      false,
      true,
      false,
    ]);
  });

  it('allows() asks can() of an object that only looks like a context (a test double)', () => {
    const guard = requires(READ);
    const double = (granted: boolean) => ({ can: () => granted }) as unknown as AuthContext;
    expect([true, false, false, true].map((granted) => guard.allows(double(granted)))).toEqual([
      true,
      false,
      false,
      true,
    ]);
  });

  it("never answers a look-alike by a real context's grants, nor a real context by a look-alike's answer", async () => {
    const { auth } = await contextWith([ADMIN]);
    const guard = requires(ADMIN);
    expect(guard.allows(auth)).toBe(true);
    const denying = { ...auth, can: () => false } as unknown as AuthContext;
    expect(guard.allows(denying)).toBe(false);
    expect(guard.allows(auth)).toBe(true);
    const other = requires(ADMIN);
    expect(other.allows(denying)).toBe(false);
    expect(other.allows(auth)).toBe(true);
  });

  it("asks a view made from a real context (Object.create) its own can(), and never lends its answer to a token's later requests", async () => {
    const gate = closeLater(
      createGate({
        providers: [
          stubProvider({
            tokens: {
              admin: { subject: 'u1', permissions: [READ, ADMIN] },
              'other-admin': { subject: 'u2', permissions: [READ, ADMIN] },
              reader: { subject: 'u3', permissions: [READ] },
              'other-reader': { subject: 'u4', permissions: [READ] },
            },
          }),
        ],
      }),
    );
    const contextOf = (token: string) => gate.authenticate({ headers: { authorization: `Bearer ${token}` } });
    // What an app may put in req.auth for one request: the token's rights narrowed (a delegated, read-only request),
    // or widened (a support session), the rest of the context inherited.
    const narrowed = (auth: AuthContext) =>
      Object.create(auth, { can: { value: (name: string) => name === READ && auth.can(name) } }) as AuthContext;
    const widened = (auth: AuthContext) => Object.create(auth, { can: { value: () => true } }) as AuthContext;
    const status = (auth: AuthContext, guard: ReturnType<typeof requires>) => {
      try {
        gate.authorize(auth, guard);
        return 200;
      } catch (error) {
        return (error as AuthError).status;
      }
    };
    const admin = await contextOf('admin');
    const reader = await contextOf('reader');
    const needsAdmin = requires(ADMIN);
    expect([
      status(admin, needsAdmin),
      status(narrowed(admin), needsAdmin),
      status(await contextOf('other-admin'), needsAdmin),
      status(widened(reader), needsAdmin),
      status(await contextOf('other-reader'), needsAdmin),
      status(reader, needsAdmin),
    ]).toEqual([200, 403, 200, 200, 403, 403]);
  });

  it('collapses duplicate names and keeps their order', () => {
    expect(requires(READ, WRITE, READ).permissions).toEqual([READ, WRITE]);
    expect(requiresAny(WRITE, WRITE).permissions).toEqual([WRITE]);
    expect(requires(READ).mode).toBe('all');
    expect(requiresAny(READ).mode).toBe('any');
  });

  it('throws on an empty list or an empty name, at route definition', () => {
    expect(() => requires()).toThrow(new TypeError('requires() needs at least one permission'));
    expect(() => requiresAny()).toThrow(new TypeError('requiresAny() needs at least one permission'));
    expect(() => requires(READ, '')).toThrow(new TypeError('requires() takes non-empty permission names'));
    expect(() => requiresAny(undefined as unknown as string)).toThrow(
      new TypeError('requiresAny() takes non-empty permission names'),
    );
  });

  it.each([' admin', 'admin ', ' ', 'ad\u0000min', 'admin\r\n', '\tadmin', 'ad\u007fmin'])(
    'throws on %j at route definition: a control character or white space at either end',
    (name) => {
      expect(() => requires(name)).toThrow(
        new TypeError(
          `requires() takes names without control characters or white space at either end, got ${JSON.stringify(name)}`,
        ),
      );
    },
  );

  it('takes names with white space inside (OnlineOrNot names them so)', () => {
    expect(requires('uptime_checks (read)').permissions).toEqual(['uptime_checks (read)']);
  });

  it('refuses names its 403 could not carry: one over 256 characters, or too many for the header together', async () => {
    expect(() => requires('p'.repeat(257))).toThrow(
      new TypeError('requires() takes names of at most 256 characters, got 257'),
    );
    const many = Array.from({ length: 80 }, (_, i) => `permission ${i} ${'x'.repeat(40)}`);
    expect(() => requiresAny(...many)).toThrow(/^requiresAny\(\) names too much for its 403's WWW-Authenticate header/);
    // A three-byte character is nine in scope (%E2%82%AC): a few long names are enough.
    expect(() => requires(...['€', '₤', '₿', '₹'].map((c) => c.repeat(256)))).toThrow(/names too much/);
    // Sixty scopes of Google's APIs are fine.
    const google = Array.from({ length: 60 }, (_, i) => `https://www.googleapis.com/auth/api-${i}.readonly`);
    expect(requiresAny(...google).permissions).toHaveLength(60);
    // As much as the header may carry still makes a 403 that Node's client reads.
    const longest = requiresAny(...Array.from({ length: 30 }, (_, i) => `${i}`.padEnd(130, 'p')));
    const { auth, gate } = await contextWith([READ]);
    const server = createServer((_req, res) => {
      try {
        gate.authorize(auth, longest);
      } catch (error) {
        const denied = error as AuthError;
        res.writeHead(denied.status, denied.headers).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      expect(res.status).toBe(403);
      expect(res.headers.get('www-authenticate')?.length).toBeGreaterThan(7500);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('says so when a String object is passed for a name', () => {
    expect(() => requires(new String('x') as unknown as string)).toThrow(
      new TypeError("requires() takes permission names as strings, got a String object: requires('name')"),
    );
  });

  it('throws on a name with a lone UTF-16 surrogate (no scope can carry it), and takes one with a pair', () => {
    expect(() => requires(READ, '\uD800')).toThrow(
      new TypeError('requires() takes well-formed permission names, got "\\ud800"'),
    );
    expect(() => requiresAny('x\uDE00y')).toThrow(/requiresAny\(\) takes well-formed permission names/);
    expect(requires('emoji \uD83D\uDE00').permissions).toEqual(['emoji \uD83D\uDE00']);
  });

  it('says so when the factory itself is called with a request (mounted without being called)', () => {
    const request = { headers: {}, method: 'GET' } as unknown as string;
    expect(() => requires(request, {} as string)).toThrow(
      new TypeError("requires was mounted without being called: mount requires('permission'), not requires"),
    );
    expect(() => requiresAny(request)).toThrow(/requiresAny was mounted without being called/);
  });

  it("says so when a guard is passed in place of names (an adapter's requires given the core's)", () => {
    expect(() => requires(requires('a') as unknown as string)).toThrow(
      new TypeError(
        "requires() takes permission names, got a guard: pass the names themselves, requires('permission')",
      ),
    );
    expect(() => expressGate.requires(requiresAny('a') as unknown as string)).toThrow(/got a guard/);
  });

  it('says so when a gate is passed to a guard (JavaScript; TypeScript refuses it)', async () => {
    const gate = createGate({ providers: [stubProvider({ tokens: {} })] });
    expect(() => expressGate.requires(gate as unknown as string, 'read')).toThrow(
      new TypeError(
        "requires() takes permission names, got a gate: requires('permission') reads what authenticate(gate) found",
      ),
    );
    await gate.close();
  });

  it('says so when a list is passed whole (JavaScript; TypeScript refuses it)', () => {
    const list = ['a', 'b'] as unknown as string;
    expect(() => requires(list)).toThrow(
      new TypeError('requires() takes permission names as arguments: requires(...names), not requires(names)'),
    );
    expect(() => requiresAny(READ, list)).toThrow(/requiresAny\(\) takes permission names as arguments/);
  });

  it('guards are frozen: a route cannot widen them later', () => {
    const guard = requires(READ);
    expect(Object.isFrozen(guard)).toBe(true);
    expect(Object.isFrozen(guard.permissions)).toBe(true);
  });

  it('authorize(undefined) is a 401 with the plain challenge', async () => {
    const { gate } = await contextWith([READ]);
    const error = thrownBy(() => gate.authorize(undefined, requires(READ)));
    expect(error.status).toBe(401);
    expect(error.code).toBe('credentials_required');
    expect(error.headers).toEqual({ 'WWW-Authenticate': 'Bearer realm="api"' });
  });
});

describe('insufficient_scope challenge', () => {
  it('names the permission, percent-encoded in scope and raw in error_description', async () => {
    const { auth, gate } = await contextWith([]);
    const error = thrownBy(() => gate.authorize(auth, requires(READ)));
    expect(error.status).toBe(403);
    expect(error.statusCode).toBe(403);
    expect(error.code).toBe('insufficient_scope');
    expect(error.expose).toBe(true);
    expect(error.headers).toEqual({
      'WWW-Authenticate':
        'Bearer realm="api", error="insufficient_scope", error_description="Requires: uptime_checks (read)", scope="uptime_checks%20(read)"',
    });
  });

  it('lists every permission of requires() joined by one space, and says "one of" for requiresAny()', async () => {
    const { auth, gate } = await contextWith([]);
    expect(thrownBy(() => gate.authorize(auth, requires(READ, WRITE))).headers['WWW-Authenticate']).toBe(
      'Bearer realm="api", error="insufficient_scope", error_description="Requires: uptime_checks (read), uptime_checks (write)", scope="uptime_checks%20(read) uptime_checks%20(write)"',
    );
    expect(thrownBy(() => gate.authorize(auth, requiresAny(READ, ADMIN))).headers['WWW-Authenticate']).toBe(
      'Bearer realm="api", error="insufficient_scope", error_description="Requires one of: uptime_checks (read), admin", scope="uptime_checks%20(read) admin"',
    );
  });

  it('uses the gate realm', async () => {
    const { auth, gate } = await contextWith([], 'status-pages');
    expect(thrownBy(() => gate.authorize(auth, requires(ADMIN))).headers['WWW-Authenticate']).toBe(
      'Bearer realm="status-pages", error="insufficient_scope", error_description="Requires: admin", scope="admin"',
    );
  });

  /** Auth-params of a challenge, checked against RFC 9110 quoted-string syntax without escapes (as RFC 6750 asks). */
  function challengeParams(challenge: string): Record<string, string> {
    expect(challenge).toMatch(
      /^Bearer [a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"(, [a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*")*$/,
    );
    return Object.fromEntries([...challenge.matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  }

  it.each([
    ['a quote', 'say "hi"'],
    ['a backslash', 'path\\to'],
    ['a quote and comma that try to add a param', 'x", error="invalid_token'],
    ['unicode', 'réglages (écriture)'],
    ['an emoji', 'deploy \u{1F680}'],
  ])('encodes a permission name with %s so the header stays well-formed', async (_, name) => {
    const { auth, gate } = await contextWith([]);
    const challenge = thrownBy(() => gate.authorize(auth, requires(name))).headers['WWW-Authenticate'] ?? '';
    const params = challengeParams(challenge);
    expect(Object.keys(params)).toEqual(['realm', 'error', 'error_description', 'scope']);
    expect(params.error).toBe('insufficient_scope');
    // scope round-trips to the exact name; scope tokens never hold spaces, quotes or backslashes.
    expect(decodeURIComponent(params.scope ?? '')).toBe(name);
    expect(params.scope).toMatch(/^[\x21\x23-\x5b\x5d-\x7e]+$/);
  });

  it('formatScope is the exported encoding of the scope parameter', () => {
    expect(formatScope([READ, 'a"b\\c', 'é'])).toBe('uptime_checks%20(read) a%22b%5Cc %C3%A9');
    // A guard refuses control characters; a provider's permissions, which formatScope may be given, can hold them.
    expect(formatScope(['a\r\nSet-Cookie: x=1'])).toBe('a%0D%0ASet-Cookie:%20x=1');
  });

  it('formatScope keeps what a scope token allows, and what it encodes decodes back', () => {
    const names = ['orders:read', 'api://x/.default', 'urn:example:User.Read', 'a+b=c&d?e#f[g];$,@!*~', '50%'];
    expect(formatScope(names)).toBe('orders:read api://x/.default urn:example:User.Read a+b=c&d?e#f[g];$,@!*~ 50%25');
    const hostile = ['tab\there', 'line\nbreak', 'nul\u0000', 'del\u007f', '😀', 'lone\ud800'];
    const scope = formatScope(hostile);
    expect(scope).toMatch(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/);
    expect(scope.split(' ').map(decodeURIComponent)).toEqual([...hostile.slice(0, -1), 'lone\ufffd']);
  });
});
