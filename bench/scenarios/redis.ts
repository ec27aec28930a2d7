/**
 * Scenario 7, the shared Redis tier (`tokengate/redis`), run with `BENCH_REDIS=1` (or `only`), against
 * a redis-server it starts on a free loopback port. The app is test/support/redis-app.ts (Express, a
 * gate, `redisCache` on ioredis), bundled with esbuild like the other measured processes and pinned to
 * the server core; `SHARED=off` runs the same app with the gate alone.
 *
 * - upstream calls per unique token with 1, 2 and 4 instances, every instance asked about each new
 *   token at once (without the tier it would be one per instance);
 * - the cold path through an L2 hit (another instance verified the token) against the provider path
 *   (the mock answers without added latency, so this is the provider path at its cheapest);
 * - the hot path with the tier on against the same app without it, side by side: a hit never touches
 *   Redis, so the goal is >= 0.95;
 * - revocation: a token cached on all 4 instances, removed at the provider and revoked on one of them,
 *   timed from the revoking request until the last instance answers 401 (the multi-process test prints
 *   the same figure, under whatever else the machine runs beside it);
 * - Redis killed (SIGKILL) and restarted, then paused (SIGSTOP) and resumed, for 2 s each under load
 *   from 8 clients over the 4 instances (the mock answering in 30 ms): requests that failed, and the
 *   slowest request in the apps against the tier's timeout (the default, 50 ms) plus the slowest
 *   verification; then whether sharing resumed (one upstream call for a new token asked on all 4).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { type AppTimings, slowestTimings } from '../../test/support/redis-app-timings.js';
import { type RedisServer, startRedisServer } from '../../test/support/redis-server.js';
import { BENCH_PERMISSIONS, HOST, HOT_TOKEN, median, round } from '../lib.js';
import { stop } from '../processes.js';
import type { Outcome, Row } from '../report.js';
import { type Bench, withLoader } from '../runs.js';
import { settings } from '../settings.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TOKENS_PER_COUNT = settings.quick ? 50 : 200;
const COLD_SAMPLES = settings.quick ? 100 : 500;
const REVOCATIONS = settings.quick ? 20 : 100;
/** The tier's per-command timeout in the apps: `redisCache`'s default. */
const REDIS_TIMEOUT_MS = 50;
const TROUBLE_PROVIDER_LATENCY_MS = 30;
const OUTAGE_MS = 2000;

interface App {
  /** The gated route. */
  readonly url: string;
  /** The `shared_cache_error` events the app saw, as `operation:reason`. */
  readonly events: string;
  /** Revokes the request's credential (`POST`), answering `{ confirmed }` once Redis has taken it. */
  readonly revoke: string;
  /** The app's slowest request and slowest verification since the last read, ms. */
  readonly timings: string;
  readonly child: ChildProcess;
}

/** The app, bundled once into bench/.build/redis-app.js (its packages stay external). */
function compiledApp(): string {
  const outfile = join(root, 'bench', '.build', 'redis-app.js');
  buildSync({
    entryPoints: [join(root, 'test', 'support', 'redis-app.ts')],
    outfile,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  return outfile;
}

/** Starts one app process pinned to the server core; resolves once it listens (its tier live). */
function startApp(file: string, env: Record<string, string>): Promise<App> {
  const child = spawn('taskset', ['-c', settings.serverCore, process.execPath, file], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`redis bench app exited (${code}) before listening`)));
    child.once('message', (message: { port: number }) =>
      resolve({
        url: `http://${HOST}:${message.port}/private`,
        events: `http://${HOST}:${message.port}/events`,
        revoke: `http://${HOST}:${message.port}/revoke`,
        timings: `http://${HOST}:${message.port}/timings`,
        child,
      }),
    );
  });
}

/** One request's status and latency (ms), from this process. */
async function timed(url: string, token: string): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return { status: response.status, ms: performance.now() - started };
}

const percentile = (values: readonly number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)] ?? NaN;

