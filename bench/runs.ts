/**
 * Measured runs: server processes (bench/server.ts) on the server core, loaded from the load core by
 * autocannon (bench/load.ts) or a burst (bench/burst.ts), with the server's CPU time and the mock
 * provider's calls and connections read around every run.
 *
 * Two ways to compare variants (bench/README.md, "How it runs"):
 * - `interleave`: one after the other, in alternating order (A B, B A, ...);
 * - `sideBySide`: all servers on the server core at once, one autocannon instance each.
 */
import type { ChildProcess } from 'node:child_process';
import type { MockOnlineOrNot } from '../src/testing/index.js';
import {
  formatInt,
  HOST,
  type LoadConfig,
  type LoadMessage,
  type LoadResult,
  type ServerConfig,
  type ServerMessage,
  type Variant,
} from './lib.js';
import { nextMessage, startPinned, stop } from './processes.js';
import { settings } from './settings.js';

/** What runs need from the suite: the mock provider every server calls, and the rest of each server's config. */
export interface Bench {
  readonly provider: MockOnlineOrNot;
  readonly server: Omit<ServerConfig, 'variant'>;
}

/** A load run's settings, without the server's URL. */
export type Load = Omit<LoadConfig, 'url'>;

/** Provider calls per endpoint. */
export type ProviderCalls = { readonly verify: number; readonly permissions: number };

/** One measured run: what the load generator saw, and what the server and the mock did meanwhile. */
export interface Run {
  readonly variant: Variant;
  readonly load: LoadResult;
  /** Server CPU time (user + system) per request of the measured run, µs. */
  readonly serverCpuMicrosPerRequest: number;
  /** Server CPU time / wall time during the measured run: ~1 means the server's core was the bottleneck. */
  readonly serverCpuShare: number;
  /** Upstream calls the gate made during the measured run. */
  readonly gateUpstreamCalls?: number;
  /** Requests the mock provider received during the measured run, per endpoint. */
  readonly providerCalls: ProviderCalls;
  /** TCP connections the mock accepted from this server process so far, warm-up included. */
  readonly providerConnections: number;
  /** TCP connections the mock accepted from this server during the measured run itself. */
  readonly providerConnectionsInRun: number;
  /** `express-spin`: what its spin took per request during the run, µs (median of the requests it timed). */
  readonly spinMicros?: number;
}

/** A server process, kept while its runs last. */
export interface LiveServer<V extends Variant = Variant> {
  readonly variant: V;
  readonly child: ChildProcess;
  readonly url: string;
  /** Connections the mock accepted from it so far. */
  connections: number;
}

/** A load process (bench/load.ts) kept for a whole scenario, so that a run costs no process start-up. */
export interface Loader {
  /** One autocannon run. */
  run(config: LoadConfig): Promise<LoadResult>;
  /** Several autocannon instances at once, one per config (side by side). */
  runAll(configs: readonly LoadConfig[]): Promise<readonly LoadResult[]>;
}

export type Usage = Extract<ServerMessage, { type: 'usage' }>;

/** Starts the server process of `variant` on the server core and waits until it listens. */
export async function startServer<V extends Variant>(
  bench: Bench,
  variant: V,
  nodeFlags: readonly string[] = [],
): Promise<LiveServer<V>> {
  const config: ServerConfig = { ...bench.server, variant };
  const child = startPinned(settings.serverCore, 'server.ts', { BENCH_SERVER: JSON.stringify(config) }, nodeFlags);
  const { port } = await nextMessage<Extract<ServerMessage, { type: 'ready' }>>(child, 'ready');
  return { variant, child, url: `http://${HOST}:${port}/hello`, connections: 0 };
}

/** Runs `body` with a kept load process on the load core, then stops it. */
export async function withLoader<T>(body: (loader: Loader) => Promise<T>): Promise<T> {
  const child = startPinned(settings.loadCore, 'load.ts');
  try {
    await nextMessage(child, 'warm');
    return await body({
      async run(config) {
        const result = nextMessage<Extract<LoadMessage, { type: 'result' }>>(child, 'result');
        child.send({ type: 'run', config });
        return (await result).result;
      },
      async runAll(configs) {
        const results = nextMessage<Extract<LoadMessage, { type: 'results' }>>(child, 'results');
        child.send({ type: 'runAll', configs });
        return (await results).results;
      },
    });
  } finally {
    await stop(child);
  }
}

