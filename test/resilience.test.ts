/**
 * Provider faults: the per-credential deadline, retries with
 * backoff and Retry-After, the circuit breaker, `staleIfError`, and the
 * events, seen through a real Express app in front of the mock providers.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import { runInNewContext } from 'node:vm';
import express from 'express';
import pino from 'pino';
import request from 'supertest';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { authenticate } from '../adapters/express.js';
import {
  type AuthContext,
  type AuthError,
  type BearerCredential,
  createGate,
  extractBearer,
  type Gate,
  type GateEvent,
  type GateOptions,
  onlineOrNot,
  type Provider,
  ProviderFailure,
  partoo,
  type Verdict,
} from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { reply, startAnswerServer } from './support/answer-server.js';
import { gatedApp, READ_CHECKS } from './support/gated-app.js';

const API_KEY = 'server-api-key-7f3a9c';
// Distinctive secrets, so that a leak into events or bodies is found by a substring search.
const READ_TOKEN = 'SECRETtokREAD0a1b2c3d4e5f';
const BARE_TOKEN = 'SECRETtokBARE9z8y7x6w5v4u';
const OFF_TOKEN = 'SECRETtokOFF5k4j3h2g1f0e';
const CONN = { user_id: 'user-1', token: 'SECRETconn1q2w3e4r5t' };
const connections = Array.from({ length: 6 }, (_, i) => ({ user_id: `user-p${i}`, token: `SECRETconnP${i}xyz` }));
/** The i-th extra connection credential (its own cache key). */
const peer = (i: number) => connections[i] as (typeof connections)[number];

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});

/** Mocks of both providers, a gate in front of them, and an Express app in front of the gate. */
async function setup(options: Omit<GateOptions, 'providers'> = {}, partooExpiry?: Date) {
  const oon = await mockOnlineOrNot({
    tokens: {
      [READ_TOKEN]: { id: 'tok-read', permissions: [READ_CHECKS] },
      [BARE_TOKEN]: { id: 'tok-bare' },
      [OFF_TOKEN]: { id: 'tok-off', status: 'disabled' },
    },
  });
  cleanup.push(() => oon.close());
  const expirationDate = partooExpiry ?? new Date(Date.now() + 3_600_000);
  const pt = await mockPartoo({
    apiKey: API_KEY,
    tokens: [CONN, ...connections].map((c) => ({ userId: c.user_id, token: c.token, expirationDate })),
  });
  cleanup.push(() => pt.close());
  const events: GateEvent[] = [];
  const providers = [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: API_KEY, baseUrl: pt.url })] as const;
  const gate = createGate({ onEvent: (event) => events.push(event), ...options, providers });
  cleanup.push(() => gate.close());
  const { app, seen } = gatedApp(gate);
  return { oon, pt, gate, events, app, seen, providers };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** `provider` behind a wrapper of the user's own: the gate only sees its public `verify(credential, signal)`. */
const wrapped = <C extends BearerCredential>(provider: Provider<C>): Provider<C> => ({
  name: provider.name,
  cacheScope: provider.cacheScope,
  extract: (req, realm) => provider.extract(req, realm),
  verify: (credential, signal) => provider.verify(credential, signal),
  close: () => provider.close?.() ?? Promise.resolve(),
});
/** Every text value an event may carry, per field (numbers aside). */
const EVENT_VOCABULARY: Readonly<Record<string, readonly string[]>> = {
  type: ['cache', 'verify', 'provider_error', 'retry', 'breaker', 'held_back', 'stale'],
  provider: ['onlineornot', 'partoo'],
  result: ['hit', 'miss', 'coalesced'],
  outcome: ['accepted', 'rejected', 'failed'],
  reason: ['unreachable', 'timeout', 'status', 'invalid_answer', 'misconfigured', 'open', 'half-open', 'paused'],
  message: [
    'partoo GET /connection/check_token answered 503',
    'onlineornot GET /v1/tokens/verify answered 200 with a body that does not match its schema',
    'onlineornot GET /v1/tokens/permissions answered 200 with a body that does not match its schema',
    'onlineornot GET /v1/tokens/verify answered 200 with malformed JSON',
    'onlineornot GET /v1/tokens/permissions answered 200 with malformed JSON',
  ],
  state: ['closed', 'open', 'half-open'],
};
const ofType = <T extends GateEvent['type']>(events: GateEvent[], type: T) =>
  events.filter((e): e is Extract<GateEvent, { type: T }> => e.type === type);

