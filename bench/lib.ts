/** Shared by the benchmark processes: the messages they exchange and small statistics helpers. */

/** The apps a server process can run (`bench/server.ts`). */
export const VARIANTS = [
  'express-bare',
  'express-noop',
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
  'express-passport',
  'express-jwt',
  'express-hand',
  'express-wait',
] as const;

/** Which app a server process runs. */
export type Variant = (typeof VARIANTS)[number];

/** The hot path's token: cached after its first request. */
export const HOT_TOKEN = 'bench-hot-token-0123456789abcdef';

/** The gate's default upstream `connections`, and the hand-written variants' pool size. */
export const PROVIDER_POOL_SIZE = 16;

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
}

/** Messages from a server process. */
export type ServerMessage =
  | { readonly type: 'ready'; readonly port: number }
  | { readonly type: 'profiled' }
  | {
      readonly type: 'usage';
      /** `process.cpuUsage()` user + system, µs. */
      readonly cpuMicros: number;
      /** `performance.now()` of the server, ms. */
      readonly wallMs: number;
      /** `gate.stats().upstreamCalls` when the variant has a gate. */
      readonly gateUpstreamCalls?: number;
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