/**
 * One burst (bench/burst.ts) on the load core: once its connections are open, `body` gets `go`, which
 * sends every request at once and resolves with what the burst saw.
 */
export async function withBurst<T>(
  config: LoadConfig,
  body: (go: () => Promise<LoadResult>) => Promise<T>,
): Promise<T> {
  const child = startPinned(settings.loadCore, 'burst.ts', { BENCH_LOAD: JSON.stringify(config) });
  try {
    await nextMessage(child, 'warm');
    return await body(async () => {
      const result = nextMessage<Extract<LoadMessage, { type: 'result' }>>(child, 'result');
      child.send({ type: 'go' });
      return (await result).result;
    });
  } finally {
    await stop(child);
  }
}

/** The server's CPU time, clock and gate stats, now. */
export function usage(server: ChildProcess): Promise<Usage> {
  const reply = nextMessage<Usage>(server, 'usage');
  server.send({ type: 'usage' });
  return reply;
}

/** Runs `load` against `server` alone, so that the connections the mock accepts meanwhile are the server's. */
export async function counted<T>(bench: Bench, server: LiveServer, load: () => Promise<T>): Promise<T> {
  const connectionsBefore = bench.provider.connections;
  const result = await load();
  server.connections += bench.provider.connections - connectionsBefore;
  return result;
}

/** Measures `load` against `server` alone: the load result, and the server's and the mock's work meanwhile. */
export async function measured(bench: Bench, server: LiveServer, load: () => Promise<LoadResult>): Promise<Run> {
  const connectionsBefore = server.connections;
  const before = await usage(server.child);
  const callsBefore = bench.provider.calls;
  const result = await counted(bench, server, load);
  const after = await usage(server.child);
  const callsAfter = bench.provider.calls;
  const calls = {
    verify: callsAfter.verify - callsBefore.verify,
    permissions: callsAfter.permissions - callsBefore.permissions,
  };
  return toRun(
    server.variant,
    result,
    before,
    after,
    calls,
    server.connections,
    server.connections - connectionsBefore,
  );
}

/** A measured run from the load result and the server's usage reports before and after it. */
function toRun(
  variant: Variant,
  load: LoadResult,
  before: Usage,
  after: Usage,
  providerCalls: ProviderCalls,
  providerConnections: number,
  providerConnectionsInRun: number,
): Run {
  const cpu = after.cpuMicros - before.cpuMicros;
  const gateCalls =
    after.gateUpstreamCalls === undefined || before.gateUpstreamCalls === undefined
      ? undefined
      : after.gateUpstreamCalls - before.gateUpstreamCalls;
  return {
    variant,
    load,
    serverCpuMicrosPerRequest: cpu / Math.max(1, load.requests),
    serverCpuShare: cpu / 1000 / (after.wallMs - before.wallMs),
    ...(gateCalls === undefined ? {} : { gateUpstreamCalls: gateCalls }),
    ...(after.spinMicros === undefined ? {} : { spinMicros: after.spinMicros }),
    providerCalls,
    providerConnections,
    providerConnectionsInRun,
  };
}

