/**
 * The gate's request flow seen from its public methods: the per-connection
 * fast path is taken exactly when a provider declares it reads one header,
 * and whatever it remembers, guards run on every request.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getHeapSnapshot } from 'node:v8';
import express from 'express';
import Koa from 'koa';
import { Client } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import * as expressGate from '../adapters/express.js';
import * as koaGate from '../adapters/koa.js';
import {
  AuthError,
  authenticator,
  type BearerCredential,
  type CredentialRequest,
  createGate,
  extractBearer,
  type Gate,
  type GateEvent,
  type GateOptions,
  type Provider,
  ProviderFailure,
  partoo,
  requires,
} from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';

const READER = 'SECRETgateReader1';
const WRITER = 'SECRETgateWriter1';
const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

/** A stub provider whose `extract` is counted; `source` as given. */
function countedProvider(source: string | undefined): { provider: Provider<BearerCredential>; extracts: () => number } {
  const stub = stubProvider({
    tokens: {
      [READER]: { subject: 'reader', permissions: ['read'] },
      [WRITER]: { subject: 'writer', permissions: ['write'] },
    },
  });
  let extracts = 0;
  const provider: Provider<BearerCredential> = {
    name: stub.name,
    cacheScope: stub.cacheScope,
    ...(source === undefined ? {} : { source }),
    extract: (req, realm) => {
      extracts++;
      return extractBearer(req, realm);
    },
    verify: (credential, signal) => stub.verify(credential, signal),
  };
  return { provider, extracts: () => extracts };
}

function gateOf(provider: Provider): Gate {
  const gate = createGate({ providers: [provider] });
  open.push(() => gate.close());
  return gate;
}

const request = (token: string, connection?: object): CredentialRequest => ({
  headers: { authorization: `Bearer ${token}` },
  connection,
});

describe('the per-connection fast path', () => {
  it('is taken for a provider that declares it reads the Authorization header: extract runs once per connection', async () => {
    const { provider, extracts } = countedProvider('header:authorization');
    const gate = gateOf(provider);
    const connection = {};
    await gate.authenticate(request(READER, connection));
    for (let i = 0; i < 10; i++) {
      const auth = gate.authenticateNow(request(READER, connection));
      expect(auth).not.toBeInstanceOf(Promise);
      expect((auth as { subject: string }).subject).toBe('reader');
    }
    // The first request and the first cache hit (which remembers it) read the header; the rest are recalled.
    expect(extracts()).toBe(2);
    expect(gate.stats().hits).toBe(10);
  });

  it('is not taken without the declaration (a wrapped extractBearer is asked every time), nor without a connection', async () => {
    const undeclared = countedProvider(undefined);
    const gate = gateOf(undeclared.provider);
    const connection = {};
    for (let i = 0; i < 5; i++) await gate.authenticate(request(READER, connection));
    expect(undeclared.extracts()).toBe(5);
    const declared = countedProvider('header:authorization');
    const other = gateOf(declared.provider);
    for (let i = 0; i < 5; i++) await other.authenticate(request(READER));
    expect(declared.extracts()).toBe(5);
  });

  it('is not taken for a gate whose providers read different places', async () => {
    const bearer = countedProvider('header:authorization');
    const query: Provider = { ...countedProvider('query:connection').provider, name: 'q', extract: () => undefined };
    const gate = createGate({ providers: [bearer.provider, query] });
    open.push(() => gate.close());
    const connection = {};
    for (let i = 0; i < 4; i++) await gate.authenticate(request(READER, connection));
    expect(bearer.extracts()).toBe(4);
  });

  it('decides a changed header afresh on the same connection', async () => {
    const { provider } = countedProvider('header:authorization');
    const gate = gateOf(provider);
    const connection = {};
    for (let i = 0; i < 3; i++) {
      expect((await gate.authenticate(request(READER, connection))).subject).toBe('reader');
      expect((await gate.authenticate(request(WRITER, connection))).subject).toBe('writer');
    }
    await expect(gate.authenticate(request('SECRETunknown', connection))).rejects.toMatchObject({ status: 401 });
    await expect(gate.authenticate({ headers: {}, connection })).rejects.toMatchObject({ status: 401 });
    expect((await gate.authenticate(request(READER, connection))).subject).toBe('reader');
  });

  it('is used by the Express adapter over a keep-alive connection, and the guard still runs every time', async () => {
    const { provider, extracts } = countedProvider('header:authorization');
    const gate = gateOf(provider);
    const app = express();
    app.get('/read', expressGate.authenticate(gate), expressGate.requires('read'), (_req, res) => {
      res.send('ok');
    });
    const server: Server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    open.push(() => new Promise((resolve) => server.close(() => resolve())));
    const client = new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { pipelining: 1 });
    open.push(() => client.close());
    let connections = 0;
    server.on('connection', () => connections++);
    const statuses: number[] = [];
    for (const token of [READER, READER, READER, WRITER, WRITER, WRITER, READER]) {
      const res = await client.request({ method: 'GET', path: '/read', headers: { authorization: `Bearer ${token}` } });
      await res.body.text();
      statuses.push(res.statusCode);
    }
    expect(statuses).toEqual([200, 200, 200, 403, 403, 403, 200]);
    expect(connections).toBe(1);
    // Read: each token's first request (a miss), the cache hit that remembers it, and the header change back
    // to READER (a hit at once); the other two repeats of each run are recalled without reading.
    expect(extracts()).toBe(5);
  });

  it('is used by the Koa adapter too (through NodeRequest), the guard still running every time', async () => {
    const { provider, extracts } = countedProvider('header:authorization');
    const gate = gateOf(provider);
    const app = new Koa();
    app.use(koaGate.authenticate(gate));
    app.use(koaGate.requires('read'));
    app.use((ctx) => {
      ctx.body = 'ok';
    });
    const server: Server = createServer(app.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    open.push(() => new Promise((resolve) => server.close(() => resolve())));
    const client = new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { pipelining: 1 });
    open.push(() => client.close());
    const statuses: number[] = [];
    for (const token of [READER, READER, READER, READER, WRITER, WRITER]) {
      const res = await client.request({ method: 'GET', path: '/', headers: { authorization: `Bearer ${token}` } });
      await res.body.text();
      statuses.push(res.statusCode);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 403, 403]);
    // READER: its miss and the hit that remembers it; WRITER: the same. The other repeats are recalled.
    expect(extracts()).toBe(4);
  });

  it('checks guards on recalled contexts through the gate too', async () => {
    const { provider } = countedProvider('header:authorization');
    const gate = gateOf(provider);
    const connection = {};
    const write = requires('write');
    for (let i = 0; i < 5; i++) {
      const auth = await gate.authenticate(request(READER, connection));
      expect(() => gate.authorize(auth, write)).toThrow(expect.objectContaining({ status: 403 }));
    }
  });
});