describe('deadline', () => {
  it('a provider that never answers gets a 503 at the deadline', async () => {
    const { app, oon, events } = await setup({ timeout: 200, retry: false });
    oon.fault = { kind: 'hang' };
    const started = performance.now();
    const res = await request(app).get('/me').set(bearer(READ_TOKEN));
    const elapsed = performance.now() - started;
    expect(res.status).toBe(503);
    expect(res.headers['www-authenticate']).toBeUndefined();
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(3000);
    expect(ofType(events, 'provider_error').map((e) => e.reason)).toEqual(['timeout']);
    expect(ofType(events, 'verify')).toMatchObject([{ outcome: 'failed', attempts: 1 }]);
  });

  it("a provider past the deadline is named in the provider_error message, with the gate's timeout", async () => {
    // The README's quick start logs `event.message` alone: with two providers, it must say which one, and the
    // timeout shows a value written in seconds (`timeout: 5`) for what it is.
    const { app, oon, events } = await setup({ timeout: 200, retry: false });
    oon.fault = { kind: 'hang' };
    const res = await request(app).get('/me').set(bearer(READ_TOKEN));
    expect(res.status).toBe(503);
    expect(ofType(events, 'provider_error').map((e) => e.message)).toEqual([
      "onlineornot did not answer within the gate's timeout (200 ms)",
    ]);
  });

  // With one connection, a request left running after the deadline would hold it, and the next
  // verification would queue behind the hang: only an aborted request frees it.
  it.each([
    ['the built-in provider', (provider: Provider<BearerCredential>) => provider],
    ['a wrapped provider (its AbortSignal)', (provider: Provider<BearerCredential>) => wrapped(provider)],
  ])('a request past the deadline is ended upstream, freeing its connection: %s', async (_name, wrap) => {
    const oon = await mockOnlineOrNot({
      tokens: { [READ_TOKEN]: { id: 'tok-read', permissions: [READ_CHECKS] }, [BARE_TOKEN]: { id: 'tok-bare' } },
    });
    cleanup.push(() => oon.close());
    const provider = wrap(onlineOrNot({ baseUrl: oon.url, connections: 1 }));
    const gate = createGate({ providers: [provider], timeout: 300, retry: false, breaker: false });
    cleanup.push(() => gate.close());
    const { app } = gatedApp(gate);

    oon.fault = { kind: 'hang' };
    expect((await request(app).get('/me').set(bearer(READ_TOKEN))).status).toBe(503);
    oon.fault = undefined;
    expect((await request(app).get('/me').set(bearer(BARE_TOKEN))).status).toBe(200);
  });

  it('an answer slower than the deadline is a 503, not a late pass', async () => {
    const { app, pt, seen } = await setup({ timeout: 200, retry: false });
    pt.latency = 1500;
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(seen).toEqual([]);
    // The late answer does not land in the cache either: once the provider is fast, it is asked again.
    pt.latency = 0;
    const before = pt.calls.checkToken;
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    expect(pt.calls.checkToken).toBe(before + 1);
  });

  it('a provider that ignores its abort signal still cannot hold a request', async () => {
    const stuck: Provider<BearerCredential> = {
      name: 'stuck',
      cacheScope: 'stuck',
      extract: extractBearer,
      verify: () => new Promise(() => {}),
    };
    const gate = createGate({ providers: [stuck], timeout: 150 });
    cleanup.push(() => gate.close());
    const { app } = gatedApp(gate);
    const started = performance.now();
    const res = await request(app).get('/me').set(bearer(READ_TOKEN));
    expect(res.status).toBe(503);
    expect(performance.now() - started).toBeLessThan(3000);
  });

  it("the provider's signal: aborted at the deadline and after a failure, left alone after a verdict", async () => {
    const signals: AbortSignal[] = [];
    let behaviour: 'accept' | 'fail' | 'hang' = 'accept';
    const recording: Provider<BearerCredential> = {
      name: 'recording',
      cacheScope: 'recording',
      extract: extractBearer,
      verify: async (credential, signal) => {
        signals.push(signal);
        if (behaviour === 'fail') throw new Error('broken');
        if (behaviour === 'hang') return new Promise(() => {});
        return { ok: true, principal: { subject: credential.secret.slice(0, 4), permissions: [], details: {} } };
      },
    };
    const gate = createGate({ providers: [recording], timeout: 100, retry: false, breaker: false });
    cleanup.push(() => gate.close());
    const ask = (token: string) => gate.authenticate({ headers: { authorization: `Bearer ${token}` } });

    await ask('accepted-token');
    // A sibling request of a failed verification must stop: aborted at once, not at the deadline.
    behaviour = 'fail';
    await expect(ask('failing-token')).rejects.toMatchObject({ status: 503 });
    expect(signals[1]?.aborted).toBe(true);
    behaviour = 'hang';
    await expect(ask('hanging-token')).rejects.toMatchObject({ status: 503 });
    expect(signals[2]?.aborted).toBe(true);
    // Well past the first verification's deadline: a provider that answered is never aborted afterwards.
    await sleep(150);
    expect(signals[0]?.aborted).toBe(false);
  });

  it('the deadline covers retries: backoff never sleeps past it', async () => {
    const timeout = 300;
    const stamped: Array<{ at: number; event: GateEvent }> = [];
    const { app, pt } = await setup({
      timeout,
      breaker: false,
      // Ten retries of up to 200 ms each (full jitter: 1 s on average) outlast the 300 ms deadline.
      retry: { retries: 10, baseDelay: 200, maxDelay: 200 },
      onEvent: (event) => stamped.push({ at: performance.now(), event }),
    });
    pt.fault = { kind: 'status', status: 500 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    const retries = stamped.filter((s) => s.event.type === 'retry');
    expect(retries.length).toBeGreaterThan(0);
    expect(retries.length).toBeLessThan(10);
    const verify = stamped.find(
      (s): s is { at: number; event: Extract<GateEvent, { type: 'verify' }> } => s.event.type === 'verify',
    );
    if (verify === undefined) throw new Error('no verify event');
    expect(verify.event).toMatchObject({ outcome: 'failed', attempts: retries.length + 1 });
    // Where the gate's deadline started: the verify event says how long the verification took from there.
    const gateStarted = verify.at - verify.event.durationMs;
    for (const { at, event } of retries) {
      // A retry is only planned when its wait ends inside the deadline (slack for the listener's own clock read).
      expect(at + (event as { delayMs: number }).delayMs).toBeLessThan(gateStarted + timeout + 10);
    }
    // Every attempt but the last got its 500 from the provider; the deadline may end the last before it arrives.
    expect(pt.calls.checkToken).toBeGreaterThanOrEqual(retries.length);
    expect(pt.calls.checkToken).toBeLessThanOrEqual(retries.length + 1);
  });
});

describe('retries', () => {
  const fastRetry = { retries: 2, baseDelay: 1, maxDelay: 5 };

  it('connection errors are retried, then answered 503', async () => {
    const { app, pt, events } = await setup({ retry: fastRetry, breaker: false });
    pt.fault = { kind: 'reset' };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(pt.calls.checkToken).toBe(3);
    expect(ofType(events, 'retry').map((e) => e.attempt)).toEqual([1, 2]);
    expect(ofType(events, 'provider_error').map((e) => e.reason)).toEqual([
      'unreachable',
      'unreachable',
      'unreachable',
    ]);
    expect(ofType(events, 'verify')).toMatchObject([{ outcome: 'failed', attempts: 3 }]);
  });

  it('a connection refused (provider down) is a 503', async () => {
    const oon = await mockOnlineOrNot();
    const url = oon.url;
    await oon.close();
    const gate = createGate({ providers: [onlineOrNot({ baseUrl: url })], retry: fastRetry });
    cleanup.push(() => gate.close());
    const res = await request(gatedApp(gate).app).get('/me').set(bearer(READ_TOKEN));
    expect(res.status).toBe(503);
  });

  it.each([500, 502, 503, 504])('%i is retried and a later answer decides', async (status) => {
    const { app, pt, events } = await setup({ retry: fastRetry, breaker: false });
    pt.fault = { kind: 'status', status, every: 2 };
    expect((await request(app).get('/me').query(peer(0))).status).toBe(200); // call 1: normal
    const res = await request(app).get('/me').query(CONN); // call 2: fault, call 3: normal
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ provider: 'partoo', subject: CONN.user_id, stale: false });
    expect(pt.calls.checkToken).toBe(3);
    expect(ofType(events, 'provider_error')).toMatchObject([{ reason: 'status', status }]);
    expect(ofType(events, 'retry')).toHaveLength(1);
  });

  it('429 is retried after the Retry-After the provider asked for', async () => {
    const { app, pt, events } = await setup({ retry: fastRetry, breaker: false });
    pt.fault = { kind: 'status', status: 429, retryAfter: 1, every: 2 };
    expect((await request(app).get('/me').query(peer(0))).status).toBe(200);
    const started = performance.now();
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(ofType(events, 'retry')).toMatchObject([{ attempt: 1 }]);
    expect(ofType(events, 'retry')[0]?.delayMs).toBeGreaterThanOrEqual(1000);
  });

  it('a 429 pauses every other call at once, while the verification it answered waits to retry', async () => {
    const { app, pt } = await setup({ timeout: 3000, retry: { retries: 2, baseDelay: 1, maxDelay: 5 } });
    pt.fault = { kind: 'status', status: 429, retryAfter: 1 };
    const first = request(app)
      .get('/me')
      .query(CONN)
      .then((res) => res);
    await vi.waitFor(() => expect(pt.calls.checkToken).toBe(1));
    const others = await Promise.all([0, 1, 2].map((i) => request(app).get('/me').query(peer(i))));
    for (const res of others) {
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('1');
    }
    expect(pt.calls.checkToken).toBe(1);
    pt.fault = undefined;
    // The throttled verification itself retries once the second is over.
    expect((await first).status).toBe(200);
    expect(pt.calls.checkToken).toBe(2);
  });

  it('a 429 without Retry-After is retried only once the pause it caused is over', async () => {
    const { app, pt, events } = await setup({ timeout: 3000, retry: { retries: 1, baseDelay: 20, maxDelay: 50 } });
    pt.fault = { kind: 'status', status: 429 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(pt.calls.checkToken).toBe(2);
    expect(ofType(events, 'retry')).toHaveLength(1);
    expect(ofType(events, 'retry')[0]?.delayMs).toBeGreaterThanOrEqual(1000);
  });

  it('with breaker: false nothing is paused, and a 429 without Retry-After is retried after its backoff', async () => {
    const { app, pt, events, gate } = await setup({
      timeout: 3000,
      retry: { retries: 1, baseDelay: 20, maxDelay: 50 },
      breaker: false,
    });
    pt.fault = { kind: 'status', status: 429 };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect(pt.calls.checkToken).toBe(2);
    expect(ofType(events, 'retry')[0]?.delayMs).toBeLessThan(1000);
    expect(gate.stats().paused).toEqual({ onlineornot: 0, partoo: 0 });
  });

  it('a Retry-After beyond the deadline is not waited for: 503 with the Retry-After', async () => {
    const { app, pt, events } = await setup({ timeout: 1000, retry: fastRetry, breaker: false, maxRetryAfter: 60_000 });
    pt.fault = { kind: 'status', status: 429, retryAfter: 30 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('30');
    expect(pt.calls.checkToken).toBe(1);
    expect(ofType(events, 'retry')).toEqual([]);
  });

  it("a provider's Retry-After is capped before it reaches clients: the breaker's cooldown by default", async () => {
    const { app, pt } = await setup({ timeout: 1000, retry: false, breaker: { cooldown: 5000 } });
    pt.fault = { kind: 'status', status: 503, retryAfter: 86_400 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
  });

  it('a cap that is not whole seconds is never passed: maxRetryAfter 1500 sends at most 1, for an open breaker too', async () => {
    const { app, pt } = await setup({ timeout: 1000, retry: false, breaker: { threshold: 1, cooldown: 1500 } });
    pt.fault = { kind: 'status', status: 503, retryAfter: 7 };
    const first = await request(app).get('/me').query(CONN);
    expect(first.status).toBe(503);
    expect(first.headers['retry-after']).toBe('1');
    // The breaker opened for 1.5 s: its Retry-After is capped the same way.
    const held = await request(app).get('/me').query(peer(1));
    expect(held.status).toBe(503);
    expect(held.headers['retry-after']).toBe('1');
  });

  it("a provider's Retry-After: 0 reaches clients as 1, never 0 (an immediate retry by every client)", async () => {
    const { app, pt } = await setup({ timeout: 1000, retry: false, breaker: false });
    pt.fault = { kind: 'status', status: 503, retryAfter: 0 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
  });

  it('with a breaker cooldown of 0, a Retry-After is still capped at 1 s, not 0: a 429 still pauses calls', async () => {
    const { app, pt } = await setup({ timeout: 1000, retry: false, breaker: { cooldown: 0 } });
    pt.fault = { kind: 'status', status: 429, retryAfter: 30 };
    const first = await request(app).get('/me').query(CONN);
    expect(first.status).toBe(503);
    expect(first.headers['retry-after']).toBe('1');
    pt.fault = undefined;
    expect((await request(app).get('/me').query(peer(1))).status).toBe(503);
    expect(pt.calls.checkToken).toBe(1);
  });

  it.each([
    ['its Retry-After', 1],
    ['1 s when it names no Retry-After', undefined],
  ] as const)(
    'a 429 pauses calls to the provider for %s, says so, and never opens the breaker',
    async (_, retryAfter) => {
      const { app, pt, gate, events } = await setup({ timeout: 1000, retry: false, breaker: { threshold: 1 } });
      pt.fault = { kind: 'status', status: 429, ...(retryAfter === undefined ? {} : { retryAfter }) };
      const first = await request(app).get('/me').query(CONN);
      expect(first.status).toBe(503);
      expect(first.headers['retry-after']).toBe('1');
      pt.fault = undefined;
      // Paused: the next cold token is not sent upstream during the second the provider asked for.
      const paused = await request(app).get('/me').query(peer(1));
      expect(paused.status).toBe(503);
      expect(paused.headers['retry-after']).toBe('1');
      expect(pt.calls.checkToken).toBe(1);
      // The breaker reads closed; stats().paused shows the pause, the provider beside it unpaused.
      const { breakers, paused: pauses } = gate.stats();
      expect(breakers).toMatchObject({ partoo: 'closed' });
      expect(pauses.onlineornot).toBe(0);
      expect(pauses.partoo).toBeGreaterThan(0);
      expect(pauses.partoo).toBeLessThanOrEqual(1000);
      expect(ofType(events, 'breaker')).toEqual([]);
      await sleep(1050);
      expect(gate.stats().paused).toEqual({ onlineornot: 0, partoo: 0 });
      expect((await request(app).get('/me').query(peer(1))).status).toBe(200);
    },
  );

  it("stats().paused counts a 429's pause down in whole ms, and reset() lifts it", async () => {
    const { app, pt, gate } = await setup({ timeout: 1000, retry: false, maxRetryAfter: 5000 });
    expect(gate.stats().paused).toEqual({ onlineornot: 0, partoo: 0 });
    pt.fault = { kind: 'status', status: 429, retryAfter: 3 };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    const first = gate.stats().paused.partoo ?? 0;
    expect(Number.isInteger(first)).toBe(true);
    expect(first).toBeGreaterThan(1000);
    expect(first).toBeLessThanOrEqual(3000);
    await sleep(100);
    expect(gate.stats().paused.partoo).toBeLessThan(first);
    expect(gate.stats().breakers.partoo).toBe('closed');
    gate.reset();
    expect(gate.stats().paused).toEqual({ onlineornot: 0, partoo: 0 });
    pt.fault = undefined;
    expect((await request(app).get('/me').query(peer(1))).status).toBe(200);
  });

  it("a retry that waited out a 429's pause and then ran out of time is no provider fault: the breaker stays closed", async () => {
    const { app, pt, gate, events } = await setup({
      timeout: 2200,
      retry: { retries: 1, baseDelay: 1, maxDelay: 5 },
      breaker: { threshold: 1 },
    });
    pt.latency = 800;
    pt.fault = { kind: 'status', status: 429, retryAfter: 1, every: 2 };
    expect((await request(app).get('/me').query(peer(0))).status).toBe(200);
    // 429 at about 800 ms; the retry goes out at about 1800 ms, and the deadline passes before its answer (2600 ms).
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(ofType(events, 'provider_error').map((event) => event.reason)).toEqual(['status', 'timeout']);
    expect(gate.stats().breakers).toMatchObject({ partoo: 'closed' });
    expect(ofType(events, 'breaker')).toEqual([]);
  });

  it('Retry-After waits are taken while they end inside the deadline, and the first that would not is not', async () => {
    // Waits of 1 s under a 2.7 s deadline: two fit (ending near 1 s and 2 s, with 700 ms to spare for the
    // attempts), a third would end past 3 s.
    const timeout = 2700;
    const { app, pt, events } = await setup({
      timeout,
      retry: { retries: 10, baseDelay: 1, maxDelay: 5 },
      breaker: false,
    });
    pt.fault = { kind: 'status', status: 503, retryAfter: 1 };
    const started = performance.now();
    const res = await request(app).get('/me').query(CONN);
    const elapsed = performance.now() - started;
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(ofType(events, 'retry').map((e) => e.attempt)).toEqual([1, 2]);
    for (const retry of ofType(events, 'retry')) expect(retry.delayMs).toBeGreaterThanOrEqual(1000);
    expect(pt.calls.checkToken).toBe(3);
    // Answered as soon as the third wait did not fit: not slept into the deadline.
    expect(elapsed).toBeGreaterThanOrEqual(1900);
    expect(elapsed).toBeLessThan(timeout);
  });

  describe('a verification in its backoff', () => {
    /** A provider whose answer to each token follows its script (then accepts), recording when it is called. */
    function scripted(script: Record<string, Array<() => never>>) {
      const calls: Array<{ token: string; at: number }> = [];
      const started = performance.now();
      const provider: Provider<BearerCredential> = {
        name: 'scripted',
        cacheScope: 'scripted',
        extract: extractBearer,
        async verify(credential) {
          calls.push({ token: credential.secret, at: Math.round(performance.now() - started) });
          const next = script[credential.secret]?.shift();
          if (next !== undefined) return next();
          return { ok: true, principal: { subject: credential.secret, permissions: [], details: {} } };
        },
      };
      return { provider, calls };
    }
    const failing = (status: number, retryAfter?: number) => (): never => {
      throw new ProviderFailure('status', `answered ${status}`, { retryable: true, status, retryAfter });
    };
    const down = (): never => {
      throw new ProviderFailure('unreachable', 'down', { retryable: false });
    };
    const slowRetry = { retries: 2, baseDelay: 200, maxDelay: 200 };

    it("sends no retry during another verification's 429 pause: it waits the pause out", async () => {
      const { provider, calls } = scripted({ A: [failing(503)], B: [failing(429, 2)] });
      const gate = createGate({ providers: [provider], timeout: 4000, retry: slowRetry });
      cleanup.push(() => gate.close());
      const a = gate.authenticate({ headers: bearer('A') });
      await sleep(1);
      await gate.authenticate({ headers: bearer('B') });
      expect((await a).subject).toBe('A');
      // A's retry, due 200 ms in, waited until the two seconds B's provider asked for were over.
      const retryOfA = calls.filter((call) => call.token === 'A')[1];
      expect(retryOfA?.at).toBeGreaterThanOrEqual(1950);
    });

    it("a retry that waited out another verification's 429 pause and then ran out of time: the breaker stays closed", async () => {
      const hangs = (): never => new Promise<never>(() => {}) as never;
      const { provider } = scripted({ A: [failing(503), hangs], B: [failing(429, 2)] });
      const gate = createGate({ providers: [provider], timeout: 2600, retry: slowRetry, breaker: { threshold: 1 } });
      cleanup.push(() => gate.close());
      const a = gate.authenticate({ headers: bearer('A') }).catch((error: AuthError) => error);
      await sleep(1);
      await gate.authenticate({ headers: bearer('B') });
      // A's retry went out once B's two seconds were over, and hung past A's deadline.
      expect(await a).toMatchObject({ status: 503, code: 'provider_unavailable' });
      expect(gate.stats().breakers).toMatchObject({ scripted: 'closed' });
    });

    it('sends no retry once the breaker has opened: it ends with a 503', async () => {
      const { provider, calls } = scripted({ A: [failing(503), failing(503), failing(503)], B: [down] });
      const gate = createGate({
        providers: [provider],
        timeout: 4000,
        retry: slowRetry,
        breaker: { threshold: 1, cooldown: 3000 },
      });
      cleanup.push(() => gate.close());
      const a = gate.authenticate({ headers: bearer('A') }).catch((error: AuthError) => error);
      await sleep(1);
      await gate.authenticate({ headers: bearer('B') }).catch(() => {});
      expect(gate.stats().breakers).toMatchObject({ scripted: 'open' });
      expect(await a).toMatchObject({ status: 503, code: 'provider_unavailable' });
      expect(calls.map((call) => call.token)).toEqual(['A', 'B']);
    });

    it("a half-open breaker's probe that fails is not retried, and its 503 comes at once, not after a backoff", async () => {
      const { provider, calls } = scripted({ A: [down], B: [failing(503, 2)] });
      const gate = createGate({
        providers: [provider],
        timeout: 5000,
        retry: { retries: 2, baseDelay: 10, maxDelay: 10 },
        breaker: { threshold: 1, cooldown: 100 },
        maxRetryAfter: 3000,
      });
      cleanup.push(() => gate.close());
      await gate.authenticate({ headers: bearer('A') }).catch(() => {});
      expect(gate.stats().breakers).toMatchObject({ scripted: 'open' });
      await sleep(150);
      const started = performance.now();
      const probe = await gate.authenticate({ headers: bearer('B') }).catch((error: AuthError) => error);
      expect(probe).toMatchObject({ status: 503, code: 'provider_unavailable' });
      expect(performance.now() - started).toBeLessThan(1000);
      expect(calls.map((call) => call.token)).toEqual(['A', 'B']);
      expect(gate.stats().breakers).toMatchObject({ scripted: 'open' });
    });

    it("waits out a Retry-After no longer than maxRetryAfter, its own 429's too", async () => {
      const { provider, calls } = scripted({ A: [failing(429, 3)], B: [failing(503, 3)] });
      const gate = createGate({ providers: [provider], timeout: 5000, maxRetryAfter: 1000 });
      cleanup.push(() => gate.close());
      expect((await gate.authenticate({ headers: bearer('A') })).subject).toBe('A');
      expect((await gate.authenticate({ headers: bearer('B') })).subject).toBe('B');
      const [a1, a2, b1, b2] = calls.map((call) => call.at) as [number, number, number, number];
      expect(a2 - a1).toBeLessThan(1500);
      expect(b2 - b1).toBeLessThan(1500);
    });
  });

  it('retry: false makes one attempt', async () => {
    const { app, pt } = await setup({ retry: false, breaker: false });
    pt.fault = { kind: 'reset' };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect(pt.calls.checkToken).toBe(1);
  });

  describe('answers that decide the token are never retried', () => {
    const manyRetries = { retries: 5, baseDelay: 1, maxDelay: 1 };

    it('OnlineOrNot 401 (unknown token) and an inactive token: one call each, 401', async () => {
      const { app, oon } = await setup({ retry: manyRetries });
      const unknown = await request(app).get('/me').set(bearer('SECRETunknownToken'));
      expect(unknown.status).toBe(401);
      expect(unknown.headers['www-authenticate']).toMatch(/^Bearer realm="api", error="invalid_token"/);
      const inactive = await request(app).get('/me').set(bearer(OFF_TOKEN));
      expect(inactive.status).toBe(401);
      expect(oon.calls.verify).toBe(2);
    });

    it.each([
      ['404 unknown token', { user_id: CONN.user_id, token: 'SECRETnotThisOne' }, undefined],
      ['403 key may not check the user', CONN, 403],
      ['400 error answer', CONN, 400],
    ] as const)('Partoo %s: one call, 401', async (_name, query, status) => {
      const { app, pt } = await setup({ retry: manyRetries });
      if (status !== undefined) {
        pt.fault = { kind: 'status', status, body: JSON.stringify({ errors: { json: 'no' } }) };
      }
      const res = await request(app).get('/me').query(query);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
      expect(pt.calls.checkToken).toBe(1);
    });

    it("Partoo 401 (the server's key refused): one call, 500 without the key", async () => {
      const pt = await mockPartoo({ apiKey: API_KEY });
      cleanup.push(() => pt.close());
      const gate = createGate({
        providers: [partoo({ apiKey: 'SECRETwrongServerKey', baseUrl: pt.url })],
        retry: manyRetries,
      });
      cleanup.push(() => gate.close());
      const res = await request(gatedApp(gate).app).get('/me').query(CONN);
      expect(res.status).toBe(500);
      expect(res.text).not.toContain('SECRETwrongServerKey');
      expect(pt.calls.checkToken).toBe(1);
    });

    it('an undocumented 4xx is neither a decision nor retried: one call, 503', async () => {
      const { app, pt } = await setup({ retry: manyRetries });
      pt.fault = { kind: 'status', status: 409 };
      expect((await request(app).get('/me').query(CONN)).status).toBe(503);
      expect(pt.calls.checkToken).toBe(1);
    });
  });
});

describe('circuit breaker', () => {
  // A cooldown long enough that the requests meant to find the breaker open always come inside it.
  const breaker = { threshold: 3, cooldown: 1000 };

  /** Opens the partoo breaker with `threshold` failing requests. */
  async function openBreaker(ctx: Awaited<ReturnType<typeof setup>>) {
    ctx.pt.fault = { kind: 'status', status: 500 };
    for (let i = 0; i < breaker.threshold; i++) {
      const res = await request(ctx.app).get('/me').query(CONN);
      expect(res.status).toBe(503);
      // The failure that opens the breaker tells its client the cooldown, as the requests held back after it are told.
      expect(res.headers['retry-after']).toBe(i === breaker.threshold - 1 ? '1' : undefined);
    }
    expect(ctx.gate.stats().breakers.partoo).toBe('open');
  }
  const breakerStates = (events: GateEvent[]) => ofType(events, 'breaker').map((e) => `${e.provider}:${e.state}`);

  it.each([
    ['it opened (a 500)', { kind: 'status', status: 500 } as const, ['5', '5', '5']],
    ['a 429 paused calls', { kind: 'status', status: 429, retryAfter: 2 } as const, ['2', '2', '2']],
  ])(
    'holds back verifications that waited for a slot while %s: they never reach the provider',
    async (_, fault, retryAfter) => {
      const expirationDate = new Date(Date.now() + 3_600_000);
      const pt = await mockPartoo({
        apiKey: API_KEY,
        tokens: connections.map((c) => ({ userId: c.user_id, token: c.token, expirationDate })),
      });
      cleanup.push(() => pt.close());
      pt.latency = 200;
      pt.fault = fault;
      const gate = createGate({
        providers: [partoo({ apiKey: API_KEY, baseUrl: pt.url, connections: 1 })],
        retry: false,
        breaker: { threshold: 1, cooldown: 5000 },
        timeout: 2000,
      });
      cleanup.push(() => gate.close());
      const { app } = gatedApp(gate);
      const started = performance.now();
      const answers = await Promise.all([0, 1, 2].map((i) => request(app).get('/me').query(peer(i))));
      expect(answers.map((res) => res.status)).toEqual([503, 503, 503]);
      // The first call's answer held back the two waiting behind it: answered at once, with its Retry-After.
      expect(pt.calls.checkToken).toBe(1);
      // In any order: which request took the one connection first is not fixed.
      expect(answers.map((res) => res.headers['retry-after']).sort()).toEqual([...retryAfter].sort());
      expect(performance.now() - started).toBeLessThan(1500);
      expect(gate.stats()).toMatchObject({ heldBack: 2 });
    },
  );

  it('closed -> open (fails fast with Retry-After) -> half-open -> closed', async () => {
    const ctx = await setup({ retry: false, breaker });
    const { app, pt, gate, events } = ctx;
    expect(gate.stats().breakers).toEqual({ onlineornot: 'closed', partoo: 'closed' });
    await openBreaker(ctx);
    expect(breakerStates(events)).toEqual(['partoo:open']);
    expect(pt.calls.checkToken).toBe(3);

    const fast = await request(app).get('/me').query(CONN);
    expect(fast.status).toBe(503);
    expect(fast.headers['retry-after']).toBe('1');
    expect(pt.calls.checkToken).toBe(3);
    // Not sent, and told so: the event and the count say the breaker held it back.
    const heldBack = ofType(events, 'held_back');
    expect(heldBack).toEqual([
      { type: 'held_back', provider: 'partoo', reason: 'open', retryAfterMs: expect.any(Number) },
    ]);
    expect(heldBack[0]?.retryAfterMs).toBeGreaterThan(0);
    expect(heldBack[0]?.retryAfterMs).toBeLessThanOrEqual(breaker.cooldown);
    expect(gate.stats()).toMatchObject({ heldBack: 1, errors: 3 });
    // The breaker is per provider: OnlineOrNot tokens still work.
    expect((await request(app).get('/me').set(bearer(READ_TOKEN))).status).toBe(200);

    pt.fault = undefined;
    await sleep(breaker.cooldown + 100);
    const probe = await request(app).get('/me').query(CONN);
    expect(probe.status).toBe(200);
    expect(pt.calls.checkToken).toBe(4);
    expect(breakerStates(events)).toEqual(['partoo:open', 'partoo:half-open', 'partoo:closed']);
    expect(gate.stats().breakers.partoo).toBe('closed');
  });

  it('counts failures in a row only: a verdict between them starts the count again', async () => {
    const { app, pt, gate } = await setup({ retry: false, breaker });
    const failTwice = async () => {
      pt.fault = { kind: 'status', status: 500 };
      for (const i of [0, 1]) expect((await request(app).get('/me').query(peer(i))).status).toBe(503);
      pt.fault = undefined;
    };
    await failTwice();
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await failTwice();
    // Four failures, never three in a row: the breaker is closed and the next credential is asked about.
    expect(gate.stats().breakers.partoo).toBe('closed');
    expect((await request(app).get('/me').query(peer(2))).status).toBe(200);
    expect(pt.calls.checkToken).toBe(6);
  });

  it("a held-back verification's event names what held it: the breaker open, or a 429's pause", async () => {
    const ctx = await setup({ retry: false, breaker: { threshold: 1, cooldown: 300 } });
    const { app, pt, events } = ctx;
    pt.fault = { kind: 'status', status: 500 };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    // The probe after the cooldown gets a 429: calls pause for its Retry-After (at most maxRetryAfter, here 1 s),
    // whatever the breaker's state.
    await sleep(400);
    pt.fault = { kind: 'status', status: 429, retryAfter: 5 };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    const paused = await request(app).get('/me').query(CONN);
    expect(paused.status).toBe(503);
    expect(paused.headers['retry-after']).toBe('1');
    expect(ofType(events, 'held_back').map(({ reason, retryAfterMs }) => ({ reason, retryAfterMs }))).toEqual([
      { reason: 'open', retryAfterMs: expect.any(Number) },
      { reason: 'paused', retryAfterMs: expect.any(Number) },
    ]);
    const [open, pause] = ofType(events, 'held_back');
    expect(Number.isInteger(open?.retryAfterMs)).toBe(true);
    expect(pause?.retryAfterMs).toBeGreaterThan(500);
    expect(pause?.retryAfterMs).toBeLessThanOrEqual(1000);
  });

  it('half-open -> open again when the probe fails', async () => {
    const ctx = await setup({ retry: false, breaker });
    const { app, pt, gate, events } = ctx;
    await openBreaker(ctx);
    await sleep(breaker.cooldown + 100);
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect(pt.calls.checkToken).toBe(4);
    expect(breakerStates(events)).toEqual(['partoo:open', 'partoo:half-open', 'partoo:open']);
    expect(gate.stats().breakers.partoo).toBe('open');
    // Open for a whole new cooldown: fails fast without asking the provider.
    const fast = await request(app).get('/me').query(CONN);
    expect(fast.status).toBe(503);
    expect(fast.headers['retry-after']).toBe('1');
    expect(pt.calls.checkToken).toBe(4);
  });

  it('half-open lets exactly one probe through', async () => {
    const ctx = await setup({ retry: false, breaker });
    const { app, pt, gate } = ctx;
    await openBreaker(ctx);
    pt.fault = undefined;
    pt.latency = 500; // keeps the probe in flight while the others arrive, even on a busy machine
    await sleep(breaker.cooldown + 100);
    const responses = await Promise.all(connections.map((c) => request(app).get('/me').query(c)));
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 503, 503, 503, 503, 503]);
    for (const res of responses.filter((r) => r.status === 503)) expect(res.headers['retry-after']).toBeDefined();
    expect(pt.calls.checkToken).toBe(3 + 1);
    expect(gate.stats().breakers.partoo).toBe('closed');
    pt.latency = 0;
    const after = await Promise.all(connections.map((c) => request(app).get('/me').query(c)));
    expect(after.map((r) => r.status)).toEqual(connections.map(() => 200));
  });

  it('half-open: a call admitted before the probe that ends without a verdict (a 400) leaves the probe alone', async () => {
    // Each token's call waits for its release, then answers as told: the test decides when each ends.
    const calls: string[] = [];
    const releases = new Map<string, () => void>();
    const answers: Record<string, () => Verdict> = {
      older: () => {
        throw new ProviderFailure('status', 'answered 400', { status: 400 });
      },
      failing: () => {
        throw new ProviderFailure('unreachable', 'down', { retryable: false });
      },
      probe: () => ({ ok: true, principal: { subject: 'probe', permissions: [], details: {} } }),
      later: () => ({ ok: true, principal: { subject: 'later', permissions: [], details: {} } }),
    };
    const provider: Provider<BearerCredential> = {
      name: 'held',
      cacheScope: 'held',
      extract: extractBearer,
      async verify(credential) {
        calls.push(credential.secret);
        await new Promise<void>((resolve) => releases.set(credential.secret, resolve));
        return (answers[credential.secret] as () => Verdict)();
      },
    };
    const gate = createGate({ providers: [provider], retry: false, breaker: { threshold: 1, cooldown: 100 } });
    cleanup.push(() => gate.close());
    const ask = (token: string) => gate.authenticate({ headers: bearer(token) }).catch((error: AuthError) => error);
    const called = (token: string) => vi.waitFor(() => expect(releases.has(token)).toBe(true));

    const older = ask('older'); // admitted while the breaker is closed
    await called('older');
    const failing = ask('failing');
    await called('failing');
    releases.get('failing')?.();
    await failing;
    expect(gate.stats().breakers).toMatchObject({ held: 'open' });
    await sleep(150);
    const probe = ask('probe'); // the cooldown is over: the one probe
    await called('probe');
    releases.get('older')?.();
    expect(await older).toMatchObject({ status: 503 });
    // The probe is still under way: the next call is held back, not sent as a second probe.
    expect(await ask('later')).toMatchObject({ status: 503, code: 'provider_unavailable' });
    expect(calls).toEqual(['older', 'failing', 'probe']);
    releases.get('probe')?.();
    expect((await probe) as AuthContext).toMatchObject({ subject: 'probe' });
    expect(gate.stats().breakers).toMatchObject({ held: 'closed' });
  });

  it('rejections are answers: they never open the breaker', async () => {
    const { app, oon, gate, events } = await setup({ retry: false, breaker: { threshold: 2, cooldown: 10_000 } });
    for (let i = 0; i < 5; i++) {
      expect(
        (
          await request(app)
            .get('/me')
            .set(bearer(`SECRETunknown${i}`))
        ).status,
      ).toBe(401);
    }
    expect(oon.calls.verify).toBe(5);
    expect(gate.stats().breakers.onlineornot).toBe('closed');
    expect(ofType(events, 'breaker')).toEqual([]);
  });

  it.each([
    ['a 422 (JSON)', { kind: 'status', status: 422 } as const],
    ['a 413 (a proxy, text)', { kind: 'status', status: 413, body: 'Request Entity Too Large' } as const],
  ])('%s refuses one request, not the provider: 503, and it never opens the breaker', async (_, fault) => {
    const { app, pt, gate, events } = await setup({ retry: false, breaker: { threshold: 2, cooldown: 10_000 } });
    pt.fault = fault;
    for (let i = 0; i < 4; i++) expect((await request(app).get('/me').query(peer(i))).status).toBe(503);
    expect(pt.calls.checkToken).toBe(4);
    expect(gate.stats().breakers.partoo).toBe('closed');
    expect(ofType(events, 'breaker')).toEqual([]);
    pt.fault = undefined;
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
  });

  it.each([
    ['a 408, the provider timing out', { kind: 'status', status: 408 } as const],
    ['a 405 for every request, an endpoint gone', { kind: 'status', status: 405 } as const],
    ['a 404 page from a proxy for every request', { kind: 'status', status: 404, body: '<h1>Not Found</h1>' } as const],
  ])('%s counts toward the breaker', async (_, fault) => {
    const { app, pt, gate } = await setup({ retry: false, breaker: { threshold: 2, cooldown: 10_000 } });
    pt.fault = fault;
    for (let i = 0; i < 2; i++) expect((await request(app).get('/me').query(peer(i))).status).toBe(503);
    expect(gate.stats().breakers.partoo).toBe('open');
  });

  it('half-open: a probe refused with a 4xx leaves it half-open, and the next call probes again', async () => {
    const ctx = await setup({ retry: false, breaker });
    const { app, pt, gate, events } = ctx;
    await openBreaker(ctx);
    await sleep(breaker.cooldown + 100);
    pt.fault = { kind: 'status', status: 400, body: 'Bad Request' };
    expect((await request(app).get('/me').query(peer(0))).status).toBe(503);
    expect(gate.stats().breakers.partoo).toBe('half-open');
    pt.fault = undefined;
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    expect(pt.calls.checkToken).toBe(breaker.threshold + 2);
    expect(breakerStates(events)).toEqual(['partoo:open', 'partoo:half-open', 'partoo:closed']);
  });

  it('breaker: false never fails fast', async () => {
    const { app, pt, gate } = await setup({ retry: false, breaker: false });
    pt.fault = { kind: 'status', status: 500 };
    for (let i = 0; i < 8; i++) expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect(pt.calls.checkToken).toBe(8);
    expect(gate.stats().breakers.partoo).toBe('closed');
  });
});

describe('staleIfError', () => {
  const base = { retry: false, breaker: false } as const;

  /** `CONN` is answered 200 from its stale copy, and the provider is not asked. */
  async function expectStaleUnsent(app: Parameters<typeof request>[0], pt: { calls: { checkToken: number } }) {
    const calls = pt.calls.checkToken;
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(200);
    expect(res.body.stale).toBe(true);
    expect(pt.calls.checkToken).toBe(calls);
  }

  it('serves an expired positive answer, flagged stale, only while the provider fails', async () => {
    const { app, pt, gate, events, seen } = await setup({ ...base, cache: { ttl: 100, staleIfError: 5000 } });
    const first = await request(app).get('/me').query(CONN);
    expect(first.status).toBe(200);
    expect(first.body.stale).toBe(false);
    await sleep(150);

    pt.fault = { kind: 'reset' };
    const stale = await request(app).get('/me').query(CONN);
    expect(stale.status).toBe(200);
    expect(stale.body).toMatchObject({ subject: CONN.user_id, stale: true });
    expect(seen.at(-1)?.stale).toBe(true);
    expect(ofType(events, 'stale')).toEqual([{ type: 'stale', provider: 'partoo' }]);
    expect(gate.stats().stale).toBe(1);
    expect(pt.calls.checkToken).toBe(2);

    // A healthy provider is asked again: stale answers are for outages only.
    pt.fault = undefined;
    const fresh = await request(app).get('/me').query(CONN);
    expect(fresh.status).toBe(200);
    expect(fresh.body.stale).toBe(false);
    expect(pt.calls.checkToken).toBe(3);
  });

  it.each(['garbage', 'wrong-shape'] as const)(
    'a provider answering %s is failing too: the copy is served flagged stale, never as a fresh answer',
    async (kind) => {
      const { app, pt, gate, events } = await setup({ ...base, cache: { ttl: 100, staleIfError: 5000 } });
      expect((await request(app).get('/me').query(CONN)).status).toBe(200);
      await sleep(150);
      pt.fault = { kind };
      const res = await request(app).get('/me').query(CONN);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ subject: CONN.user_id, stale: true });
      expect(ofType(events, 'stale')).toEqual([{ type: 'stale', provider: 'partoo' }]);
      expect(gate.stats().stale).toBe(1);
      expect(pt.calls.checkToken).toBe(2);
    },
  );

  it('is not served once its window has ended, even to a request that began inside it', async () => {
    const { app, pt, events } = await setup({ ...base, timeout: 1200, cache: { ttl: 100, staleIfError: 300 } });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    // Asked inside the window (it ends 400 ms after the answer); the provider fails only at the deadline, past it.
    pt.fault = { kind: 'hang' };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(ofType(events, 'stale')).toEqual([]);
  });

  it('is not served for a credential invalidated while its verification was under way', async () => {
    const { app, pt, gate } = await setup({ ...base, timeout: 800, cache: { ttl: 100, staleIfError: 60_000 } });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    pt.fault = { kind: 'hang' };
    const pending = request(app)
      .get('/me')
      .query(CONN)
      .then((res) => res);
    await sleep(200);
    expect(gate.invalidate({ headers: {}, query: CONN })).toBe(true);
    expect((await pending).status).toBe(503);
  });

  it('is off by default: an expired answer is not served when the provider fails', async () => {
    const { app, pt } = await setup({ ...base, cache: { ttl: 100 } });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    pt.fault = { kind: 'reset' };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
  });

  it('never serves a token past its own expiresAt', async () => {
    const expiresAt = new Date(Date.now() + 1500);
    const { app, pt } = await setup({ ...base, cache: { ttl: 100, staleIfError: 60_000 } }, expiresAt);
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(200);
    pt.fault = { kind: 'reset' };
    const stale = await request(app).get('/me').query(CONN);
    expect(stale.status).toBe(200);
    expect(stale.body.stale).toBe(true);
    await sleep(expiresAt.getTime() - Date.now() + 50);
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
  });

  it.each([100, 0])('never revives a rejected token (negativeTtl %i)', async (negativeTtl) => {
    const { app, pt } = await setup({ ...base, cache: { ttl: 100, negativeTtl, staleIfError: 60_000 } });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    pt.removeToken(CONN.user_id, CONN.token);
    await sleep(150);
    expect((await request(app).get('/me').query(CONN)).status).toBe(401);
    await sleep(150); // the rejection itself has expired too
    pt.fault = { kind: 'reset' };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
  });

  it('is served while the breaker is open, without asking the provider', async () => {
    const { app, pt, gate } = await setup({
      retry: false,
      breaker: { threshold: 1, cooldown: 10_000 },
      cache: { ttl: 100, staleIfError: 60_000 },
    });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    pt.fault = { kind: 'status', status: 500 };
    expect((await request(app).get('/me').query(CONN)).body.stale).toBe(true);
    expect(gate.stats().breakers.partoo).toBe('open');
    await expectStaleUnsent(app, pt);
    // Stale service never lets a credential the cache does not know through.
    expect((await request(app).get('/me').query(peer(0))).status).toBe(503);
  });

  it('is not served while the provider throttles (a 429, then its pause): a token revoked meanwhile stays out', async () => {
    const { app, pt, gate, events } = await setup({ retry: false, cache: { ttl: 100, staleIfError: 60_000 } });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    expect((await request(app).get('/me').query(peer(0))).status).toBe(200);
    pt.removeToken(CONN.user_id, CONN.token);
    await sleep(150);
    pt.fault = { kind: 'status', status: 429, retryAfter: 1 };
    const throttled = await request(app).get('/me').query(CONN);
    expect(throttled.status).toBe(503);
    expect(throttled.headers['retry-after']).toBe('1');
    // Another token with a copy at hand, during the pause: held back, not sent, and not served stale either.
    const calls = pt.calls.checkToken;
    const paused = await request(app).get('/me').query(peer(0));
    expect(paused.status).toBe(503);
    expect(pt.calls.checkToken).toBe(calls);
    expect(ofType(events, 'held_back').map((event) => event.reason)).toEqual(['paused']);
    expect(ofType(events, 'stale')).toEqual([]);
    expect(gate.stats().breakers.partoo).toBe('closed');
    // Past the pause, a provider failing is an outage again: the copy of the token still valid is served.
    await sleep(1100);
    pt.fault = { kind: 'status', status: 500 };
    expect((await request(app).get('/me').query(peer(0))).body.stale).toBe(true);
    pt.fault = undefined;
    expect((await request(app).get('/me').query(CONN)).status).toBe(401);
  });

  it('is not served when a retry that waited out a 429 then runs out of time', async () => {
    const { app, pt, gate } = await setup({
      timeout: 1500,
      retry: { retries: 2, baseDelay: 10, maxDelay: 10 },
      cache: { ttl: 100, staleIfError: 60_000 },
      // The retry, sent once the 429's pause is over, never comes back.
      onEvent: (event) => {
        if (event.type === 'retry') pt.fault = { kind: 'hang' };
      },
    });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    pt.fault = { kind: 'status', status: 429, retryAfter: 1 };
    const res = await request(app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(pt.calls.checkToken).toBe(3);
    expect(gate.stats()).toMatchObject({ stale: 0, breakers: { partoo: 'closed' } });
  });

  it('is served while the breaker is open, even when a 429 from a call already under way paused calls too', async () => {
    const { app, pt, gate, events } = await setup({
      retry: false,
      breaker: { threshold: 1, cooldown: 10_000 },
      cache: { ttl: 100, staleIfError: 60_000 },
    });
    expect((await request(app).get('/me').query(CONN)).status).toBe(200);
    await sleep(150);
    // Two verifications under way at once: the first's 503 opens the breaker, the second's 429 pauses calls.
    pt.latency = 300;
    pt.fault = { kind: 'status', status: 503 };
    const failing = request(app)
      .get('/me')
      .query(peer(0))
      .then((res) => res);
    await vi.waitFor(() => expect(pt.calls.checkToken).toBe(2));
    pt.fault = { kind: 'status', status: 429, retryAfter: 5 };
    const throttled = request(app)
      .get('/me')
      .query(peer(1))
      .then((res) => res);
    expect((await failing).status).toBe(503);
    expect((await throttled).status).toBe(503);
    expect(gate.stats().breakers.partoo).toBe('open');
    // The provider failed: the breaker is open, and the copy at hand is served, not sent.
    await expectStaleUnsent(app, pt);
    expect(ofType(events, 'provider_error').map((event) => event.status)).toEqual([503, 429]);
    expect(ofType(events, 'held_back').map((event) => event.reason)).toEqual(['paused']);
    expect(ofType(events, 'stale')).toHaveLength(1);
  });
});