/** One line per run: requests/s, latency, the server's CPU per request and how busy its core was. */
export function describeRun(run: Run): string {
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

/** Starts a kept load process and one server per variant, runs `body` with them, then stops them all. */
async function withServers<V extends Variant>(
  bench: Bench,
  variants: readonly V[],
  body: (loader: Loader, servers: LiveServer<V>[]) => Promise<void>,
): Promise<void> {
  const servers: LiveServer<V>[] = [];
  try {
    await withLoader(async (loader) => {
      for (const variant of variants) servers.push(await startServer(bench, variant));
      await body(loader, servers);
    });
  } finally {
    await Promise.all(servers.map((server) => stop(server.child)));
  }
}

function emptyRuns<V extends Variant>(variants: readonly V[]): Record<V, Run[]> {
  return Object.fromEntries(variants.map((variant) => [variant, []])) as unknown as Record<V, Run[]>;
}

/**
 * Runs `variants` round by round, alternating their order, and prints every run. Each variant's
 * server is started and warmed once and kept for the whole scenario, as is the load generator,
 * so that a round costs only its measured seconds: many short rounds ride out bursts of other
 * work on a shared machine better than a few long ones.
 */
export async function interleave<V extends Variant>(
  bench: Bench,
  name: string,
  variants: readonly V[],
  load: (variant: V) => Load,
): Promise<Record<V, Run[]>> {
  console.log(`\n## ${name}`);
  const runs = emptyRuns(variants);
  await withServers(bench, variants, async (loader, servers) => {
    const runOn = (server: LiveServer<V>, duration: number) => () =>
      loader.run({ ...load(server.variant), url: server.url, duration });
    for (const server of servers) await counted(bench, server, runOn(server, settings.warmupSeconds));
    for (let r = 0; r < settings.rounds; r++) {
      for (const server of r % 2 === 0 ? servers : [...servers].reverse()) {
        const run = await measured(bench, server, runOn(server, settings.durationSeconds));
        runs[server.variant].push(run);
        console.log(`round ${r + 1}/${settings.rounds}  ${describeRun(run)}`);
      }
    }
  });
  return runs;
}

/**
 * The same variants side by side: every server on the server core at once, loaded by one autocannon
 * instance each from one load process on the load core, for `rounds` runs. They share the core at
 * every moment, so whatever else the machine does (other tenants, clock changes) falls on all of them
 * alike within a run, and per-run ratios of requests and of CPU time per request are steady, where
 * runs taken one after the other (`interleave`) move with the machine's speed.
 * The servers are started afresh every `roundsPerStart` runs, in the other order each time: a process
 * carries its own luck (heap and code layout, JIT decisions) into all of its runs alike, which more runs
 * of the same processes cannot average out.
 * Requests are counted per server; provider calls and connections are not (the servers share the
 * mock), so scenarios that judge those take them from `interleave`.
 */
export async function sideBySide<V extends Variant>(
  bench: Bench,
  name: string,
  variants: readonly V[],
  load: Load,
  rounds = settings.rounds,
  roundsPerStart = rounds,
): Promise<Record<V, Run[]>> {
  const runs = emptyRuns(variants);
  const byPosition = await sideBySideRuns(bench, name, variants, load, rounds, roundsPerStart);
  variants.forEach((variant, i) => {
    runs[variant].push(...(byPosition[i] ?? []));
  });
  return runs;
}

/**
 * {@link sideBySide}'s runs by the position of their server in `variants`, which may name one variant
 * twice (two servers of the same code: what the method itself spreads by).
 */
export async function sideBySideRuns<V extends Variant>(
  bench: Bench,
  name: string,
  variants: readonly V[],
  load: Load,
  rounds: number,
  roundsPerStart: number,
): Promise<Run[][]> {
  console.log(`\n## ${name}, side by side on core ${settings.serverCore}`);
  const runs: Run[][] = variants.map(() => []);
  const positions = variants.map((_, i) => i);
  for (let first = 0, start = 0; first < rounds; first += roundsPerStart, start++) {
    const order = start % 2 === 0 ? positions : [...positions].reverse();
    const last = Math.min(rounds, first + roundsPerStart);
    await withServers(
      bench,
      order.map((i) => variants[i] as V),
      async (loader, servers) => {
        const runAll = (duration: number) =>
          loader.runAll(servers.map((server) => ({ ...load, url: server.url, duration })));
        // Two servers share the core, so each gets half the time to warm its JIT: a longer warm-up.
        await runAll(Math.max(5, 2 * settings.warmupSeconds));
        for (let r = first; r < last; r++) {
          const before = await Promise.all(servers.map((server) => usage(server.child)));
          const results = await runAll(settings.durationSeconds);
          const after = await Promise.all(servers.map((server) => usage(server.child)));
          servers.forEach((server, i) => {
            const [from, to, result, position] = [before[i], after[i], results[i], order[i]];
            if (from === undefined || to === undefined || result === undefined || position === undefined) {
              throw new Error('missing report');
            }
            // The servers share the mock: its calls and connections are not any one server's.
            const run = toRun(server.variant, result, from, to, UNKNOWN_CALLS, Number.NaN, Number.NaN);
            runs[position]?.push(run);
            console.log(`run ${r + 1}/${rounds} (start ${start + 1})  ${describeRun(run)}`);
          });
        }
      },
    );
  }
  return runs;
}

const UNKNOWN_CALLS: ProviderCalls = { verify: Number.NaN, permissions: Number.NaN };
