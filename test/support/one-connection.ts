/**
 * An app served on 127.0.0.1 and a client that sends every request over ONE
 * keep-alive TCP connection (an agent with `keepAlive` and `maxSockets: 1`),
 * as a long-lived client or a proxy does. `expectOneConnection()` checks that
 * the requests really shared it: the server saw one connection, the client
 * used one local port.
 */
import { Agent, createServer, type OutgoingHttpHeaders, type RequestListener, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';

/** What the client got back. */
export interface OneConnectionAnswer {
  readonly status: number;
  /** The `WWW-Authenticate` header, if any. */
  readonly challenge: string | undefined;
  readonly body: string;
}

export interface OneConnection {
  /** GET `path` with `headers` over the one connection. */
  get(path: string, headers?: OutgoingHttpHeaders): Promise<OneConnectionAnswer>;
  /** Every request so far went over one and the same TCP connection. */
  expectOneConnection(): void;
  /** Closes the client and the server. */
  close(): Promise<void>;
}

export async function serveOnOneConnection(listener: RequestListener): Promise<OneConnection> {
  const server = createServer(listener);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const localPorts = new Set<number>();
  return {
    get: (path, headers = {}) =>
      new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, agent, headers }, (res) => {
          if (res.socket.localPort !== undefined) localPorts.add(res.socket.localPort);
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              challenge: res.headers['www-authenticate'],
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      }),
    expectOneConnection() {
      expect(connections).toBe(1);
      expect(localPorts.size).toBe(1);
    },
    close: () =>
      new Promise<void>((resolve) => {
        agent.destroy();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