describe('events', () => {
  it('report cache, verify, retry, provider errors, breaker, held back and stale, and never carry a secret', async () => {
    // The events as an app logs them: one pino line each, collected here instead of written to stdout.
    const logLines: string[] = [];
    const logger = pino({ base: null }, { write: (line: string) => void logLines.push(line) });
    const events: GateEvent[] = [];
    const ctx = await setup({
      timeout: 1000,
      retry: { retries: 1, baseDelay: 1, maxDelay: 1 },
      // Long enough that the request after the opening one always finds the breaker open.
      breaker: { threshold: 2, cooldown: 1000 },
      cache: { ttl: 100, staleIfError: 60_000 },
      onEvent: (event) => {
        events.push(event);
        logger.info({ tokengate: event }, 'tokengate event');
      },
    });
    const { app, oon, pt } = ctx;
    // cache miss + coalesced + verify accepted, then a hit
    oon.latency = 100; // keeps the first upstream call in flight while the others join it
    await Promise.all([1, 2, 3].map(() => request(app).get('/checks').set(bearer(READ_TOKEN))));
    oon.latency = 0;
    await request(app).get('/checks').set(bearer(READ_TOKEN));
    // verify rejected, cached rejection hit, 403 from a guard
    await request(app).get('/me').set(bearer('SECRETunknownToken0'));
    await request(app).get('/me').set(bearer('SECRETunknownToken0'));
    await request(app).get('/checks').set(bearer(BARE_TOKEN));
    // Partoo: accepted, then failing: retries, provider errors, breaker open, stale
    await request(app).get('/me').query(CONN);
    await sleep(150);
    pt.fault = { kind: 'status', status: 503 };
    await request(app).get('/me').query(CONN);
    await request(app).get('/me').query(peer(0));
    await request(app).get('/me').query(peer(1));
    pt.fault = undefined;
    await sleep(1100);
    await request(app).get('/me').query(peer(2)); // half-open probe, closed
    oon.fault = { kind: 'garbage' };
    await request(app).get('/me').set(bearer('SECRETunknownToken1'));

    const kinds = new Set(events.map((e) => e.type));
    expect([...kinds].sort()).toEqual(['breaker', 'cache', 'held_back', 'provider_error', 'retry', 'stale', 'verify']);
    expect(new Set(ofType(events, 'cache').map((e) => e.result))).toEqual(new Set(['hit', 'miss', 'coalesced']));
    expect(new Set(ofType(events, 'verify').map((e) => e.outcome))).toEqual(
      new Set(['accepted', 'rejected', 'failed']),
    );
    expect(ofType(events, 'breaker').map((e) => e.state)).toEqual(['open', 'half-open', 'closed']);
    for (const event of events) {
      expect(['onlineornot', 'partoo']).toContain(event.provider);
      if ('durationMs' in event) expect(event.durationMs).toBeGreaterThanOrEqual(0);
      // Every text an event carries comes from a fixed vocabulary: no token, key or hash of one fits in it,
      // whatever its encoding.
      for (const [field, value] of Object.entries(event)) {
        if (typeof value === 'number') continue;
        expect(EVENT_VOCABULARY[field] ?? [], `${field} of ${JSON.stringify(event)}`).toContain(value);
      }
    }

    // What lands in the app's log: every event, and none of the secrets the requests carried.
    expect(logLines).toHaveLength(events.length);
    expect(logLines.map((line) => (JSON.parse(line) as { tokengate: GateEvent }).tokengate)).toEqual(events);
    const log = logLines.join('');
    const secrets = [
      READ_TOKEN,
      BARE_TOKEN,
      'SECRETunknownToken0',
      'SECRETunknownToken1',
      API_KEY,
      ...[CONN, ...connections].flatMap((c) => [c.token, c.user_id]),
    ];
    for (const secret of secrets) expect(log).not.toContain(secret);
  });

  it('a throwing listener does not break authentication', async () => {
    const { app } = await setup({
      onEvent: () => {
        throw new Error('logger down');
      },
    });
    expect((await request(app).get('/checks').set(bearer(READ_TOKEN))).status).toBe(200);
    expect((await request(app).get('/checks').set(bearer(READ_TOKEN))).status).toBe(200);
  });

  it('an async listener that rejects causes no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { app } = await setup({
        onEvent: async () => {
          throw new Error('log shipping failed');
        },
      });
      expect((await request(app).get('/checks').set(bearer(READ_TOKEN))).status).toBe(200);
      expect((await request(app).get('/me').set(bearer('SECRETunknownToken'))).status).toBe(401);
      await sleep(50); // unhandled rejections are reported after the microtask queue drains
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it("a listener's rejecting promise of another realm causes no unhandled rejection", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { app } = await setup({
        onEvent: () => runInNewContext('Promise.reject(new Error("log shipping failed"))'),
      });
      expect(runInNewContext('Promise.resolve(1)') instanceof Promise).toBe(false);
      expect((await request(app).get('/checks').set(bearer(READ_TOKEN))).status).toBe(200);
      await sleep(50); // unhandled rejections are reported after the microtask queue drains
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('503 bodies and headers carry no token', async () => {
    const { app, pt, oon } = await setup({ retry: false });
    pt.fault = { kind: 'reset' };
    oon.fault = { kind: 'garbage' };
    const responses = [
      await request(app).get('/me').query(CONN),
      await request(app).get('/me').set(bearer(READ_TOKEN)),
    ];
    for (const res of responses) {
      expect(res.status).toBe(503);
      const visible = res.text + JSON.stringify(res.headers);
      for (const secret of [CONN.token, READ_TOKEN, API_KEY]) expect(visible).not.toContain(secret);
    }
  });
});

