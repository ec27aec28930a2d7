/**
 * introspection({ issuer }) without an endpoint: the endpoint found through
 * the issuer's metadata (RFC 8414: the locations, their order, path
 * insertion, the issuer check), once, and again after a failed discovery.
 * Also how long the gate keeps an introspected token: never past its `exp`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createGate, type IntrospectionClientSecretOptions, introspection } from '../src/index.js';
import { type MockIntrospectionOptions, mockIntrospection } from '../src/testing/index.js';
import { type AnswerServer, reply, startAnswerServer } from './support/answer-server.js';
import { closeAfterEach } from './support/close-after-each.js';
import {
  bearer,
  CLIENT_ID,
  CLIENT_SECRET,
  expectInvalidToken,
  expectMisconfigured,
  expectUnavailable,
  introspectionSetup,
} from './support/introspection-setup.js';

const closeLater = closeAfterEach();
const setup = introspectionSetup(closeLater);
const ACTIVE = { active: true, sub: 'user-42', scope: 'orders:read' };

/** A mock, and a gate whose provider knows only the mock's issuer. */
async function discovering(
  mockOptions: Partial<MockIntrospectionOptions> = {},
  providerOptions: Partial<IntrospectionClientSecretOptions> = {},
) {
  const mock = closeLater(
    await mockIntrospection({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      tokens: { 'tok-1': ACTIVE },
      ...mockOptions,
    }),
  );
  const provider = introspection({
    issuer: mock.issuer,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    ...providerOptions,
  });
  const gate = closeLater(createGate({ providers: [provider], retry: false, timeout: 1000 }));
  return { mock, gate };
}

