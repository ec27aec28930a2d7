/**
 * onlineOrNot() against the OnlineOrNot mock over real HTTP: which tokens
 * pass, what the principal holds, and that both endpoints are asked at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createGate, type GateEvent, onlineOrNot } from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { rejectionOf } from './support/catch-auth-error.js';
import { closeAfterEach } from './support/close-after-each.js';
import { startRecordingProxy } from './support/recording-proxy.js';

const closeLater = closeAfterEach();
const READ = 'uptime_checks (read)';
const WRITE = 'uptime_checks (write)';
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
/** Counts of active handles by type (sockets, servers, timers…). */
function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1);
  return counts;
}

/** The handle types there are more of than in `before`, once sockets had (a bounded) time to finish closing. */
async function resourcesBackTo(before: Map<string, number>): Promise<string[]> {
  const grown = () =>
    [...activeResources()]
      .filter(([type, count]) => count > (before.get(type) ?? 0))
      .map(([type, count]) => `${type}: ${before.get(type) ?? 0} -> ${count}`);
  for (let waited = 0; grown().length > 0 && waited < 2000; waited += 20) await sleep(20);
  return grown();
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timeout = new AbortController();
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    sleep(ms, false, { signal: timeout.signal }).catch(() => false),
  ]);
  timeout.abort();
  return settled;
}

const INVALID_TOKEN_CHALLENGE =
  'Bearer realm="api", error="invalid_token", error_description="The access token is invalid"';

async function setup() {
  const mock = closeLater(
    await mockOnlineOrNot({
      tokens: {
        'active-token': { id: 'tok_active', permissions: [READ, WRITE] },
        'bare-token': { id: 'tok_bare' },
        'disabled-token': { id: 'tok_disabled', permissions: [READ], status: 'disabled' },
      },
    }),
  );
  const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false }));
  return { mock, gate };
}