describe("a connection's memo", () => {
  /** Whether the heap holds `text` anywhere (V8 collects garbage before a snapshot). */
  async function heapHolds(text: string): Promise<boolean> {
    /./.exec('-'); // RegExp.input keeps the last string a regular expression matched
    const chunks: string[] = [];
    for await (const chunk of getHeapSnapshot()) chunks.push(String(chunk));
    return chunks.join('').includes(text);
  }

  /** The status `req` gets (the error itself is not kept: its stack's frames would hold the request). */
  const statusOf = (gate: Gate, req: CredentialRequest) =>
    gate.authenticate(req).then(
      () => 200,
      (error: { status: number }) => error.status,
    );

  /** Sends a never-seen token on `connection` (the stub rejects it); returns it reversed, so that nothing here holds it. */
  async function sendSecret(gate: Gate, connection: object): Promise<string> {
    const hex = randomBytes(16).toString('hex');
    expect(await statusOf(gate, { headers: { authorization: `Bearer SECRETheap${hex}` }, connection })).toBe(401);
    return [...hex].reverse().join('');
  }

  it('reads a request whose connection is not an object (a hand-written adapter) as one with no connection', async () => {
    const gate = gateOf(stubProvider({ tokens: { [READER]: { subject: 'reader', permissions: ['read'] } } }));
    for (const connection of ['socket-1', 42, true]) {
      const req = { ...request(READER), connection } as unknown as CredentialRequest;
      expect((await gate.authenticate(req)).subject).toBe('reader');
      expect(await statusOf(gate, { headers: {}, connection } as unknown as CredentialRequest)).toBe(401);
    }
  });

  it.each([
    ['no credential', {}, 401],
    ['a malformed credential', { authorization: 'Bearer not a token' }, 400],
    ['two Authorization headers', { authorization: ['Bearer a', 'Bearer b'] }, 400],
  ] as const)(
    'holds no raw token after a request with %s on the connection',
    async (_, headers, status) => {
      const gate = gateOf(stubProvider({ tokens: {} }));
      const connection = {};
      const kept = await sendSecret(gate, connection);
      const needle = () => `SECRETheap${[...kept].reverse().join('')}`;
      expect(await heapHolds(needle())).toBe(true); // the memo remembers the connection's token: what is checked below
      expect(await statusOf(gate, { headers, connection })).toBe(status);
      expect(await heapHolds(needle())).toBe(false);
      expect(connection).toBeDefined(); // the memo lives as long as its connection
    },
    60_000, // two heap snapshots of the worker: seconds each, 25-30 s seen on a loaded 2-core machine
  );
});

describe('a half connection credential', () => {
  function bothProviders(): Gate {
    // Partoo is never asked in these tests: a half credential never reaches a provider.
    const gate = createGate({
      providers: [
        stubProvider({ tokens: { [READER]: { subject: 'reader', permissions: ['read'] } } }),
        partoo({ apiKey: 'SECRETunusedKey', baseUrl: 'http://127.0.0.1:9' }),
      ],
    });
    open.push(() => gate.close());
    return gate;
  }

  it('is ignored next to a complete Bearer credential (an unrelated ?token= in the URL)', async () => {
    const gate = bothProviders();
    const auth = await gate.authenticate({ ...request(READER), query: { token: 'pageCursor123' } });
    expect(auth.subject).toBe('reader');
    const other = await gate.authenticate({ ...request(READER), query: { user_id: 'u1' } });
    expect(other.subject).toBe('reader');
  });

  it('is a 400 naming both parameters when it is the only credential', async () => {
    const gate = bothProviders();
    for (const query of [{ token: 'pageCursor123' }, { user_id: 'u1' }]) {
      await expect(gate.authenticate({ headers: {}, query })).rejects.toMatchObject({
        status: 400,
        code: 'invalid_request',
        message: 'Both user_id and token are required',
      });
    }
  });

  it('does not excuse a malformed Bearer header, nor a complete credential in a second place', async () => {
    const gate = bothProviders();
    await expect(
      gate.authenticate({ headers: { authorization: 'Bearer a b' }, query: { token: 'x' } }),
    ).rejects.toMatchObject({ status: 400, message: 'Malformed Bearer token' });
    await expect(
      gate.authenticate({ ...request(READER), query: { user_id: 'u1', token: 'SECRETconn' } }),
    ).rejects.toMatchObject({ status: 400, message: 'Credentials were sent in more than one place' });
  });
});

