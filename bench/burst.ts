/**
 * The stampede's load generator: opens `connections` keep-alive sockets
 * first, then writes one identical request on each of them in a single
 * loop, and times every response from its own write to its last byte.
 *
 * autocannon connects inside its measured window and starts each request
 * as its connection comes up, so with 1,000 connections its latencies are
 * mostly connection set-up and its own queueing; here the connections exist
 * before the clock starts and the server gets 1,000 requests at once, which
 * is the stampede. Started pinned to the load core by bench/runs.ts; talks
 * over IPC (`warm` when connected, then `go`, answered by `result`).
 */
import { connect, type Socket } from 'node:net';
import type { LoadCommand, LoadConfig, LoadMessage, LoadResult } from './lib.js';

const config = JSON.parse(process.env.BENCH_LOAD ?? '') as LoadConfig;
const url = new URL(config.url);
const port = Number(url.port);
const request = Buffer.from(
  `GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\n` +
    (config.authorization === undefined ? '' : `Authorization: ${config.authorization}\r\n`) +
    '\r\n',
);

function send(message: LoadMessage): void {
  process.send?.(message);
}

/** Resolves with the response's status and the time its last byte arrived. */
function readResponse(socket: Socket): Promise<{ status: number; at: number }> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('latin1');
      const headerEnd = buffered.indexOf('\r\n\r\n');
      if (headerEnd === -1) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(buffered.slice(0, headerEnd))?.[1] ?? 0);
      if (buffered.length < headerEnd + 4 + length) return;
      socket.off('data', onData);
      resolve({ status: Number(buffered.slice(9, 12)), at: performance.now() });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('close', () => reject(new Error('connection closed before the response')));
  });
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const waitForGo = () =>
  new Promise<void>((resolve) => {
    process.on('message', (message: LoadCommand) => {
      if (message.type === 'go') resolve();
    });
  });

try {
  const sockets = await Promise.all(
    Array.from(
      { length: config.connections },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const socket = connect({ host: url.hostname, port, noDelay: true }, () => resolve(socket));
          socket.once('error', reject);
        }),
    ),
  );
  send({ type: 'warm' });
  await waitForGo();
  const started = performance.now();
  const pending = sockets.map((socket) => {
    const response = readResponse(socket);
    const sentAt = performance.now();
    socket.write(request);
    return response.then(({ status, at }) => ({ status, latency: at - sentAt }));
  });
  const writesTook = performance.now() - started;
  const settled = await Promise.allSettled(pending);
  const durationSeconds = (performance.now() - started) / 1000;
  for (const socket of sockets) socket.destroy();
  const answered = settled.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
  const latencies = answered.map((answer) => answer.latency).sort((a, b) => a - b);
  const round1 = (value: number) => Math.round(value * 10) / 10;
  const result: LoadResult = {
    requestsPerSecond: answered.length / durationSeconds,
    requests: answered.length,
    latencyP50: round1(percentile(latencies, 50)),
    latencyP99: round1(percentile(latencies, 99)),
    non2xx: answered.filter((answer) => answer.status < 200 || answer.status > 299).length,
    errors: settled.length - answered.length,
    timeouts: 0,
    burstWriteMs: round1(writesTook),
  };
  send({ type: 'result', result });
} catch (error) {
  send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
}
process.disconnect?.();
