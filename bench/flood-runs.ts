/**
 * The flood scenario's runs: flood clients (bench/flood-client.ts), each a process on the load core
 * with its own loopback address, started together once all are connected; and the `express-flood`
 * server's own report of its memory and its gate.
 */
import type { ChildProcess } from 'node:child_process';
import type {
  FloodClientConfig,
  FloodClientMessage,
  FloodClientResult,
  FloodServerStats,
  ServerMessage,
} from './lib.js';
import { nextMessage, startPinned, stop } from './processes.js';
import type { LiveServer } from './runs.js';
import { settings } from './settings.js';

/** The flooding client's address. */
export const FLOODER = '127.0.0.1';
/** The client sending new valid tokens. */
export const NEWCOMER = '127.0.0.2';
/** The client with a cached token. */
export const CACHED = '127.0.0.3';

const CLIENT_NICENESS = 10;

/** A flood client's settings, without the server's address. */
export type Client = Omit<FloodClientConfig, 'url'>;

/**
 * Runs `clients` against `server` at once and returns what each saw. They start together once every
 * one is connected, right after `ready` (for readings that must cover the run and nothing else).
 */
export async function runClients(
  server: LiveServer,
  clients: readonly Client[],
  ready: () => Promise<void> = async () => {},
): Promise<FloodClientResult[]> {
  const url = new URL(server.url).origin;
  const children: ChildProcess[] = [];
  try {
    for (const client of clients) {
      const config: FloodClientConfig = { ...client, url };
      // Below the orchestrator's priority: the mock provider and the proxy share the load core with the
      // clients, and the provider's answers must take their set latency, not wait for the flood's CPU.
      const child = startPinned(settings.loadCore, 'flood-client.ts', {}, [], CLIENT_NICENESS);
      child.send({ type: 'config', config } satisfies FloodClientMessage);
      children.push(child);
    }
    await Promise.all(children.map((child) => nextMessage(child, 'warm')));
    const results = children.map((child) =>
      nextMessage<Extract<FloodClientMessage, { type: 'flood-result' }>>(child, 'flood-result'),
    );
    await ready();
    for (const child of children) child.send({ type: 'go' } satisfies FloodClientMessage);
    return (await Promise.all(results)).map((message) => message.result);
  } finally {
    await Promise.all(children.map(stop));
  }
}

/** Runs one client against `server` (see {@link runClients}) and returns what it saw. */
export async function runClient(
  server: LiveServer,
  client: Client,
  ready?: () => Promise<void>,
): Promise<FloodClientResult> {
  const [result] = await runClients(server, [client], ready);
  if (result === undefined) throw new Error('no result from the flood client');
  return result;
}

/** The `express-flood` server's memory (after a full GC) and its gate's counts, now. */
export function floodStats(server: LiveServer): Promise<FloodServerStats> {
  const reply = nextMessage<Extract<ServerMessage, { type: 'flood-stats' }>>(server.child, 'flood-stats');
  server.child.send({ type: 'flood-stats' });
  return reply.then((message) => message.stats);
}

/** Answers of `kind` (`200`, `503 overloaded`, ...). */
export const answered = (result: FloodClientResult, kind: string): number => result.answers[kind] ?? 0;

/** `answers`, `errors` and reconnections in one line: `200: 98, 503 overloaded: 2`. */
export function describeAnswers(result: FloodClientResult): string {
  const parts = Object.entries(result.answers).map(([kind, n]) => `${kind}: ${n}`);
  for (const [code, n] of Object.entries(result.errors)) parts.push(`error ${code}: ${n}`);
  if (result.reconnects > 0) parts.push(`sockets opened again: ${result.reconnects}`);
  return parts.join(', ') || 'none';
}
