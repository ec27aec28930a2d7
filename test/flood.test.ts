/**
 * Hostile traffic, seen by clients of a real Express app on 127.0.0.1: one
 * client (127.0.0.1) floods never-seen tokens while others (127.0.0.2) carry
 * on. Outcomes only, never timings (those are in bench/scenarios/flood.ts):
 * the other client's new tokens are all verified, the flood's excess gets a
 * fast 503 `overloaded` without an upstream call, the provider never has more
 * calls in flight than the gate's pool, the breaker stays closed, a flood of
 * rejected tokens evicts no accepted one, and no flood ever brings a revoked
 * token back as a stale 200.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { describe, expect, it, vi } from 'vitest';
import { authenticate, requires } from '../adapters/express.js';
import { startCountingProxy } from '../bench/counting-proxy.js';
import {
  AuthError,
  type BearerCredential,
  createGate,
  type Gate,
  type GateEvent,
  type GateOptions,
  onlineOrNot,
} from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { closeAfterEach } from './support/close-after-each.js';
import { type Answer, ask, clientFrom, startFlood } from './support/flood-client.js';
import { listen } from './support/gated-app.js';

const closeLater = closeAfterEach();
const READ = 'monitors:read';
const FLOODER = '127.0.0.1';
const OTHER = '127.0.0.2';
/** Sockets of the gate's provider pool: two verifications at once (two calls each), eight waiting. */
const POOL = 4;

/** An Express app whose `/hello` needs `READ`; errors answer `{ error: code }` with the error's status and headers. */
function floodApp(gate: Gate, trustProxy = false): express.Express {
  const app = express();
  // Behind a proxy the app trusts, `req.ip` is the client X-Forwarded-For names: a test can pose as any address.
  if (trustProxy) app.set('trust proxy', true);
  app.get('/hello', authenticate(gate), requires(READ), (req, res) => {
    res.json({ subject: req.auth?.subject });
  });
  app.use(((error, _req, res, _next) => {
    if (error instanceof AuthError) res.status(error.status).set(error.headers).json({ error: error.code });
    else res.status(500).json({ error: 'internal' });
  }) satisfies express.ErrorRequestHandler);
  return app;
}

interface Setup {
  /** Mock latency, ms. */
  readonly latency: number;
  readonly options?: Partial<GateOptions>;
  /** The provider's pool size (default {@link POOL}). */
  readonly connections?: number;
  /** Whether the gate asks through a counting proxy (default true). */
  readonly proxied?: boolean;
  /** Whether the app trusts X-Forwarded-For (default false). */
  readonly trustProxy?: boolean;
}

/**
 * The mock knowing `tokens` (token → `id-<token>`), behind a counting proxy,
 * and the app with a gate asking through it. `events` records the gate's
 * breaker events.
 */
async function setup(
  tokens: readonly string[],
  { latency, options = {}, connections = POOL, proxied = true, trustProxy = false }: Setup,
) {
  const mock = closeLater(
    await mockOnlineOrNot({
      tokens: Object.fromEntries(tokens.map((token) => [token, { id: `id-${token}`, permissions: [READ] }])),
    }),
  );
  mock.latency = latency;
  const proxy = proxied ? closeLater(await startCountingProxy(mock.url)) : undefined;
  const events: GateEvent[] = [];
  // The verifications under way, counted around the provider's verify: the gate's admission at work. (The calls the
  // proxy counts are bounded by the pool's sockets as well, and a rejected token's second call outlives its
  // verification.)
  const verifications = { now: 0, max: 0, order: [] as string[] };
  const provider = onlineOrNot({ baseUrl: proxy?.url ?? mock.url, connections });
  const verify = provider.verify;
  const gate = closeLater(
    createGate({
      providers: [
        {
          ...provider,
          async verify(credential: BearerCredential, signal: AbortSignal) {
            verifications.max = Math.max(verifications.max, ++verifications.now);
            verifications.order.push(credential.secret);
            try {
              return await verify(credential, signal);
            } finally {
              verifications.now--;
            }
          },
        },
      ],
      onEvent: (event) => {
        if (event.type === 'breaker') events.push(event);
      },
      ...options,
    }),
  );
  const server = closeLater(await listen(floodApp(gate, trustProxy)));
  const client = (address: string, sockets: number) => closeLater(clientFrom(server.url, address, sockets));
  return { mock, proxy, gate, events, client, verifications, url: server.url };
}

