/**
 * Scenario 7, hostile traffic (bench/README.md). The `express-flood` server asks the OnlineOrNot mock
 * through a counting proxy (bench/counting-proxy.ts), which sees the calls in flight as the provider
 * does. Three parts, each with a fresh server:
 * 1. isolation: with the provider taking 50 ms, client A (127.0.0.1) floods never-seen tokens from 200
 *    connections while client B (127.0.0.2) sends a new valid token every 100 ms and client C
 *    (127.0.0.3) a cached one as fast as its connections go; C also runs alone before and after;
 * 2. a flood of rejected tokens against `cache.max: 500` holding 500 accepted tokens: how many of
 *    those the provider is asked about again afterwards (evicted). The 5,000 tokens come from as many
 *    connections as the gate lets verify and wait at once, so that each is verified (none refused);
 * 3. tokens revoked at the provider while their stale copies are kept (`staleIfError`), asked from the
 *    flooder's own address during a flood: how many come back 200.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CacheOptions, GateStats } from '../../src/index.js';
import { type CountingProxy, startCountingProxy } from '../counting-proxy.js';
import {
  answered,
  CACHED,
  type Client,
  describeAnswers,
  FLOODER,
  floodStats,
  NEWCOMER,
  runClient,
  runClients,
} from '../flood-runs.js';
import {
  BENCH_PERMISSIONS,
  type FloodClientResult,
  type FloodServerStats,
  formatInt,
  HOT_TOKEN,
  PROVIDER_POOL_SIZE,
  round,
} from '../lib.js';
import { stop } from '../processes.js';
import type { Outcome, Row } from '../report.js';
import { type Bench, type LiveServer, startServer, type Usage, usage } from '../runs.js';
import { settings } from '../settings.js';

const PROVIDER_LATENCY_MS = 50;
const FLOOD_CONNECTIONS = 200;
const NEWCOMER_INTERVAL_MS = 100;
const KEPT_TOKENS = 500;
const REJECTED_TOKENS = 5000;
const REVOKED_TOKENS = 20;
/** The gate's defaults for OnlineOrNot's pool: half as many verifications at once (two calls each), four times as many waiting. */
const GATE_ADMITS = 5 * Math.floor(PROVIDER_POOL_SIZE / 2);
const MIB = 2 ** 20;
/** Heap growth that still counts as flat: what a flood may keep is bounded (rejections, waiters), and far below this. */
const FLAT_HEAP_BYTES = 5 * MIB;
const SCENARIO = '7. Flood';
/** The server's timing of the gate's verifications (bench/server.ts). */
const VERIFICATION = 'verification (provider asked, answer read)';

/** Runs `body` with a fresh `express-flood` server, or its floor (with `--expose-gc`, for its memory figures). */
async function withFloodServer<T>(
  bench: Bench,
  cache: CacheOptions | undefined,
  body: (server: LiveServer) => Promise<T>,
  variant: 'express-flood' | 'express-flood-floor' = 'express-flood',
): Promise<T> {
  const config = cache === undefined ? bench : { ...bench, server: { ...bench.server, cache } };
  const server = await startServer(config, variant, ['--expose-gc']);
  try {
    return await body(server);
  } finally {
    await stop(server.child);
  }
}

/** Tokens the mock accepts with the bench permissions. */
function validTokens(bench: Bench, name: string, n: number): string[] {
  const run = randomBytes(4).toString('hex');
  return Array.from({ length: n }, (_, i) => {
    const token = `flood-${name}-${run}-${i}`;
    bench.provider.setToken(token, { id: `tok_${name}_${i}`, permissions: BENCH_PERMISSIONS });
    return token;
  });
}

const rps = (result: FloodClientResult) => result.requests / (result.elapsedMs / 1000);
const p99Of = (result: FloodClientResult, kind: string) => result.latency[kind]?.p99 ?? Number.NaN;
const mib = (bytes: number) => `${round(bytes / MIB, 1)} MiB`;

/** The gate's counts in a report from a gated server. */
function gateOf(stats: FloodServerStats): GateStats {
  if (stats.gate === undefined) throw new Error('flood-stats of a server without a gate');
  return stats.gate;
}

