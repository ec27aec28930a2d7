/**
 * Shared machinery of the mock provider servers in `tokengate/testing`: a
 * real `node:http` server on 127.0.0.1 with call and connection counting,
 * latency, fault injection and a `close()` that leaves no handle behind.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline, Readable } from 'node:stream';
import { FaultSchedule, type VerificationParts } from './mock-fault-schedule.js';
import { checkFault, hugeJson, type MockFault } from './mock-faults.js';

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
   * Snapshot of the request counts: one entry per endpoint name (GET requests
   * to that endpoint, whatever the answer, faults included) and `total`
   * (every request the server received, unknown paths included).
   */
  readonly calls: Readonly<Record<Endpoint | 'total', number>>;
  /** TCP connections accepted since start (to check keep-alive). Not reset by {@link MockProvider.resetCalls}. */
  readonly connections: number;
  /** Milliseconds to wait before answering every request, faults included (default 0). */
  latency: number;
  /**
   * Fault to inject; `undefined` = behave normally. Assigning (even the same
   * fault again) restarts the `every` count of verifications. Throws
   * `RangeError` for a fault with out-of-range numbers or an unknown endpoint.
   */
  fault: MockFault | undefined;
  /** Sets every count in {@link MockProvider.calls} back to 0. */
  resetCalls(): void;
  /**
   * Stops the server: destroys open sockets (pending requests included),
   * clears latency and drip timers, and resolves once the server and all its
   * sockets are closed. Idempotent.
   */
  close(): Promise<void>;
}

/** A JSON answer from a route handler. */
export interface JsonReply {
  readonly status: number;
  readonly body: unknown;
}

/** Answers one GET request to an endpoint; must not throw. */
export type RouteHandler = (req: IncomingMessage, query: URLSearchParams) => JsonReply;

/** @internal What a mock provider tells {@link startMockServer}. */
export interface MockServerSpec<Endpoint extends string> {
  /** Path appended to `http://127.0.0.1:<port>` to make `url` (`''` or `'/v2'`). */
  readonly basePath: string;
  /** GET endpoints by exact pathname (`/v1/tokens/verify`). */
  readonly routes: Readonly<Record<string, { readonly name: Endpoint; readonly handle: RouteHandler }>>;
  /** 200 body of the `wrong-shape` fault. */
  readonly wrongShape: unknown;
  /** The requests that make up one verification, for `MockFault.every`; default one request. */
  readonly verification?: VerificationParts;
}

const JSON_TYPE = 'application/json; charset=utf-8';

const nextCheck = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    'content-type': JSON_TYPE,
    'content-length': String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

/** Answers one request: normally, or with the injected fault. */
function answer(
  req: IncomingMessage,
  res: ServerResponse,
  injected: MockFault | undefined,
  normal: () => JsonReply,
  wrongShape: unknown,
  timers: Set<NodeJS.Timeout>,
): void {
  if (res.destroyed) return; // the client left during the latency
  switch (injected?.kind) {
    case 'reset':
      req.socket.resetAndDestroy();
      return;
    case 'hang':
      return;
    case 'status': {
      const body = injected.body ?? JSON.stringify({ error: STATUS_CODES[injected.status] ?? 'Error' });
      const headers: Record<string, string> = {};
      if (!isJson(body)) headers['content-type'] = 'text/plain; charset=utf-8';
      if (injected.retryAfter !== undefined) headers['retry-after'] = String(injected.retryAfter);
      send(res, injected.status, body, headers);
      return;
    }
    case 'garbage':
      send(res, 200, '{"result": <html>Bad Gateway</html>');
      return;
    case 'wrong-shape':
      send(res, 200, JSON.stringify(wrongShape));
      return;
    case 'wrong-content-type': {
      const reply = normal();
      send(res, reply.status, JSON.stringify(reply.body), { 'content-type': 'text/html; charset=utf-8' });
      return;
    }
    case 'huge':
      res.writeHead(200, { 'content-type': JSON_TYPE });
      pipeline(Readable.from(hugeJson(injected.bytes)), res, () => {});
      return;
    case 'drip': {
      res.writeHead(200, { 'content-type': JSON_TYPE });
      res.flushHeaders();
      const timer = setInterval(() => res.write(' '), injected.intervalMs);
      timers.add(timer);
      res.once('close', () => {
        clearInterval(timer);
        timers.delete(timer);
      });
      return;
    }
    case 'redirect':
      send(res, 302, '', { location: injected.location });
      return;
    case 'delay': {
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (res.destroyed) return;
        const reply = normal();
        send(res, reply.status, JSON.stringify(reply.body));
      }, injected.ms);
      timers.add(timer);
      res.once('close', () => {
        clearTimeout(timer);
        timers.delete(timer);
      });
      return;
    }
    case undefined: {
      const reply = normal();
      send(res, reply.status, JSON.stringify(reply.body));
    }
  }
}

/** The normal answer: the route's, or 404 / 405. */
function routeReply(handle: RouteHandler | undefined, req: IncomingMessage, query: URLSearchParams): JsonReply {
  if (handle === undefined) return { status: 404, body: { error: 'Not Found' } };
  if (req.method !== 'GET') return { status: 405, body: { error: 'Method Not Allowed' } };
  return handle(req, query);
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
  const schedule = new FaultSchedule(spec.verification);
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
    const endpoint = route && req.method === 'GET' ? route.name : undefined;
    bump('total');
    if (endpoint !== undefined) bump(endpoint);
    const injected = schedule.faultFor(endpoint, req);

    const normal = (): JsonReply => routeReply(route?.handle, req, query);
    const reply = (): void => answer(req, res, injected, normal, spec.wrongShape, timers);
    // Let the request body (normally none) drain so keep-alive works.
    req.resume();
    if (mock.latency <= 0) return reply();
    const timer = setTimeout(() => {
      timers.delete(timer);
      reply();
    }, mock.latency);
    timers.add(timer);
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
    latency: 0,
    get fault() {
      return schedule.fault;
    },
    set fault(value) {
      checkFault(value, names);
      schedule.fault = value;
    },
    resetCalls,
    close() {
      closing ??= closeServer(server, sockets, timers);
      return closing;
    },
  };
  return mock;
}