describe("a provider's URL wrong, or its server down: the 503's cause says which request failed", () => {
  /** The message of the cause of `gate`'s answer to `req`, a 503. */
  async function causeOf(gate: Gate, req: Parameters<Gate['authenticate']>[0]): Promise<string> {
    cleanup.push(() => gate.close());
    const error = (await gate.authenticate(req).catch((e: unknown) => e)) as AuthError;
    expect(error.status).toBe(503);
    return (error.cause as Error).message;
  }

  it('names the API path asked and the origin that did not answer, never the base URL path or query (a key may sit there)', async () => {
    const oon = await mockOnlineOrNot({ tokens: { [READ_TOKEN]: { id: 'tok_read' } } });
    const pt = await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: CONN.user_id, token: CONN.token }] });
    cleanup.push(
      () => oon.close(),
      () => pt.close(),
    );
    const oonAt = (baseUrl: string) => createGate({ providers: [onlineOrNot({ baseUrl })], retry: false });
    const withToken = { headers: bearer(READ_TOKEN) };
    // A base URL with a key in its path (a proxy's), and the API's own /v1 doubled.
    const cause = await causeOf(oonAt(`${oon.url}/proxy/SECRETpathKey/v1`), withToken);
    expect(cause).toBe('onlineornot GET /v1/tokens/verify answered 404 (check baseUrl)');
    // The API root without its /v2.
    const root = pt.url.replace(/\/v2$/, '');
    const partooAt = createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: root })], retry: false });
    const partooCause = await causeOf(partooAt, { headers: {}, query: CONN });
    expect(partooCause).toMatch(/^partoo GET \/connection\/check_token answered 404 .*\(check baseUrl\)$/);
    expect(partooCause).not.toContain(CONN.token);
    // A port nothing listens on: closed as soon as it was found free.
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    expect(await causeOf(oonAt(`http://127.0.0.1:${closed}/SECRETpathKey`), withToken)).toBe(
      `onlineornot at http://127.0.0.1:${closed} is unreachable (ECONNREFUSED)`,
    );
  });

  it('shows no key a base URL path carries where the provider is logged; another path is another cache scope', async () => {
    const key = 'SECRETpathKey0123';
    const providers = [
      onlineOrNot({ baseUrl: `https://proxy.example.com/${key}/v1` }),
      partoo({ apiKey: API_KEY, baseUrl: `https://proxy.example.com/${key}/v2` }),
    ];
    const others = [
      onlineOrNot({ baseUrl: 'https://proxy.example.com/other/v1' }),
      partoo({ apiKey: API_KEY, baseUrl: 'https://proxy.example.com/other/v2' }),
    ];
    for (const provider of [...providers, ...others]) cleanup.push(async () => provider.close?.());
    for (const [at, provider] of providers.entries()) {
      expect(inspect(provider, { depth: null })).not.toContain(key);
      expect(JSON.stringify(provider)).not.toContain(key);
      expect(provider.cacheScope).not.toBe(others[at]?.cacheScope);
    }
  });

  it("says to check baseUrl when the 404 is a web server's own page, not JSON", async () => {
    const site = createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>');
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => site.close(() => resolve())));
    const url = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
    const oon = createGate({ providers: [onlineOrNot({ baseUrl: url })], retry: false });
    expect(await causeOf(oon, { headers: bearer(READ_TOKEN) })).toBe(
      'onlineornot GET /v1/tokens/verify answered 404 without a JSON content type (check baseUrl)',
    );
    const pt = createGate({ providers: [partoo({ apiKey: API_KEY, baseUrl: url })], retry: false });
    expect(await causeOf(pt, { headers: {}, query: CONN })).toBe(
      'partoo GET /connection/check_token answered 404 without a JSON content type (check baseUrl)',
    );
  });
});

