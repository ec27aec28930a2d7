/**
 * One load generator process: autocannon against one server, a warm-up run,
 * then (after the orchestrator's `go`, so it can read the server's CPU
 * clock in between) the measured run. Started pinned to core 1 by bench/run.ts.
 */
import autocannon from 'autocannon';
import type { LoadCommand, LoadConfig, LoadMessage, LoadResult } from './lib.js';

const config = JSON.parse(process.env.BENCH_LOAD ?? '') as LoadConfig;
let coldUsed = 0;

function send(message: LoadMessage): void {
  process.send?.(message);
}

function options(duration: number, amount?: number): autocannon.Options {
  const headers: Record<string, string> = {};
  if (config.authorization !== undefined) headers.authorization = config.authorization;
  const base: autocannon.Options = {
    url: config.url,
    connections: config.connections,
    pipelining: 1,
    timeout: config.timeout ?? 10,
    headers,
    ...(amount === undefined ? { duration } : { amount }),
  };
  const prefix = config.coldPrefix;
  if (prefix === undefined) return base;
  const limit = config.coldLimit ?? Number.POSITIVE_INFINITY;
  return {
    ...base,
    requests: [
      {
        method: 'GET',
        path: new URL(config.url).pathname,
        // A new token on every request: every request is a cache miss.
        setupRequest(request) {
          if (coldUsed >= limit) throw new Error(`ran out of cold tokens (${limit}): raise coldLimit`);
          return { ...request, headers: { ...request.headers, authorization: `Bearer ${prefix}${coldUsed++}` } };
        },
      },
    ],
  };
}

function run(opts: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon(opts, (error, result) => (error ? reject(error) : resolve(result)));
  });
}

function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (message: LoadCommand) => {
      if (message.type !== 'go') return;
      process.off('message', onMessage);
      resolve();
    };
    process.on('message', onMessage);
  });
}

try {
  if (config.warmup > 0) await run(options(config.warmup));
  send({ type: 'warm' });
  await waitForGo();
  const result = await run(options(config.duration, config.amount));
  const summary: LoadResult = {
    requestsPerSecond: result.requests.total / result.duration,
    requests: result.requests.total,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
    latencyMax: result.latency.max,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    durationSeconds: result.duration,
    ...(config.coldPrefix === undefined ? {} : { coldTokensUsed: coldUsed }),
  };
  send({ type: 'result', result: summary });
} catch (error) {
  send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
}
process.disconnect?.();
