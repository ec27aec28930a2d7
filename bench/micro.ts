/**
 * Scenario 6: nanoseconds per cached `gate.authenticate()` with tinybench,
 * and the same call taken apart (header parsing, cache key, guard, clock
 * read), to see where the time goes. Each task runs its operation
 * `INNER` times per sample so timer overhead stays out of the figure. Also
 * what a cold verification's cancellation costs, as an AbortSignal and as the
 * gate's own Deadline, and what a refusal at a full wait costs, its error apart.
 */
import { channel } from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Bench } from 'tinybench';
import * as expressGate from '../adapters/express.js';
// Internal parts, timed on their own: the cache key's hash, the cold path's deadline and a refusal's error.
import { Deadline } from '../src/deadline.js';
import { overloaded } from '../src/errors.js';
import { CHANNELS, type CredentialRequest, createGate, extractBearer, requires } from '../src/index.js';
import { cacheKey } from '../src/store.js';
import { stubProvider } from '../src/testing/index.js';
import { BENCH_PERMISSIONS, HOT_TOKEN, ROUTE_PERMISSION } from './lib.js';

export interface MicroResult {
  /** Name of the task that answers the scenario's question. */
  readonly headline: string;
  readonly tasks: readonly { readonly name: string; readonly nsPerOp: number; readonly rme: number }[];
}

const INNER = 1000;
const TOKEN = HOT_TOKEN;
const AUTHORIZATION = `Bearer ${TOKEN}`;
// What Node hands over for a typical API request.
const request: CredentialRequest = {
  headers: {
    host: '127.0.0.1:3000',
    'user-agent': 'bench',
    accept: 'application/json',
    authorization: AUTHORIZATION,
    connection: 'keep-alive',
  },
  rawHeaders: [
    'Host',
    '127.0.0.1:3000',
    'User-Agent',
    'bench',
    'Accept',
    'application/json',
    'Authorization',
    AUTHORIZATION,
    'Connection',
    'keep-alive',
  ],
};

const gate = createGate({
  providers: [stubProvider({ tokens: { [TOKEN]: { subject: 'tok_hot', permissions: BENCH_PERMISSIONS } } })],
});
const guard = requires(ROUTE_PERMISSION);
const context = await gate.authenticate(request);
const scope = JSON.stringify(['stub', 'stub', 1]);

// The Express middleware pair as a route runs it; `next` settles a promise so that a
// middleware that calls `next` later (after a promise) is timed to that point too.
const authenticateMiddleware = expressGate.authenticate(gate);
const requiresMiddleware = expressGate.requires(ROUTE_PERMISSION);
const response = {} as ServerResponse;
const socket = {};
function throughMiddleware(): Promise<void> {
  // One keep-alive connection: the same socket object on every request.
  const req = {
    headers: request.headers,
    rawHeaders: request.rawHeaders,
    socket,
    connection: socket,
  } as unknown as IncomingMessage;
  return new Promise((resolve, reject) => {
    authenticateMiddleware(req, response, (error) => {
      if (error !== undefined) return reject(error);
      requiresMiddleware(req, response, (denied) => (denied === undefined ? resolve() : reject(denied)));
    });
  });
}

// A never-seen token at a full wait, as a flood of random tokens meets it: one slot, held by a verification that
// never ends, and no room to wait, so that every other token is answered 503 `overloaded` at once.
const held = createGate({
  providers: [
    {
      name: 'held',
      cacheScope: 'held',
      concurrency: 1,
      extract: extractBearer,
      verify: () => new Promise<never>(() => {}),
    },
  ],
  admission: { maxWaiting: 0 },
  timeout: 600_000,
});
let neverSeen = 0;
const refusedRequest = () => ({ headers: { authorization: `Bearer never-seen-${neverSeen++}` } });
held.authenticate(refusedRequest()).catch(() => {});

