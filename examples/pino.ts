/**
 * Logs and metrics from the gate's events, with pino.
 *
 *   npx tsx examples/pino.ts
 *
 * Starts the mock providers and an Express app on 127.0.0.1, sends a few
 * requests (then makes OnlineOrNot fail for a while, to show retries,
 * provider errors, the breaker and stale answers), logs every gate event as
 * one JSON line, prints counters and a verify duration histogram in Prometheus
 * text format, and exits.
 *
 * Events never carry a token, a key or a cache key, so they can be logged
 * whole. The sample tokens below are fake and only known to the mocks.
 */
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import pino, { type Logger } from 'pino';
// In an app: from 'tokengate', 'tokengate/express' and 'tokengate/testing'.
import { authenticate, requires } from '../adapters/express.js';
import { AuthError, createGate, type GateEvent, onlineOrNot, partoo } from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';

const READ = 'uptime_checks (read)';
const logger = pino({ level: process.env.LOG_LEVEL ?? 'debug', base: { app: 'pino-example' } });

/** One log line per event, at a level that fits it. */
function logGateEvent(log: Logger, event: GateEvent): void {
  switch (event.type) {
    case 'cache':
      log.debug(event, 'tokengate cache');
      return;
    case 'verify':
      if (event.outcome === 'failed') log.warn(event, 'tokengate verify failed');
      else log.info(event, 'tokengate verify');
      return;
    case 'provider_error':
      log.warn(event, 'tokengate provider error');
      return;
    case 'retry':
      log.info(event, 'tokengate retry');
      return;
    case 'breaker':
      if (event.state === 'open') log.error(event, 'tokengate breaker open: failing fast');
      else log.info(event, `tokengate breaker ${event.state}`);
      return;
    case 'held_back':
      // `refused`: the provider refused this server's own credentials a moment ago; the request got that 500.
      if (event.reason === 'refused') log.error(event, 'tokengate held a verification back: credentials refused');
      else log.warn(event, 'tokengate breaker held a verification back: 503 or stale');
      return;
    case 'stale':
      log.warn(event, 'tokengate served a stale answer');
      return;
    case 'overloaded':
      log.warn(event, 'tokengate overloaded: too many new credentials wait for the provider');
      return;
    case 'shared_cache_error':
      log.warn(event, 'tokengate shared cache error: asking the provider instead');
      return;
  }
}

/** Upper bounds (ms) of the verify duration histogram's buckets, the last one `+Inf`. */
const DURATION_BUCKETS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, Number.POSITIVE_INFINITY];

/**
 * Counters and a verify duration histogram, keyed by Prometheus-style metric name and labels. Each is a fixed set of
 * numbers, however long the app runs: rate them over a window (`histogram_quantile` on the buckets) to alert.
 */
class GateMetrics {
  readonly #counters = new Map<string, number>();
  /** Per provider: how many verifications took at most each bucket's bound (not cumulative), and their sum. */
  readonly #durations = new Map<string, { readonly counts: number[]; sum: number }>();

  record(event: GateEvent): void {
    const provider = `provider="${event.provider}"`;
    switch (event.type) {
      case 'cache':
        this.#count(`tokengate_cache_total{${provider},result="${event.result}"}`);
        return;
      case 'verify': {
        this.#count(`tokengate_verify_total{${provider},outcome="${event.outcome}"}`);
        const durations = this.#durations.get(event.provider) ?? { counts: DURATION_BUCKETS.map(() => 0), sum: 0 };
        const bucket = DURATION_BUCKETS.findIndex((bound) => event.durationMs <= bound);
        durations.counts[bucket] = (durations.counts[bucket] ?? 0) + 1;
        durations.sum += event.durationMs;
        this.#durations.set(event.provider, durations);
        return;
      }
      case 'provider_error':
        this.#count(`tokengate_provider_errors_total{${provider},reason="${event.reason}"}`);
        return;
      case 'retry':
        this.#count(`tokengate_retries_total{${provider}}`);
        return;
      case 'breaker':
        this.#count(`tokengate_breaker_transitions_total{${provider},state="${event.state}"}`);
        return;
      case 'held_back':
        this.#count(`tokengate_held_back_total{${provider},reason="${event.reason}"}`);
        return;
      case 'stale':
        this.#count(`tokengate_stale_total{${provider}}`);
        return;
      case 'overloaded':
        this.#count(`tokengate_overloaded_total{${provider},reason="${event.reason}"}`);
        return;
      case 'shared_cache_error':
        this.#count(
          `tokengate_shared_cache_errors_total{${provider},operation="${event.operation}",reason="${event.reason}"}`,
        );
        return;
    }
  }

  /** Prometheus text exposition lines: the counters, then the verify duration histogram per provider. */
  lines(): string[] {
    const lines = [...this.#counters].sort(([a], [b]) => a.localeCompare(b)).map(([key, n]) => `${key} ${n}`);
    // Declared a histogram, so that Prometheus reads the buckets as one (the counters above stay untyped).
    if (this.#durations.size > 0) lines.push('# TYPE tokengate_verify_duration_ms histogram');
    for (const [provider, { counts, sum }] of this.#durations) {
      let cumulative = 0;
      DURATION_BUCKETS.forEach((bound, i) => {
        cumulative += counts[i] ?? 0;
        const le = bound === Number.POSITIVE_INFINITY ? '+Inf' : String(bound);
        lines.push(`tokengate_verify_duration_ms_bucket{provider="${provider}",le="${le}"} ${cumulative}`);
      });
      lines.push(`tokengate_verify_duration_ms_sum{provider="${provider}"} ${sum.toFixed(1)}`);
      lines.push(`tokengate_verify_duration_ms_count{provider="${provider}"} ${cumulative}`);
    }
    return lines;
  }

  #count(key: string): void {
    this.#counters.set(key, (this.#counters.get(key) ?? 0) + 1);
  }
}