describe('what a failure tells the logs', () => {
  /** An Express app whose error handler logs each error as `util.inspect` shows it, as loggers print errors. */
  function loggingApp(gate: Gate) {
    const logged: string[] = [];
    const app = express();
    app.get('/me', authenticate(gate), (req, res) => void res.json(req.auth ?? null));
    app.use((error: AuthError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      logged.push(inspect(error, { depth: 5 }));
      res
        .status(error.status)
        .set(error.headers)
        .json({ error: error.code, message: error.expose ? error.message : undefined });
    });
    return { app, logged };
  }

  it("a 503's cause is the provider's failure: a custom provider's error reaches the log by its class and where it was thrown", async () => {
    const events: GateEvent[] = [];
    const mine: Provider<BearerCredential> = {
      name: 'mine',
      cacheScope: 'mine',
      extract: extractBearer,
      async verify() {
        // As an HTTP client's error names the URL it asked, with a token in its query, on a line of its own that
        // looks like a stack frame; and an error whose `name` was set from what it was asked.
        const error = new TypeError(`request failed\n    at http://127.0.0.1:9/check?token=${READ_TOKEN}`);
        error.name = `TypeError for ${READ_TOKEN}`;
        throw error;
      },
    };
    const gate = createGate({ providers: [mine], retry: false, onEvent: (event) => events.push(event) });
    cleanup.push(() => gate.close());
    const { app, logged } = loggingApp(gate);

    const res = await request(app).get('/me').set(bearer(READ_TOKEN));
    expect(res.status).toBe(503);
    expect(res.text).not.toContain('127.0.0.1:9');
    expect(logged.join('')).not.toContain('127.0.0.1:9');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('Token provider mine is unavailable');
    expect(logged[0]).toContain('provider verify threw');
    expect(logged[0]).toContain('TypeError thrown by verify');
    expect(logged[0]).toMatch(/at Object\.verify \(.*resilience\.test\.ts:\d+:\d+\)/);
    expect(logged[0]).not.toContain(READ_TOKEN);
    expect(ofType(events, 'provider_error')).toEqual([
      expect.objectContaining({ reason: 'invalid_answer', message: 'provider verify threw' }),
    ]);
  });

  it("a ProviderFailure's own cause reaches the log by its class, code and stack, not its message", async () => {
    const mine: Provider<BearerCredential> = {
      name: 'mine',
      cacheScope: 'mine',
      extract: extractBearer,
      async verify() {
        // As an HTTP client's error carries the request it made, token and all.
        const cause = Object.assign(new Error(`GET http://127.0.0.1:9/check?token=${READ_TOKEN} failed`), {
          code: 'ECONNRESET',
          config: { headers: { authorization: `Bearer ${READ_TOKEN}` } },
        });
        throw new ProviderFailure('unreachable', 'mine is unreachable', { cause });
      },
    };
    const gate = createGate({ providers: [mine], retry: false });
    cleanup.push(() => gate.close());
    const { app, logged } = loggingApp(gate);
    expect((await request(app).get('/me').set(bearer(READ_TOKEN))).status).toBe(503);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('mine is unreachable');
    expect(logged[0]).toContain('Error (ECONNRESET) caused it');
    expect(logged[0]).toMatch(/at Object\.verify \(.*resilience\.test\.ts:\d+:\d+\)/);
    expect(logged[0]).not.toContain(READ_TOKEN);
  });

  it("a ProviderFailure whose cause cannot be read is a 503 counted against the provider, not the app's 500", async () => {
    // A provider's own failure class whose `cause` is a getter that throws, as a lazy one may.
    class LazyFailure extends ProviderFailure {
      override get cause(): unknown {
        throw new Error(`cannot read the cause of ${READ_TOKEN}`);
      }
    }
    const events: GateEvent[] = [];
    const mine: Provider<BearerCredential> = {
      name: 'mine',
      cacheScope: 'mine',
      extract: extractBearer,
      async verify() {
        throw new LazyFailure('status', 'mine answered 502', { retryable: false, status: 502 });
      },
    };
    const gate = createGate({ providers: [mine], retry: false, onEvent: (event) => events.push(event) });
    cleanup.push(() => gate.close());
    const { app, logged } = loggingApp(gate);
    const res = await request(app).get('/me').set(bearer(READ_TOKEN));
    expect(res.status).toBe(503);
    expect(res.headers['www-authenticate']).toBeUndefined();
    expect(logged.join('')).not.toContain(READ_TOKEN);
    expect(ofType(events, 'provider_error')).toEqual([expect.objectContaining({ reason: 'invalid_answer' })]);
    expect(gate.stats().errors).toBe(1);
  });

  it("a custom provider passes its answer's Retry-After header as sent: delay-seconds or an HTTP-date reach the client", async () => {
    let header: string | null = null;
    const mine: Provider<BearerCredential> = {
      name: 'mine',
      cacheScope: 'mine',
      extract: extractBearer,
      async verify() {
        throw new ProviderFailure('status', 'mine answered 503', { retryable: false, status: 503, retryAfter: header });
      },
    };
    const gate = createGate({ providers: [mine], retry: false, breaker: false, maxRetryAfter: 60_000 });
    cleanup.push(() => gate.close());
    const { app } = loggingApp(gate);
    const asked = async (value: string | null) => {
      header = value;
      const res = await request(app).get('/me').set(bearer(READ_TOKEN));
      expect(res.status).toBe(503);
      return res.headers['retry-after'];
    };
    expect(await asked('7')).toBe('7');
    // An HTTP-date 20 s ahead, in whole seconds: 19 or 20 s from the moment the gate reads it.
    expect(['19', '20']).toContain(await asked(new Date(Date.now() + 20_000).toUTCString()));
    expect(await asked(null)).toBeUndefined();
    expect(await asked('soon')).toBeUndefined();
  });

  it("a built-in provider's failure names what went wrong: the status it got, the key it was refused", async () => {
    const { gate, pt, events } = await setup({ retry: false });
    const { app, logged } = loggingApp(gate);
    pt.fault = { kind: 'status', status: 502 };
    expect((await request(app).get('/me').query(CONN)).status).toBe(503);
    expect(logged[0]).toContain('partoo GET /connection/check_token answered 502');

    const wrongKey = createGate({ providers: [partoo({ apiKey: 'not-the-key-5d1c', baseUrl: pt.url })] });
    cleanup.push(() => wrongKey.close());
    const misconfigured = loggingApp(wrongKey);
    pt.fault = undefined;
    const res = await request(misconfigured.app).get('/me').query(CONN);
    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: 'provider_misconfigured' });
    expect(misconfigured.logged[0]).toContain("partoo refused the server's API key");
    for (const secret of [CONN.token, API_KEY, 'not-the-key-5d1c']) {
      expect(logged.join('') + misconfigured.logged.join('')).not.toContain(secret);
    }
    expect(ofType(events, 'provider_error')).toEqual([
      expect.objectContaining({
        reason: 'status',
        status: 502,
        message: 'partoo GET /connection/check_token answered 502',
      }),
    ]);
  });
});

