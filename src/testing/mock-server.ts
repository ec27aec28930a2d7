/**
 * Shared machinery of the mock provider servers in `tokengate/testing`: a
 * real `node:http` server on 127.0.0.1 with call and connection counting,
 * latency, fault injection and a `close()` that leaves no handle behind.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { MAX_TIMER_MS, shown } from '../options.js';
import { answer, type JsonReply } from './mock-answer.js';
import { FaultSchedule, type VerificationParts } from './mock-fault-schedule.js';
import { checkFault, frozenFault, type MockFault } from './mock-faults.js';

export type { MockFault } from './mock-faults.js';

/**
 * What every mock provider server offers.
 *
 * @typeParam Endpoint - Names of the endpoints the mock counts in {@link MockProvider.calls}.
 */
export interface MockProvider<Endpoint extends string = string> {
  /** Base URL to give the provider as `baseUrl`, without a trailing slash. */
  readonly url: string;
  /**
   * Snapshot of the request counts: one entry per endpoint name (requests to
   * that endpoint with its method, GET unless the mock says otherwise,
   * whatever the answer, faults included) and `total`
   * (every request the server received, unknown paths included).
   */
  readonly calls: Readonly<Record<Endpoint | 'total', number>>;
  /** TCP connections accepted since start (to check keep-alive). Not reset by {@link MockProvider.resetCalls}. */
  readonly connections: number;
  /**
   * Milliseconds to wait before answering every request, faults included
   * (default 0). Throws `RangeError` for anything but a number from 0 to
   * 2^31-1 (the longest timer Node keeps).
   */
  latency: number;
  /**
   * Fault to inject; `undefined` = behave normally. Assigning (even the same
   * fault again) restarts the `every` count of verifications. The mock keeps
   * a frozen copy of the fault (read back here), so changing the object
   * assigned afterwards changes nothing. Throws `TypeError` for anything but
   * a fault of a known kind or for an option its kind does not take, and
   * `RangeError` for out-of-range numbers or an unknown endpoint.
   */
  fault: MockFault | undefined;
  /** Sets every count in {@link MockProvider.calls} back to 0. */
  resetCalls(): void;
  /**
   * Puts the mock back as it started, for the next test: the tokens it was made with (a Partoo token's dates made
   * anew), no `fault`, no `latency`, every count in {@link MockProvider.calls} at 0. Its `url`, its open connections
   * and {@link MockProvider.connections} stay.
   */
  reset(): void;
  /**
   * Stops the server: destroys open sockets (pending requests included),
   * clears latency and drip timers, and resolves once the server and all its
   * sockets are closed. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Answers one request to an endpoint, with its method; must not throw.
 * `body` is the request body as text (`''` for a GET route, whose body is
 * only drained).
 */
export type RouteHandler = (req: IncomingMessage, query: URLSearchParams, body: string) => JsonReply;

/** One endpoint of a mock: its name in `calls`, its method (default GET) and its handler. */
export interface MockRoute<Endpoint extends string> {
  readonly name: Endpoint;
  readonly method?: 'GET' | 'POST';
  readonly handle: RouteHandler;
}

/** @internal What a mock provider tells {@link startMockServer}. */
export interface MockServerSpec<Endpoint extends string> {
  /** Path appended to `http://127.0.0.1:<port>` to make `url` (`''` or `'/v2'`). */
  readonly basePath: string;
  /** Endpoints by exact pathname (`/v1/tokens/verify`). */
  readonly routes: Readonly<Record<string, MockRoute<Endpoint>>>;
  /** 200 body of the `wrong-shape` fault. */
  readonly wrongShape: unknown;
  /** The API's own error answer for a status: the default body of a `status` fault. */
  readonly errorBody?: (status: number) => unknown;
  /** The requests that make up one verification, for `MockFault.every`; default one request. */
  readonly verification?: VerificationParts;
  /** Puts the mock's own state (its tokens) back as it started: part of {@link MockProvider.reset}. */
  readonly reset: () => void;
}

/** Largest request body a POST route reads; a larger one is answered 413. */
const MAX_REQUEST_BODY = 64 * 1024;

const nextCheck = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The normal answer: the route's, or 404 / 405 / 413. `body` is undefined when it was too large. */
function routeReply(
  route: MockRoute<string> | undefined,
  req: IncomingMessage,
  query: URLSearchParams,
  body: string | undefined,
): JsonReply {
  if (route === undefined) return { status: 404, body: { error: 'Not Found' } };
  const method = route.method ?? 'GET';
  // RFC 9110 §15.5.6: a 405 names the methods the resource supports.
  if (req.method !== method) return { status: 405, body: { error: 'Method Not Allowed' }, headers: { allow: method } };
  if (body === undefined) return { status: 413, body: { error: 'Payload Too Large' } };
  return route.handle(req, query, body);
}

/**
 * Calls `done` with the request body as text once it has all arrived, or
 * with undefined when it is larger than {@link MAX_REQUEST_BODY} (the rest
 * is drained).
 */
function readBody(req: IncomingMessage, done: (body: string | undefined) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= MAX_REQUEST_BODY) chunks.push(chunk);
  });
  req.once('end', () => done(size <= MAX_REQUEST_BODY ? Buffer.concat(chunks).toString('utf8') : undefined));
}

