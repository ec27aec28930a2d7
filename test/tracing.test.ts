/**
 * Tracing through diagnostics_channel: subscribers see every verification,
 * cache lookup and breaker change, and no message carries a credential.
 */
import { channel, tracingChannel } from 'node:diagnostics_channel';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type BearerCredential,
  CHANNELS,
  createGate,
  extractBearer,
  type Gate,
  onlineOrNot,
  type Provider,
  requires,
  type Verdict,
} from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';

const GOOD = 'SECRETtraceGood1';
const BAD = 'SECRETtraceBad1';
const open: Array<() => Promise<void>> = [];
const unsubscribe: Array<() => void> = [];
afterEach(async () => {
  for (const stop of unsubscribe.splice(0)) stop();
  for (const close of open.splice(0)) await close();
});

/** Everything published on the three channels, as `[channel, message]`. */
function record(): Array<[string, Record<string, unknown>]> {
  const seen: Array<[string, Record<string, unknown>]> = [];
  for (const name of [CHANNELS.cache, CHANNELS.breaker]) {
    const listener = (message: unknown) => seen.push([name, { ...(message as Record<string, unknown>) }]);
    channel(name).subscribe(listener);
    unsubscribe.push(() => channel(name).unsubscribe(listener));
  }
  const verify = tracingChannel(CHANNELS.verify);
  const handlers = {
    start: (context: unknown) => seen.push(['verify:start', { ...(context as Record<string, unknown>) }]),
    end: () => {},
    asyncStart: (context: unknown) => seen.push(['verify:asyncStart', { ...(context as Record<string, unknown>) }]),
    asyncEnd: (context: unknown) => seen.push(['verify:asyncEnd', { ...(context as Record<string, unknown>) }]),
    error: (context: unknown) => seen.push(['verify:error', { ...(context as Record<string, unknown>) }]),
  };
  verify.subscribe(handlers);
  unsubscribe.push(() => verify.unsubscribe(handlers));
  return seen;
}

async function setup(): Promise<{ gate: Gate; fault: (on: boolean) => void }> {
  const mock = await mockOnlineOrNot({ tokens: { [GOOD]: { id: 'tok-good', permissions: ['read'] } } });
  const gate = createGate({
    providers: [onlineOrNot({ baseUrl: mock.url })],
    retry: false,
    breaker: { threshold: 1, cooldown: 60_000 },
    timeout: 2000,
  });
  open.push(
    () => gate.close(),
    () => mock.close(),
  );
  return { gate, fault: (on) => (mock.fault = on ? { kind: 'status', status: 500 } : undefined) };
}

/** Tracing subscribers that do nothing, for a test to replace the one it needs. */
const quiet = { start: () => {}, end: () => {}, asyncStart: () => {}, asyncEnd: () => {}, error: () => {} };
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

