/** Shared by the benchmark processes: the messages they exchange and small statistics helpers. */
import type { CacheOptions, GateStats } from '../src/index.js';

/** The apps a server process can run (`bench/server.ts`). */
export const VARIANTS = [
  'express-bare',
  'express-noop',
  'express-spin',
  'express-gate',
  'express-floor',
  'koa-bare',
  'koa-noop',
  'koa-gate',
  'koa-floor',
  'fastify-bare',
  'fastify-noop',
  'fastify-gate',
  'fastify-floor',
  'fastify-undeclared',
  'express-client',
  'koa-client',
  'fastify-client',
  'express-passport',
  'express-jwt',
  'express-hand',
  'express-wait',
  'express-flood',
  'express-flood-floor',
] as const;

/**
 * CPU µs the `express-spin` variant burns per request on top of the bare route (`BENCH_SPIN_US`, default 9, about
 * a twentieth of a bare Express request here): a known cost, to check what the side-by-side method reads for one.
 */
export const SPIN_MICROS = Number(process.env.BENCH_SPIN_US ?? 9);

/** Which app a server process runs. */
export type Variant = (typeof VARIANTS)[number];

/** The hot path's token: cached after its first request. */
export const HOT_TOKEN = 'bench-hot-token-0123456789abcdef';

/**
 * OnlineOrNot's pool: the gate's default `connections`, and the hand-written variants' pool size.
 * `BENCH_PROVIDER_CONNECTIONS` sets both, for a measurement.
 */
export const PROVIDER_POOL_SIZE = poolSize(process.env.BENCH_PROVIDER_CONNECTIONS);

/** The gated variants' `onlineOrNot` options beside `baseUrl`: `connections` only when the pool size was set. */
export const GATE_POOL_OPTIONS: { readonly connections?: number } =
  process.env.BENCH_PROVIDER_CONNECTIONS === undefined ? {} : { connections: PROVIDER_POOL_SIZE };

function poolSize(raw: string | undefined): number {
  const value = Number(raw ?? 32);
  if (!Number.isInteger(value) || value < 2) throw new RangeError('BENCH_PROVIDER_CONNECTIONS must be an integer >= 2');
  return value;
}

/** Provider latency of the stampede, ms (the mock's, and the `express-wait` variant's shared wait). */
export const STAMPEDE_LATENCY_MS = 100;

/** What the orchestrator tells a server process (as JSON in `BENCH_SERVER`). */
export interface ServerConfig {
  readonly variant: Variant;
  /** OnlineOrNot mock base URL (gate, passport and hand-written variants). */
  readonly providerUrl: string;
  /** JWKS URL and issuer/audience for the express-oauth2-jwt-bearer variant. */
  readonly jwksUri: string;
  readonly issuer: string;
  readonly audience: string;
  /** The `express-flood` gate's cache options (its defaults when absent). */
  readonly cache?: CacheOptions;
}

/** What the `express-flood` server reports on `flood-stats`: its memory, and what its gate went through. */
export interface FloodServerStats {
  /** Resident set size and heap used, bytes, after a full GC when the server runs with `--expose-gc`. */
  readonly rss: number;
  readonly heapUsed: number;
  /** Times the breaker opened since the server started. */
  readonly breakerOpens: number;
  /** `overloaded` events by reason (`full`, `expired`). */
  readonly overloaded: Readonly<Record<string, number>>;
  /** The gate's counts; undefined for `express-flood-floor`, which has none. */
  readonly gate: GateStats | undefined;
  /**
   * Since the previous report: time from a request's arrival in the app to its answer's last byte
   * handed to the socket, by client address and answer (`127.0.0.1 503 overloaded`); and the
   * gate's verifications, from its first call to the provider to the verdict
   * (`verification (provider asked, answer read)`, the `verify` event's `durationMs`).
   */
  readonly timings: Readonly<Record<string, Percentiles & { readonly count: number }>>;
}

/** Messages from a server process. */
export type ServerMessage =
  | { readonly type: 'ready'; readonly port: number }
  | { readonly type: 'profiled' }
  | { readonly type: 'flood-stats'; readonly stats: FloodServerStats }
  | {
      readonly type: 'usage';
      /** `process.cpuUsage()` user + system, µs. */
      readonly cpuMicros: number;
      /** `performance.now()` of the server, ms. */
      readonly wallMs: number;
      /** `gate.stats().upstreamCalls` when the variant has a gate. */
      readonly gateUpstreamCalls?: number;
      /** `express-spin`: the median wall time of its spin, µs, over the requests timed since the last `usage`. */
      readonly spinMicros?: number;
    };