const HEADLINE = 'gate.authenticate() cached';
const bench = new Bench({ time: Number(process.env.BENCH_MICRO_MS ?? 1500), warmupTime: 500 });
let sink: unknown;
const noop = () => {};
const noop2 = () => {};
bench
  .add('baseline: await of a resolved promise', async () => {
    for (let i = 0; i < INNER; i++) sink = await Promise.resolve(i);
  })
  .add(HEADLINE, async () => {
    for (let i = 0; i < INNER; i++) sink = await gate.authenticate(request);
  })
  // The same with a subscriber on tokengate:cache: what tracing costs when it is on (and, by the row above, not when off).
  .add(
    'gate.authenticate() cached, tokengate:cache subscribed',
    async () => {
      for (let i = 0; i < INNER; i++) sink = await gate.authenticate(request);
    },
    {
      beforeAll: () => channel(CHANNELS.cache).subscribe(noop),
      afterAll: () => {
        channel(CHANNELS.cache).unsubscribe(noop);
      },
    },
  )
  .add('gate.authenticate() + gate.authorize()', async () => {
    for (let i = 0; i < INNER; i++) gate.authorize(await gate.authenticate(request), guard);
  })
  .add('Express authenticate() + requires() middleware, cached', async () => {
    for (let i = 0; i < INNER; i++) await throughMiddleware();
  })
  .add('gate.authenticate() refused: a never-seen token at a full wait (503)', async () => {
    for (let i = 0; i < INNER; i++) sink = await held.authenticate(refusedRequest()).catch((error: unknown) => error);
  })
  // What a refusal, a 401 or a 400 builds for its answer, and for scale an Error with its stack read, as loggers do.
  .add('part: overloaded() (an AuthError)', () => {
    for (let i = 0; i < INNER; i++) sink = overloaded('held');
  })
  .add('part: new Error() and its stack read', () => {
    for (let i = 0; i < INNER; i++) sink = new Error('Too many credentials are waiting').stack;
  })
  .add('part: extractBearer()', () => {
    for (let i = 0; i < INNER; i++) sink = extractBearer(request, 'api');
  })
  .add('part: cacheKey() (SHA-256)', () => {
    for (let i = 0; i < INNER; i++) sink = cacheKey(scope, TOKEN);
  })
  .add('part: gate.authorize() with requires()', () => {
    for (let i = 0; i < INNER; i++) gate.authorize(context, guard);
  })
  // The one clock read of a cached request (in a loop; bench/README.md on what it costs in a server).
  .add('part: performance.now()', () => {
    for (let i = 0; i < INNER; i++) sink = performance.now();
  })
  // A cold OnlineOrNot verification's cancellation, two ways: an AbortSignal with one abort listener
  // per upstream request, and the gate's own deadline (its timer included).
  .add('part: AbortController + 2 abort listeners added and removed', () => {
    for (let i = 0; i < INNER; i++) {
      const { signal } = new AbortController();
      signal.addEventListener('abort', noop);
      signal.addEventListener('abort', noop2);
      signal.removeEventListener('abort', noop);
      signal.removeEventListener('abort', noop2);
    }
  })
  .add('part: Deadline + 2 listeners added and removed, ended', () => {
    for (let i = 0; i < INNER; i++) {
      const deadline = new Deadline(5000);
      deadline.onCancel(noop);
      deadline.onCancel(noop2);
      deadline.offCancel(noop);
      deadline.offCancel(noop2);
      deadline.end(false);
    }
  });

await bench.run();
void sink;
await held.close();

const tasks = bench.tasks.map((task) => {
  const result = task.result;
  if (result.state !== 'completed') throw new Error(`${task.name}: ${result.state}`);
  return { name: task.name, nsPerOp: (result.latency.mean * 1e6) / INNER, rme: result.latency.rme };
});
const result: MicroResult = { headline: HEADLINE, tasks };
for (const task of tasks) {
  console.log(`${task.name.padEnd(60)} ${task.nsPerOp.toFixed(0).padStart(6)} ns/op  ±${task.rme.toFixed(1)}%`);
}
process.send?.({ type: 'result', result });
process.disconnect?.();