describe('onlineOrNot', () => {
  it('verify(credential, signal) called directly honours its signal: an abort ends both requests at once', async () => {
    const { mock } = await setup();
    const provider = onlineOrNot({ baseUrl: mock.url });
    closeLater({ close: () => provider.close?.() ?? Promise.resolve() });
    const credential = { source: 'header:authorization', secret: 'active-token' } as const;
    expect(await provider.verify(credential, new AbortController().signal)).toMatchObject({ ok: true });

    mock.fault = { kind: 'hang' };
    const controller = new AbortController();
    const verifying = provider.verify(credential, controller.signal);
    setTimeout(() => controller.abort(), 50);
    await expect(verifying).rejects.toMatchObject({ name: 'ProviderFailure', kind: 'timeout' });
    // An already aborted signal sends nothing.
    const before = mock.calls.total;
    await expect(provider.verify(credential, AbortSignal.abort())).rejects.toMatchObject({ kind: 'timeout' });
    expect(mock.calls.total).toBe(before);
  });

  it('accepts an active token: subject is the token id, with its permissions and details', async () => {
    const { mock, gate } = await setup();
    const auth = await gate.authenticate(bearer('active-token'));
    expect(auth.provider).toBe('onlineornot');
    expect(auth.subject).toBe('tok_active');
    expect(auth.permissions).toEqual([READ, WRITE]);
    expect(auth.can(READ)).toBe(true);
    expect(auth.can('uptime_checks (READ)')).toBe(false);
    expect(auth.can('billing (read)')).toBe(false);
    expect(auth.expiresAt).toBeUndefined();
    expect(auth.details).toEqual({ id: 'tok_active', status: 'active' });
    expect(mock.calls).toMatchObject({ verify: 1, permissions: 1 });
  });

  it('accepts an active token that has no permissions', async () => {
    const { gate } = await setup();
    const auth = await gate.authenticate(bearer('bare-token'));
    expect(auth.subject).toBe('tok_bare');
    expect(auth.permissions).toEqual([]);
  });

  it('answers 401 invalid_token to an unknown token', async () => {
    const { mock, gate } = await setup();
    const error = await rejectionOf(gate.authenticate(bearer('unknown-token')));
    expect(error.status).toBe(401);
    expect(error.code).toBe('invalid_token');
    expect(error.headers).toEqual({ 'WWW-Authenticate': INVALID_TOKEN_CHALLENGE });
    expect(mock.calls.verify).toBe(1);
  });

  it.each(['disabled', 'revoked', 'expired', 'ACTIVE', ''])(
    'answers 401 invalid_token to status %j',
    async (status) => {
      const { mock, gate } = await setup();
      mock.setToken('odd-token', { id: 'tok_odd', permissions: [READ], status });
      const error = await rejectionOf(gate.authenticate(bearer('odd-token')));
      expect(error.status).toBe(401);
      expect(error.code).toBe('invalid_token');
      expect(error.headers['WWW-Authenticate']).toBe(
        'Bearer realm="api", error="invalid_token", error_description="The access token is not active"',
      );
    },
  );

  it('answers 401 to the seeded disabled token', async () => {
    const { gate } = await setup();
    expect((await rejectionOf(gate.authenticate(bearer('disabled-token')))).status).toBe(401);
  });

  it('sends the same bearer token to both endpoints', async () => {
    const { mock } = await setup();
    const proxy = closeLater(await startRecordingProxy(mock.url));
    const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: proxy.url })] }));
    await gate.authenticate(bearer('active-token'));
    const seen = proxy.requests.map((r) => `${r.method} ${r.url} ${r.headers.authorization}`).sort();
    expect(seen).toEqual([
      'GET /v1/tokens/permissions Bearer active-token',
      'GET /v1/tokens/verify Bearer active-token',
    ]);
  });

  /**
   * Starts `count` new tokens at once against a mock that holds every answer for 1.5 s, and returns the
   * calls it had received once `expected` verifications were under way, or after 1 s (answers not yet sent).
   */
  async function firstWave(connections: number | undefined, count: number, expected: number) {
    const tokens = Object.fromEntries(Array.from({ length: count }, (_, i) => [`token-${i}`, { id: `tok_${i}` }]));
    const mock = closeLater(await mockOnlineOrNot({ tokens }));
    mock.latency = 1500;
    const provider = onlineOrNot({ baseUrl: mock.url, ...(connections === undefined ? {} : { connections }) });
    const gate = closeLater(createGate({ providers: [provider] }));
    const answers = Object.keys(tokens).map((token) => gate.authenticate(bearer(token)));
    const started = performance.now();
    while (mock.calls.permissions < expected && performance.now() - started < 1000) await sleep(10);
    await sleep(50);
    const wave = { ...mock.calls };
    const subjects = (await Promise.all(answers)).map((auth) => auth.subject);
    return { provider, mock, wave, subjects, ids: Object.values(tokens).map((token) => token.id) };
  }

  it('serves 16 verifications at once by default, on 32 sockets (two calls each); the rest wait for a slot', async () => {
    const { provider, mock, wave, subjects, ids } = await firstWave(undefined, 20, 16);
    expect(provider.concurrency).toBe(16);
    expect(wave).toMatchObject({ verify: 16, permissions: 16 });
    expect(subjects.sort()).toEqual(ids.sort());
    expect(mock.calls).toMatchObject({ verify: 20, permissions: 20 });
    expect(mock.connections).toBe(32);
  });

  it('serves half as many verifications at once as the connections it is given', async () => {
    const { provider, mock, wave, subjects, ids } = await firstWave(5, 4, 2);
    expect(provider.concurrency).toBe(2);
    expect(wave).toMatchObject({ verify: 2, permissions: 2 });
    expect(subjects.sort()).toEqual(ids.sort());
    expect(mock.connections).toBeLessThanOrEqual(5);
  });

  it('keeps its keep-alive sockets when verify alone decides: 40 rejected tokens in a row reuse them', async () => {
    const { mock, gate } = await setup();
    for (let i = 0; i < 40; i++) {
      expect((await rejectionOf(gate.authenticate(bearer(`unknown-${i}`)))).status).toBe(401);
    }
    expect(mock.calls).toMatchObject({ verify: 40, permissions: 40 });
    // Two requests at a time need two sockets, and a few more when a verification starts while the
    // last one's permissions answer is still on its way; cancelling that call would open one per token.
    expect(mock.connections).toBeLessThanOrEqual(8);
  });

  it('a rejection by verify is the answer at once while permissions hangs; the hanging call ends at the deadline', async () => {
    const TIMEOUT = 1500;
    const before = activeResources();
    const mock = await mockOnlineOrNot({ tokens: { 'disabled-token': { id: 'tok_disabled', status: 'disabled' } } });
    const events: GateEvent[] = [];
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: mock.url })],
      timeout: TIMEOUT,
      retry: false,
      // One failure would open it, and the second token would get a 503.
      breaker: { threshold: 1, cooldown: 60_000 },
      onEvent: (event) => events.push(event),
    });
    try {
      mock.fault = { kind: 'hang', endpoints: ['permissions'] };
      for (const [token, description] of [
        ['unknown-token', 'The access token is invalid'],
        ['disabled-token', 'The access token is not active'],
      ]) {
        const started = performance.now();
        const error = await rejectionOf(gate.authenticate(bearer(token as string)));
        expect(error.status).toBe(401);
        expect(error.headers['WWW-Authenticate']).toContain(description);
        expect(performance.now() - started).toBeLessThan(TIMEOUT / 2);
      }
      expect(mock.calls.verify).toBe(2);
      expect(events.filter((event) => event.type === 'provider_error' || event.type === 'breaker')).toEqual([]);
      expect(gate.stats()).toMatchObject({ errors: 0, breakers: { onlineornot: 'closed' } });
    } finally {
      // The pool's close waits for requests in flight: it ends only once the deadline has cancelled both.
      expect(await settlesWithin(gate.close(), TIMEOUT * 3)).toBe(true);
      await mock.close();
    }
    expect(await resourcesBackTo(before)).toEqual([]);
  });

  describe('calls a rejection left running hold connections: the gate counts them', () => {
    /** A gate whose provider has `connections`, `permissions` slow but healthy (1 s, inside the 1.5 s deadline). */
    async function slowPermissions(connections: number) {
      const mock = closeLater(await mockOnlineOrNot({ tokens: { 'active-token': { id: 'tok_active' } } }));
      mock.fault = { kind: 'delay', ms: 1000, endpoints: ['permissions'] };
      const events: GateEvent[] = [];
      const gate = closeLater(
        createGate({
          providers: [onlineOrNot({ baseUrl: mock.url, connections })],
          timeout: 1500,
          retry: false,
          breaker: { threshold: 1 },
          onEvent: (event) => events.push(event),
        }),
      );
      const providerFaults = () =>
        events.filter((event) => event.type === 'provider_error' || event.type === 'breaker');
      return { mock, gate, providerFaults };
    }

    it('with both connections held by them, a new token waits for a slot (our overload), never for a connection under its deadline (a provider timeout)', async () => {
      const { gate, providerFaults } = await slowPermissions(2);
      const rejected = ['unknown-a', 'unknown-b'].map((token) => rejectionOf(gate.authenticate(bearer(token))));
      await sleep(50);
      const waited = await rejectionOf(gate.authenticate(bearer('active-token')));
      expect(waited).toMatchObject({ status: 503, code: 'overloaded' });
      for (const error of await Promise.all(rejected)) expect(error.status).toBe(401);
      expect(providerFaults()).toEqual([]);
      expect(gate.stats().breakers).toEqual({ onlineornot: 'closed' });
      // Once they are done, the token is verified.
      await sleep(1000);
      expect((await gate.authenticate(bearer('active-token'))).subject).toBe('tok_active');
    });

    it('two of them share one slot: with four connections, a new token is verified beside them', async () => {
      const { mock, gate, providerFaults } = await slowPermissions(4);
      for (const token of ['unknown-a', 'unknown-b']) {
        expect((await rejectionOf(gate.authenticate(bearer(token)))).status).toBe(401);
      }
      const started = performance.now();
      expect((await gate.authenticate(bearer('active-token'))).subject).toBe('tok_active');
      expect(performance.now() - started).toBeLessThan(1400);
      expect(mock.calls.verify).toBe(3);
      expect(providerFaults()).toEqual([]);
    });
  });

  it('a rejection by verify while permissions is slow: the next verification reuses both sockets', async () => {
    const DELAY = 300;
    const { mock, gate } = await setup();
    mock.fault = { kind: 'delay', ms: DELAY, endpoints: ['permissions'] };
    for (let i = 0; i < 4; i++) {
      const started = performance.now();
      expect((await rejectionOf(gate.authenticate(bearer(`unknown-${i}`)))).status).toBe(401);
      expect(performance.now() - started).toBeLessThan(DELAY);
      await sleep(DELAY * 2); // the permissions call answers meanwhile, and its socket goes back to the pool
    }
    expect(mock.calls).toMatchObject({ verify: 4, permissions: 4 });
    expect(mock.connections).toBe(2);
  });

  it('keeps an idle socket for keepAliveTimeout at most, though the server hints at 5 s', async () => {
    const { mock } = await setup();
    const opened: Record<string, number> = {};
    for (const [label, keepAliveTimeout] of [
      ['200 ms', 200],
      ['default', undefined],
    ] as const) {
      const gate = closeLater(
        createGate({ providers: [onlineOrNot({ baseUrl: mock.url, keepAliveTimeout })], retry: false }),
      );
      const before = mock.connections;
      await gate.authenticate(bearer('active-token'));
      await sleep(700);
      await gate.authenticate(bearer('bare-token'));
      opened[label] = mock.connections - before;
    }
    // Two calls per verification: two sockets, reused by the second verification, or opened again.
    expect(opened).toEqual({ '200 ms': 4, default: 2 });
  });

  it('calls both endpoints concurrently: permissions is asked while verify has not answered', async () => {
    const { mock, gate } = await setup();
    mock.fault = { kind: 'hang', endpoints: ['verify'] };
    // Left to the gate's close() after the test, which ends it with a 503.
    const answer = gate.authenticate(bearer('active-token'));
    answer.catch(() => {});
    // In sequence, permissions would wait for verify's answer, which never comes.
    await expect.poll(() => mock.calls.permissions).toBe(1);
    expect(mock.calls.verify).toBe(1);
  });

  it('answers 401 when the permissions endpoint alone answers 401', async () => {
    const { mock } = await setup();
    const proxy = closeLater(await startRecordingProxy(mock.url));
    proxy.intercept = (req) =>
      req.url.startsWith('/v1/tokens/permissions')
        ? {
            status: 401,
            body: {
              result: null,
              success: false,
              errors: [{ code: 10000, message: 'Authentication error' }],
              messages: [],
            },
          }
        : undefined;
    const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: proxy.url })] }));
    const error = await rejectionOf(gate.authenticate(bearer('active-token')));
    expect(error.status).toBe(401);
    expect(error.code).toBe('invalid_token');
    await expect.poll(() => mock.calls.verify).toBe(1);
  });

  it.each([
    ['is down (503)', { kind: 'status', status: 503, endpoints: ['verify'] }],
    ['hangs', { kind: 'hang', endpoints: ['verify'] }],
  ] as const)(
    'a rejection by permissions decides while verify %s: 401 at once, never the stale copy',
    async (_, fault) => {
      const TIMEOUT = 1500;
      const { mock } = await setup();
      const gate = closeLater(
        createGate({
          providers: [onlineOrNot({ baseUrl: mock.url })],
          timeout: TIMEOUT,
          retry: false,
          cache: { ttl: 100, staleIfError: 60_000 },
        }),
      );
      expect((await gate.authenticate(bearer('active-token'))).subject).toBeTruthy();
      mock.removeToken('active-token');
      mock.fault = fault;
      await sleep(150);
      const started = performance.now();
      const error = await rejectionOf(gate.authenticate(bearer('active-token')));
      expect(error.status).toBe(401);
      expect(error.code).toBe('invalid_token');
      expect(performance.now() - started).toBeLessThan(TIMEOUT / 2);
      expect(gate.stats()).toMatchObject({ stale: 0, errors: 0 });
    },
  );

  it('answers 503, never a pass or a 401, when the permissions answer is malformed', async () => {
    const { mock } = await setup();
    const proxy = closeLater(await startRecordingProxy(mock.url));
    proxy.intercept = (req) =>
      req.url.startsWith('/v1/tokens/permissions')
        ? { status: 200, body: { result: { permissions: 'all' }, success: true, errors: [], messages: [] } }
        : undefined;
    const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: proxy.url })], retry: false }));
    const error = await rejectionOf(gate.authenticate(bearer('active-token')));
    expect(error.status).toBe(503);
    expect(error.code).toBe('provider_unavailable');
  });

  it.each([
    ['verify answers 502 after permissions failed', 'permissions', 'status'],
    ['permissions answers 502 after verify failed', 'verify', 'invalid_answer'],
  ] as const)('when both calls fail (%s), the failure thrown is verify’s', async (_, fastEndpoint, kind) => {
    const { mock } = await setup();
    const proxy = closeLater(await startRecordingProxy(mock.url));
    // One endpoint answers malformed JSON at once; the other goes to the mock, which answers 502 150 ms later.
    proxy.intercept = (req) =>
      req.url.startsWith(`/v1/tokens/${fastEndpoint}`)
        ? { status: 200, body: { result: 'garbage', success: true, errors: [], messages: [] } }
        : undefined;
    mock.latency = 150;
    mock.fault = { kind: 'status', status: 502 };
    const provider = onlineOrNot({ baseUrl: proxy.url });
    closeLater({ close: () => provider.close?.() ?? Promise.resolve() });
    const credential = { source: 'header:authorization', secret: 'active-token' } as const;
    await expect(provider.verify(credential, new AbortController().signal)).rejects.toMatchObject({
      name: 'ProviderFailure',
      kind,
    });
  });

  it('answers 503 when the provider is down (5xx), not a 401', async () => {
    const { mock, gate } = await setup();
    mock.fault = { kind: 'status', status: 502 };
    const error = await rejectionOf(gate.authenticate(bearer('active-token')));
    expect(error.status).toBe(503);
    expect(error.code).toBe('provider_unavailable');
  });

  it('uses the name option as AuthContext.provider', async () => {
    const { mock } = await setup();
    const gate = closeLater(createGate({ providers: [onlineOrNot({ baseUrl: mock.url, name: 'uptime' })] }));
    expect((await gate.authenticate(bearer('active-token'))).provider).toBe('uptime');
  });
});
