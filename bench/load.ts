/**
 * The load generator process: autocannon, pinned to core 1 by bench/run.ts.
 * With `BENCH_LOAD` set it makes one run against one server (a warm-up, then,
 * after the orchestrator's `go`, the measured run); without it, it stays up
 * for a whole scenario and makes one run per `run` command, so that rounds
 * cost no process start-up.
 */
import autocannon from 'autocannon';
import type { LoadCommand, LoadConfig, LoadMessage, LoadResult } from './lib.js';

const config = JSON.parse(process.env.BENCH_LOAD ?? '{}') as LoadConfig;
let coldUsed = 0;

function send(message: LoadMessage): void {
  process.send?.(message);
}

function options(config: LoadConfig, duration: number, amount?: number): autocannon.Options {
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

/** The part of an autocannon result the suite keeps. */
function summarize(result: autocannon.Result, cold: boolean): LoadResult {
  return {
    requestsPerSecond: result.requests.total / result.duration,
    requests: result.requests.total,
    latencyP50: result.latency.p50,
    latencyP99: result.latency.p99,
    latencyMax: result.latency.max,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    durationSeconds: result.duration,
    ...(cold ? { coldTokensUsed: coldUsed } : {}),
  };
}

if (process.env.BENCH_LOAD !== undefined) {
  // One server, one run: warm-up, `warm`, wait for `go`, the measured run, `result`.
  try {
    if (config.warmup > 0) await run(options(config, config.warmup));
    send({ type: 'warm' });
    await waitForGo();
    send({
      type: 'result',
      result: summarize(await run(options(config, config.duration, config.amount)), config.coldPrefix !== undefined),
    });
  } catch (error) {
    send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  }
  process.disconnect?.();
} else {
  // Kept for a whole scenario: each `run` command is one autocannon run, answered by its `result`. The cold
  // token counter carries over from run to run, so no token is ever sent twice.
  process.on('message', (message: LoadCommand) => {
    if (message.type === 'runAll') {
      Promise.all(message.configs.map((config) => run(options(config, config.duration)))).then(
        (results) =>
          send({
            type: 'results',
            results: results.map((result, i) => summarize(result, message.configs[i]?.coldPrefix !== undefined)),
          }),
        (error: unknown) => send({ type: 'failed', message: error instanceof Error ? error.message : String(error) }),
      );
      return;
    }
    if (message.type !== 'run') return;
    run(options(message.config, message.config.duration)).then(
      (result) => send({ type: 'result', result: summarize(result, message.config.coldPrefix !== undefined) }),
      (error: unknown) => send({ type: 'failed', message: error instanceof Error ? error.message : String(error) }),
    );
  });
  send({ type: 'warm' });
}