/** A gate whose issuer is `path` on `server`. */
function gateOn(server: AnswerServer, path: string) {
  const provider = introspection({ issuer: server.url + path, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  return closeLater(createGate({ providers: [provider], retry: false }));
}

describe('introspection: discovery', () => {
  it('finds the endpoint in oauth-authorization-server, once', async () => {
    const { mock, gate } = await discovering({ tokens: { 'tok-1': ACTIVE, 'tok-2': { active: true, sub: 'ada' } } });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect((await gate.authenticate(bearer('tok-2'))).subject).toBe('ada');
    expect(mock.calls).toEqual({ introspect: 2, oauthMetadata: 1, openidMetadata: 0, total: 3 });
  });

  it('verifications that start together share one discovery', async () => {
    const tokens = { a: ACTIVE, b: ACTIVE, c: ACTIVE };
    const { mock, gate } = await discovering({ tokens });
    const subjects = await Promise.all(
      ['a', 'b', 'c'].map(async (token) => (await gate.authenticate(bearer(token))).subject),
    );
    expect(subjects).toEqual(['user-42', 'user-42', 'user-42']);
    expect(mock.calls).toMatchObject({ introspect: 3, oauthMetadata: 1 });
  });

  /** An issuer on an answer server whose metadata answers `metadataDelay` ms late; its endpoint answers at once. */
  async function slowIssuer(metadataDelay: number) {
    const server = closeLater(await startAnswerServer());
    const timers = new Set<NodeJS.Timeout>();
    closeLater({ close: async () => timers.forEach(clearTimeout) });
    const metadataRequests = { abandoned: 0 };
    server.answer = (req, res) => {
      if (req.url === '/introspect') return reply(res, 200, JSON.stringify(ACTIVE));
      if (req.url !== '/.well-known/oauth-authorization-server') return reply(res, 404, '{}');
      res.once('close', () => {
        if (!res.writableEnded) metadataRequests.abandoned++;
      });
      const metadata = JSON.stringify({ issuer: server.url, introspection_endpoint: `${server.url}/introspect` });
      timers.add(setTimeout(() => reply(res, 200, metadata), metadataDelay));
    };
    const provider = introspection({ issuer: server.url, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    const gate = closeLater(createGate({ providers: [provider], retry: false, breaker: false, timeout: 1000 }));
    return { server, gate, metadataRequests };
  }

  const outcomeOf = (promise: Promise<{ subject: string }>) =>
    promise.then(
      (auth) => auth.subject,
      (error: { code?: string }) => error.code,
    );

  it("a shared discovery runs until the last waiter's deadline, not the first's", async () => {
    const { server, gate } = await slowIssuer(1250);
    const first = outcomeOf(gate.authenticate(bearer('a')));
    await sleep(500);
    // Its deadline passes 1,500 ms in, after the metadata's answer at 1,250 ms.
    const second = outcomeOf(gate.authenticate(bearer('b')));
    expect(await first).toBe('provider_unavailable');
    expect(await second).toBe('user-42');
    expect(server.paths.filter((path) => path.startsWith('/.well-known'))).toHaveLength(1);
  });

  it('a discovery every waiter gave up on is cancelled, and the next verification starts another', async () => {
    const { server, gate, metadataRequests } = await slowIssuer(3000);
    expect(await outcomeOf(gate.authenticate(bearer('a')))).toBe('provider_unavailable');
    await sleep(100);
    expect(metadataRequests.abandoned).toBe(1);
    const second = outcomeOf(gate.authenticate(bearer('b')));
    expect(await second).toBe('provider_unavailable');
    expect(server.paths.filter((path) => path.startsWith('/.well-known'))).toHaveLength(2);
  });

  it('once the first waiter has given up, a new verification starts another discovery (a hung server is asked again)', async () => {
    const { server, gate, metadataRequests } = await slowIssuer(60_000);
    const discoveries = () => server.paths.filter((path) => path.startsWith('/.well-known')).length;
    const first = outcomeOf(gate.authenticate(bearer('a')));
    await sleep(500);
    const second = outcomeOf(gate.authenticate(bearer('b')));
    expect(await first).toBe('provider_unavailable');
    expect(discoveries()).toBe(1);
    // The first discovery still serves the second verification, until its deadline; a third starts its own.
    const third = outcomeOf(gate.authenticate(bearer('c')));
    await sleep(100);
    expect(discoveries()).toBe(2);
    expect(await second).toBe('provider_unavailable');
    await sleep(100);
    expect(metadataRequests.abandoned).toBe(1);
    expect(await third).toBe('provider_unavailable');
  });

  it('a discovery that finds the endpoint serves the verifications waiting on a later one, which is cancelled', async () => {
    const { server, gate, metadataRequests } = await slowIssuer(1600);
    const discoveries = () => server.paths.filter((path) => path.startsWith('/.well-known')).length;
    const first = outcomeOf(gate.authenticate(bearer('a')));
    await sleep(800);
    // Joins the first discovery, and waits for it past its answer (1,600 ms in) until 1,800 ms.
    const second = outcomeOf(gate.authenticate(bearer('b')));
    await sleep(400);
    // The first verification gave up at 1,000 ms: this one starts a discovery of its own, due at 2,800 ms.
    const third = outcomeOf(gate.authenticate(bearer('c')));
    expect(await first).toBe('provider_unavailable');
    expect(await second).toBe('user-42');
    expect(await third).toBe('user-42');
    expect(discoveries()).toBe(2);
    await sleep(100);
    expect(metadataRequests.abandoned).toBe(1);
  });

  it('a verification whose signal is already aborted starts no discovery', async () => {
    const { server } = await slowIssuer(10);
    const provider = introspection({ issuer: server.url, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    closeLater({ close: async () => provider.close?.() });
    await expect(
      provider.verify({ source: 'header:authorization', secret: 'a' }, AbortSignal.abort()),
    ).rejects.toMatchObject({ kind: 'timeout' });
    await sleep(50);
    expect(server.calls).toBe(0);
  });

  it('falls back to openid-configuration when there is no oauth-authorization-server', async () => {
    const { mock, gate } = await discovering({ wellKnown: ['openid-configuration'] });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(mock.calls).toEqual({ introspect: 1, oauthMetadata: 1, openidMetadata: 1, total: 3 });
  });

  it('inserts the well-known part before the path of an issuer with one (RFC 8414 §3.1)', async () => {
    const { mock, gate } = await discovering({
      issuerPath: '/realms/orders',
      wellKnown: ['oauth-authorization-server'],
    });
    expect(mock.issuer).toBe(`${mock.url}/realms/orders`);
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(mock.calls).toEqual({ introspect: 1, oauthMetadata: 1, openidMetadata: 0, total: 2 });
  });

  it.each(['/', '/realms/orders/'])(
    'finds the endpoint of an issuer ending in / (issuerPath %s), which its metadata names with the /',
    async (issuerPath) => {
      const { mock, gate } = await discovering({ issuerPath, wellKnown: ['oauth-authorization-server'] });
      expect(mock.issuer).toBe(`${mock.url}${issuerPath}`);
      expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
      expect(mock.calls).toEqual({ introspect: 1, oauthMetadata: 1, openidMetadata: 0, total: 2 });
    },
  );

  it.each([
    [
      'a path issuer (its terminating / dropped)',
      '/realms/orders/',
      [
        '/.well-known/oauth-authorization-server/realms/orders',
        '/.well-known/openid-configuration/realms/orders',
        '/realms/orders/.well-known/openid-configuration',
      ],
    ],
    ['a root issuer', '', ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']],
  ])(
    'tries the locations in order for %s, past 404s in JSON or HTML; none found is a 503',
    async (_, path, locations) => {
      const server = closeLater(await startAnswerServer());
      server.answer = (req, res) =>
        req.url?.includes('oauth') ? reply(res, 404, '<h1>Not Found</h1>', 'text/html') : reply(res, 404, '{}');
      await expectUnavailable(gateOn(server, path).authenticate(bearer('tok-1')));
      expect(server.paths).toEqual(locations);
    },
  );

  it('reads openid-configuration appended to a path issuer, and an endpoint on another origin', async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, tokens: { 'tok-1': ACTIVE } }),
    );
    const server = closeLater(await startAnswerServer());
    server.answer = (req, res) => {
      if (req.url !== '/tenant/.well-known/openid-configuration') return reply(res, 404, '{}');
      reply(res, 200, JSON.stringify({ issuer: `${server.url}/tenant`, introspection_endpoint: mock.endpoint }));
    };
    const gate = gateOn(server, '/tenant');
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(server.paths).toHaveLength(3);
    expect(mock.calls).toMatchObject({ introspect: 1, oauthMetadata: 0, openidMetadata: 0 });
  });

  it('refuses metadata naming another issuer (RFC 8414 §3.3): 503 naming it, the endpoint never asked', async () => {
    const { mock, gate } = await discovering({ metadata: { issuer: 'http://127.0.0.1:9/someone-else' } });
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect((error.cause as Error).message).toBe(
      `introspection metadata at /.well-known/oauth-authorization-server names another issuer, "http://127.0.0.1:9/someone-else", where ${mock.issuer} was expected (RFC 8414 §3.3: identical, a terminating / included): check issuer`,
    );
    expect(mock.calls).toMatchObject({ introspect: 0, oauthMetadata: 1, openidMetadata: 1 });
  });

  it('an issuer configured without the terminating / its metadata names is refused, the cause showing both', async () => {
    const { mock, gate } = await discovering({ issuerPath: '/' }, {});
    const configured = mock.issuer.slice(0, -1);
    const provider = introspection({ issuer: configured, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    const other = closeLater(createGate({ providers: [provider], retry: false }));
    const error = await expectUnavailable(other.authenticate(bearer('tok-1')));
    expect((error.cause as Error).message).toContain(
      `another issuer, "${mock.issuer}", where ${configured} was expected`,
    );
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
  });

  it('shows a long or odd issuer from the metadata quoted, cut at 200 characters, never as a line of its own', async () => {
    const named = `https://idp.example/\nforged log line/${'a'.repeat(300)}`;
    const { gate } = await discovering({ metadata: { issuer: named } });
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    const message = (error.cause as Error).message;
    expect(message).toContain(`another issuer, ${JSON.stringify(`${named.slice(0, 200)}…`)}, where`);
    expect(message).toContain('https://idp.example/\\nforged log line/aaa');
    expect(message).not.toContain('\n');
    expect(message).not.toContain('a'.repeat(200));
  });

  it('shows an issuer holding line separators, C1 controls or bidi overrides only as \\u escapes: printable ASCII', async () => {
    // U+2028 and U+0085 end a line for some log viewers, U+009B starts a terminal's escape, U+202E reverses the text.
    const named = 'https://idp.example/\u2028forged\u0085line\u009b31m\u202eevil';
    const { gate } = await discovering({ metadata: { issuer: named } });
    const message = ((await expectUnavailable(gate.authenticate(bearer('tok-1')))).cause as Error).message;
    expect(message).toContain(
      'another issuer, "https://idp.example/\\u2028forged\\u0085line\\u009b31m\\u202eevil", where',
    );
    expect(message).toMatch(/^[\x20-\x7e§…]*$/);
  });

  it('a mistyped issuer (no metadata anywhere): a 503 whose cause lists the locations asked and what each answered', async () => {
    const mock = closeLater(
      await mockIntrospection({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, tokens: { 'tok-1': ACTIVE } }),
    );
    const issuer = `${mock.issuer}/realms/acme`;
    const provider = introspection({ issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    const gate = closeLater(createGate({ providers: [provider], retry: false }));
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect((error.cause as Error).message).toBe(
      `introspection found no metadata naming an introspection_endpoint for issuer ${issuer}, at /.well-known/oauth-authorization-server/realms/acme (404), /.well-known/openid-configuration/realms/acme (404), /realms/acme/.well-known/openid-configuration (404): check issuer`,
    );
  });

  it('the cause of a failed discovery tells a page that is not JSON, JSON that is no metadata and metadata without the endpoint apart', async () => {
    const server = closeLater(await startAnswerServer());
    server.answer = (req, res) => {
      if (req.url === '/.well-known/oauth-authorization-server') {
        // A single-page app's catch-all route: its index page for any path.
        res.writeHead(200, { 'content-type': 'text/html' });
        return res.end('<!doctype html><title>app</title>');
      }
      return reply(res, 200, JSON.stringify({ status: 'ok' }));
    };
    const error = await expectUnavailable(gateOn(server, '').authenticate(bearer('tok-1')));
    expect((error.cause as Error).message).toBe(
      `introspection found no metadata naming an introspection_endpoint for issuer ${server.url}, at /.well-known/oauth-authorization-server (200, not JSON), /.well-known/openid-configuration (200, not a metadata document): check issuer`,
    );
    const { gate } = await discovering({ metadata: { introspection_endpoint: undefined } });
    expect(((await expectUnavailable(gate.authenticate(bearer('tok-1')))).cause as Error).message).toContain(
      '/.well-known/oauth-authorization-server (no introspection_endpoint), /.well-known/openid-configuration (no introspection_endpoint)',
    );
  });

  it('passes over a document naming another issuer to a later one naming this issuer', async () => {
    const server = closeLater(await startAnswerServer());
    const issuer = `${server.url}/realms/acme`;
    server.answer = (req, res) => {
      if (req.url === '/introspect') return reply(res, 200, JSON.stringify(ACTIVE));
      // A host whose root document answers for any path under it, as some proxies route.
      if (req.url?.startsWith('/.well-known/')) {
        return reply(res, 200, JSON.stringify({ issuer: server.url, introspection_endpoint: `${server.url}/other` }));
      }
      if (req.url === '/realms/acme/.well-known/openid-configuration') {
        return reply(res, 200, JSON.stringify({ issuer, introspection_endpoint: `${server.url}/introspect` }));
      }
      return reply(res, 404, '{}');
    };
    const gate = gateOn(server, '/realms/acme');
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(server.paths).toEqual([
      '/.well-known/oauth-authorization-server/realms/acme',
      '/.well-known/openid-configuration/realms/acme',
      '/realms/acme/.well-known/openid-configuration',
      '/introspect',
    ]);
  });

  it('reads a metadata document larger than a maxBodyBytes sized for introspection answers', async () => {
    // Keycloak's openid-configuration is several KiB; an introspection answer a few hundred bytes.
    const claims = Array.from({ length: 300 }, (_, i) => `claim_${i}`);
    const { mock, gate } = await discovering({ metadata: { claims_supported: claims } }, { maxBodyBytes: 2048 });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
    expect(mock.calls).toMatchObject({ introspect: 1, oauthMetadata: 1 });
  });

  it.each([
    ['basic', 'post'],
    ['post', 'basic'],
  ] as const)(
    'a %s client whose metadata lists only client_secret_%s: a 500 naming clientAuth, the secret never sent',
    async (mine, theirs) => {
      const { mock, gate } = await discovering({ clientAuth: theirs }, { clientAuth: mine });
      const error = await expectMisconfigured(gate.authenticate(bearer('tok-1')));
      expect((error.cause as Error).message).toBe(
        `introspection metadata at /.well-known/oauth-authorization-server lists no client_secret_${mine} for its introspection endpoint (it lists client_secret_${theirs}): set clientAuth to one it lists`,
      );
      expect(mock.calls).toMatchObject({ introspect: 0, oauthMetadata: 1 });
    },
  );

  it('a list of methods that is not a list of strings says nothing: the configured method is used', async () => {
    const { gate } = await discovering({ metadata: { introspection_endpoint_auth_methods_supported: 'basic' } });
    expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
  });

  it.each([
    'ftp://127.0.0.1/introspect',
    'javascript:alert(1)',
    '/introspect',
    'http://client:secret@127.0.0.1/introspect',
    // Plain http beyond this host (RFC 7662 §4): a name under .invalid (RFC 6761), which resolves nowhere.
    'http://idp.invalid/introspect',
  ])('refuses a discovered endpoint %s: 503, and the failure says why', async (endpoint) => {
    const { mock, gate } = await discovering({ metadata: { introspection_endpoint: endpoint } });
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
    const provider = introspection({ issuer: mock.issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    const credential = { source: 'header:authorization', secret: 'tok-1' } as const;
    await expect(provider.verify(credential, AbortSignal.timeout(1000))).rejects.toMatchObject({
      name: 'ProviderFailure',
      kind: 'invalid_answer',
      message: expect.stringMatching(
        /names an introspection_endpoint it may not use \(https without credentials or fragment; http only for an http issuer, to a loopback host unless allowInsecureRequests\)$/,
      ),
    });
    await provider.close?.();
    expect(mock.calls.introspect).toBe(0);
  });

  it('metadata without introspection_endpoint in either document is a 503', async () => {
    const { mock, gate } = await discovering({ metadata: { introspection_endpoint: undefined } });
    await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect(mock.calls).toMatchObject({ introspect: 0, oauthMetadata: 1, openidMetadata: 1 });
  });

  it.each([
    ['answers 503', { kind: 'status', status: 503, endpoints: ['oauthMetadata'] }],
    ['does not answer in time', { kind: 'hang', endpoints: ['oauthMetadata'] }],
  ] as const)(
    'a discovery whose server %s is a 503, not remembered: a later verification discovers',
    async (_, fault) => {
      const { mock, gate } = await discovering();
      mock.fault = fault;
      await expectUnavailable(gate.authenticate(bearer('tok-1')));
      expect(mock.calls).toMatchObject({ introspect: 0, oauthMetadata: 1, openidMetadata: 0 });
      mock.fault = undefined;
      expect((await gate.authenticate(bearer('tok-1'))).subject).toBe('user-42');
      expect(mock.calls).toMatchObject({ introspect: 1, oauthMetadata: 2 });
    },
  );

  it('a 429 for the metadata is a 503 with its Retry-After, not a reason to try the next document', async () => {
    const { mock, gate } = await discovering();
    mock.fault = { kind: 'status', status: 429, retryAfter: 2, endpoints: ['oauthMetadata'] };
    const error = await expectUnavailable(gate.authenticate(bearer('tok-1')));
    expect(error.headers['Retry-After']).toBe('2');
    expect(mock.calls).toMatchObject({ introspect: 0, oauthMetadata: 1, openidMetadata: 0 });
  });

  it('in discovery, an answer without iss passes and one with another iss does not', async () => {
    const { gate } = await discovering({
      tokens: { unsaid: ACTIVE, theirs: { ...ACTIVE, iss: 'http://127.0.0.1:9/realms/billing' } },
    });
    expect((await gate.authenticate(bearer('unsaid'))).subject).toBe('user-42');
    await expectInvalidToken(gate.authenticate(bearer('theirs')), 'The access token is from another issuer');
  });
});

describe('introspection: the cache', () => {
  it('answers from the cache until exp, then asks again (and the expired token is refused)', async () => {
    const exp = (Date.now() + 1500) / 1000;
    const { mock, gate } = await setup({ tokens: { 'tok-1': { ...ACTIVE, exp } } }, {}, { cache: { ttl: 60_000 } });
    expect((await gate.authenticate(bearer('tok-1'))).permissions).toEqual(['orders:read']);
    mock.setToken('tok-1', { ...ACTIVE, scope: 'orders:read orders:write', exp });
    // Within exp: the cached answer, whatever the server would say now.
    expect((await gate.authenticate(bearer('tok-1'))).permissions).toEqual(['orders:read']);
    expect(mock.calls.introspect).toBe(1);

    await sleep(exp * 1000 - Date.now() + 50);
    await expectInvalidToken(gate.authenticate(bearer('tok-1')), 'The access token has expired');
    expect(mock.calls.introspect).toBe(2);
  });
});