let tokenCount = 0;
function newToken(bench: Bench): string {
  const token = `redis-bench-${++tokenCount}`;
  bench.provider.setToken(token, { id: `tok_redis_${tokenCount}`, permissions: BENCH_PERMISSIONS });
  return token;
}

/** How many times Redis failed or answered late, over `apps` so far. */
async function redisTrouble(apps: readonly App[]): Promise<number> {
  const lists = await Promise.all(apps.map(async (app) => (await (await fetch(app.events)).json()) as string[]));
  return lists.flat().length;
}

/** Upstream verifications per new token when `apps` are all asked about it at once. */
async function callsPerToken(bench: Bench, apps: readonly App[]): Promise<number> {
  const before = bench.provider.calls.verify;
  for (let i = 0; i < TOKENS_PER_COUNT; i++) {
    const token = newToken(bench);
    const answers = await Promise.all(apps.map((app) => timed(app.url, token)));
    if (answers.some((answer) => answer.status !== 200)) throw new Error('redis bench: a request failed');
  }
  return round((bench.provider.calls.verify - before) / TOKENS_PER_COUNT, 3);
}

/** Latencies of a new token's first request on `first`, then on `second` (an L2 hit), and on `alone`. */
async function coldPaths(bench: Bench, first: App, second: App, alone: App) {
  const providerWithTier: number[] = [];
  const l2Hit: number[] = [];
  const providerAlone: number[] = [];
  for (let i = 0; i < COLD_SAMPLES; i++) {
    const token = newToken(bench);
    providerWithTier.push((await timed(first.url, token)).ms);
    l2Hit.push((await timed(second.url, token)).ms);
    providerAlone.push((await timed(alone.url, newToken(bench))).ms);
  }
  const summary = (values: number[]) => ({
    p50: round(percentile(values, 50), 2),
    p99: round(percentile(values, 99), 2),
  });
  return { l2Hit: summary(l2Hit), providerWithTier: summary(providerWithTier), providerAlone: summary(providerAlone) };
}

