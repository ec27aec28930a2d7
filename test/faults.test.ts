/**
 * The fault suite: a real Express app in front of the mock providers while
 * they fail in every way the mocks can: down (connection reset), flapping
 * (every other call fails), slow beyond the deadline, garbage, then
 * recovery. Mixed traffic runs through every phase; each phase has its own
 * mocks, gate and app, so it passes or fails on its own, in any order.
 *
 * Invariants checked in every phase:
 * - no request passes unverified: a route body only ever runs for a valid
 *   credential that the mock accepts, with that credential's subject;
 * - every status is one the README documents (200/400/401/403/503), and the
 *   one that fits the credential (a malformed one is always 400, a valid one
 *   is 200 or 503 — never 401);
 * - the events name the failure the phase caused, and the traffic was real
 *   (many answers, successes before and after the fault);
 * - no unhandled rejection; no socket or timer left after `gate.close()`
 *   and the mocks' `close()`;
 * - once the provider recovers, requests succeed again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { createGate, type GateEvent, onlineOrNot, partoo } from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';
import { gatedApp, listen, READ_CHECKS, type SeenRequest } from './support/gated-app.js';
import { watchTimers } from './support/live-timers.js';

const API_KEY = 'fault-suite-api-key';
const READ_TOKEN = 'faultREAD0123456789';
const BARE_TOKEN = 'faultBARE0123456789';
const OFF_TOKEN = 'faultOFF0123456789';
const CONN = { user_id: 'user-7', token: 'faultCONN0123456789' };
/** The gate's deadline: wide enough that a healthy provider on a busy 2-core machine always answers in time. */
const TIMEOUT = 1000;
const COOLDOWN = 200;

/** What a request carries, and the statuses that are right for it. */
interface Probe {
  readonly name: string;
  readonly path: string;
  readonly headers?: Readonly<Record<string, string | string[]>>;
  readonly allowed: readonly number[];
  /** The credential is valid and the route asks nothing more of it: 200 whenever the provider answers. */
  readonly valid?: boolean;
}

const query = (q: Record<string, string>) => new URLSearchParams(q).toString();
const PROBES: readonly Probe[] = [
  {
    name: 'valid bearer, permitted',
    path: '/checks',
    headers: { authorization: `Bearer ${READ_TOKEN}` },
    allowed: [200, 503],
    valid: true,
  },
  {
    name: 'valid bearer, any route',
    path: '/me',
    headers: { authorization: `Bearer ${BARE_TOKEN}` },
    allowed: [200, 503],
    valid: true,
  },
  {
    name: 'valid bearer, lacking the permission',
    path: '/checks',
    headers: { authorization: `Bearer ${BARE_TOKEN}` },
    allowed: [403, 503],
  },
  { name: 'valid connection', path: `/me?${query(CONN)}`, allowed: [200, 503], valid: true },
  { name: 'unknown bearer', path: '/me', headers: { authorization: 'Bearer faultUNKNOWN0123' }, allowed: [401, 503] },
  { name: 'inactive bearer', path: '/checks', headers: { authorization: `Bearer ${OFF_TOKEN}` }, allowed: [401, 503] },
  {
    name: 'unknown connection',
    path: `/me?${query({ user_id: CONN.user_id, token: 'faultWRONG' })}`,
    allowed: [401, 503],
  },
  { name: 'malformed bearer', path: '/me', headers: { authorization: `Bearer ${READ_TOKEN} x` }, allowed: [400] },
  {
    name: 'repeated header',
    path: '/me',
    headers: { authorization: [`Bearer ${READ_TOKEN}`, `Bearer ${READ_TOKEN}`] },
    allowed: [400],
  },
  { name: 'duplicated query token', path: `/me?${query(CONN)}&token=${CONN.token}`, allowed: [400] },
  {
    name: 'credentials in two places',
    path: `/me?${query(CONN)}`,
    headers: { authorization: `Bearer ${READ_TOKEN}` },
    allowed: [400],
  },
  { name: 'no credential', path: '/checks', allowed: [401] },
  { name: 'another scheme', path: '/me', headers: { authorization: 'Basic dXNlcjpwYXNz' }, allowed: [401] },
];