const tokensNamed = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

describe('a client flooding random tokens', () => {
  it('leaves another client’s new tokens verified, the pool bounded and the breaker closed; its excess gets 503 overloaded without an upstream call', async () => {
    const fresh = tokensNamed('fresh', 10);
    const { proxy, gate, events, client, verifications } = await setup(fresh, { latency: 20 });
    const flood = startFlood(client(FLOODER, 20), 20, { maxRequests: 50_000, maxMs: 20_000 });
    let report: Awaited<ReturnType<typeof flood.stop>>;
    const answers: Answer[] = [];
    try {
      // The wait is full: from now on the flood gets 503s.
      expect(await flood.overloadedSeen(10_000)).toBe(true);
      // New tokens one after the other: each waits in a queue of its own, served in turn with the flood's.
      const other = client(OTHER, 1);
      for (const token of fresh) answers.push(await ask(other, token));
    } finally {
      report = await flood.stop();
    }
    expect(answers.map((answer) => [answer.status, answer.subject])).toEqual(
      fresh.map((token) => [200, `id-${token}`]),
    );
    expect(report.overloaded).toBeGreaterThan(0);
    expect(report.rejected).toBeGreaterThan(0);
    expect(report.other).toEqual([]);
    expect(gate.stats()).toMatchObject({ overloaded: report.overloaded, breakers: { onlineornot: 'closed' } });
    expect(events).toEqual([]);
    // Two calls per verification: one for each token the provider answered, none for a 503. A rejected token's
    // `permissions` call outlives the 401 its `verify` decided, so the last one may reach the provider just after.
    await vi.waitFor(() => expect(proxy!.counts.requests).toBe(2 * (report.rejected + answers.length)), {
      timeout: 5000,
    });
    const counts = proxy!.counts;
    expect(counts.maxInFlight).toBeLessThanOrEqual(POOL);
    expect(counts.maxInFlight).toBeGreaterThanOrEqual(2);
    // The provider's concurrency, half its sockets: never more verifications at once, however many wait.
    expect(verifications.max).toBe(POOL / 2);
  }, 60_000);
});

describe('a flood from many addresses of one block', () => {
  it('takes the one turn of a single address: another client’s new token is verified next but one', async () => {
    // One verification at a time (two sockets, two calls each), eight waiting.
    const { gate, client, verifications } = await setup(['fresh'], {
      latency: 300,
      connections: 2,
      proxied: false,
      trustProxy: true,
      options: { admission: { maxWaiting: 8 } },
    });
    // Nine /56s of one /48 (an attacker with one IPv6 allocation), one never-seen token each: one asked, eight waiting.
    const flooder = client(FLOODER, 9);
    const flood = Array.from({ length: 9 }, (_, n) =>
      flooder
        .request({
          method: 'GET',
          path: '/hello',
          headers: { authorization: `Bearer flood-${n}`, 'x-forwarded-for': `2001:db8:1:${n + 1}00::1` },
        })
        .then(async (res) => [res.statusCode, ((await res.body.json()) as { error?: string }).error]),
    );
    await vi.waitFor(() => expect(gate.stats().misses).toBe(9), { timeout: 5000 });
    const askedBefore = verifications.order.length;
    // The other client's token takes the place of the flood's newest waiter, then its block's turn comes after the
    // flood block's next one: as after one address's flood.
    expect((await ask(client(OTHER, 1), 'fresh')).subject).toBe('id-fresh');
    expect(verifications.order.indexOf('fresh')).toBeLessThanOrEqual(askedBefore + 1);
    const answers = await Promise.all(flood);
    expect(answers.filter(([status]) => status === 503)).toEqual([[503, 'overloaded']]);
    expect(answers.filter(([status]) => status === 401)).toHaveLength(8);
  }, 30_000);
});

