/** The suite's settings, read once from the environment (bench/README.md lists the variables). */
import { VARIANTS, type Variant } from './lib.js';

/** The scenarios `npm run bench` runs, in order (names for `BENCH_ONLY`). */
export const SCENARIOS = ['hot', 'peers', 'cold', 'stampede', 'memory', 'micro', 'flood'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

const env = process.env;
const quick = env.BENCH_QUICK === '1';

function numberFrom(name: string, fallback: number): number {
  const value = Number(env[name] ?? fallback);
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number`);
  return value;
}

/** `BENCH_PAIR=a,b`: nothing but a side-by-side run of two variants under the hot path's load. */
function pairFrom(raw: string | undefined): readonly [Variant, Variant] | undefined {
  if (raw === undefined) return undefined;
  const pair = raw.split(',');
  if (pair.length !== 2 || !pair.every((v) => (VARIANTS as readonly string[]).includes(v))) {
    throw new Error(`BENCH_PAIR must name two of: ${VARIANTS.join(', ')}`);
  }
  return pair as [Variant, Variant];
}

function onlyFrom(raw: string | undefined, pair: unknown): ReadonlySet<ScenarioName> {
  const names = (raw ?? (pair === undefined ? SCENARIOS.join(',') : '')).split(',').filter(Boolean);
  const unknown = names.filter((name) => !(SCENARIOS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY names unknown scenarios (${unknown}): use ${SCENARIOS}`);
  return new Set(names as ScenarioName[]);
}

const pair = pairFrom(env.BENCH_PAIR);
const rounds = numberFrom('BENCH_ROUNDS', quick ? 3 : 10);
// The hot path's goal sits a few hundredths from the bare route, so its side-by-side pairs run 30 times,
// two from each of 15 fresh starts of both servers (bench/README.md, "Reading the table").
const hotRounds = numberFrom('BENCH_HOT_ROUNDS', quick ? 3 : 30);
const hotStarts = Math.min(hotRounds, numberFrom('BENCH_HOT_STARTS', quick ? 1 : 15));
const durationSeconds = numberFrom('BENCH_DURATION', quick ? 1 : 2);
const warmupSeconds = numberFrom('BENCH_WARMUP', quick ? 1 : 2);
const connections = numberFrom('BENCH_CONNECTIONS', 32);
const floodSeconds = numberFrom('BENCH_FLOOD_SECONDS', quick ? 3 : 10);
const only = onlyFrom(env.BENCH_ONLY, pair);

export const settings = {
  quick,
  /** Measured runs per variant (one after the other; side by side outside the hot path). */
  rounds,
  /** The hot path's side-by-side pairs (and `BENCH_PAIR`'s). */
  hotRounds,
  /** Runs per start of the servers: the hot path's pairs come from `BENCH_HOT_STARTS` starts (default 15). */
  hotRoundsPerStart: Math.ceil(hotRounds / hotStarts),
  /** Stampede rounds, each with fresh servers. */
  stampedeRounds: quick ? 1 : 5,
  durationSeconds,
  warmupSeconds,
  /** autocannon connections (halved per server side by side). */
  connections,
  serverCore: env.BENCH_SERVER_CORE ?? '0',
  loadCore: env.BENCH_LOAD_CORE ?? '1',
  /** The flood scenario's flood, s (a cached client alone runs half as long before and after it). */
  floodSeconds,
  /** Distinct tokens the mock knows for the cold path (the load generator never reuses one). */
  coldTokens: numberFrom('BENCH_COLD_TOKENS', 250_000),
  pair,
  only,
  /**
   * Every scenario with the documented measurement settings (the cores may differ): only such a run
   * writes bench/results.json, so a smoke run never replaces the committed figures.
   */
  full:
    !quick &&
    pair === undefined &&
    SCENARIOS.every((name) => only.has(name)) &&
    rounds === 10 &&
    hotRounds === 30 &&
    hotStarts === 15 &&
    durationSeconds === 2 &&
    warmupSeconds === 2 &&
    connections === 32 &&
    floodSeconds === 10 &&
    numberFrom('BENCH_MICRO_MS', 1500) === 1500 &&
    numberFrom('BENCH_MEMORY_ENTRIES', 100_000) === 100_000 &&
    env.BENCH_GATE_CONCURRENCY === undefined &&
    env.BENCH_PROVIDER_CONNECTIONS === undefined,
} as const;

export type Settings = typeof settings;