/** Runs `reply` now, or after `latency` ms on a timer kept in `timers` (so that `close()` can clear it). */
function afterLatency(latency: number, timers: Set<NodeJS.Timeout>, reply: () => void): void {
  if (latency <= 0) {
    reply();
    return;
  }
  const timer = setTimeout(() => {
    timers.delete(timer);
    reply();
  }, latency);
  timers.add(timer);
}

/** Listens on 127.0.0.1, on a free port. */
function listen(server: Server): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Closes the server and every socket, clears every timer, and resolves once libuv has let go of them all. */
function closeServer(server: Server, sockets: Set<Socket>, timers: Set<NodeJS.Timeout>): Promise<void> {
  for (const timer of timers) clearTimeout(timer);
  timers.clear();
  const socketsClosed = [...sockets].map((s) => new Promise((done) => s.once('close', done)));
  const serverClosed = new Promise((done) => server.close(done));
  for (const socket of sockets) socket.destroy();
  // 'close' events can come before libuv has released every handle (the listening handle closes
  // without a JS callback): two turns of the event loop's check phase let those callbacks run.
  return Promise.all([serverClosed, ...socketsClosed])
    .then(nextCheck)
    .then(nextCheck)
    .then(() => undefined);
}

/** @internal Starts a mock server on 127.0.0.1, on a free port. */
export async function startMockServer<Endpoint extends string>(
  spec: MockServerSpec<Endpoint>,
): Promise<MockProvider<Endpoint>> {
  const routes = new Map(Object.entries(spec.routes));
  const names = [...new Set([...routes.values()].map((r) => r.name))];
  const counts = new Map<string, number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let connections = 0;
  let latency = 0;
  // A partner request may come only once the first is answered (a client with one socket): after the latency and
  // a `delay` fault's wait.
  const schedule: FaultSchedule = new FaultSchedule(spec.verification, (): number => {
    const fault: MockFault | undefined = schedule.fault;
    return latency + (fault?.kind === 'delay' ? fault.ms : 0);
  });
  let closing: Promise<void> | undefined;
  const resetCalls = (): void => {
    for (const name of [...names, 'total']) counts.set(name, 0);
  };
  const bump = (name: string): void => {
    counts.set(name, (counts.get(name) ?? 0) + 1);
  };
  resetCalls();

  const server = createServer((req, res) => {
    const target = req.url ?? '/';
    const q = target.indexOf('?');
    const pathname = q === -1 ? target : target.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : target.slice(q + 1));
    const route = routes.get(pathname);
    const endpoint = route && req.method === (route.method ?? 'GET') ? route.name : undefined;
    bump('total');
    if (endpoint !== undefined) bump(endpoint);
    const injected = schedule.faultFor(endpoint, req, res);

    const respond = (body: string | undefined): void => {
      const normal = (): JsonReply => routeReply(route, req, query, body);
      afterLatency(latency, timers, () => answer(req, res, injected, normal, spec, timers));
    };
    // A POST route reads its body first. Any other request's body (normally none) is drained so keep-alive works.
    if (endpoint !== undefined && route?.method === 'POST') {
      readBody(req, respond);
    } else {
      req.resume();
      respond('');
    }
  });

  server.on('connection', (socket: Socket) => {
    connections += 1;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await listen(server);
  const { port } = server.address() as AddressInfo;

  const mock: MockProvider<Endpoint> = {
    url: `http://127.0.0.1:${port}${spec.basePath}`,
    get calls() {
      return Object.freeze(Object.fromEntries(counts)) as Readonly<Record<Endpoint | 'total', number>>;
    },
    get connections() {
      return connections;
    },
    get latency() {
      return latency;
    },
    set latency(value) {
      if (!(typeof value === 'number' && value >= 0 && value <= MAX_TIMER_MS)) {
        throw new RangeError(`Invalid mock latency: expected 0 to ${MAX_TIMER_MS} ms, got ${shown(value)}`);
      }
      latency = value;
    },
    get fault() {
      return schedule.fault;
    },
    set fault(value) {
      // The copy is what is checked and kept: a change to `value` afterwards cannot bring in an unchecked fault.
      const fault = frozenFault(value);
      checkFault(fault, names);
      schedule.fault = fault;
    },
    resetCalls,
    reset() {
      schedule.fault = undefined;
      latency = 0;
      resetCalls();
      spec.reset();
    },
    close() {
      closing ??= closeServer(server, sockets, timers);
      return closing;
    },
  };
  return mock;
}
