/** What the scenarios report: table rows, ratios of runs, and the per-variant summaries in results.json. */
import { formatInt, median, round } from './lib.js';
import type { Run } from './runs.js';

/** One row of the table `npm run bench` prints. */
export interface Row {
  readonly scenario: string;
  readonly measure: string;
  readonly result: string;
  readonly goal: string;
  /** Whether the goal was met; `undefined` for rows that only inform. */
  readonly met: boolean | undefined;
}

/** What a scenario hands the orchestrator: its table rows, and its figures for results.json by key. */
export interface Outcome {
  readonly rows: readonly Row[];
  readonly results: Readonly<Record<string, unknown>>;
}

export const rps = (runs: readonly Run[]): number[] => runs.map((run) => run.load.requestsPerSecond);

/** Per-round ratios a/b of requests/s (same round, so drift cancels) and their median. */
export function ratio(a: readonly Run[], b: readonly Run[]): { perRound: number[]; median: number } {
  const perRound = a.map((run, i) =>
    round(run.load.requestsPerSecond / (b[i]?.load.requestsPerSecond ?? Number.NaN), 3),
  );
  return { perRound, median: round(median(perRound), 3) };
}

/**
 * The same comparison in server CPU time per request (b's over a's, so that it reads like the
 * requests/s ratio): it holds even in rounds where the load side, not the server, set the pace.
 */
export function cpuRatio(a: readonly Run[], b: readonly Run[]): number {
  return round(
    median(a.map((run, i) => (b[i]?.serverCpuMicrosPerRequest ?? Number.NaN) / run.serverCpuMicrosPerRequest)),
    3,
  );
}

/** A ratio row's result: median, both medians in req/s, every round, and the CPU-per-request ratio. */
export function ratioResult(a: readonly Run[], b: readonly Run[]): string {
  const r = ratio(a, b);
  return (
    `${r.median} (${formatInt(median(rps(a)))} / ${formatInt(median(rps(b)))} req/s; ` +
    `rounds ${r.perRound.join(', ')}; by server CPU per request ${cpuRatio(a, b)})`
  );
}

/** Two variants' summaries under their names in results.json, and the ratios of the first's runs to the second's. */
export function compared(a: readonly [string, readonly Run[]], b: readonly [string, readonly Run[]]) {
  return {
    [a[0]]: variantSummary(a[1]),
    [b[0]]: variantSummary(b[1]),
    ratio: ratio(a[1], b[1]),
    cpuRatio: cpuRatio(a[1], b[1]),
  };
}

/** Every run of a variant as results.json keeps it, and the medians of requests/s and CPU per request. */
export function variantSummary(runs: readonly Run[]) {
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
export function clean(...runs: readonly (readonly Run[])[]): boolean {
  return runs.every((list) =>
    list.every((run) => run.load.non2xx === 0 && run.load.errors === 0 && run.load.timeouts === 0),
  );
}

/** The rows as a markdown table. */
export function table(rows: readonly Row[]): string {
  const met = (row: Row) => (row.met === undefined ? '–' : row.met ? 'yes' : '**no**');
  return [
    '| Scenario | Measure | Result | Goal | Met |',
    '| --- | --- | --- | --- | --- |',
    ...rows.map((row) => `| ${row.scenario} | ${row.measure} | ${row.result} | ${row.goal} | ${met(row)} |`),
  ].join('\n');
}
