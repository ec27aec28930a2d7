/**
 * Four app processes sharing one Redis (test/support/redis-app.ts: Express,
 * a gate, `redisCache`; one each on ioredis 6 and 5 and node-redis 6 and 5), in front of one
 * OnlineOrNot mock in this process that counts the verifications.
 *
 * - one upstream verification per token across all four, a stampede of 200
 *   concurrent requests for one cold token included;
 * - a revocation on one instance is rejected by all four (p50/p99 printed
 *   over 100 revocations);
 * - Redis killed (SIGKILL) and restarted, and Redis paused (SIGSTOP, so that
 *   commands hang rather than fail): no failed request that the provider
 *   could answer, none held until Redis came back, and sharing resumes. The
 *   slowest request is printed beside the Redis timeout plus the provider's
 *   time (a speed figure: this test runs on shared, loaded machines).
 *
 * The apps use a Redis timeout of 200 ms rather than the default 50: on a
 * loaded machine an app's event loop can lag that long, and a lookup that
 * misses its timeout is shared no more (by design), which would blur the
 * count of upstream calls this test is about.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MockOnlineOrNot, mockOnlineOrNot } from '../src/testing/index.js';
import { slowestTimings } from './support/redis-app-timings.js';
import { CLIENT_LIBRARIES, type ClientLibrary } from './support/redis-instances.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROVIDER_LATENCY_MS = 30;
const REDIS_TIMEOUT_MS = 200;
/** How long Redis stays down (killed or paused) in the failure tests. */
const OUTAGE_MS = 2000;
const INSTANCES = 4;

interface App {
  readonly url: string;
  readonly child: ChildProcess;
}

/** Starts one app process on `client`; resolves once it listens (its tier's subscription live). */
function startApp(redisPort: number, providerUrl: string, client: ClientLibrary): Promise<App> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/redis-app.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      REDIS_PORT: String(redisPort),
      PROVIDER_URL: providerUrl,
      REDIS_CLIENT: client,
      REDIS_TIMEOUT: String(REDIS_TIMEOUT_MS),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('app process did not start within 30 s')), 30_000);
    child.once('exit', (code) => reject(new Error(`app process exited with ${code}`)));
    child.once('message', (message: { port: number }) => {
      clearTimeout(timer);
      resolve({ url: `http://127.0.0.1:${message.port}`, child });
    });
  });
}

/** One request's outcome as a client sees it. */
interface Answer {
  readonly status: number;
  readonly ms: number;
}