async function isolation(bench: Bench, proxy: CountingProxy) {
  const floodMs = settings.floodSeconds * 1000;
  const fresh = validTokens(bench, 'new', Math.floor(floodMs / NEWCOMER_INTERVAL_MS));
  const flooder: Client = {
    localAddress: FLOODER,
    connections: FLOOD_CONNECTIONS,
    durationMs: floodMs,
    mode: 'random',
  };
  const newcomer: Client = {
    localAddress: NEWCOMER,
    connections: 8,
    durationMs: floodMs,
    mode: 'paced',
    tokens: fresh,
    intervalMs: NEWCOMER_INTERVAL_MS,
  };
  const cached = (durationMs: number): Client => ({
    localAddress: CACHED,
    connections: settings.connections,
    durationMs,
    mode: 'cycle',
    tokens: [HOT_TOKEN],
  });
  bench.provider.latency = PROVIDER_LATENCY_MS;
  const warmMs = settings.warmupSeconds * 1000;
  /** Warms `server` with C and A, then runs C alone, the flood (A, B and C), and C alone again. */
  const aroundFlood = async <T>(server: LiveServer, warmed: () => Promise<T>) => {
    await runClients(server, [cached(warmMs), { ...flooder, durationMs: warmMs }]);
    const start = await warmed();
    const before = await cachedAlone(server, cached(floodMs / 2));
    const flood = await floodRun(server, proxy, [flooder, newcomer, cached(floodMs)]);
    const after = await cachedAlone(server, cached(floodMs / 2));
    const cachedRatio = round(rps(flood.cached) / ((rps(before.result) + rps(after.result)) / 2), 3);
    return { start, before, flood, after, cachedRatio };
  };
  const gated = await withFloodServer(bench, undefined, async (server) => {
    const { start, before, flood, after, cachedRatio } = await aroundFlood(server, () => floodStats(server));
    const end = await floodStats(server);
    const figures = {
      providerLatencyMs: PROVIDER_LATENCY_MS,
      seconds: settings.floodSeconds,
      newcomerTokens: fresh.length,
      ...flood,
      cachedAlone: [before.result, after.result] as const,
      cachedRatio,
      serverCpuMicrosPerRequestCachedAlone: before.cpuMicrosPerRequest,
      start,
      end,
    };
    console.log(
      `server: ${formatInt(figures.serverRequestsPerSecond)} req/s in all, core ${Math.round(figures.serverCpuShare * 100)}% busy, ${figures.serverCpuMicrosPerRequest} µs CPU/request; provider: at most ${figures.providerMaxInFlight} calls in flight on ${figures.providerMaxOpenConnections} connections`,
    );
    return figures;
  });
  // The same clients against the floor: what A's refusals and C's share cost this machine without a gate.
  const floor = await withFloodServer(
    bench,
    undefined,
    async (server) => {
      const { flood, cachedRatio } = await aroundFlood(server, async () => undefined);
      console.log(`floor: A's 503 p99 ${p99Of(flood.flooder, '503 overloaded')} ms, C during / alone ${cachedRatio}`);
      return { flooder: flood.flooder, cached: flood.cached, cachedRatio, serverTimings: flood.serverTimings };
    },
    'express-flood-floor',
  );
  return { ...gated, floor };
}

/** C alone: what it saw, and the server's CPU time per request over exactly its run. */
async function cachedAlone(server: LiveServer, client: Client) {
  let from: Usage | undefined;
  const result = await runClient(server, client, async () => {
    from = await usage(server.child);
  });
  const to = await usage(server.child);
  console.log(`C alone: ${formatInt(rps(result))} req/s (${describeAnswers(result)})`);
  return { result, cpuMicrosPerRequest: round((to.cpuMicros - (from?.cpuMicros ?? Number.NaN)) / result.requests, 1) };
}

/**
 * A, B and C at once: what each saw; over exactly their run, the server's requests, CPU, refusals by
 * reason and own timings, and the most calls the provider had in flight.
 */