describe('the half-open probe when admission.clientKey throws', () => {
  it("ends the probe: the breaker's next call probes, and a recovered provider answers 200 again", async () => {
    const pt = await mockPartoo({
      apiKey: API_KEY,
      tokens: [0, 1, 2, 3].map((i) => ({ userId: `user-k${i}`, token: `SECRETprobe${i}` })),
    });
    cleanup.push(() => pt.close());
    const gate = createGate({
      // One slot, so that the probe has to wait, and the app's clientKey is asked.
      providers: [partoo({ apiKey: API_KEY, baseUrl: pt.url, connections: 1 })],
      retry: false,
      breaker: { threshold: 1, cooldown: 0 },
      admission: {
        clientKey: (req) => {
          if (req.headers['x-break-client-key'] !== undefined) throw new Error('a bug in the app');
          return 'one client';
        },
      },
    });
    cleanup.push(() => gate.close());
    const conn = (i: number, headers: Record<string, string> = {}) => ({
      headers,
      query: { user_id: `user-k${i}`, token: `SECRETprobe${i}` },
    });
    const outcome = (promise: Promise<unknown>) =>
      promise.then(
        () => 'ok',
        (error: AuthError | Error) => ('status' in error ? `${error.status} ${error.code}` : error.message),
      );
    // Each answer comes 500 ms late: time enough to send the probe while the one before it is still asked.
    pt.latency = 500;
    pt.fault = { kind: 'status', status: 502 };
    const failing = outcome(gate.authenticate(conn(0))); // opens the breaker when it fails
    await vi.waitFor(() => expect(pt.calls.total).toBe(1));
    const waiting = outcome(gate.authenticate(conn(1))); // waits for the slot, then asks while the breaker is open
    pt.fault = { kind: 'status', status: 422 }; // what it asks ends neither way
    expect(await failing).toBe('503 provider_unavailable');
    await vi.waitFor(() => expect(pt.calls.total).toBe(2));
    // The cooldown is over: this one is the probe, and it waits for the slot, where the app's clientKey throws.
    expect(await outcome(gate.authenticate(conn(2, { 'x-break-client-key': '1' })))).toBe('a bug in the app');
    expect(await waiting).toBe('503 provider_unavailable');
    pt.fault = undefined;
    pt.latency = 0;
    expect(await outcome(gate.authenticate(conn(3)))).toBe('ok');
    expect(gate.stats().breakers.partoo).toBe('closed');
  });
});