async function request(app: App, token: string, path = '/private', method = 'GET'): Promise<Answer> {
  const started = performance.now();
  try {
    const response = await fetch(`${app.url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    await response.arrayBuffer();
    return { status: response.status, ms: performance.now() - started };
  } catch {
    return { status: 0, ms: performance.now() - started };
  }
}

const percentile = (values: readonly number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
};
const round = (ms: number) => Math.round(ms * 10) / 10;

describe.skipIf(redisServerMissing)('four app processes sharing one Redis', () => {
  let redis: RedisServer;
  let mock: MockOnlineOrNot;
  let apps: App[] = [];
  let tokens = 0;

  const knownToken = () => {
    const token = `proc-${++tokens}-${Math.random().toString(36).slice(2)}`;
    mock.setToken(token, { id: `id-${tokens}`, permissions: [] });
    return token;
  };

  beforeAll(async () => {
    redis = await startRedisServer();
    mock = await mockOnlineOrNot();
    mock.latency = PROVIDER_LATENCY_MS;
    apps = await Promise.all(
      CLIENT_LIBRARIES.slice(0, INSTANCES).map((client) => startApp(redis.port, mock.url, client)),
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.all(
      apps.map(
        ({ child }) =>
          new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
            child.once('exit', resolve);
            child.kill('SIGKILL');
          }),
      ),
    );
    await mock?.close();
    await redis?.close();
  });

  /** The slowest request and verification in any app since the last call, ms (each app's own timing). */
  const appTimings = () => slowestTimings(apps.map((app) => `${app.url}/timings`));
  /** The `shared_cache_error` events every instance reported so far, as `operation:reason`. */
  const sharedErrors = async () =>
    (await Promise.all(apps.map(async (app) => (await fetch(`${app.url}/events`)).json()))).flat() as string[];

  /** Asks every instance in turn about a fresh token until only one verification was made for it (at most `ms`). */
  async function sharingResumes(ms: number): Promise<void> {
    const started = performance.now();
    for (;;) {
      const token = knownToken();
      const before = mock.calls.verify;
      for (const app of apps) expect((await request(app, token)).status).toBe(200);
      if (mock.calls.verify - before === 1) return;
      if (performance.now() - started > ms) throw new Error(`sharing did not resume within ${ms} ms`);
      await sleep(100);
    }
  }

  it('makes one upstream verification per token across all four, a 200-request stampede included', async () => {
    mock.resetCalls();
    const warmTokens = Array.from({ length: 20 }, knownToken);
    for (const token of warmTokens) {
      const answers = await Promise.all(apps.map((app) => request(app, token)));
      expect(answers.map((answer) => answer.status)).toEqual(apps.map(() => 200));
    }
    const cold = knownToken();
    const stampede = await Promise.all(
      Array.from({ length: 200 }, (_, i) => request(apps[i % apps.length] as App, cold)),
    );
    expect(stampede.filter((answer) => answer.status === 200)).toHaveLength(200);
    const perToken = mock.calls.verify / (warmTokens.length + 1);
    const stampedeP99 = round(
      percentile(
        stampede.map((answer) => answer.ms),
        99,
      ),
    );
    console.log(
      `upstream calls per token across ${apps.length} instances: ${perToken} (verify ${mock.calls.verify}, permissions ${mock.calls.permissions}, ${warmTokens.length + 1} tokens, one of them a 200-request stampede, p99 ${stampedeP99} ms); Redis trouble reported: ${(await sharedErrors()).length}`,
    );
    expect(mock.calls).toMatchObject({ verify: warmTokens.length + 1, permissions: warmTokens.length + 1 });
  });

  it('rejects a token revoked on one instance on all four: 100 revocations', async () => {
    // The provider answers at once here, so that the figure is the revocation's travel, not the provider's time.
    mock.latency = 0;
    const delays: number[] = [];
    for (let i = 0; i < 100; i++) {
      const token = knownToken();
      const warmed = await Promise.all(apps.map((app) => request(app, token)));
      expect(warmed.map((answer) => answer.status)).toEqual(apps.map(() => 200));
      mock.removeToken(token);
      const started = performance.now();
      const revoke = await fetch(`${(apps[i % apps.length] as App).url}/revoke`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
      });
      expect(await revoke.json()).toEqual({ confirmed: true });
      const seen = await Promise.all(
        apps.map(async (app) => {
          for (let tries = 0; tries < 500; tries++) {
            const answer = await request(app, token);
            if (answer.status === 401) return performance.now() - started;
            expect(answer.status).toBe(200);
          }
          return Number.POSITIVE_INFINITY;
        }),
      );
      delays.push(Math.max(...seen));
    }
    const [p50, p99, max] = [percentile(delays, 50), percentile(delays, 99), Math.max(...delays)];
    console.log(
      `revocation on one instance until all ${apps.length} reject (100 revocations): p50 ${round(p50)} ms, p99 ${round(p99)} ms, max ${round(max)} ms`,
    );
    // Under half the tier's localTtl (5 s): every instance was told, none waited its own copy out.
    expect(max).toBeLessThan(2500);
    mock.latency = PROVIDER_LATENCY_MS;
  }, 60_000);

  /** Requests from `workers` clients, round robin over the instances, until `stop()`: warm, fresh and unknown tokens. */
  function load(workers: number, warm: readonly string[]) {
    const answers: Array<Answer & { expected: number }> = [];
    let running = true;
    const worker = async (w: number) => {
      for (let i = 0; running && i < 10_000; i++) {
        const app = apps[(w + i) % apps.length] as App;
        const pick = i % 3;
        const token = pick === 0 ? (warm[i % warm.length] as string) : pick === 1 ? knownToken() : 'never-issued';
        const answer = await request(app, token);
        answers.push({ ...answer, expected: pick === 2 ? 401 : 200 });
      }
    };
    const done = Promise.all(Array.from({ length: workers }, (_, w) => worker(w)));
    return {
      answers,
      stop: async () => {
        running = false;
        await done;
        return answers;
      },
    };
  }

  for (const trouble of ['killed (SIGKILL) and restarted', 'paused (SIGSTOP) and resumed'] as const) {
    it(`Redis ${trouble} mid-run: no failed request, none held until Redis is back, sharing resumes`, async () => {
      const warm = Array.from({ length: 4 }, knownToken);
      for (const token of warm) for (const app of apps) await request(app, token);
      await appTimings();
      const running = load(8, warm);
      await sleep(500);
      const before = running.answers.length;
      if (trouble.startsWith('killed')) await redis.kill();
      else redis.signal('SIGSTOP');
      await sleep(OUTAGE_MS);
      const during = running.answers.length - before;
      if (trouble.startsWith('killed')) await redis.restart();
      else redis.signal('SIGCONT');
      await sleep(500);
      const answers = await running.stop();
      const failed = answers.filter((answer) => answer.status !== answer.expected);
      const slowest = Math.max(...answers.map((answer) => answer.ms));
      const p99 = percentile(
        answers.map((answer) => answer.ms),
        99,
      );
      const errorsBefore = (await sharedErrors()).length;
      const inApps = await appTimings();
      console.log(
        `Redis ${trouble}: ${answers.length} requests (${during} while Redis was down for ${OUTAGE_MS} ms), ${failed.length} failed, p99 ${round(p99)} ms, slowest ${round(slowest)} ms (Redis timeout ${REDIS_TIMEOUT_MS} + provider ${PROVIDER_LATENCY_MS} = ${REDIS_TIMEOUT_MS + PROVIDER_LATENCY_MS} ms); in the apps: slowest request ${round(inApps.slowestRequest)} ms, slowest verification ${round(inApps.slowestVerification)} ms (Redis timeout + that: ${round(REDIS_TIMEOUT_MS + inApps.slowestVerification)} ms); Redis trouble reported: ${errorsBefore}`,
      );
      expect(failed).toEqual([]);
      expect(during).toBeGreaterThan(0);
      // No request waited for Redis to come back.
      expect(slowest).toBeLessThan(OUTAGE_MS);
      expect(errorsBefore).toBeGreaterThan(0);
      const started = performance.now();
      await sharingResumes(8000);
      console.log(`Redis ${trouble}: sharing resumed ${round(performance.now() - started)} ms after the load stopped`);
    }, 30_000);
  }
});