describe('a flood of rejected tokens', () => {
  it('evicts no accepted entry (cache.max 500, 5,000 rejections)', async () => {
    const valid = tokensNamed('kept', 20);
    // Rejections live a minute: only their own space's size can push one out.
    const { mock, client } = await setup(valid, {
      latency: 0,
      options: { cache: { max: 500, negativeTtl: 60_000 } },
      connections: 16,
      proxied: false,
    });
    const warm = client(OTHER, 4);
    for (const token of valid) expect((await ask(warm, token)).status).toBe(200);

    // 5,000 never-seen tokens, each sent until the provider has rejected it (a 503 overloaded is sent again).
    const rejected = tokensNamed('rejected', 5000);
    const flooder = client(FLOODER, 32);
    const queue = [...rejected];
    const endAt = performance.now() + 60_000;
    let sent = 0;
    let denied = 0;
    const unexpected: string[] = [];
    const loop = async () => {
      while (queue.length > 0 && sent < 50_000 && performance.now() < endAt) {
        const token = queue.shift() as string;
        sent++;
        const answer = await ask(flooder, token);
        if (answer.status === 401) denied++;
        else if (answer.status === 503 && answer.code === 'overloaded') queue.push(token);
        else unexpected.push(`${answer.status} ${answer.code}`);
      }
    };
    await Promise.all(Array.from({ length: 32 }, loop));
    expect(unexpected).toEqual([]);
    expect(denied).toBe(rejected.length);

    mock.resetCalls();
    const again = client(OTHER, 4);
    for (const token of valid) expect((await ask(again, token)).subject).toBe(`id-${token}`);
    expect(mock.calls.total).toBe(0);
    // The flood did fill the rejections' space: its first rejection is gone and is asked about again.
    expect((await ask(again, rejected[0] as string)).status).toBe(401);
    expect(mock.calls.verify).toBe(1);
  }, 90_000);
});

describe('staleIfError during a flood', () => {
  it('never answers a token revoked at the provider with a stale 200', async () => {
    const revoked = tokensNamed('revoked', 20);
    const { mock, client } = await setup(revoked, {
      latency: 20,
      options: { cache: { ttl: 200, staleIfError: 60_000 } },
    });
    const warm = client(OTHER, 4);
    for (const token of revoked) expect((await ask(warm, token)).status).toBe(200);
    for (const token of revoked) mock.removeToken(token);
    await sleep(300); // past ttl: each entry is now only a stale copy, kept for the provider's failures

    const flood = startFlood(client(FLOODER, 20), 20, { maxRequests: 50_000, maxMs: 30_000 });
    const refused: Answer[] = [];
    const asked: Answer[] = [];
    try {
      expect(await flood.overloadedSeen(10_000)).toBe(true);
      // From the flooder's own address: they meet its full wait, and a stale copy of each is at hand.
      const same = client(FLOODER, 4);
      for (let round = 0; round < 3; round++) refused.push(...(await Promise.all(revoked.map((t) => ask(same, t)))));
      // From another address: they are served in turn, and the provider rejects them.
      const other = client(OTHER, 1);
      for (const token of revoked) asked.push(await ask(other, token));
    } finally {
      await flood.stop();
    }
    expect(refused.filter((answer) => answer.status !== 401 && answer.code !== 'overloaded')).toEqual([]);
    expect(refused.some((answer) => answer.code === 'overloaded')).toBe(true);
    expect(asked.map((answer) => answer.status)).toEqual(revoked.map(() => 401));
  }, 60_000);
});
