/**
 * A pass-through HTTP proxy on 127.0.0.1 that counts what a provider would
 * see: requests in flight (from the moment one arrives to the moment its
 * answer is sent or its connection drops) and open connections, now and at
 * their highest. Put between a gate and a mock provider, it shows from the
 * provider's side how many calls the gate has out at once. It forwards over
 * keep-alive sockets without a limit of its own, so it never holds a request
 * back and the counts are the gate's alone.
 */
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the proxy has counted. */
export interface ProxyCounts {
  /** Requests received. */
  readonly requests: number;
  /** Most requests in flight at once since the last {@link CountingProxy.resetPeaks}. */
  readonly maxInFlight: number;
  /** Most connections open at once since the last {@link CountingProxy.resetPeaks}. */
  readonly maxOpenConnections: number;
  /** Connections accepted. */
  readonly connections: number;
}

export interface CountingProxy {
  /** `http://127.0.0.1:<port>`: a provider's `baseUrl`. */
  readonly url: string;
  readonly counts: ProxyCounts;
  /** Starts the peaks again from what is in flight and open now. */
  resetPeaks(): void;
  close(): Promise<void>;
}

/** Starts a counting proxy in front of `targetUrl` (`http://127.0.0.1:<port>`). */
export async function startCountingProxy(targetUrl: string): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
  let requests = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let open = 0;
  let maxOpen = 0;
  let connections = 0;
  const server = createServer((req, res) => {
    requests++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.once('close', () => inFlight--);
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (socket) => {
    connections++;
    open++;
    maxOpen = Math.max(maxOpen, open);
    socket.once('close', () => open--);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get counts() {
      return { requests, maxInFlight, maxOpenConnections: maxOpen, connections };
    },
    resetPeaks() {
      maxInFlight = inFlight;
      maxOpen = open;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