async function floodRun(server: LiveServer, proxy: CountingProxy, clients: readonly [Client, Client, Client]) {
  let atGo: FloodServerStats | undefined;
  let before: Usage | undefined;
  const results = await runClients(server, clients, async () => {
    atGo = await floodStats(server); // also starts the server-side timings
    proxy.resetPeaks();
    before = await usage(server.child);
  });
  const after = await usage(server.child);
  const peaks = proxy.counts;
  const [a, b, c] = results;
  if (a === undefined || b === undefined || c === undefined || atGo === undefined || before === undefined) {
    throw new Error('a flood client gave no result');
  }
  const flooded = await floodStats(server);
  const refusals = Object.fromEntries(
    Object.entries(flooded.overloaded).map(([reason, n]) => [reason, n - (atGo?.overloaded[reason] ?? 0)]),
  );
  const served = a.requests + b.requests + c.requests;
  const cpuMicros = after.cpuMicros - before.cpuMicros;
  const wallSeconds = (after.wallMs - before.wallMs) / 1000;
  console.log(
    `A: ${describeAnswers(a)}; B: ${describeAnswers(b)}; C: ${formatInt(rps(c))} req/s (${describeAnswers(c)})`,
  );
  return {
    flooder: a,
    newcomer: b,
    cached: c,
    serverRequestsPerSecond: round(served / wallSeconds),
    serverCpuShare: round(cpuMicros / 1e6 / wallSeconds, 3),
    serverCpuMicrosPerRequest: round(cpuMicros / served, 1),
    providerMaxInFlight: peaks.maxInFlight,
    providerMaxOpenConnections: peaks.maxOpenConnections,
    serverTimings: flooded.timings,
    refusals,
  };
}

async function rejectedFlood(bench: Bench, proxy: CountingProxy) {
  // No provider latency here: every one of the 5,000 tokens is to reach the provider and be rejected.
  bench.provider.latency = 0;
  const kept = validTokens(bench, 'kept', KEPT_TOKENS);
  const run = randomBytes(4).toString('hex');
  const rejected = Array.from({ length: REJECTED_TOKENS }, (_, i) => `flood-unknown-${run}-${i}`);
  const each = (localAddress: string, connections: number, tokens: readonly string[]): Client => ({
    localAddress,
    connections,
    durationMs: 120_000,
    mode: 'each',
    tokens,
  });
  // A ttl far longer than the scenario: an accepted token asked about again was evicted, not expired.
  return withFloodServer(bench, { max: KEPT_TOKENS, ttl: 3_600_000 }, async (server) => {
    const filled = await runClient(server, each(NEWCOMER, 8, kept));
    const flood = await runClient(server, each(FLOODER, GATE_ADMITS, rejected));
    const callsBefore = proxy.counts.requests;
    const again = await runClient(server, each(NEWCOMER, 8, kept));
    // Two calls per verification: every accepted token asked about again was evicted.
    const evicted = (proxy.counts.requests - callsBefore) / 2;
    const figures = { kept: KEPT_TOKENS, filled, flood, again, evicted };
    console.log(
      `rejected flood: fill ${describeAnswers(filled)}; flood ${describeAnswers(flood)}; again ${describeAnswers(again)}; evicted ${evicted}`,
    );
    return figures;
  });
}

async function revokedFlood(bench: Bench) {
  bench.provider.latency = PROVIDER_LATENCY_MS;
  const revoked = validTokens(bench, 'revoked', REVOKED_TOKENS);
  const ttl = 1000;
  const floodMs = (settings.floodSeconds * 1000) / 2;
  return withFloodServer(bench, { ttl, staleIfError: 60_000 }, async (server) => {
    const warm = await runClient(server, {
      localAddress: NEWCOMER,
      connections: 4,
      durationMs: 30_000,
      mode: 'each',
      tokens: revoked,
    });
    for (const token of revoked) bench.provider.removeToken(token);
    await sleep(ttl + 200);
    const [, asked] = await runClients(server, [
      { localAddress: FLOODER, connections: FLOOD_CONNECTIONS, durationMs: floodMs, mode: 'random' },
      { localAddress: FLOODER, connections: 4, durationMs: floodMs, mode: 'cycle', tokens: revoked },
    ]);
    if (asked === undefined) throw new Error('no result from the revoked tokens client');
    const gate = gateOf(await floodStats(server));
    console.log(`revoked tokens during a flood: ${describeAnswers(asked)}; served stale: ${gate.stale}`);
    return { warm, asked, staleServed: gate.stale };
  });
}

