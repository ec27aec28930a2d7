/**
 * One client of the flood scenario (bench/scenarios/flood.ts), in a process of its own on the load
 * core: keep-alive connections that all come from one loopback address (the gate tells clients apart
 * by address; bench/raw-client.ts), sending Bearer tokens as its `config` message says (see
 * `FloodClientConfig`). It says `warm` once its connections are open and served once, starts on `go`,
 * and answers with `flood-result`: answers by status (503s by their JSON `error` code), latency
 * percentiles per kind of answer, and errors. Every loop ends after `durationMs`; `each` also after
 * 50 tries per token.
 */
import { randomBytes } from 'node:crypto';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import type { FloodClientConfig, FloodClientMessage, FloodClientResult, Percentiles } from './lib.js';
import { RawPool } from './raw-client.js';

const config = await new Promise<FloodClientConfig>((resolve) => {
  process.once('message', (message: FloodClientMessage) => {
    if (message.type === 'config') resolve(message.config);
  });
});
const tokens = config.tokens ?? [];
const MAX_TRIES_PER_TOKEN = 50;

function send(message: FloodClientMessage): void {
  process.send?.(message);
}

const answers: Record<string, number> = {};
const errors: Record<string, number> = {};
const histograms = new Map<string, RecordableHistogram>();
const all = createHistogram();
let requests = 0;
let overloadedWithoutRetryAfter = 0;

/** One request; resolves with its kind of answer (`200`, `401`, `503 overloaded`, ...) or `error`. */
async function ask(pool: RawPool, token: string): Promise<string> {
  const sent = performance.now();
  requests++;
  try {
    const answer = await pool.get('/hello', `Bearer ${token}`);
    let kind = String(answer.status);
    if (answer.status === 503) {
      const code = (JSON.parse(answer.body) as { error?: string }).error;
      kind = `503 ${code}`;
      if (code === 'overloaded' && answer.retryAfter !== '1') overloadedWithoutRetryAfter++;
    }
    const micros = Math.max(1, Math.round((performance.now() - sent) * 1000));
    all.record(micros);
    let histogram = histograms.get(kind);
    if (histogram === undefined) histograms.set(kind, (histogram = createHistogram()));
    histogram.record(micros);
    answers[kind] = (answers[kind] ?? 0) + 1;
    return kind;
  } catch (error) {
    const code = (error as { code?: string }).code ?? (error as Error).name;
    errors[code] = (errors[code] ?? 0) + 1;
    return 'error';
  }
}

/** A token no one has sent before: valid b64token syntax, unknown to the provider. */
const prefix = `flood-${process.pid}-${randomBytes(4).toString('hex')}-`;
let sequence = 0;
const randomToken = () => `${prefix}${sequence++}`;

/** Runs the config's mode until done or `endAt`; returns the tokens left unanswered. */
async function run(pool: RawPool, endAt: number): Promise<number> {
  const loops = (body: () => Promise<boolean>) =>
    Promise.all(
      Array.from({ length: config.connections }, async () => {
        while (performance.now() < endAt && (await body()));
      }),
    );
  switch (config.mode) {
    case 'random':
      await loops(async () => {
        await ask(pool, randomToken());
        return true;
      });
      return 0;
    case 'cycle': {
      let next = 0;
      await loops(async () => {
        await ask(pool, tokens[next++ % tokens.length] as string);
        return true;
      });
      return 0;
    }
    case 'paced': {
      const pending: Promise<string>[] = [];
      const started = performance.now();
      for (const [i, token] of tokens.entries()) {
        const at = started + i * (config.intervalMs ?? 100);
        if (at >= endAt) break;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, at - performance.now())));
        pending.push(ask(pool, token));
      }
      const kinds = await Promise.all(pending);
      return tokens.length - kinds.filter((kind) => kind !== '503 overloaded' && kind !== 'error').length;
    }
    case 'each': {
      const queue = [...tokens];
      const tries = new Map<string, number>();
      let answered = 0;
      await loops(async () => {
        const token = queue.shift();
        if (token === undefined) return false;
        const kind = await ask(pool, token);
        const tried = (tries.get(token) ?? 0) + 1;
        tries.set(token, tried);
        if (kind !== '503 overloaded' && kind !== 'error') answered++;
        else if (tried < MAX_TRIES_PER_TOKEN) queue.push(token);
        return true;
      });
      return tokens.length - answered;
    }
  }
}

function percentiles(histogram: RecordableHistogram): Percentiles {
  const ms = (micros: number) => Math.round(micros / 100) / 10;
  return { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), max: ms(histogram.max) };
}

const pool = new RawPool(config.url, config.localAddress, config.connections);
// Every connection open and served once before `warm`: the measured run pays for requests only.
await pool.open('/hello');
process.once('message', async (message: FloodClientMessage) => {
  if (message.type !== 'go') return;
  try {
    const started = performance.now();
    const unanswered = await run(pool, started + config.durationMs);
    const elapsedMs = performance.now() - started;
    pool.close();
    const result: FloodClientResult = {
      requests,
      elapsedMs,
      answers,
      latency: Object.fromEntries([...histograms].map(([kind, histogram]) => [kind, percentiles(histogram)])),
      latencyAll: percentiles(all),
      overloadedWithoutRetryAfter,
      unanswered,
      errors,
      reconnects: pool.reconnects,
    };
    send({ type: 'flood-result', result });
  } catch (error) {
    send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  }
  process.disconnect?.();
});
send({ type: 'warm' });