/** Ms from a revocation on one of `apps` until each of them answers 401, for REVOCATIONS tokens in turn. */
async function revocations(bench: Bench, apps: readonly App[]) {
  const delays: number[] = [];
  for (let i = 0; i < REVOCATIONS; i++) {
    const token = newToken(bench);
    const warmed = await Promise.all(apps.map((app) => timed(app.url, token)));
    if (warmed.some((answer) => answer.status !== 200)) throw new Error('redis bench: a request failed');
    bench.provider.removeToken(token);
    const started = performance.now();
    const revoking = apps[i % apps.length] as App;
    const revoke = await fetch(revoking.revoke, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const { confirmed } = (await revoke.json()) as { confirmed: boolean };
    if (!confirmed) throw new Error('redis bench: Redis did not confirm a revocation');
    const seen = await Promise.all(
      apps.map(async (app) => {
        for (let tries = 0; tries < 1000; tries++) {
          const answer = await timed(app.url, token);
          if (answer.status === 401) return performance.now() - started;
          if (answer.status !== 200) throw new Error(`redis bench: a revoked token answered ${answer.status}`);
        }
        throw new Error('redis bench: a revoked token was still accepted after 1,000 requests');
      }),
    );
    delays.push(Math.max(...seen));
  }
  return {
    p50: round(percentile(delays, 50), 1),
    p99: round(percentile(delays, 99), 1),
    max: round(Math.max(...delays), 1),
  };
}

/** The slowest request and verification in any of `apps` since the last call, ms. */
function appTimings(apps: readonly App[]): Promise<AppTimings> {
  return slowestTimings(apps.map((app) => app.timings));
}

/** Ms until a new token asked on each of `apps` in turn costs one upstream call again, within `withinMs`. */
async function sharingResumes(bench: Bench, apps: readonly App[], withinMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    const token = newToken(bench);
    const before = bench.provider.calls.verify;
    for (const app of apps) await timed(app.url, token);
    if (bench.provider.calls.verify - before === 1) return performance.now() - started;
    if (performance.now() - started > withinMs)
      throw new Error(`redis bench: sharing did not resume in ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Redis `trouble` for OUTAGE_MS under load from 8 clients over `apps`: warm, new and unknown tokens. */
async function troubled(bench: Bench, redis: RedisServer, apps: readonly App[], trouble: 'killed' | 'paused') {
  const warm = Array.from({ length: 4 }, () => newToken(bench));
  for (const token of warm) for (const app of apps) await timed(app.url, token);
  await appTimings(apps);
  let running = true;
  let requests = 0;
  let failed = 0;
  let slowestClient = 0;
  const client = async (c: number) => {
    for (let i = 0; running; i++) {
      const app = apps[(c + i) % apps.length] as App;
      const pick = i % 3;
      const token = pick === 0 ? (warm[i % warm.length] as string) : pick === 1 ? newToken(bench) : 'never-issued';
      const answer = await timed(app.url, token).catch(() => ({ status: 0, ms: Number.POSITIVE_INFINITY }));
      requests++;
      if (answer.status !== (pick === 2 ? 401 : 200)) failed++;
      slowestClient = Math.max(slowestClient, answer.ms);
    }
  };
  const clients = Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
  await new Promise((resolve) => setTimeout(resolve, 500));
  if (trouble === 'killed') await redis.kill();
  else redis.signal('SIGSTOP');
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
  if (trouble === 'killed') await redis.restart();
  else redis.signal('SIGCONT');
  await new Promise((resolve) => setTimeout(resolve, 500));
  running = false;
  await clients;
  const inApps = await appTimings(apps);
  const resumedMs = await sharingResumes(bench, apps, 8000);
  return {
    requests,
    failed,
    slowestClient: round(slowestClient, 1),
    slowestRequest: round(inApps.slowestRequest, 1),
    bound: round(REDIS_TIMEOUT_MS + inApps.slowestVerification, 1),
    resumedMs: round(resumedMs, 0),
  };
}

/** Hot path, side by side: req/s of the app with the tier over the app without, per round. */
async function hotPath(withTier: App, alone: App) {
  const load = {
    connections: Math.max(1, settings.connections / 2),
    duration: settings.durationSeconds,
    authorization: `Bearer ${HOT_TOKEN}`,
  };
  return withLoader(async (loader) => {
    // Two apps share the core, so each gets half the time to warm its JIT: the side-by-side warm-up.
    const warmup = Math.max(5, 2 * settings.warmupSeconds);
    await loader.runAll([
      { ...load, url: withTier.url, duration: warmup },
      { ...load, url: alone.url, duration: warmup },
    ]);
    const ratios: number[] = [];
    let failed = 0;
    for (let r = 0; r < settings.rounds; r++) {
      // Each goes first in every other round, so that the order of the load's two instances cancels out.
      const configs = [
        { ...load, url: withTier.url },
        { ...load, url: alone.url },
      ];
      const results = await loader.runAll(r % 2 === 0 ? configs : [...configs].reverse());
      const [on, off] = r % 2 === 0 ? results : [...results].reverse();
      if (on === undefined || off === undefined) throw new Error('redis bench: a load run is missing');
      failed += on.non2xx + on.errors + off.non2xx + off.errors;
      ratios.push(round(on.requestsPerSecond / off.requestsPerSecond, 3));
      console.log(
        `round ${r + 1}/${settings.rounds}  with tier ${round(on.requestsPerSecond, 0)} req/s, without ${round(off.requestsPerSecond, 0)} req/s`,
      );
    }
    return { ratios, median: round(median(ratios), 3), failed };
  });
}

export async function runRedis(bench: Bench): Promise<Outcome> {
  console.log('\n## 7. Shared Redis tier: calls per token over 1, 2 and 4 instances; L2 hit vs provider; hot path');
  const redis: RedisServer = await startRedisServer();
  const apps: App[] = [];
  try {
    const file = compiledApp();
    const env = { REDIS_PORT: String(redis.port), PROVIDER_URL: bench.provider.url, REDIS_CLIENT: 'ioredis 6' };
    apps.push(...(await Promise.all([1, 2, 3, 4].map(() => startApp(file, env)))));
    const alone = await startApp(file, { ...env, SHARED: 'off' });
    apps.push(alone);
    const perToken: Record<string, number> = {};
    let late = 0;
    for (const count of [1, 2, 4]) {
      perToken[count] = await callsPerToken(bench, apps.slice(0, count));
      late = await redisTrouble(apps);
      console.log(
        `${count} instance(s): ${perToken[count]} upstream calls per new token (without the tier: ${count}); Redis late or failing so far: ${late} times`,
      );
    }
    const [first, second] = apps as [App, App];
    const cold = await coldPaths(bench, first, second, alone);
    console.log(`cold path, ms: ${JSON.stringify(cold)}`);
    const revoked = await revocations(bench, apps.slice(0, 4));
    console.log(`revocation until all 4 instances reject, ms: ${JSON.stringify(revoked)}`);
    bench.provider.latency = TROUBLE_PROVIDER_LATENCY_MS;
    const killed = await troubled(bench, redis, apps.slice(0, 4), 'killed');
    console.log(`Redis killed and restarted: ${JSON.stringify(killed)}`);
    const paused = await troubled(bench, redis, apps.slice(0, 4), 'paused');
    console.log(`Redis paused and resumed: ${JSON.stringify(paused)}`);
    bench.provider.latency = 0;
    const hot = await hotPath(first, alone);
    const shared = Object.values(perToken).every((calls) => calls === 1);
    const rows: Row[] = [
      {
        scenario: '8. Redis tier',
        measure: 'upstream calls per new token, all instances asked at once: 1 / 2 / 4 instances',
        result: `${perToken[1]} / ${perToken[2]} / ${perToken[4]} (without the tier: 1 / 2 / 4); Redis answered late or failed ${late} times (such a lookup is not shared, by design)`,
        goal: '1 each',
        met: shared,
      },
      {
        scenario: '8. Redis tier',
        measure: 'cold request latency p50 / p99, ms: L2 hit; provider path with the tier; without it',
        result: `${cold.l2Hit.p50} / ${cold.l2Hit.p99}; ${cold.providerWithTier.p50} / ${cold.providerWithTier.p99}; ${cold.providerAlone.p50} / ${cold.providerAlone.p99}`,
        goal: '(information: the mock answers without latency)',
        met: undefined,
      },
      {
        scenario: '8. Redis tier',
        measure: `revocation on one instance until all 4 reject, ms (${REVOCATIONS} revocations): p50 / p99 / slowest`,
        result: `${revoked.p50} / ${revoked.p99} / ${revoked.max}`,
        goal: 'p99 < 50',
        met: revoked.p99 < 50,
      },
      ...(
        [
          ['killed (SIGKILL) and restarted', killed],
          ['paused (SIGSTOP) and resumed', paused],
        ] as const
      ).map(([trouble, outcome]) => ({
        scenario: '8. Redis tier',
        measure: `Redis ${trouble}, ${OUTAGE_MS} ms under load (8 clients, 4 instances, provider ${TROUBLE_PROVIDER_LATENCY_MS} ms): failed requests; slowest request in the apps against the Redis timeout + the slowest verification`,
        result: `${outcome.failed} failed of ${outcome.requests}; slowest ${outcome.slowestRequest} ms against ${outcome.bound} ms (${outcome.slowestClient} ms at the client); sharing resumed ${outcome.resumedMs} ms after the load stopped`,
        goal: '0 failed; slowest <= bound',
        met: outcome.failed === 0 && outcome.slowestRequest <= outcome.bound,
      })),
      {
        scenario: '8. Redis tier',
        measure: 'hot path req/s with the tier / without, side by side (median of per-round ratios)',
        result: `${hot.median} (rounds ${hot.ratios.join(', ')})`,
        goal: '>= 0.95',
        met: hot.failed === 0 && hot.median >= 0.95,
      },
    ];
    return {
      rows,
      results: {
        redis: { callsPerToken: perToken, redisLateOrFailed: late, cold, revocation: revoked, killed, paused, hot },
      },
    };
  } finally {
    await Promise.all(apps.map((app) => stop(app.child)));
    await redis.close();
  }
}