/** The subject a request that reached a route body must have been verified as; undefined = must not get there. */
function expectedSubject(seen: SeenRequest): string | undefined {
  const q = seen.query as Record<string, unknown>;
  const noQuery = q.user_id === undefined && q.token === undefined;
  if (seen.authorization === `Bearer ${READ_TOKEN}` && noQuery) return 'tok-read';
  if (seen.authorization === `Bearer ${BARE_TOKEN}` && noQuery && seen.route === '/me') return 'tok-bare';
  if (seen.authorization === undefined && q.user_id === CONN.user_id && q.token === CONN.token) return CONN.user_id;
  return undefined;
}

/** Everything one phase runs against: its own mocks, gate, app, events and counts. */
async function startFixture() {
  // Timers are counted from the ones created here on: the test runner's own come and go meanwhile.
  const timers = watchTimers();
  /** Counts of active handles by type (sockets, servers) and of the timers still pending. */
  const activeResources = (): Map<string, number> => {
    const counts = new Map<string, number>();
    for (const type of process.getActiveResourcesInfo()) {
      if (type !== 'Timeout') counts.set(type, (counts.get(type) ?? 0) + 1);
    }
    const pending = timers.pending();
    if (pending > 0) counts.set('Timeout', pending);
    return counts;
  };
  const resourcesBefore = activeResources();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  const oon = await mockOnlineOrNot({
    tokens: {
      [READ_TOKEN]: { id: 'tok-read', permissions: [READ_CHECKS] },
      [BARE_TOKEN]: { id: 'tok-bare' },
      [OFF_TOKEN]: { id: 'tok-off', status: 'revoked' },
    },
  });
  const pt = await mockPartoo({ apiKey: API_KEY, tokens: [{ userId: CONN.user_id, token: CONN.token }] });
  const events: GateEvent[] = [];
  const gate = createGate({
    providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey: API_KEY, baseUrl: pt.url })],
    timeout: TIMEOUT,
    retry: { retries: 2, baseDelay: 10, maxDelay: 40 },
    breaker: { threshold: 5, cooldown: COOLDOWN },
    cache: { ttl: 100, negativeTtl: 50 },
    onEvent: (event) => events.push(event),
  });
  const { app, seen } = gatedApp(gate);
  const server = await listen(app);
  const counts = { responses: 0, successes: 0 };

  /** Each close runs once, whether the test or the afterEach (after a failure) gets there first. */
  const closing = new Map<string, Promise<void>>();
  const closeOnce = (name: string, close: () => Promise<void>) => {
    if (!closing.has(name)) closing.set(name, close());
    return closing.get(name);
  };
  async function closeAll(): Promise<void> {
    await closeOnce('server', () => server.close());
    await closeOnce('gate', () => gate.close());
    await closeOnce('onlineornot', () => oon.close());
    await closeOnce('partoo', () => pt.close());
    process.off('unhandledRejection', onUnhandled);
    timers.stop();
  }
  open.push(closeAll);

  async function send(probe: Probe): Promise<{ probe: Probe; status: number }> {
    let req = request(server.server).get(probe.path);
    // An array value goes out as repeated header lines (superagent hands it to Node as is).
    for (const [name, value] of Object.entries(probe.headers ?? {})) req = req.set(name, value as string);
    const res = await req;
    counts.responses++;
    if (res.status === 200) counts.successes++;
    expect(probe.allowed, `${probe.name} got ${res.status}`).toContain(res.status);
    const challenge = res.headers['www-authenticate'];
    if (res.status === 400) expect(challenge).toMatch(/^Bearer realm="api", error="invalid_request"/);
    if (res.status === 401) expect(challenge).toMatch(/^Bearer realm="api"(, error="invalid_token".*)?$/);
    if (res.status === 403) expect(challenge).toMatch(/^Bearer realm="api", error="insufficient_scope"/);
    if (res.status === 503) expect(challenge).toBeUndefined();
    return { probe, status: res.status };
  }

  /** Sends every probe once per round (a round's probes all at once) and checks each answer against its probe. */
  async function traffic(rounds: number): Promise<Array<{ probe: Probe; status: number }>> {
    const results: Array<{ probe: Probe; status: number }> = [];
    for (let round = 0; round < rounds; round++) {
      results.push(...(await Promise.all(PROBES.map(send))));
    }
    // No request passed unverified: whatever reached a route was a valid credential, as its own subject.
    for (const entry of seen) expect(entry.subject, JSON.stringify(entry)).toBe(expectedSubject(entry));
    expect(seen.length).toBe(counts.successes);
    return results;
  }

  /** Waits (bounded) until the providers answer again through the breaker, then checks a full round. */
  async function expectRecovery(): Promise<void> {
    oon.fault = undefined;
    pt.fault = undefined;
    oon.latency = 0;
    pt.latency = 0;
    gate.clear();
    const deadline = performance.now() + 5000;
    for (;;) {
      const results = await traffic(1);
      if (validStatuses(results).every((status) => status === 200)) break;
      expect(performance.now(), 'providers did not recover in 5 s').toBeLessThan(deadline);
      await sleep(COOLDOWN / 2);
    }
    const results = await traffic(2);
    expect(validStatuses(results)).toEqual(results.filter((r) => r.probe.valid).map(() => 200));
    expect(gate.stats().breakers).toEqual({ onlineornot: 'closed', partoo: 'closed' });
  }

  /**
   * Checks that the events reported every failure in `caused`, and no other but `timeout` (retries
   * of a failing call may run into the deadline on a busy machine).
   */
  const expectFailuresReported = (...caused: string[]) => {
    const { reasons } = reported();
    for (const reason of caused) expect(reasons).toContain(reason);
    for (const reason of reasons) expect([...caused, 'timeout']).toContain(reason);
  };

  /** The provider_error reasons and breaker states the events reported. */
  const reported = () => ({
    reasons: new Set(events.flatMap((e) => (e.type === 'provider_error' ? [e.reason] : []))),
    breaker: new Set(events.flatMap((e) => (e.type === 'breaker' ? [e.state] : []))),
  });

  /** Closes the app and the gate, then the mocks: nothing may be left open, and nothing was unhandled. */
  async function closeAndExpectNothingLeft(): Promise<void> {
    expect(unhandled).toEqual([]);
    const grown = () =>
      [...activeResources()]
        .filter(([type, count]) => count > (resourcesBefore.get(type) ?? 0))
        .map(([type, count]) => `${type}: ${resourcesBefore.get(type) ?? 0} -> ${count}`);
    /**
     * Sockets close a moment after close() resolves on the other end: wait (bounded) for `done`. The
     * bound is well below the keep-alive timeouts, so an idle socket the gate left open is still there.
     */
    const settle = async (done: () => boolean) => {
      const deadline = performance.now() + 1500;
      while (!done() && performance.now() < deadline) await sleep(20);
    };
    const sockets = () => activeResources().get('TCPSocketWrap') ?? 0;

    await closeOnce('server', () => server.close());
    await closeOnce('gate', () => gate.close());
    // The mocks still listen: any socket left now is one the gate failed to close.
    await settle(() => sockets() <= (resourcesBefore.get('TCPSocketWrap') ?? 0));
    expect(sockets()).toBe(resourcesBefore.get('TCPSocketWrap') ?? 0);
    // Then the mocks, which end their own delayed answers: any timer or handle left now is the gate's.
    await closeOnce('onlineornot', () => oon.close());
    await closeOnce('partoo', () => pt.close());
    await settle(() => grown().length === 0);
    expect(grown()).toEqual([]);
    expect(unhandled).toEqual([]);
  }

  return {
    oon,
    pt,
    gate,
    counts,
    traffic,
    expectRecovery,
    reported,
    expectFailuresReported,
    closeAndExpectNothingLeft,
  };
}