export async function runFlood(bench: Bench): Promise<Outcome> {
  console.log(
    `\n## ${SCENARIO}: A floods new tokens from ${FLOOD_CONNECTIONS} connections (${FLOODER}), B sends a new valid token every ${NEWCOMER_INTERVAL_MS} ms (${NEWCOMER}), C a cached one (${CACHED}); provider latency ${PROVIDER_LATENCY_MS} ms`,
  );
  const proxy = await startCountingProxy(bench.provider.url);
  const viaProxy: Bench = { ...bench, server: { ...bench.server, providerUrl: proxy.url } };
  try {
    const part1 = await isolation(viaProxy, proxy);
    const part2 = await rejectedFlood(viaProxy, proxy);
    const part3 = await revokedFlood(viaProxy);
    const rows = [...isolationRows(part1), ...rejectedRows(part2), ...revokedRows(part3)];
    for (const row of rows)
      console.log(`${row.measure}: ${row.result} (goal ${row.goal}: ${row.met ? 'met' : 'NOT met'})`);
    return { results: { flood: { isolation: part1, rejectedFlood: part2, revokedFlood: part3 } }, rows };
  } finally {
    bench.provider.latency = 0;
    await proxy.close();
  }
}

/** Server-side time of one kind of answer: `p99 12.3 ms (p50 1.2)`. */
function serverTime(f: { readonly serverTimings: FloodServerStats['timings'] }, key: string): string {
  const timing = f.serverTimings[key];
  return timing === undefined ? 'none' : `p99 ${timing.p99} ms (p50 ${timing.p50}, ${formatInt(timing.count)} of them)`;
}

function isolationRows(f: Awaited<ReturnType<typeof isolation>>): Row[] {
  const { flooder: a, newcomer: b, cached: c } = f;
  const aOnlyRefusedOrRejected =
    Object.keys(a.answers).every((kind) => kind === '401' || kind === '503 overloaded') &&
    a.overloadedWithoutRetryAfter === 0 &&
    Object.keys(a.errors).length === 0;
  const heapGrowth = f.end.heapUsed - f.start.heapUsed;
  const [before, after] = f.cachedAlone;
  return [
    {
      scenario: SCENARIO,
      measure: `B's new valid tokens answered 200 (one every ${NEWCOMER_INTERVAL_MS} ms from ${NEWCOMER})`,
      result: `${answered(b, '200')} of ${f.newcomerTokens} (${describeAnswers(b)})`,
      goal: '100%',
      met: f.newcomerTokens > 0 && answered(b, '200') === f.newcomerTokens,
    },
    {
      scenario: SCENARIO,
      measure: "B's latency p99, ms",
      result:
        `${b.latencyAll.p99} (p50 ${b.latencyAll.p50}, max ${b.latencyAll.max}; in the server: ${serverTime(f, `${NEWCOMER} 200`)}; ` +
        `a verification, from the gate's first call to its verdict: ${serverTime(f, VERIFICATION)})`,
      goal: '< 500',
      met: b.latencyAll.p99 < 500,
    },
    {
      scenario: SCENARIO,
      measure: 'circuit breaker during the flood',
      result: `opened ${f.end.breakerOpens} times, ${gateOf(f.end).breakers.onlineornot} at the end`,
      goal: 'stays closed',
      met: f.end.breakerOpens === 0 && gateOf(f.end).breakers.onlineornot === 'closed',
    },
    {
      scenario: SCENARIO,
      measure: 'upstream calls in flight at the provider (max, seen by a counting proxy)',
      result: `${f.providerMaxInFlight} (on at most ${f.providerMaxOpenConnections} connections)`,
      // undici's pool caps these too: test/flood.test.ts counts the verifications the gate admits itself.
      goal: `<= ${PROVIDER_POOL_SIZE} (pool size)`,
      met: f.providerMaxInFlight <= PROVIDER_POOL_SIZE && f.providerMaxOpenConnections <= PROVIDER_POOL_SIZE,
    },
    {
      scenario: SCENARIO,
      measure: `A's 503 overloaded latency p99, ms (${FLOOD_CONNECTIONS} connections of never-seen tokens)`,
      result:
        `${p99Of(a, '503 overloaded')} (p50 ${a.latency['503 overloaded']?.p50}; in the server: ${serverTime(f, `${FLOODER} 503 overloaded`)}; ${formatInt(answered(a, '503 overloaded'))} refused, ` +
        `${formatInt(answered(a, '401'))} rejected by the provider, of ${formatInt(a.requests)}; ${describeAnswers(a)}; refusals by reason ${JSON.stringify(f.refusals)})`,
      goal: '< 50, Retry-After: 1, no other answer',
      met: p99Of(a, '503 overloaded') < 50 && aOnlyRefusedOrRejected,
    },
    {
      scenario: SCENARIO,
      measure: `C's cached-token req/s during the flood / alone (${settings.connections} connections from ${CACHED})`,
      result:
        `${f.cachedRatio} (${formatInt(rps(c))} / ${formatInt((rps(before) + rps(after)) / 2)} req/s; alone before ${formatInt(rps(before))}, after ${formatInt(rps(after))}; ` +
        `C's p99 during ${c.latencyAll.p99} ms, in the server ${serverTime(f, `${CACHED} 200`)}; server during the flood: ${formatInt(f.serverRequestsPerSecond)} req/s in all, core ${Math.round(f.serverCpuShare * 100)}% busy, ${f.serverCpuMicrosPerRequest} µs CPU/request, against ${f.serverCpuMicrosPerRequestCachedAlone} for C alone)`,
      goal: '>= 0.9',
      met: f.cachedRatio >= 0.9 && answered(c, '200') === c.requests,
    },
    {
      scenario: SCENARIO,
      measure:
        "for scale: the same clients against the floor (a Map lookup of the raw header that refuses every token it does not hold at once with 503 overloaded; no gate): A's 503 p99, ms; C's req/s during / alone",
      result:
        `${p99Of(f.floor.flooder, '503 overloaded')} (p50 ${f.floor.flooder.latency['503 overloaded']?.p50}; in the server: ${serverTime(f.floor, `${FLOODER} 503 overloaded`)}; ` +
        `${formatInt(answered(f.floor.flooder, '503 overloaded'))} refused); C: ${f.floor.cachedRatio}`,
      goal: "(information: what A's refusals and C's share cost this machine without any gate)",
      met: undefined,
    },
    {
      scenario: SCENARIO,
      measure: 'server heap used after a full GC, before and after the flood (RSS)',
      result: `${mib(f.start.heapUsed)} -> ${mib(f.end.heapUsed)} (RSS ${mib(f.start.rss)} -> ${mib(f.end.rss)})`,
      goal: `flat (grows < ${mib(FLAT_HEAP_BYTES)})`,
      met: heapGrowth < FLAT_HEAP_BYTES,
    },
  ];
}

