/**
 * A tiny provider stand-in for tests that need answers the mock providers do
 * not give: a real `node:http` server on 127.0.0.1 whose every answer is
 * written by the test (`server.answer = (req, res) => …`).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Answer = (req: IncomingMessage, res: ServerResponse) => void;

export interface AnswerServer {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  readonly url: string;
  /** Requests received since start (or the last `calls = 0`). */
  calls: number;
  /** TCP connections accepted since start. */
  readonly connections: number;
  /** Paths (query included) of the requests received, in order. */
  readonly paths: string[];
  /** Writes the answer to each request; default a 404 JSON error. */
  answer: Answer;
  /** Destroys open sockets (hanging answers included) and stops listening. */
  close(): Promise<void>;
}

/** Sends `body` with a Content-Length and the given content type (default JSON). */
export function reply(res: ServerResponse, status: number, body: string, contentType = 'application/json'): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export async function startAnswerServer(): Promise<AnswerServer> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    state.calls++;
    state.paths.push(req.url ?? '');
    req.resume();
    state.answer(req, res);
  });
  let connections = 0;
  server.on('connection', (socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const state: AnswerServer = {
    url: `http://127.0.0.1:${port}`,
    calls: 0,
    get connections() {
      return connections;
    },
    paths: [],
    answer: (_req, res) => reply(res, 404, '{"error":"Not Found"}'),
    close: () =>
      new Promise<void>((resolve) => {
        const closed = [...sockets].map((socket) => new Promise((done) => socket.once('close', done)));
        for (const socket of sockets) socket.destroy();
        server.close(() => void Promise.all(closed).then(() => resolve()));
      }),
  };
  return state;
}