/** One load run (bench/load.ts: autocannon; bench/burst.ts: one burst). */
export interface LoadConfig {
  readonly url: string;
  /** Concurrent connections; for a burst, also its number of requests (one per connection). */
  readonly connections: number;
  /** Seconds of the run (autocannon only). */
  readonly duration: number;
  /** Fixed Authorization header, or none. */
  readonly authorization?: string;
  /** When set, every request carries `Bearer <coldPrefix><n>` with n counting from 0 over the process's runs. */
  readonly coldPrefix?: string;
  /** Highest n the provider knows; the load process fails rather than reuse a token. */
  readonly coldLimit?: number;
}

/** What a load run saw (autocannon or a burst). */
export interface LoadResult {
  readonly requestsPerSecond: number;
  readonly requests: number;
  readonly latencyP50: number;
  readonly latencyP99: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  /** bench/burst.ts: how long writing every request of the burst took, ms. */
  readonly burstWriteMs?: number;
}

/** Messages from a load process. */
export type LoadMessage =
  | { readonly type: 'warm' }
  | { readonly type: 'result'; readonly result: LoadResult }
  | { readonly type: 'results'; readonly results: readonly LoadResult[] }
  | { readonly type: 'failed'; readonly message: string };

/**
 * What the orchestrator tells a load process after `warm`: bench/load.ts takes `run` (one autocannon run,
 * answered by `result`) and `runAll` (one instance per config at once, answered by `results`);
 * bench/burst.ts takes `go` (send the burst, answered by `result`).
 */
export type LoadCommand =
  | { readonly type: 'go' }
  | { readonly type: 'run'; readonly config: LoadConfig }
  | { readonly type: 'runAll'; readonly configs: readonly LoadConfig[] };

/**
 * One client of the flood scenario (bench/flood-client.ts): a keep-alive pool from one loopback
 * address, sending `GET /hello` with Bearer tokens chosen by `mode`:
 * - `random`: a new never-seen token on every request, from every connection at once;
 * - `cycle`: `tokens` in turn, over and over;
 * - `paced`: `tokens` in order, one every `intervalMs`, each without waiting for the previous answers;
 * - `each`: every one of `tokens` until it gets an answer other than 503 `overloaded` (sent again later).
 * Every mode stops after `durationMs`.
 */
export interface FloodClientConfig {
  readonly url: string;
  readonly localAddress: string;
  readonly connections: number;
  readonly durationMs: number;
  readonly mode: 'random' | 'cycle' | 'paced' | 'each';
  readonly tokens?: readonly string[];
  readonly intervalMs?: number;
}

/** Latency percentiles of one kind of answer, ms. */
export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** What one flood client saw. Answers are keyed by status, 503s by status and code (`503 overloaded`). */
export interface FloodClientResult {
  readonly requests: number;
  readonly elapsedMs: number;
  readonly answers: Readonly<Record<string, number>>;
  readonly latency: Readonly<Record<string, Percentiles>>;
  /** Every answer, whatever its status. */
  readonly latencyAll: Percentiles;
  /** 503 `overloaded` answers without `Retry-After: 1`. */
  readonly overloadedWithoutRetryAfter: number;
  /** `paced` and `each`: tokens that never got an answer other than 503 `overloaded`. */
  readonly unanswered: number;
  /** Requests that failed without an answer, by error code. */
  readonly errors: Readonly<Record<string, number>>;
  /** Sockets opened again after the server had closed one. */
  readonly reconnects: number;
}

/**
 * Messages between the orchestrator and a flood client: `config` (too large for the environment with
 * thousands of tokens), `warm` once its connections are open, then `go`, then `flood-result`.
 */
export type FloodClientMessage =
  | { readonly type: 'config'; readonly config: FloodClientConfig }
  | { readonly type: 'warm' }
  | { readonly type: 'go' }
  | { readonly type: 'flood-result'; readonly result: FloodClientResult }
  | { readonly type: 'failed'; readonly message: string };

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function round(value: number, digits = 0): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Integer with thousands separators, for tables. */
export function formatInt(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : 'n/a';
}

export const HOST = '127.0.0.1';
/** The permission every gated route requires; the bench tokens carry it among others. */
export const ROUTE_PERMISSION = 'monitors:read';
/** A realistic permission list for the bench tokens. */
export const BENCH_PERMISSIONS: readonly string[] = [
  'monitors:read',
  'monitors:write',
  'incidents:read',
  'status_pages:read',
  'heartbeats:read',
];