function rejectedRows(f: Awaited<ReturnType<typeof rejectedFlood>>): Row[] {
  const rejections = answered(f.flood, '401');
  return [
    {
      scenario: `${SCENARIO} of rejected tokens`,
      measure: `accepted entries evicted (cache.max ${f.kept}, full of accepted tokens; ${formatInt(REJECTED_TOKENS)} never-seen tokens from ${GATE_ADMITS} connections, provider without latency)`,
      result:
        `${f.evicted} (rejected by the provider: ${formatInt(rejections)}; flood answers ${describeAnswers(f.flood)}; ` +
        `accepted tokens asked again: ${describeAnswers(f.again)})`,
      goal: '0, every one of the tokens rejected',
      met:
        f.evicted === 0 &&
        rejections === REJECTED_TOKENS &&
        answered(f.again, '200') === f.kept &&
        answered(f.filled, '200') === f.kept,
    },
  ];
}

function revokedRows(f: Awaited<ReturnType<typeof revokedFlood>>): Row[] {
  return [
    {
      scenario: `${SCENARIO}, revoked tokens`,
      measure: `revoked tokens answered 200 during a flood (staleIfError 60 s, ttl past; ${REVOKED_TOKENS} tokens asked in turn from the flooder's address)`,
      result: `${answered(f.asked, '200')} (${describeAnswers(f.asked)}; stale answers served: ${f.staleServed})`,
      goal: '0',
      met:
        answered(f.warm, '200') === REVOKED_TOKENS &&
        answered(f.asked, '200') === 0 &&
        f.staleServed === 0 &&
        f.asked.requests > 0,
    },
  ];
}