describe('admission through the gate', () => {
  /** A provider that holds every verification until `releaseAll()`, counting calls. */
  function heldProvider(concurrency: number) {
    const held: Array<() => void> = [];
    let calls = 0;
    const provider: Provider<BearerCredential> = {
      name: 'held',
      cacheScope: 'held',
      source: 'header:authorization',
      concurrency,
      extract: extractBearer,
      verify: async (credential) => {
        calls++;
        await new Promise<void>((resolve) => held.push(resolve));
        return credential.secret.startsWith('SECRETok')
          ? { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } }
          : { ok: false, reason: 'The access token is invalid' };
      },
    };
    const releaseAll = () => {
      for (const release of held.splice(0)) release();
    };
    return { provider, calls: () => calls, releaseAll };
  }

  /**
   * A gate over a {@link heldProvider} of one slot, without retries, with `options`; `events` records each event as
   * `type`, or `type:reason`.
   */
  function heldGate(options: Omit<GateOptions, 'providers' | 'onEvent'>) {
    const held = heldProvider(1);
    const events: string[] = [];
    const gate = createGate({
      providers: [held.provider],
      retry: false,
      ...options,
      onEvent: (event) => events.push('reason' in event ? `${event.type}:${event.reason}` : event.type),
    });
    open.push(() => gate.close());
    return { ...held, gate, events };
  }

  it('answers 503 overloaded at once when the wait is full: no upstream call, no breaker, no stale', async () => {
    const { provider, calls, releaseAll } = heldProvider(1);
    const events: string[] = [];
    const gate = createGate({
      providers: [provider],
      admission: { maxWaiting: 0 },
      breaker: { threshold: 1 },
      onEvent: (event) => events.push(event.type),
    });
    open.push(() => gate.close());
    const first = gate.authenticate(request('SECRETok1'));
    await expect(gate.authenticate(request('SECRETok2'))).rejects.toMatchObject({
      status: 503,
      code: 'overloaded',
      message: 'Too many credentials are waiting for token provider held',
      headers: { 'Retry-After': '1' },
    });
    expect(calls()).toBe(1);
    releaseAll();
    expect((await first).subject).toBe('SECRETok1');
    expect(gate.stats()).toMatchObject({ overloaded: 1, breakers: { held: 'closed' }, stale: 0 });
    expect(events).toContain('overloaded');
    expect(events).not.toContain('breaker');
  });

  it('answers 503 overloaded when the wait is full even for a token with a stale copy: a full wait is no provider failure', async () => {
    const { provider, calls, releaseAll } = heldProvider(1);
    const gate = createGate({
      providers: [provider],
      admission: { maxWaiting: 0 },
      cache: { ttl: 50, staleIfError: 60_000 },
    });
    open.push(() => gate.close());
    const accepted = gate.authenticate(request('SECRETokT'));
    releaseAll();
    expect((await accepted).subject).toBe('SECRETokT');
    await new Promise((resolve) => setTimeout(resolve, 60)); // past its ttl: only a stale copy is left
    const hog = gate.authenticate(request('SECRETok1'));
    await expect(gate.authenticate(request('SECRETokT'))).rejects.toMatchObject({ status: 503, code: 'overloaded' });
    expect(calls()).toBe(2);
    expect(gate.stats()).toMatchObject({ overloaded: 1, stale: 0 });
    releaseAll();
    await hog;
  });

  it.each([
    ['one address', (_: number) => '127.0.0.1', '127.0.0.2'],
    [
      'many addresses of one IPv6 /64 (one client)',
      (i: number) => `2001:db8:0:1::${(i + 1).toString(16)}`,
      '2001:db8:1::1',
    ],
    [
      'a /56 each of one IPv6 /48 (one block of clients)',
      (i: number) => `2001:db8:0:${(i * 256).toString(16)}::1`,
      '2001:db8:1::1',
    ],
    ['an address each of one IPv4 /24 (one block of clients)', (i: number) => `127.0.1.${i + 1}`, '127.0.2.1'],
  ])('shares the wait between clients: a flood from %s cannot keep another client out', async (_, floodIp, otherIp) => {
    const { provider, calls, releaseAll } = heldProvider(1);
    const gate = createGate({ providers: [provider], admission: { maxWaiting: 3 } });
    open.push(() => gate.close());
    const flood = Array.from({ length: 10 }, (_, i) =>
      gate.authenticate({ ...request(`SECRETbad${i}`), ip: floodIp(i) }).catch((error: { code: string }) => error.code),
    );
    const other = gate.authenticate({ ...request('SECRETokB'), ip: otherIp });
    for (let round = 0; round < 12 && calls() < 11; round++) {
      releaseAll();
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    releaseAll();
    expect((await other).subject).toBe('SECRETokB');
    const floodCodes = await Promise.all(flood);
    expect(floodCodes.filter((code) => code === 'overloaded').length).toBeGreaterThanOrEqual(6);
  });

  it('ends a wait that outlasts the timeout with 503 overloaded: no upstream call, nothing against the provider', async () => {
    const { provider, calls, releaseAll } = heldProvider(1);
    const events: GateEvent[] = [];
    const gate = createGate({
      providers: [provider],
      timeout: 150,
      retry: false,
      onEvent: (event) => events.push(event),
    });
    open.push(() => gate.close());
    // The first is asked and held until its deadline; the second gets its slot then; the third waits throughout.
    const codes = ['SECRETok1', 'SECRETok2', 'SECRETok3'].map((token) =>
      gate.authenticate(request(token)).catch((error: { code: string }) => error.code),
    );
    expect(await codes[2]).toBe('overloaded');
    expect(events).toContainEqual({ type: 'overloaded', provider: 'held', reason: 'expired' });
    expect(calls()).toBeLessThan(3);
    expect(gate.stats().breakers.held).toBe('closed');
    releaseAll();
    // The second's own timeout, armed as it asked, ends it too: it waited for the first's whole deadline.
    expect(await Promise.all(codes)).toEqual(['provider_unavailable', 'overloaded', 'overloaded']);
    expect(gate.stats()).toMatchObject({ overloaded: 2, errors: 1 });
  });

  it('gives a verification that waited its whole deadline from its slot, while the request ends at its own, overloaded', async () => {
    const { gate, events, calls, releaseAll } = heldGate({ timeout: 300 });
    const first = gate.authenticate(request('SECRETok1'));
    const second = gate.authenticate(request('SECRETok2')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the first answers; the second gets its slot, and its verification is held in turn
    expect((await first).subject).toBe('SECRETok1');
    expect(await second).toBe('overloaded');
    expect(calls()).toBe(2);
    expect(events).toContain('overloaded:expired');
    expect(gate.stats()).toMatchObject({ overloaded: 1, errors: 0 });
    // The request gave up at its own deadline; its verification's deadline, later, has not passed yet.
    expect(events).not.toContain('provider_error:timeout');
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(events).toContain('provider_error:timeout');
    releaseAll();
  });

  it('keeps the answer of a verification whose request ended first: later requests join it, then hit the cache', async () => {
    const { provider, calls, releaseAll } = heldProvider(1);
    const gate = createGate({ providers: [provider], timeout: 600, retry: false });
    open.push(() => gate.close());
    const first = gate.authenticate(request('SECRETok1'));
    const second = gate.authenticate(request('SECRETok2')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the first answers; the second gets its slot, and is held past its request's timeout
    await first;
    expect(await second).toBe('overloaded');
    expect(calls()).toBe(2);
    // Still under way: a request for it now waits for that verification rather than asking again.
    const joined = gate.authenticate(request('SECRETok2'));
    releaseAll();
    expect((await joined).subject).toBe('SECRETok2');
    expect((await gate.authenticate(request('SECRETok2'))).subject).toBe('SECRETok2');
    expect(calls()).toBe(2);
    expect(gate.stats()).toMatchObject({ hits: 1, coalesced: 1, overloaded: 1 });
  });

  it('ends a request at its timeout even when a listener cleared the cache between its lookup and its flight', async () => {
    const { provider, releaseAll } = heldProvider(1);
    let gate: Gate | undefined;
    gate = createGate({
      providers: [provider],
      timeout: 600,
      retry: false,
      onEvent: (event) => {
        if (event.type === 'cache' && event.result === 'coalesced') gate?.clear();
      },
    });
    open.push(() => (gate as Gate).close());
    const hog = gate.authenticate(request('SECRETbadHog')).catch(() => undefined);
    const first = gate.authenticate(request('SECRETokB')).catch((error: { code: string }) => error.code);
    // Its lookup joins the first one's flight; the listener clears the cache, and the request starts a flight of its own.
    const second = gate.authenticate(request('SECRETokB')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the hog answers: the first flight asks, and is held
    await hog;
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the first flight answers; the second asks, and is held past its request's timeout
    expect(await first).toMatchObject({ subject: 'SECRETokB' });
    expect(await second).toBe('overloaded');
    releaseAll();
  });

  it('a rejection that comes after its request ended is kept: the token is never served stale afterwards', async () => {
    const held: Array<() => void> = [];
    const revoked = new Set<string>();
    let down = false;
    const provider: Provider<BearerCredential> = {
      name: 'held',
      cacheScope: 'held',
      concurrency: 1,
      extract: extractBearer,
      verify: async (credential) => {
        await new Promise<void>((resolve) => held.push(resolve));
        if (down) throw new ProviderFailure('unreachable', 'held is down');
        return credential.secret.startsWith('SECRETok') && !revoked.has(credential.secret)
          ? { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } }
          : { ok: false, reason: 'The access token is invalid' };
      },
    };
    const releaseAll = () => {
      for (const release of held.splice(0)) release();
    };
    const gate = createGate({
      providers: [provider],
      timeout: 600,
      retry: false,
      cache: { ttl: 50, staleIfError: 60_000 },
    });
    open.push(() => gate.close());
    const accepted = gate.authenticate(request('SECRETokT'));
    releaseAll();
    expect((await accepted).subject).toBe('SECRETokT');
    await new Promise((resolve) => setTimeout(resolve, 60)); // past its ttl, inside staleIfError
    revoked.add('SECRETokT');
    const hog = gate.authenticate(request('SECRETbadHog')).catch(() => undefined);
    const again = gate.authenticate(request('SECRETokT')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the hog answers; the token's verification gets its slot, and is held past its request's timeout
    await hog;
    expect(await again).toBe('overloaded');
    releaseAll(); // the provider rejects the token, after its request ended
    await new Promise((resolve) => setTimeout(resolve, 10));
    down = true;
    const during = gate.authenticate(request('SECRETokT')).catch((error: { status: number }) => error.status);
    releaseAll();
    expect(await during).toBe(401);
    expect(gate.stats().stale).toBe(0);
  });

  it('never serves a stale copy to a request whose wait for a slot ran out: our own overload is no provider failure', async () => {
    const { gate, events, calls, releaseAll } = heldGate({ timeout: 300, cache: { ttl: 50, staleIfError: 60_000 } });
    const accepted = gate.authenticate(request('SECRETokT'));
    releaseAll();
    expect((await accepted).subject).toBe('SECRETokT');
    await new Promise((resolve) => setTimeout(resolve, 60)); // past its ttl: only a stale copy is left
    // The first holds the one slot; the second gets it when the first answers (at 200 ms) and holds it past 500 ms;
    // the token, asked at 100 ms, waits behind the second until its own timeout (400 ms) ends its wait.
    const first = gate.authenticate(request('SECRETok1'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = gate.authenticate(request('SECRETok2')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const token = gate.authenticate(request('SECRETokT')).then(
      (auth) => `200${auth.stale ? ' stale' : ''}`,
      (error: { code: string }) => error.code,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll(); // the first answers; the second gets its slot and is held
    expect((await first).subject).toBe('SECRETok1');
    expect(await token).toBe('overloaded');
    expect(events).toContain('overloaded:expired');
    expect(calls()).toBe(3); // the token was never sent
    expect(gate.stats().stale).toBe(0);
    expect(events).not.toContain('stale');
    releaseAll();
    expect(await second).toBe('overloaded');
  });

  it('a wait that runs out counts nothing against the provider: a breaker of threshold 1 stays closed, and the next token is asked', async () => {
    const { gate, events, calls, releaseAll } = heldGate({ timeout: 300, breaker: { threshold: 1 } });
    // As above: the third waits behind the second, which holds the slot from 200 ms on, until its timeout (400 ms).
    const first = gate.authenticate(request('SECRETok1'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = gate.authenticate(request('SECRETok2')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const third = gate.authenticate(request('SECRETok3')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 100));
    releaseAll();
    expect((await first).subject).toBe('SECRETok1');
    expect(await third).toBe('overloaded');
    expect(events).toContain('overloaded:expired');
    releaseAll();
    expect(await second).toBe('overloaded');
    expect(gate.stats()).toMatchObject({ errors: 0, breakers: { held: 'closed' } });
    expect(events).not.toContain('breaker');
    const next = gate.authenticate(request('SECRETok4'));
    releaseAll();
    await new Promise((resolve) => setTimeout(resolve, 10));
    releaseAll();
    expect((await next).subject).toBe('SECRETok4');
    expect(calls()).toBe(3);
  });

  it("gives a verification that waited the provider's whole timeout from its slot: answered past its request's end, it counts no failure and is kept", async () => {
    const { gate, events, calls, releaseAll } = heldGate({ timeout: 300, breaker: { threshold: 1 } });
    const first = gate.authenticate(request('SECRETok1'));
    const second = gate.authenticate(request('SECRETok2')).catch((error: { code: string }) => error.code);
    await new Promise((resolve) => setTimeout(resolve, 200));
    releaseAll(); // the first answers; the second gets its slot at 200 ms: its deadline is at 500 ms, its request's at 300
    expect((await first).subject).toBe('SECRETok1');
    expect(await second).toBe('overloaded');
    await new Promise((resolve) => setTimeout(resolve, 100)); // 400 ms: past the request's time, inside the slot's
    releaseAll();
    expect((await gate.authenticate(request('SECRETok2'))).subject).toBe('SECRETok2');
    expect(calls()).toBe(2);
    expect(events).not.toContain('provider_error:timeout');
    expect(gate.stats()).toMatchObject({ errors: 0, breakers: { held: 'closed' } });
  });

  it.each([
    ['undefined (a header the client left out)', undefined],
    ['a number', 7],
    ['a promise', Promise.resolve('tenant-a')],
  ])('counts a request whose clientKey returns %s by its address, as by default', async (_, key) => {
    const order: string[] = [];
    const held: Array<() => void> = [];
    const provider: Provider<BearerCredential> = {
      name: 'held',
      cacheScope: 'held-order',
      concurrency: 1,
      extract: extractBearer,
      verify: async (credential) => {
        order.push(credential.secret);
        await new Promise<void>((resolve) => held.push(resolve));
        return { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } };
      },
    };
    const gate = createGate({ providers: [provider], admission: { clientKey: () => key as unknown as string } });
    open.push(() => gate.close());
    const from = (token: string, ip: string) =>
      gate.authenticate({ headers: { authorization: `Bearer ${token}` }, ip });
    // A1 has the slot; A2 and A3 wait, then B1: by address, B1 is served before A3.
    const all = [from('A1', '127.0.0.1'), from('A2', '127.0.0.1'), from('A3', '127.0.0.1'), from('B1', '127.0.0.2')];
    for (let turn = 0; turn < 100 && order.length < 4; turn++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      for (const release of held.splice(0)) release();
    }
    for (const release of held.splice(0)) release();
    expect(order).toEqual(['A1', 'A2', 'B1', 'A3']);
    expect((await Promise.all(all)).map((auth) => auth.subject)).toEqual(['A1', 'A2', 'A3', 'B1']);
  });

  it('uses admission.clientKey when given', async () => {
    const { provider, releaseAll } = heldProvider(1);
    const keys: string[] = [];
    const gate = createGate({
      providers: [provider],
      admission: {
        clientKey: (req) => {
          const key = String(req.headers['x-tenant']);
          keys.push(key);
          return key;
        },
      },
    });
    open.push(() => gate.close());
    const first = gate.authenticate({ headers: { authorization: 'Bearer SECRETok1', 'x-tenant': 'tenant-a' } });
    const second = gate.authenticate({ headers: { authorization: 'Bearer SECRETok2', 'x-tenant': 'tenant-b' } });
    // The first had a slot at once; only a verification that waits is asked who its client is.
    expect(keys).toEqual(['tenant-b']);
    releaseAll();
    await first;
    await new Promise((resolve) => setTimeout(resolve, 10));
    releaseAll();
    expect((await second).subject).toBe('SECRETok2');
  });
});

describe('requests waiting on one failed verification', () => {
  it('each get an AuthError of their own, with their own headers, status, cause and the stack where it was made', async () => {
    let calls = 0;
    const provider: Provider<BearerCredential> = {
      name: 'failing',
      cacheScope: 'failing',
      extract: extractBearer,
      verify: async () => {
        calls++;
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new ProviderFailure('status', 'failing answered 503', { status: 503, retryAfter: 3 });
      },
    };
    const gate = createGate({ providers: [provider], retry: false });
    open.push(() => gate.close());
    const req = { headers: { authorization: 'Bearer SECRETshared1' } };
    const errors = (await Promise.all([1, 2, 3].map(() => gate.authenticate(req).catch((e) => e)))) as AuthError[];
    expect(calls).toBe(1);
    expect(new Set(errors).size).toBe(3);
    expect(new Set(errors.map((error) => error.headers)).size).toBe(3);
    for (const error of errors) {
      expect(error).toBeInstanceOf(AuthError);
      expect(error).toMatchObject({ status: 503, statusCode: 503, code: 'provider_unavailable', expose: true });
      expect(error.headers).toEqual({ 'Retry-After': '3' });
      expect((error.cause as ProviderFailure).upstreamStatus).toBe(503);
      expect(error.stack).not.toContain('forOneRequest');
    }
  });
});

describe("a provider failure's retryAfter", () => {
  it('takes more than 1e9 seconds as 1e9, given as a number or as a header, and the client sees maxRetryAfter', async () => {
    expect(new ProviderFailure('status', 'answered 429', { status: 429, retryAfter: 1e300 }).retryAfter).toBe(1e9);
    expect(new ProviderFailure('status', 'answered 429', { status: 429, retryAfter: '9'.repeat(400) }).retryAfter).toBe(
      1e9,
    );
    expect(new ProviderFailure('status', 'answered 503', { status: 503, retryAfter: 1e9 - 1 }).retryAfter).toBe(
      1e9 - 1,
    );
    const provider: Provider<BearerCredential> = {
      name: 'custom',
      cacheScope: 'custom',
      extract: extractBearer,
      verify: async () => {
        throw new ProviderFailure('status', 'custom answered 503', { status: 503, retryAfter: 1e300 });
      },
    };
    const gate = createGate({ providers: [provider], retry: false, maxRetryAfter: 30_000 });
    open.push(() => gate.close());
    const error = (await gate.authenticate(request('SECRETlong')).catch((e) => e)) as AuthError;
    expect(error.headers).toEqual({ 'Retry-After': '30' });
    expect((error.cause as ProviderFailure).retryAfter).toBe(1e9);
  });
});

describe('a provider failure with a Retry-After that is no wait', () => {
  it.each([Number.NaN, -5, Number.POSITIVE_INFINITY])(
    'sends no Retry-After for %s, and a later 429 still pauses calls',
    async (retryAfter) => {
      let calls = 0;
      let status = 503;
      const provider: Provider<BearerCredential> = {
        name: 'custom',
        cacheScope: 'custom',
        extract: extractBearer,
        verify: async () => {
          calls++;
          throw new ProviderFailure('status', `custom answered ${status}`, { status, retryAfter });
        },
      };
      const gate = createGate({ providers: [provider], retry: false, breaker: { threshold: 100 } });
      open.push(() => gate.close());
      const first = await gate.authenticate(request('SECRETfirst')).catch((error: { headers: object }) => error);
      expect(first).toMatchObject({ status: 503 });
      expect((first as { headers: object }).headers).toEqual({});
      status = 429;
      await expect(gate.authenticate(request('SECRETsecond'))).rejects.toMatchObject({ status: 503 });
      await expect(gate.authenticate(request('SECRETthird'))).rejects.toMatchObject({
        status: 503,
        headers: { 'Retry-After': '1' },
      });
      expect(calls).toBe(2);
    },
  );
});

describe('gate.authenticate and gate.authorize called by hand with the wrong things', () => {
  it('reject naming the mistake, never a bare property error, and never show what was passed', async () => {
    const gate = createGate({ providers: [stubProvider({ tokens: { [READER]: { subject: 'r' } } })] });
    open.push(() => gate.close());
    const call = (req: unknown, options?: unknown) =>
      gate.authenticate(req as CredentialRequest, options as { optional?: false }).then(
        () => 'passed',
        (error: Error) => `${error.constructor.name}: ${error.message}`,
      );
    expect(await call({})).toBe(
      'TypeError: gate.authenticate: expected a request ({ headers, query?, ip? }), got an object without headers',
    );
    expect(await call(`Bearer ${READER}`)).toBe(
      'TypeError: gate.authenticate: expected a request ({ headers, query?, ip? }), got a string',
    );
    expect(await call(undefined)).toBe(
      'TypeError: gate.authenticate: expected a request ({ headers, query?, ip? }), got undefined',
    );
    expect(await call(request(READER), { optional: 'yes' })).toBe(
      'TypeError: gate.authenticate: options.optional: expected a boolean, got a string',
    );
    expect(await call(request(READER), { optional: false })).toBe('passed');
    // A framework's query typed unknown, and not an object: no connection credential in it.
    expect(await call({ headers: { authorization: `Bearer ${READER}` }, query: 'user_id=u&token=t' })).toBe('passed');
    // Headers as a hand-made request may hold them: raw headers null, one value in an array, a value not a string.
    expect(await call({ headers: { authorization: `Bearer ${READER}` }, rawHeaders: null })).toBe('passed');
    expect(await call({ headers: { authorization: [`Bearer ${READER}`] } })).toBe('passed');
    expect(await call({ headers: { authorization: [] } })).toBe(
      'AuthError: Authentication required', // no credential at all
    );
    expect(await call({ headers: { authorization: 123 } })).toBe(
      "TypeError: gate.authenticate: expected the request's headers.authorization to be a string or an array of strings, got a number",
    );
    expect(await call({ headers: { authorization: {} } })).toBe(
      "TypeError: gate.authenticate: expected the request's headers.authorization to be a string or an array of strings, got an object",
    );
    expect(await call({ headers: { authorization: null } })).toBe(
      "TypeError: gate.authenticate: expected the request's headers.authorization to be a string or an array of strings, got null",
    );
    expect(await call({ headers: { authorization: [`Bearer ${READER}`, 7] } })).toBe(
      "TypeError: gate.authenticate: expected the request's headers.authorization to be a string or an array of strings, got an array holding something else",
    );
    const auth = await gate.authenticate(request(READER));
    expect(() => gate.authorize(auth, requires as never)).toThrow(
      new TypeError("gate.authorize: expected a guard, got a function: call it (requires('read'), not requires)"),
    );
    expect(() => gate.authorize(auth, 'read' as never)).toThrow(
      new TypeError("gate.authorize: expected a guard such as requires('read'), got a string"),
    );
  });
});

describe("gate.invalidate, gate.revoke and an adapter's handler given a request without headers", () => {
  it('throw a TypeError naming the method and what was passed (its class, never its contents)', async () => {
    const gate = createGate({ providers: [stubProvider({ tokens: { [READER]: { subject: 'r' } } })] });
    open.push(() => gate.close());
    // What an adapter for a framework whose request keeps its headers elsewhere might hand over by mistake.
    class FrameworkRequest {
      readonly raw = { authorization: `Bearer ${READER}` };
    }
    const outcome = (run: () => unknown) =>
      Promise.resolve()
        .then(run)
        .then(
          () => 'passed',
          (error: Error) => `${error.constructor.name}: ${error.message}`,
        );
    const expected = (method: string, got: string) =>
      `TypeError: gate.${method}: expected a request ({ headers, query?, ip? }), got ${got}`;
    for (const req of [{}, new FrameworkRequest()]) {
      const got = req instanceof FrameworkRequest ? 'a FrameworkRequest without headers' : 'an object without headers';
      expect(await outcome(() => gate.invalidate(req as never))).toBe(expected('invalidate', got));
      expect(await outcome(() => gate.revoke(req as never))).toBe(expected('revoke', got));
      expect(await outcome(() => gate.authenticateNow(req as never))).toBe(expected('authenticateNow', got));
      for (const optional of [false, true]) {
        const handler = authenticator(gate, { optional }, 'my-adapter');
        expect(await outcome(() => handler(req as never, {}))).toBe(expected('authenticateNow', got));
      }
    }
    // The same request with its headers is authenticated as ever.
    expect((await gate.authenticateNow({ headers: new FrameworkRequest().raw }))?.subject).toBe('r');
  });
});

describe('clear() and reset()', () => {
  it('clear() forgets answers and leaves breakers and counters as they are; reset() closes the breakers and zeroes the counters', async () => {
    let failing = true;
    const provider: Provider<BearerCredential> = {
      name: 'flaky',
      cacheScope: 'flaky',
      extract: extractBearer,
      verify: async () => {
        if (failing) throw new ProviderFailure('unreachable', 'flaky is unreachable');
        return { ok: true, principal: { subject: 'someone', permissions: [], details: {} } };
      },
    };
    const gate = createGate({ providers: [provider], retry: false, breaker: { threshold: 1, cooldown: 60_000 } });
    open.push(() => gate.close());
    await expect(gate.authenticate(request(READER))).rejects.toMatchObject({ status: 503 });
    failing = false;
    gate.clear();
    expect(gate.stats()).toMatchObject({ misses: 1, errors: 1, breakers: { flaky: 'open' } });
    await expect(gate.authenticate(request(READER))).rejects.toMatchObject({ status: 503 });
    expect(gate.stats()).toMatchObject({ misses: 2, errors: 1, heldBack: 1 });
    gate.reset();
    expect(gate.stats()).toEqual({
      hits: 0,
      misses: 0,
      coalesced: 0,
      sharedHits: 0,
      upstreamCalls: 0,
      errors: 0,
      stale: 0,
      overloaded: 0,
      heldBack: 0,
      breakers: { flaky: 'closed' },
      paused: { flaky: 0 },
      admission: { flaky: { running: 0, waiting: 0 } },
    });
    expect((await gate.authenticate(request(READER))).subject).toBe('someone');
    expect(gate.stats()).toMatchObject({ misses: 1, upstreamCalls: 1, errors: 0 });
  });

  it('stats().admission shows the verifications asking each provider and those waiting for a slot, as they come and go', async () => {
    const answers: Array<() => void> = [];
    const slow: Provider<BearerCredential> = {
      name: 'slow',
      cacheScope: 'slow',
      concurrency: 2,
      extract: extractBearer,
      verify: () =>
        new Promise((resolve) =>
          answers.push(() => resolve({ ok: true, principal: { subject: 'someone', permissions: [], details: {} } })),
        ),
    };
    const gate = createGate({ providers: [slow], retry: false, admission: { maxWaiting: 3 } });
    open.push(() => gate.close());
    const pending = ['SECRETa', 'SECRETb', 'SECRETc', 'SECRETd', 'SECRETe'].map((token) =>
      gate.authenticate(request(token)).then(
        () => 200,
        (error: AuthError) => error.status,
      ),
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(gate.stats().admission).toEqual({ slow: { running: 2, waiting: 3 } });
    // A sixth is refused at once: the wait is full.
    await expect(gate.authenticate(request('SECRETf'))).rejects.toMatchObject({ code: 'overloaded' });
    expect(gate.stats()).toMatchObject({ overloaded: 1, admission: { slow: { running: 2, waiting: 3 } } });
    while (answers.length > 0) {
      (answers.shift() as () => void)();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(pending)).toEqual([200, 200, 200, 200, 200]);
    expect(gate.stats().admission).toEqual({ slow: { running: 0, waiting: 0 } });
  });
});

describe("a provider's extract that returns something other than a credential", () => {
  const verifyOnly =
    (good: string): Provider['verify'] =>
    async (credential) =>
      (credential as unknown as { token?: string }).token === good
        ? { ok: true, principal: { subject: 'good', permissions: [], details: {} } }
        : { ok: false, reason: 'unknown token' };

  it('a credential without a string secret is refused (500), never keyed: another token cannot ride on its answer', async () => {
    const provider = {
      name: 'misnamed',
      cacheScope: 'misnamed',
      // `token` where the gate reads `secret`: a JavaScript provider's slip.
      extract: (req: CredentialRequest) => {
        const header = req.headers.authorization;
        return typeof header === 'string' ? { source: 'header:authorization', token: header.slice(7) } : undefined;
      },
      verify: verifyOnly('SECRETgoodToken1'),
    } as unknown as Provider;
    const gate = createGate({ providers: [provider] });
    open.push(() => gate.close());
    const answers: unknown[] = [];
    for (const token of ['SECRETgoodToken1', 'SECRETotherToken2']) {
      answers.push(await gate.authenticate({ headers: { authorization: `Bearer ${token}` } }).catch((e: Error) => e));
    }
    // Keyed as it was, the other token was let in on the good one's cached answer.
    expect((answers[1] as { subject?: string }).subject).toBeUndefined();
    for (const answer of answers) {
      expect(answer).toBeInstanceOf(TypeError);
      expect((answer as Error).message).toContain("misnamed's extract returned an object, not a credential");
    }
  });

  it('a credential that carries `partial: undefined` beside its secret is a credential, not a 500', async () => {
    const provider = {
      name: 'spread',
      cacheScope: 'spread',
      // A provider that builds both shapes with one literal.
      extract: (req: CredentialRequest, realm: string) => {
        const credential = extractBearer(req, realm);
        return credential === undefined ? undefined : { ...credential, partial: undefined };
      },
      verify: async () => ({ ok: true, principal: { subject: 'spread', permissions: [], details: {} } }),
    } as unknown as Provider;
    const gate = createGate({ providers: [provider] });
    open.push(() => gate.close());
    expect((await gate.authenticate({ headers: { authorization: 'Bearer SECRETspread1' } })).subject).toBe('spread');
  });

  it('a raw token returned as a string is refused with a TypeError that does not hold it', async () => {
    const provider = {
      name: 'bare',
      cacheScope: 'bare',
      extract: (req: CredentialRequest) => (req.headers.authorization as string | undefined)?.slice(7),
      verify: verifyOnly('SECRETgoodToken1'),
    } as unknown as Provider;
    const gate = createGate({ providers: [provider] });
    open.push(() => gate.close());
    const error = await gate.authenticate({ headers: { authorization: 'Bearer SECRETgoodToken1' } }).catch((e) => e);
    expect(error).toBeInstanceOf(TypeError);
    expect(String(error)).toContain("bare's extract returned a string, not a credential");
    expect(String(error)).not.toContain('SECRETgoodToken1');
  });
});
