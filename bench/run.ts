/**
 * The benchmark suite (`npm run bench`). See bench/README.md.
 *
 * Processes and cores (the machines have 2):
 * - this orchestrator, which also hosts the mock provider and the JWKS
 *   server, pinned to core 1;
 * - one server process per variant, pinned to core 0, kept for its scenario
 *   (only the one under load is busy);
 * - one autocannon process per scenario, pinned to core 1.
 * The mocks share core 1 with the load generator rather than the server's
 * core, so that the server's core does only the work being measured; each
 * run also reports the server's CPU time per request, which does not depend
 * on which side saturates first.
 *
 * Servers are warmed once, then variants are interleaved in many short rounds
 * (A B, then B A, ...) so that drift and bursts of other work on the shared
 * machine fall on both alike, and ratios are medians of the per-round ratios.
 * The stampede starts fresh servers per round (its token must be cold).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createSign, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { compiled } from './compile.js';
import {
  BENCH_PERMISSIONS,
  formatInt,
  HOST,
  HOT_TOKEN,
  type LoadConfig,
  type LoadMessage,
  type LoadResult,
  median,
  ROUTE_PERMISSION,
  round,
  type ServerConfig,
  type ServerMessage,
  STAMPEDE_LATENCY_MS,
  VARIANTS,
  type Variant,
} from './lib.js';
import type { MemoryResult } from './memory.js';
import type { MicroResult } from './micro.js';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (quick ? 3 : 10));
// The hot path's goal sits a few hundredths from the bare route, and its side-by-side medians of 10
// runs moved by ±0.025 from one suite run to the next, as much as that distance: 30 runs, from three
// starts of the servers (a process's own luck stays with all its runs; see `sideBySide` and
// bench/README.md, "Reading the table").
const HOT_ROUNDS = Number(process.env.BENCH_HOT_ROUNDS ?? (quick ? 3 : 30));
const HOT_ROUNDS_PER_START = Math.max(1, Math.ceil(HOT_ROUNDS / 3));
const DURATION = Number(process.env.BENCH_DURATION ?? (quick ? 1 : 2));
const WARMUP = Number(process.env.BENCH_WARMUP ?? (quick ? 1 : 2));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const SERVER_CORE = process.env.BENCH_SERVER_CORE ?? '0';
const LOAD_CORE = process.env.BENCH_LOAD_CORE ?? '1';
// BENCH_PAIR=a,b: nothing but a side-by-side run of two variants under the hot path's load, to check one
// change (the ratio b / a is printed; results.json is left alone).
const PAIR = process.env.BENCH_PAIR?.split(',');
if (PAIR !== undefined && (PAIR.length !== 2 || !PAIR.every((v) => (VARIANTS as readonly string[]).includes(v)))) {
  throw new Error(`BENCH_PAIR must name two of: ${VARIANTS.join(', ')}`);
}
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? (PAIR === undefined ? 'hot,peers,cold,stampede,memory,micro' : '')).split(','),
);
const STAMPEDE_REQUESTS = 1000;
const POOL_SIZE = 16; // the gate's default `connections`, and the hand-written pool's
const COLD_TOKENS = Number(process.env.BENCH_COLD_TOKENS ?? 250_000);

// ---- the orchestrator and its mocks live on the load generator's core ----
try {
  execFileSync('taskset', ['-a', '-p', '-c', LOAD_CORE, String(process.pid)], { stdio: 'ignore' });
} catch {
  console.warn('taskset failed: processes are not pinned, figures will be noisier');
}

const provider = await mockOnlineOrNot({ tokens: { [HOT_TOKEN]: { id: 'tok_hot', permissions: BENCH_PERMISSIONS } } });
const jwks = await startJwksServer();
const jwt = jwks.sign({ sub: 'user-1', scope: BENCH_PERMISSIONS.join(' ') });

// ---- processes ----

/** Runs `file`, compiled (see compile.ts), pinned to `core`, with an IPC channel. */
function startPinned(core: string, file: string, env: Record<string, string>, nodeFlags: string[] = []): ChildProcess {
  return spawn('taskset', ['-c', core, process.execPath, ...nodeFlags, compiled(file)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

function nextMessage<T extends { type: string }>(child: ChildProcess, type: T['type']): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: T) => {
      if (message.type === 'failed') finish(() => reject(new Error((message as { message?: string }).message)));
      else if (message.type === type) finish(() => resolve(message));
    };
    const onExit = (code: number | null) => finish(() => reject(new Error(`child exited (${code}) before '${type}'`)));
    const finish = (then: () => void) => {
      child.off('message', onMessage);
      child.off('exit', onExit);
      then();
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

async function usage(server: ChildProcess): Promise<Extract<ServerMessage, { type: 'usage' }>> {
  const reply = nextMessage<Extract<ServerMessage, { type: 'usage' }>>(server, 'usage');
  server.send({ type: 'usage' });
  return reply;
}

/** One measured run: what autocannon saw, and what the server and the mock did meanwhile. */
interface Run {
  readonly variant: Variant;
  readonly load: LoadResult;
  /** Server CPU time (user + system) per request of the measured run, µs. */
  readonly serverCpuMicrosPerRequest: number;
  /** Server CPU time / wall time during the measured run: ~1 means the server's core was the bottleneck. */
  readonly serverCpuShare: number;
  /** Upstream calls the gate made during the measured run. */
  readonly gateUpstreamCalls?: number;
  /** Requests the mock provider received during the measured run, per endpoint. */
  readonly providerCalls: { readonly verify: number; readonly permissions: number };
  /** TCP connections the mock accepted from this server process so far, warm-up included. */
  readonly providerConnections: number;
  /** TCP connections the mock accepted from this server during the measured run itself. */
  readonly providerConnectionsInRun: number;
}

/** One server process for `variant`, pinned to the server core. */
function startServerProcess(variant: Variant): ChildProcess {
  const config: ServerConfig = {
    variant,
    providerUrl: provider.url,
    jwksUri: jwks.jwksUri,
    issuer: jwks.issuer,
    audience: jwks.audience,
  };
  return startPinned(SERVER_CORE, 'server.ts', { BENCH_SERVER: JSON.stringify(config) });
}

async function measure(
  variant: Variant,
  load: Omit<LoadConfig, 'url'>,
  warmupAuthorization?: string,
  warmupBurst?: Omit<LoadConfig, 'url'>,
): Promise<Run> {
  const connectionsBefore = provider.connections;
  const server = startServerProcess(variant);
  let loader: ChildProcess | undefined;
  try {
    const { port } = await nextMessage<Extract<ServerMessage, { type: 'ready' }>>(server, 'ready');
    const url = `http://${HOST}:${port}/hello`;
    if (warmupAuthorization !== undefined) {
      // Warm the server's JIT and connection pool with another token, so the measured token is the only cold
      // thing ('none': warm without an Authorization header).
      await runLoad({
        url,
        connections: 32,
        warmup: 0,
        duration: 1,
        ...(warmupAuthorization === 'none' ? {} : { authorization: warmupAuthorization }),
      });
    }
    if (warmupBurst !== undefined) await runLoad({ ...warmupBurst, url });
    loader = startPinned(LOAD_CORE, load.generator === 'burst' ? 'burst.ts' : 'load.ts', {
      BENCH_LOAD: JSON.stringify({ ...load, url }),
    });
    await nextMessage(loader, 'warm');
    const before = await usage(server);
    const callsBefore = provider.calls;
    const result = nextMessage<Extract<LoadMessage, { type: 'result' }>>(loader, 'result');
    loader.send({ type: 'go' });
    const { result: loadResult } = await result;
    const after = await usage(server);
    const callsAfter = provider.calls;
    const opened = provider.connections - connectionsBefore;
    return toRun(variant, loadResult, before, after, providerCallsBetween(callsBefore, callsAfter), opened, opened);
  } finally {
    if (loader !== undefined) await stop(loader);
    await stop(server);
  }
}

type Usage = Extract<ServerMessage, { type: 'usage' }>;

function providerCallsBetween(before: Run['providerCalls'], after: Run['providerCalls']): Run['providerCalls'] {
  return { verify: after.verify - before.verify, permissions: after.permissions - before.permissions };
}

/** A measured run from the load result and the server's usage reports before and after it. */
function toRun(
  variant: Variant,
  load: LoadResult,
  before: Usage,
  after: Usage,
  providerCalls: Run['providerCalls'],
  providerConnections: number,
  providerConnectionsInRun: number,
): Run {
  const cpu = after.cpuMicros - before.cpuMicros;
  const gateCalls =
    after.gate === undefined || before.gate === undefined
      ? undefined
      : after.gate.upstreamCalls - before.gate.upstreamCalls;
  return {
    variant,
    load,
    serverCpuMicrosPerRequest: cpu / Math.max(1, load.requests),
    serverCpuShare: cpu / 1000 / (after.wallMs - before.wallMs),
    ...(gateCalls === undefined ? {} : { gateUpstreamCalls: gateCalls }),
    providerCalls,
    providerConnections,
    providerConnectionsInRun,
  };
}

/** A load run that is not measured, to warm a server: autocannon, or a burst (bench/burst.ts). */
async function runLoad(config: LoadConfig): Promise<LoadResult> {
  const loader = startPinned(LOAD_CORE, config.generator === 'burst' ? 'burst.ts' : 'load.ts', {
    BENCH_LOAD: JSON.stringify(config),
  });
  try {
    await nextMessage(loader, 'warm');
    const result = nextMessage<Extract<LoadMessage, { type: 'result' }>>(loader, 'result');
    loader.send({ type: 'go' });
    return (await result).result;
  } finally {
    await stop(loader);
  }
}

async function runChild<T>(file: string, nodeFlags: string[] = []): Promise<T> {
  const child = startPinned(SERVER_CORE, file, {}, nodeFlags);
  try {
    return (await nextMessage<{ type: 'result'; result: T }>(child, 'result')).result;
  } finally {
    await stop(child);
  }
}

// ---- rounds and reporting ----

function describeRun(run: Run): string {
  const { load } = run;
  const problems =
    load.non2xx + load.errors + load.timeouts > 0
      ? `  !! non2xx ${load.non2xx} errors ${load.errors} timeouts ${load.timeouts}`
      : '';
  return (
    `${run.variant.padEnd(17)} ${formatInt(load.requestsPerSecond).padStart(7)} req/s  p50 ${load.latencyP50} ms  p99 ${load.latencyP99} ms  ` +
    `server ${run.serverCpuMicrosPerRequest.toFixed(1)} µs CPU/req (core ${Math.round(run.serverCpuShare * 100)}% busy)` +
    `${load.burstWriteMs === undefined ? '' : `  burst written in ${load.burstWriteMs} ms`}${problems}`
  );
}

/** A server kept for a whole scenario. */
interface LiveServer {
  readonly variant: Variant;
  readonly child: ChildProcess;
  readonly url: string;
  /** Connections the mock accepted from it so far. */
  connections: number;
}

async function startServer(variant: Variant): Promise<LiveServer> {
  const child = startServerProcess(variant);
  const { port } = await nextMessage<Extract<ServerMessage, { type: 'ready' }>>(child, 'ready');
  return { variant, child, url: `http://${HOST}:${port}/hello`, connections: 0 };
}

/** One autocannon run by the kept load process. */
async function loadRun(loader: ChildProcess, config: LoadConfig): Promise<LoadResult> {
  const result = nextMessage<Extract<LoadMessage, { type: 'result' }>>(loader, 'result');
  loader.send({ type: 'run', config });
  return (await result).result;
}

/** One measured run against a kept server: what autocannon saw, and what the server and the mock did meanwhile. */
async function measureLive(server: LiveServer, loader: ChildProcess, load: LoadConfig): Promise<Run> {
  const connectionsBefore = provider.connections;
  const before = await usage(server.child);
  const callsBefore = provider.calls;
  const result = await loadRun(loader, load);
  const after = await usage(server.child);
  const callsAfter = provider.calls;
  // Only this server is under load, so the mock's new connections are its own.
  const opened = provider.connections - connectionsBefore;
  server.connections += opened;
  const calls = providerCallsBetween(callsBefore, callsAfter);
  return toRun(server.variant, result, before, after, calls, server.connections, opened);
}

/**
 * Runs `variants` round by round, alternating their order, and prints every run. Each variant's
 * server is started and warmed once and kept for the whole scenario, as is the load generator,
 * so that a round costs only its measured seconds: many short rounds ride out bursts of other
 * work on a shared machine better than a few long ones.
 */
async function interleave(
  name: string,
  variants: readonly Variant[],
  load: (variant: Variant) => Omit<LoadConfig, 'url'>,
): Promise<Record<string, Run[]>> {
  console.log(`\n## ${name}`);
  const runs: Record<string, Run[]> = Object.fromEntries(variants.map((v) => [v, []]));
  await withServers(variants, async (loader, servers) => {
    for (const server of servers) {
      const connectionsBefore = provider.connections;
      await loadRun(loader, { ...load(server.variant), url: server.url, duration: WARMUP });
      server.connections += provider.connections - connectionsBefore;
    }
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? servers : [...servers].reverse();
      for (const server of order) {
        const run = await measureLive(server, loader, { ...load(server.variant), url: server.url, duration: DURATION });
        runs[server.variant]?.push(run);
        console.log(`round ${r + 1}/${ROUNDS}  ${describeRun(run)}`);
      }
    }
  });
  return runs;
}

/** Starts a kept load process and one server per variant, runs `body` with them, then stops them all. */
async function withServers(
  variants: readonly Variant[],
  body: (loader: ChildProcess, servers: LiveServer[]) => Promise<void>,
): Promise<void> {
  const loader = startPinned(LOAD_CORE, 'load.ts', {});
  const servers: LiveServer[] = [];
  try {
    await nextMessage(loader, 'warm');
    for (const variant of variants) servers.push(await startServer(variant));
    await body(loader, servers);
  } finally {
    await stop(loader);
    await Promise.all(servers.map((server) => stop(server.child)));
  }
}

/**
 * The same variants side by side: every server on the server core at once, loaded by one autocannon
 * instance each from one load process on the load core, for `rounds` runs of `DURATION` s. They share
 * the core at every moment, so whatever else the machine does (other tenants, clock changes) falls on
 * all of them alike within a run, and per-run ratios of requests and of CPU time per request are steady;
 * runs taken one after the other (`interleave`) spread by ±0.3 per round on these shared machines.
 * The servers are started afresh every `roundsPerStart` runs, in the other order each time: a process
 * carries its own luck (heap and code layout, JIT decisions) into all of its runs alike, which more runs
 * of the same processes cannot average out.
 * Requests are counted per server; provider calls and connections are not (the servers share the
 * mock), so scenarios that judge those take them from `interleave`.
 */
async function sideBySide(
  name: string,
  variants: readonly Variant[],
  load: (variant: Variant) => Omit<LoadConfig, 'url'>,
  rounds = ROUNDS,
  roundsPerStart = rounds,
): Promise<Record<string, Run[]>> {
  console.log(`\n## ${name}, side by side on core ${SERVER_CORE}`);
  const runs: Record<string, Run[]> = Object.fromEntries(variants.map((v) => [v, []]));
  for (let first = 0; first < rounds; first += roundsPerStart) {
    const order = (first / roundsPerStart) % 2 === 0 ? variants : [...variants].reverse();
    const last = Math.min(rounds, first + roundsPerStart);
    await withServers(order, (loader, servers) => measureSideBySide(loader, servers, load, first, last, rounds, runs));
  }
  return runs;
}

/** One start of `sideBySide`: a shared warm-up, then runs `first` to `last - 1` (of `rounds`) into `runs`. */
async function measureSideBySide(
  loader: ChildProcess,
  servers: LiveServer[],
  load: (variant: Variant) => Omit<LoadConfig, 'url'>,
  first: number,
  last: number,
  rounds: number,
  runs: Record<string, Run[]>,
): Promise<void> {
  const runAll = async (duration: number): Promise<readonly LoadResult[]> => {
    const results = nextMessage<Extract<LoadMessage, { type: 'results' }>>(loader, 'results');
    loader.send({
      type: 'runAll',
      configs: servers.map((server) => ({ ...load(server.variant), url: server.url, duration })),
    });
    return (await results).results;
  };
  // The servers share the mock: its calls and connections are not any one server's.
  const unknown = { verify: Number.NaN, permissions: Number.NaN };
  // Longer than a single server's warm-up: two servers share the core, each gets half the time to warm its JIT.
  await runAll(Math.max(5, 2 * WARMUP));
  for (let r = first; r < last; r++) {
    const before = await Promise.all(servers.map((server) => usage(server.child)));
    const results = await runAll(DURATION);
    const after = await Promise.all(servers.map((server) => usage(server.child)));
    servers.forEach((server, i) => {
      const usages = [before[i], after[i]] as const;
      if (usages[0] === undefined || usages[1] === undefined) throw new Error('missing usage report');
      const run = toRun(
        server.variant,
        results[i] as LoadResult,
        usages[0],
        usages[1],
        unknown,
        Number.NaN,
        Number.NaN,
      );
      runs[server.variant]?.push(run);
      console.log(`run ${r + 1}/${rounds}  ${describeRun(run)}`);
    });
  }
}

const rps = (runs: readonly Run[]): number[] => runs.map((run) => run.load.requestsPerSecond);

/** Per-round ratios a/b of requests/s (same round, so drift cancels) and their median. */
function ratio(a: readonly Run[], b: readonly Run[]): { perRound: number[]; median: number } {
  const perRound = a.map((run, i) =>
    round(run.load.requestsPerSecond / (b[i]?.load.requestsPerSecond ?? Number.NaN), 3),
  );
  return { perRound, median: round(median(perRound), 3) };
}

/**
 * The same comparison in server CPU time per request (b's over a's, so that it reads like the
 * requests/s ratio): it holds even in rounds where the load side, not the server, set the pace.
 */
function cpuRatio(a: readonly Run[], b: readonly Run[]): number {
  return round(
    median(a.map((run, i) => (b[i]?.serverCpuMicrosPerRequest ?? Number.NaN) / run.serverCpuMicrosPerRequest)),
    3,
  );
}

/** A ratio row's result: median, both medians in req/s, every round, and the CPU-per-request ratio. */
function ratioResult(a: readonly Run[], b: readonly Run[]): string {
  const r = ratio(a, b);
  return (
    `${r.median} (${formatInt(median(rps(a)))} / ${formatInt(median(rps(b)))} req/s; ` +
    `rounds ${r.perRound.join(', ')}; by server CPU per request ${cpuRatio(a, b)})`
  );
}

function variantSummary(runs: readonly Run[]) {
  const values = rps(runs);
  return {
    rounds: runs.map((run) => ({
      requestsPerSecond: round(run.load.requestsPerSecond),
      latencyP50: run.load.latencyP50,
      latencyP99: run.load.latencyP99,
      non2xx: run.load.non2xx,
      errors: run.load.errors + run.load.timeouts,
      serverCpuMicrosPerRequest: round(run.serverCpuMicrosPerRequest, 2),
      serverCpuShare: round(run.serverCpuShare, 3),
      providerCalls: run.providerCalls,
      providerConnections: run.providerConnections,
      providerConnectionsInRun: run.providerConnectionsInRun,
      ...(run.gateUpstreamCalls === undefined ? {} : { gateUpstreamCalls: run.gateUpstreamCalls }),
    })),
    medianRequestsPerSecond: round(median(values)),
    minRequestsPerSecond: round(Math.min(...values)),
    maxRequestsPerSecond: round(Math.max(...values)),
    medianServerCpuMicrosPerRequest: round(median(runs.map((run) => run.serverCpuMicrosPerRequest)), 2),
  };
}

/** All runs answered 2xx, without errors: a figure from failing requests means nothing. */
function clean(runs: readonly Run[]): boolean {
  return runs.every((run) => run.load.non2xx === 0 && run.load.errors === 0 && run.load.timeouts === 0);
}

interface Row {
  readonly scenario: string;
  readonly measure: string;
  readonly result: string;
  readonly goal: string;
  readonly met: boolean | undefined;
}

const rows: Row[] = [];
const results: Record<string, unknown> = {};

// ---- scenarios ----

const hotLoad = { connections: CONNECTIONS, warmup: WARMUP, duration: DURATION, authorization: `Bearer ${HOT_TOKEN}` };
const halfHotLoad = { ...hotLoad, connections: Math.max(1, CONNECTIONS / 2) };

if (PAIR !== undefined) {
  const [a, b] = PAIR as [Variant, Variant];
  const runs = await sideBySide(`${b} / ${a}`, [a, b], () => halfHotLoad, HOT_ROUNDS, HOT_ROUNDS_PER_START);
  console.log(`\n${b} / ${a}, side by side: ${ratioResult(runs[b] ?? [], runs[a] ?? [])}`);
}

if (ONLY.has('hot')) {
  for (const [framework, bare, noop, floor, gated] of [
    ['Express', 'express-bare', 'express-noop', 'express-floor', 'express-gate'],
    ['Koa', 'koa-bare', 'koa-noop', 'koa-floor', 'koa-gate'],
  ] as const) {
    const title = `1. Hot path, ${framework}: bare route vs two pass-through middleware vs authenticate + requires (cached token)`;
    // Two at a time, each with half the connections: the load process drives both, and the core is shared by two.
    const paired = await sideBySide(title, [bare, gated], () => halfHotLoad, HOT_ROUNDS, HOT_ROUNDS_PER_START);
    const floorPaired = await sideBySide(
      `${title}: the floor`,
      [bare, floor],
      () => halfHotLoad,
      HOT_ROUNDS,
      HOT_ROUNDS_PER_START,
    );
    const runs = await interleave(title, [bare, noop, gated], () => hotLoad);
    const judged = ratio(paired[gated] ?? [], paired[bare] ?? []);
    const bareRuns = runs[bare] ?? [];
    const noopRuns = runs[noop] ?? [];
    const gatedRuns = runs[gated] ?? [];
    const ok =
      [bare, gated].every((v) => clean(paired[v] ?? [])) && [bare, noop, gated].every((v) => clean(runs[v] ?? []));
    const floorRatio = ratio(floorPaired[floor] ?? [], floorPaired[bare] ?? []);
    results[`hot${framework}`] = {
      sideBySide: {
        bare: variantSummary(paired[bare] ?? []),
        gated: variantSummary(paired[gated] ?? []),
        ratio: judged,
        cpuRatio: cpuRatio(paired[gated] ?? [], paired[bare] ?? []),
      },
      floorSideBySide: {
        bare: variantSummary(floorPaired[bare] ?? []),
        floor: variantSummary(floorPaired[floor] ?? []),
        ratio: floorRatio,
        cpuRatio: cpuRatio(floorPaired[floor] ?? [], floorPaired[bare] ?? []),
        clean: [bare, floor].every((v) => clean(floorPaired[v] ?? [])),
      },
      alternating: {
        bare: variantSummary(bareRuns),
        twoPassThroughMiddleware: variantSummary(noopRuns),
        gated: variantSummary(gatedRuns),
        ratio: ratio(gatedRuns, bareRuns),
        cpuRatio: cpuRatio(gatedRuns, bareRuns),
        passThroughRatio: ratio(noopRuns, bareRuns),
        passThroughCpuRatio: cpuRatio(noopRuns, bareRuns),
      },
      clean: ok,
    };
    rows.push({
      scenario: `1. Hot path, ${framework}`,
      measure: 'req/s gated / bare, side by side on one core (median of per-run ratios)',
      result: ratioResult(paired[gated] ?? [], paired[bare] ?? []),
      goal: '>= 0.95',
      met: ok && judged.median >= 0.95,
    });
    rows.push({
      scenario: `1. Hot path, ${framework}`,
      measure: 'the same, one after the other (A B, B A, ...; median of per-round ratios)',
      result: ratioResult(gatedRuns, bareRuns),
      goal: '(information: the spread of sequential rounds on this machine)',
      met: undefined,
    });
    rows.push({
      scenario: `1. Hot path, ${framework}`,
      measure: 'for scale: two pass-through middleware / bare, one after the other',
      result: ratioResult(noopRuns, bareRuns),
      goal: '(what the framework charges for two more handlers)',
      met: undefined,
    });
    rows.push({
      scenario: `1. Hot path, ${framework}`,
      measure:
        'for scale: the floor / bare, side by side: a hand-written check that looks the raw header up in a Map (no hash, grammar, expiry or LRU)',
      result: ratioResult(floorPaired[floor] ?? [], floorPaired[bare] ?? []),
      goal: '(the least any cached-token middleware costs here)',
      met: undefined,
    });
  }
}

if (ONLY.has('peers')) {
  const runs = await interleave(
    '2. Peers on the same route: tokengate (cached) vs passport-http-bearer (provider call per request) vs express-oauth2-jwt-bearer (local RS256)',
    ['express-gate', 'express-passport', 'express-jwt'],
    // The JWT variant gets the signed JWT, the others the opaque token.
    (variant) => (variant === 'express-jwt' ? { ...hotLoad, authorization: `Bearer ${jwt}` } : hotLoad),
  );
  const ours = runs['express-gate'] ?? [];
  const passportRuns = runs['express-passport'] ?? [];
  const jwtRuns = runs['express-jwt'] ?? [];
  const vsPassport = ratio(ours, passportRuns);
  const vsJwt = ratio(ours, jwtRuns);
  const ok = clean(ours) && clean(passportRuns) && clean(jwtRuns);
  results.peers = {
    tokengate: variantSummary(ours),
    passportHttpBearer: variantSummary(passportRuns),
    expressOauth2JwtBearer: variantSummary(jwtRuns),
    ratioVsPassport: vsPassport,
    ratioVsJwt: vsJwt,
    clean: ok,
  };
  rows.push({
    scenario: '2a. Peer: passport-http-bearer',
    measure: 'req/s tokengate / passport',
    result: `${vsPassport.median} (${formatInt(median(rps(ours)))} / ${formatInt(median(rps(passportRuns)))} req/s)`,
    goal: '> 1',
    met: ok && vsPassport.median > 1,
  });
  rows.push({
    scenario: '2b. Peer: express-oauth2-jwt-bearer',
    measure: 'req/s tokengate / jwt-bearer',
    result: `${vsJwt.median} (${formatInt(median(rps(ours)))} / ${formatInt(median(rps(jwtRuns)))} req/s)`,
    goal: '> 1',
    met: ok && vsJwt.median > 1,
  });
}

if (ONLY.has('cold')) {
  for (let i = 0; i < COLD_TOKENS; i++)
    provider.setToken(`cold-${i}`, { id: `tok_${i}`, permissions: BENCH_PERMISSIONS });
  const coldLoad = {
    connections: CONNECTIONS,
    warmup: WARMUP,
    duration: DURATION,
    coldPrefix: 'cold-',
    coldLimit: COLD_TOKENS,
  };
  const title =
    '3. Cold path: a new token on every request, provider without latency: tokengate vs hand-written undici calls';
  const paired = await sideBySide(title, ['express-gate', 'express-hand'], () => ({
    ...coldLoad,
    connections: Math.max(1, CONNECTIONS / 2),
  }));
  const runs = await interleave(title, ['express-gate', 'express-hand'], () => coldLoad);
  const pairedGated = paired['express-gate'] ?? [];
  const pairedHand = paired['express-hand'] ?? [];
  const judged = ratio(pairedGated, pairedHand);
  const gated = runs['express-gate'] ?? [];
  const hand = runs['express-hand'] ?? [];
  const r = ratio(gated, hand);
  // Per measured run: between its runs a server sits idle while the other variant is measured, long
  // enough for the mock's keep-alive timeout (5 s, announced in its Keep-Alive header) to close idle
  // sockets, so across the scenario a pool reconnects. Within a run of continuous load it must not
  // open more than its size.
  const maxConnections = Math.max(...gated.map((run) => run.providerConnectionsInRun));
  const totalConnections = Math.max(...gated.map((run) => run.providerConnections));
  const everyRequestUpstream = gated.every((run) => run.providerCalls.verify >= run.load.requests);
  const ok = clean(gated) && clean(hand) && clean(pairedGated) && clean(pairedHand) && everyRequestUpstream;
  results.cold = {
    sideBySide: {
      tokengate: variantSummary(pairedGated),
      handWritten: variantSummary(pairedHand),
      ratio: judged,
      cpuRatio: cpuRatio(pairedGated, pairedHand),
    },
    tokengate: variantSummary(gated),
    handWritten: variantSummary(hand),
    ratio: r,
    cpuRatio: cpuRatio(gated, hand),
    maxProviderConnectionsInOneRun: maxConnections,
    providerConnectionsWholeScenario: totalConnections,
    poolSize: POOL_SIZE,
    clean: ok,
  };
  rows.push({
    scenario: '3. Cold path',
    measure: 'req/s tokengate / hand-written undici, side by side on one core (median of per-run ratios)',
    result: ratioResult(pairedGated, pairedHand),
    goal: '>= 0.9',
    met: ok && judged.median >= 0.9,
  });
  rows.push({
    scenario: '3. Cold path',
    measure: 'the same, one after the other (A B, B A, ...)',
    result: ratioResult(gated, hand),
    goal: '(information)',
    met: undefined,
  });
  rows.push({
    scenario: '3. Cold path',
    measure: 'provider connections opened during one measured run (max over rounds)',
    result: `${maxConnections} (${totalConnections} over the whole scenario, warm-up and idle gaps included)`,
    goal: `<= ${POOL_SIZE} (pool size)`,
    met: maxConnections <= POOL_SIZE,
  });
}

if (ONLY.has('stampede')) {
  console.log(
    `\n## 4. Stampede: ${STAMPEDE_REQUESTS} concurrent requests for one cold token, provider latency ${STAMPEDE_LATENCY_MS} ms`,
  );
  // Baseline in the same rounds: the same burst of 1,000 fresh connections against the bare route, no
  // provider at all. It shows what the server and load generator take to get through such a burst.
  const stampedeRounds = quick ? 1 : 5;
  const burst = {
    connections: STAMPEDE_REQUESTS,
    amount: STAMPEDE_REQUESTS,
    warmup: 0,
    duration: 0,
    generator: 'burst' as const,
  };
  const runs: Run[] = [];
  const bareRuns: Run[] = [];
  const waitRuns: Run[] = [];
  for (let r = 0; r < stampedeRounds; r++) {
    const bare = await measure('express-bare', burst, 'none', burst);
    bareRuns.push(bare);
    console.log(`round ${r + 1}/${stampedeRounds}  ${describeRun(bare)}  (same burst, bare route)`);
    const token = `stampede-${randomUUID()}`;
    const warmToken = `stampede-warm-${randomUUID()}`;
    provider.setToken(warmToken, { id: `tok_stampede_warm_${r}`, permissions: BENCH_PERMISSIONS });
    // The measured burst for `token`, after a warm-up with the hot token and one burst for `warmToken`.
    const measureColdBurst = (variant: Variant) =>
      measure(variant, { ...burst, authorization: `Bearer ${token}` }, `Bearer ${HOT_TOKEN}`, {
        ...burst,
        authorization: `Bearer ${warmToken}`,
      });
    const wait = await measureColdBurst('express-wait');
    waitRuns.push(wait);
    console.log(
      `round ${r + 1}/${stampedeRounds}  ${describeRun(wait)}  (same burst, one shared ${STAMPEDE_LATENCY_MS} ms wait, no gate)`,
    );
    provider.setToken(token, { id: `tok_stampede_${r}`, permissions: BENCH_PERMISSIONS });
    provider.latency = STAMPEDE_LATENCY_MS;
    try {
      const run = await measureColdBurst('express-gate');
      runs.push(run);
      console.log(
        `round ${r + 1}/${stampedeRounds}  ${describeRun(run)}  upstream: gate ${run.gateUpstreamCalls}, mock verify ${run.providerCalls.verify} permissions ${run.providerCalls.permissions}`,
      );
    } finally {
      provider.latency = 0;
    }
  }
  const maxUpstream = Math.max(
    ...runs.map((run) =>
      Math.max(run.gateUpstreamCalls ?? Number.NaN, run.providerCalls.verify, run.providerCalls.permissions),
    ),
  );
  const p99 = median(runs.map((run) => run.load.latencyP99));
  const bareP99 = median(bareRuns.map((run) => run.load.latencyP99));
  const added = median(runs.map((run, i) => run.load.latencyP99 - (bareRuns[i]?.load.latencyP99 ?? Number.NaN)));
  const waitP99 = median(waitRuns.map((run) => run.load.latencyP99));
  const addedOverWait = median(
    runs.map((run, i) => run.load.latencyP99 - (waitRuns[i]?.load.latencyP99 ?? Number.NaN)),
  );
  const allAnswered =
    [...runs, ...bareRuns, ...waitRuns].every((run) => run.load.requests === STAMPEDE_REQUESTS) &&
    clean(runs) &&
    clean(bareRuns) &&
    clean(waitRuns);
  results.stampede = {
    requests: STAMPEDE_REQUESTS,
    providerLatencyMs: STAMPEDE_LATENCY_MS,
    rounds: variantSummary(runs).rounds,
    bareBurstRounds: variantSummary(bareRuns).rounds,
    sharedWaitRounds: variantSummary(waitRuns).rounds,
    maxUpstreamCalls: maxUpstream,
    medianP99: p99,
    medianBareBurstP99: bareP99,
    medianP99AddedOverBareBurst: added,
    medianSharedWaitP99: waitP99,
    medianP99AddedOverSharedWait: addedOverWait,
    clean: allAnswered,
  };
  rows.push({
    scenario: '4. Stampede',
    measure: 'upstream calls per endpoint (max over rounds)',
    result: `${maxUpstream}`,
    goal: 'exactly 1',
    met: allAnswered && maxUpstream === 1,
  });
  rows.push({
    scenario: '4. Stampede',
    measure: 'p99 latency, ms (median over rounds)',
    result:
      `${p99} (rounds ${runs.map((run) => run.load.latencyP99).join(', ')}); the same burst on the bare route: ${bareP99}; ` +
      `with one shared ${STAMPEDE_LATENCY_MS} ms wait and no gate: ${waitP99}`,
    goal: `< ${STAMPEDE_LATENCY_MS + 20}`,
    met: allAnswered && p99 < STAMPEDE_LATENCY_MS + 20,
  });
  rows.push({
    scenario: '4. Stampede',
    measure: 'p99 added over the same burst on the bare route, ms (median of per-round differences)',
    result: `${round(added, 1)}`,
    goal: `< ${STAMPEDE_LATENCY_MS + 20} (information: the goal above without the burst's own cost)`,
    met: undefined,
  });
  rows.push({
    scenario: '4. Stampede',
    measure: `p99 added over the same burst through one shared ${STAMPEDE_LATENCY_MS} ms wait and no gate, ms (median of per-round differences)`,
    result: `${round(addedOverWait, 1)}`,
    goal: '(information: what the gate itself adds to a stampede)',
    met: undefined,
  });
}

if (ONLY.has('memory')) {
  console.log('\n## 5. Memory: 100,000 distinct cached tokens');
  const memory = await runChild<MemoryResult>('memory.ts', ['--expose-gc']);
  console.log(JSON.stringify(memory, null, 2));
  results.memory = memory;
  rows.push({
    scenario: '5. Memory',
    measure: `heap bytes per cached entry (${formatInt(memory.entries)} entries)`,
    result:
      `${memory.heapBytesPerEntry} B (plus ${memory.arrayBufferBytesPerEntry} B/entry of ArrayBuffers off the heap; ` +
      `RSS +${formatInt(memory.rssBytesPerEntry)} B/entry, ${formatInt(memory.rssAfter / 2 ** 20)} MiB in all; ` +
      `${memory.distinctPermissionLists} permission lists shared: ${memory.sharedPermissionLists ? 'yes' : 'no'})`,
    goal: '<= 300 B',
    met: memory.heapBytesPerEntry <= 300 && memory.sharedPermissionLists,
  });
}

if (ONLY.has('micro')) {
  console.log('\n## 6. Micro: cached gate.authenticate()');
  const micro = await runChild<MicroResult>('micro.ts');
  for (const task of micro.tasks)
    console.log(`${task.name.padEnd(60)} ${task.nsPerOp.toFixed(0).padStart(6)} ns/op  ±${task.rme.toFixed(1)}%`);
  results.micro = micro;
  const main = micro.tasks.find((task) => task.name === micro.headline);
  rows.push({
    scenario: '6. Micro',
    measure: 'ns per cached gate.authenticate()',
    result: `${main === undefined ? 'n/a' : main.nsPerOp.toFixed(0)} ns`,
    goal: '(find what to cut)',
    met: undefined,
  });
}

// ---- table and results.json ----

const table = [
  '| Scenario | Measure | Result | Goal | Met |',
  '| --- | --- | --- | --- | --- |',
  ...rows.map(
    (row) =>
      `| ${row.scenario} | ${row.measure} | ${row.result} | ${row.goal} | ${row.met === undefined ? '–' : row.met ? 'yes' : '**no**'} |`,
  ),
].join('\n');
if (rows.length > 0) console.log(`\n${table}\n`);

const meta = {
  date: new Date().toISOString(),
  node: process.version,
  rounds: ROUNDS,
  hotSideBySideRounds: HOT_ROUNDS,
  hotSideBySideRoundsPerStart: HOT_ROUNDS_PER_START,
  durationSeconds: DURATION,
  warmupSeconds: WARMUP,
  connections: CONNECTIONS,
  serverCore: SERVER_CORE,
  loadCore: LOAD_CORE,
  quick,
  routePermission: ROUTE_PERMISSION,
};
if (PAIR === undefined) {
  writeFileSync(join(here, 'results.json'), `${JSON.stringify({ meta, table: rows, ...results }, null, 2)}\n`);
  console.log(`wrote ${join('bench', 'results.json')}`);
}

await provider.close();
await jwks.close();

// ---- the JWKS server of scenario 2b ----

interface Jwks {
  readonly jwksUri: string;
  readonly issuer: string;
  readonly audience: string;
  sign(claims: Record<string, unknown>): string;
  close(): Promise<void>;
}

/** An RS256 key pair made at startup, its public half served as a JWKS on 127.0.0.1. */
async function startJwksServer(): Promise<Jwks> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'bench-key-1';
  const body = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] });
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${HOST}:${port}/`;
  const audience = 'https://api.bench.example';
  return {
    jwksUri: `${issuer}.well-known/jwks.json`,
    issuer,
    audience,
    sign: (claims) =>
      signRs256({ iss: issuer, aud: audience, iat: now(), exp: now() + 3600, ...claims }, privateKey, kid),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}

function signRs256(claims: Record<string, unknown>, key: KeyObject, kid: string): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode({ alg: 'RS256', typ: 'JWT', kid })}.${encode(claims)}`;
  const signature = createSign('RSA-SHA256').update(input).sign(key).toString('base64url');
  return `${input}.${signature}`;
}