// ---- mock providers, the gate, the app ---------------------------------------------

const tokens = { read: 'example-read-token', other: 'example-other-token', unknown: 'example-unknown-token' };
const connection = { user_id: 'example-user', token: 'example-connection-token' };
const apiKey = 'example-partoo-api-key';

const oon = await mockOnlineOrNot({
  tokens: {
    [tokens.read]: { id: 'tok_reader', permissions: [READ] },
    [tokens.other]: { id: 'tok_other', permissions: [READ] },
  },
});
const partooMock = await mockPartoo({ apiKey, tokens: [{ userId: connection.user_id, token: connection.token }] });

const metrics = new GateMetrics();
const gateLog = logger.child({ component: 'tokengate' });
const gate = createGate({
  providers: [onlineOrNot({ baseUrl: oon.url }), partoo({ apiKey, baseUrl: partooMock.url, permissions: [READ] })],
  timeout: 1000,
  retry: { retries: 1, baseDelay: 20, maxDelay: 50 },
  breaker: { threshold: 2, cooldown: 300 },
  cache: { ttl: 200, staleIfError: 10_000 },
  onEvent: (event) => {
    metrics.record(event);
    logGateEvent(gateLog, event);
  },
});

const app = express();
app.get('/checks', authenticate(gate), requires(READ), (req, res) => {
  res.json({ subject: req.auth?.subject, stale: req.auth?.stale });
});
// Without this, Express's default handler would print every 401 to stderr with a stack trace.
app.use(((error, _req, res, _next) => {
  if (error instanceof AuthError) {
    // `expose` is false only for server-side misconfiguration (the provider refused the API key).
    if (!error.expose) logger.error({ err: error }, 'tokengate misconfigured');
    res
      .status(error.status)
      .set(error.headers)
      .json({ error: error.code, error_description: error.expose ? error.message : 'Internal Server Error' });
    return;
  }
  logger.error({ err: error }, 'request failed');
  res.status(500).json({ error: 'internal_error' });
}) satisfies express.ErrorRequestHandler);
const server = await new Promise<ReturnType<typeof app.listen>>((resolve) => {
  const started = app.listen(0, '127.0.0.1', () => resolve(started));
});
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const requestLog = logger.child({ component: 'client' });

/** Sends one request and logs what came back (never the credential itself: `what` describes it). */
async function call(what: string, init: { bearer?: string; query?: Record<string, string> } = {}): Promise<void> {
  const url = new URL('/checks', base);
  for (const [name, value] of Object.entries(init.query ?? {})) url.searchParams.set(name, value);
  const res = await fetch(url, {
    headers: init.bearer === undefined ? {} : { authorization: `Bearer ${init.bearer}` },
  });
  await res.arrayBuffer();
  requestLog.info({ what, status: res.status, retryAfter: res.headers.get('retry-after') ?? undefined }, 'GET /checks');
}

try {
  await call('valid bearer token (cache miss)', { bearer: tokens.read });
  await call('same token again (cache hit)', { bearer: tokens.read });
  await call('unknown bearer token', { bearer: tokens.unknown });
  await call('no credential');
  await call('valid connection token', { query: connection });

  logger.info('OnlineOrNot starts resetting connections');
  oon.fault = { kind: 'reset' };
  await sleep(250); // past the cache ttl: the next request must ask the provider
  await call('cached token while the provider fails (served stale)', { bearer: tokens.read });
  await call('uncached token while the provider fails', { bearer: tokens.other });
  await call('uncached token, breaker open (fails fast)', { bearer: tokens.other });

  logger.info('OnlineOrNot recovers');
  oon.fault = undefined;
  await sleep(350); // past the breaker cooldown
  await call('after recovery (half-open probe)', { bearer: tokens.other });
  await call('after recovery', { bearer: tokens.read });

  logger.info({ stats: gate.stats() }, 'gate stats');
  process.stdout.write(`\n# tokengate metrics\n${metrics.lines().join('\n')}\n`);
} finally {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await gate.close();
  await oon.close();
  await partooMock.close();
}
