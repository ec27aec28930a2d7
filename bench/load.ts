/**
 * The load generator process: autocannon, pinned to the load core by bench/runs.ts and kept for a
 * whole scenario, so that rounds cost no process start-up. It says `warm` once it is up, then makes
 * one run per `run` command and several at once per `runAll` (side by side).
 */
import autocannon from 'autocannon';
import type { LoadCommand, LoadConfig, LoadMessage, LoadResult } from './lib.js';

/** Cold tokens sent so far: the counter carries over from run to run, so no token is ever sent twice. */
let coldUsed = 0;

function send(message: LoadMessage): void {
  process.send?.(message);
}

function options(config: LoadConfig): autocannon.Options {
  const base: autocannon.Options = {
    url: config.url,
    connections: config.connections,
    pipelining: 1,
    timeout: 10,
    headers: config.authorization === undefined ? {} : { authorization: config.authorization },
    duration: config.duration,
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

/** One autocannon run, summarized to the part of its result the suite keeps. */
function run(config: LoadConfig): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    autocannon(options(config), (error, result) => {
      if (error) return reject(error);
      resolve({
        requestsPerSecond: result.requests.total / result.duration,
        requests: result.requests.total,
        latencyP50: result.latency.p50,
        latencyP99: result.latency.p99,
        non2xx: result.non2xx,
        errors: result.errors,
        timeouts: result.timeouts,
      });
    });
  });
}

function fail(error: unknown): void {
  send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
}

process.on('message', (message: LoadCommand) => {
  if (message.type === 'run') run(message.config).then((result) => send({ type: 'result', result }), fail);
  else if (message.type === 'runAll') {
    Promise.all(message.configs.map(run)).then((results) => send({ type: 'results', results }), fail);
  }
});
send({ type: 'warm' });