const validStatuses = (results: Array<{ probe: Probe; status: number }>) =>
  results.filter((r) => r.probe.valid).map((r) => r.status);

/** Closers of the fixtures a failed test left open. */
const open: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of open.splice(0)) await close();
});

describe('fault suite: Express app in front of failing providers', () => {
  it('healthy: every valid credential passes, everything else is refused', async () => {
    const phase = await startFixture();
    const results = await phase.traffic(3);
    expect(validStatuses(results)).toEqual(results.filter((r) => r.probe.valid).map(() => 200));
    expect(results.filter((r) => r.status === 503)).toEqual([]);
    expect(phase.reported()).toEqual({ reasons: new Set(), breaker: new Set() });
    await phase.closeAndExpectNothingLeft();
  });

  it('provider down (connections reset): valid credentials get 503, nothing passes; then recovery', async () => {
    const phase = await startFixture();
    phase.oon.fault = { kind: 'reset' };
    phase.pt.fault = { kind: 'reset' };
    const results = await phase.traffic(3);
    expect(new Set(validStatuses(results))).toEqual(new Set([503]));
    expect(results.filter((r) => r.status === 200)).toEqual([]);
    expect(phase.gate.stats().breakers).toEqual({ onlineornot: 'open', partoo: 'open' });
    phase.expectFailuresReported('unreachable');
    await phase.expectRecovery();
    // Open while down, then a probe (half-open) that closed it again.
    expect(phase.reported().breaker).toEqual(new Set(['open', 'half-open', 'closed']));
    expect(phase.counts.responses).toBeGreaterThan(3 * PROBES.length);
    expect(phase.counts.successes).toBeGreaterThan(0);
    await phase.closeAndExpectNothingLeft();
  });

  it('flapping (every other call fails): answers are right or 503; then recovery', async () => {
    const phase = await startFixture();
    phase.oon.fault = { kind: 'status', status: 502, every: 2 };
    phase.pt.fault = { kind: 'reset', every: 2 };
    for (let i = 0; i < 4; i++) {
      await phase.traffic(2);
      await sleep(60); // let cached answers expire so the providers keep being asked
    }
    phase.expectFailuresReported('status', 'unreachable');
    // Retries get past every other failure: valid credentials pass during the flapping too.
    const duringFlapping = phase.counts.successes;
    expect(duringFlapping).toBeGreaterThan(0);
    await phase.expectRecovery();
    expect(phase.counts.successes).toBeGreaterThan(duringFlapping);
    expect(phase.counts.responses).toBeGreaterThan(8 * PROBES.length);
    await phase.closeAndExpectNothingLeft();
  });

  it('slow beyond the deadline: 503 within a bounded time; then recovery', async () => {
    const phase = await startFixture();
    phase.oon.latency = TIMEOUT * 3;
    phase.pt.latency = TIMEOUT * 3;
    const started = performance.now();
    const results = await phase.traffic(2);
    expect(new Set(validStatuses(results))).toEqual(new Set([503]));
    // Each request gives up at its deadline instead of waiting for the provider: two rounds that waited
    // would take twice the latency (6 s); two rounds at the deadline take about 2 s.
    expect(performance.now() - started).toBeLessThan(2 * TIMEOUT + 2000);
    phase.expectFailuresReported('timeout');
    await phase.expectRecovery();
    await phase.closeAndExpectNothingLeft();
  });

  it('garbage answers: 503, never a pass; then recovery', async () => {
    const phase = await startFixture();
    phase.oon.fault = { kind: 'garbage' };
    phase.pt.fault = { kind: 'garbage' };
    const results = await phase.traffic(2);
    expect(new Set(validStatuses(results))).toEqual(new Set([503]));
    phase.oon.fault = { kind: 'wrong-shape' };
    phase.pt.fault = { kind: 'wrong-content-type' };
    phase.gate.clear();
    await sleep(COOLDOWN + 50);
    const more = await phase.traffic(2);
    expect(more.filter((r) => r.status === 200)).toEqual([]);
    phase.expectFailuresReported('invalid_answer');
    await phase.expectRecovery();
    await phase.closeAndExpectNothingLeft();
  });
});