describe('diagnostics_channel', () => {
  it('traces each verification with its outcome, attempts and duration', async () => {
    const seen = record();
    const { gate } = await setup();
    await gate.authenticate(bearer(GOOD));
    await expect(gate.authenticate(bearer(BAD))).rejects.toMatchObject({ status: 401 });
    const ends = seen.filter(([name]) => name === 'verify:asyncEnd').map(([, message]) => message);
    expect(ends).toMatchObject([
      { provider: 'onlineornot', outcome: 'accepted', attempts: 1 },
      { provider: 'onlineornot', outcome: 'rejected', attempts: 1 },
    ]);
    expect(seen.filter(([name]) => name === 'verify:start')).toHaveLength(2);
    for (const end of ends) expect(end.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('publishes every cache lookup: misses, hits and joins', async () => {
    const seen = record();
    const { gate } = await setup();
    await Promise.all([gate.authenticate(bearer(GOOD)), gate.authenticate(bearer(GOOD))]);
    await gate.authenticate(bearer(GOOD));
    const results = seen.filter(([name]) => name === CHANNELS.cache).map(([, message]) => message.result);
    expect(results).toEqual(['miss', 'coalesced', 'hit']);
  });

  it('publishes a cache miss before the verification it starts, and a join before its answer', async () => {
    const seen = record();
    const { gate } = await setup();
    await Promise.all([gate.authenticate(bearer(GOOD)), gate.authenticate(bearer(GOOD))]);
    const names = seen.map(([name, message]) => (name === CHANNELS.cache ? `cache:${message.result}` : name));
    expect(names).toEqual(['cache:miss', 'verify:start', 'cache:coalesced', 'verify:asyncStart', 'verify:asyncEnd']);
  });

  it('publishes breaker changes, and a failed verification ends its trace as failed', async () => {
    const seen = record();
    const { gate, fault } = await setup();
    fault(true);
    await expect(gate.authenticate(bearer(GOOD))).rejects.toMatchObject({ status: 503 });
    expect(seen.filter(([name]) => name === CHANNELS.breaker).map(([, message]) => message)).toEqual([
      { provider: 'onlineornot', state: 'open' },
    ]);
    expect(seen.find(([name]) => name === 'verify:asyncEnd')?.[1]).toMatchObject({ outcome: 'failed' });
  });

  it('carries no credential on any channel', async () => {
    const seen = record();
    const { gate, fault } = await setup();
    await gate.authenticate(bearer(GOOD));
    await gate.authenticate(bearer(GOOD));
    await expect(gate.authenticate(bearer(BAD))).rejects.toBeDefined();
    fault(true);
    await expect(gate.authenticate(bearer(`${GOOD}x`))).rejects.toBeDefined();
    expect(seen.length).toBeGreaterThan(8);
    const text = JSON.stringify(seen);
    expect(text).not.toContain('SECRET');
    for (const [name, message] of seen) {
      for (const value of Object.values(message)) expect(['string', 'number', 'undefined']).toContain(typeof value);
      // tracePromise sets `result` to what the traced call resolved to: nothing, so that no answer is exposed.
      if (name.startsWith('verify:async')) expect(message).toHaveProperty('result', undefined);
    }
  });

  it('leaves the gate working the same when nobody subscribes', async () => {
    expect(channel(CHANNELS.cache).hasSubscribers).toBe(false);
    const { gate } = await setup();
    expect((await gate.authenticate(bearer(GOOD))).subject).toBe('tok-good');
    expect((await gate.authenticate(bearer(GOOD))).subject).toBe('tok-good');
    expect(gate.stats()).toMatchObject({ hits: 1, misses: 1, upstreamCalls: 1 });
  });

  it('lets no subscriber change an answer: the trace carries its outcome, not the verdict', async () => {
    const { gate } = await setup();
    const verify = tracingChannel(CHANNELS.verify);
    const handlers = {
      ...quiet,
      asyncEnd: (context: unknown) => {
        const principal = (context as { result?: { principal?: { subject: string; permissions: string[] } } }).result
          ?.principal;
        if (principal === undefined) return;
        principal.subject = 'root';
        principal.permissions.push('admin');
      },
    };
    verify.subscribe(handlers);
    unsubscribe.push(() => verify.unsubscribe(handlers));
    const auth = await gate.authenticate(bearer(GOOD));
    expect(auth.subject).toBe('tok-good');
    expect(() => gate.authorize(auth, requires('admin'))).toThrow(expect.objectContaining({ status: 403 }));
    expect((await gate.authenticate(bearer(GOOD))).permissions).toEqual(['read']);
  });

  it('lets a subscriber that asks the gate again, at the start of a verification, join it', async () => {
    const { gate } = await setup();
    const verify = tracingChannel(CHANNELS.verify);
    const again: Array<Promise<unknown>> = [];
    const handlers = {
      ...quiet,
      start: () => {
        if (again.length === 0) again.push(gate.authenticate(bearer(GOOD)));
      },
    };
    verify.subscribe(handlers);
    unsubscribe.push(() => verify.unsubscribe(handlers));
    expect((await gate.authenticate(bearer(GOOD))).subject).toBe('tok-good');
    expect(await again[0]).toMatchObject({ subject: 'tok-good' });
    expect(gate.stats()).toMatchObject({ upstreamCalls: 1, coalesced: 1 });
  });

  it('ends a verification that close() cut short as cancelled, and starts none for those still waiting', async () => {
    const seen = record();
    let calls = 0;
    const hanging: Provider<BearerCredential> = {
      name: 'hanging',
      cacheScope: 'hanging',
      concurrency: 1,
      extract: extractBearer,
      verify: (_credential, signal) => {
        calls++;
        return new Promise<Verdict>((_resolve, reject) =>
          signal.addEventListener('abort', () => reject(signal.reason)),
        );
      },
    };
    const gate = createGate({ providers: [hanging], timeout: 30_000, retry: false });
    const asked = [1, 2, 3].map((n) => gate.authenticate(bearer(`SECRETqueued${n}`)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(calls).toBe(1);
    await gate.close();
    for (const request of asked) await expect(request).rejects.toMatchObject({ status: 503 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(calls).toBe(1);
    const starts = seen.filter(([name]) => name === 'verify:start');
    const ends = seen.filter(([name]) => name === 'verify:asyncEnd').map(([, message]) => message);
    expect(starts).toHaveLength(1);
    expect(ends).toMatchObject([{ provider: 'hanging', outcome: 'cancelled', attempts: 1 }]);
    expect(ends[0]?.durationMs).toBeGreaterThanOrEqual(0);
  });
});