/**
 * A Partoo-shaped provider (a {@link startAnswerServer}) whose answer is chosen per token (`answers`), each after its
 * own delay: two verifications under way at once can meet different fates, which the mocks' one fault for all cannot
 * stage. `calls()`: the tokens asked, in order.
 */
async function partooByToken(
  answers: Record<string, { status: number; retryAfter?: number; delayMs?: number }>,
): Promise<{ url: string; calls: () => string[] }> {
  const server = await startAnswerServer();
  cleanup.push(() => server.close());
  const tokenOf = (path: string) => new URL(path, server.url).searchParams.get('token') ?? '';
  server.answer = (req, res) => {
    const answer = answers[tokenOf(req.url ?? '/')] ?? { status: 404 };
    if (answer.retryAfter !== undefined) res.setHeader('retry-after', String(answer.retryAfter));
    setTimeout(() => reply(res, answer.status, '{"errors":{"json":["answered by the test"]}}'), answer.delayMs ?? 0);
  };
  return { url: server.url, calls: () => server.paths.map(tokenOf) };
}

describe('calls held back by both a 429 pause and an open breaker', () => {
  it('tell their clients the longer of the two in Retry-After, the failure that opened the breaker too', async () => {
    const provider = await partooByToken({
      throttled: { status: 429, retryAfter: 1 },
      failing: { status: 500, delayMs: 150 },
    });
    const gate = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: provider.url })],
      retry: false,
      breaker: { threshold: 1, cooldown: 5000 },
      timeout: 2000,
    });
    cleanup.push(() => gate.close());
    const { app } = gatedApp(gate);
    const ask = (token: string) => request(app).get('/me').query({ user_id: 'user-1', token });
    // Both under way at once: the 429 pauses calls for 1 s, then the 500 opens the breaker for 5 s.
    const [throttled, failing] = await Promise.all([ask('throttled'), ask('failing')]);
    expect([throttled.status, throttled.headers['retry-after']]).toEqual([503, '1']);
    expect([failing.status, failing.headers['retry-after']]).toEqual([503, '5']);
    expect(gate.stats().breakers.partoo).toBe('open');
    // A new credential is held back until the breaker's cooldown is over, not only the pause.
    const held = await ask('another');
    expect([held.status, held.headers['retry-after']]).toEqual([503, '5']);
    expect(provider.calls()).toEqual(['throttled', 'failing']);
  });
});

describe("a retry after the provider refused this server's credentials", () => {
  it('is not sent: the refused API key goes out no more, and the verification ends with the same 500', async () => {
    const provider = await partooByToken({
      // A 500 whose Retry-After holds its retry back a second: time for the other verification to be refused.
      failing: { status: 500, retryAfter: 1 },
      refused: { status: 401 },
    });
    const events: GateEvent[] = [];
    const gate = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: provider.url })],
      retry: { retries: 1, baseDelay: 10, maxDelay: 10 },
      timeout: 3000,
      onEvent: (event) => events.push(event),
    });
    cleanup.push(() => gate.close());
    const { app } = gatedApp(gate);
    const ask = (token: string) => request(app).get('/me').query({ user_id: 'user-1', token });
    const failing = ask('failing').then((res) => res);
    await vi.waitFor(() => expect(provider.calls()).toEqual(['failing']));
    // Express's default handler answers the 500 (provider_misconfigured is not shown to clients).
    expect((await ask('refused')).status).toBe(500);
    expect((await failing).status).toBe(500);
    expect(provider.calls()).toEqual(['failing', 'refused']);
    expect(events.filter((event) => event.type === 'held_back')).toMatchObject([{ reason: 'refused' }]);
  });

  it('is no provider fault: the breaker stays closed, and once the refusal is no longer held the key is sent again', async () => {
    const provider = await partooByToken({ refused: { status: 401 } });
    const gate = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: provider.url })],
      retry: false,
      breaker: { threshold: 1, cooldown: 10_000 },
    });
    cleanup.push(() => gate.close());
    const { app } = gatedApp(gate);
    const ask = () => request(app).get('/me').query({ user_id: 'user-1', token: 'refused' });
    expect((await ask()).status).toBe(500);
    expect(gate.stats().breakers.partoo).toBe('closed');
    // Past the second a refusal is held (REFUSAL_HOLD_MS), the provider is asked again, not held back by a breaker.
    await sleep(1100);
    expect((await ask()).status).toBe(500);
    expect(provider.calls()).toEqual(['refused', 'refused']);
  });
});
