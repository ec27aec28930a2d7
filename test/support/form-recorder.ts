/**
 * A pass-through HTTP proxy on 127.0.0.1 that records each request with its
 * body, exactly as a provider put them on the wire, before forwarding it to a
 * mock: to see what a POSTing provider sends (form body, client credentials).
 */
import { createServer, request as forward, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the recorder received. */
export interface RecordedForm {
  readonly method: string;
  /** Path and query exactly as received. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** The body as text, undecoded. */
  readonly body: string;
}

export interface FormRecorder {
  /** `http://127.0.0.1:<port>`: the recorder's origin; paths are forwarded as they are. */
  readonly url: string;
  /** Requests received, in order of arrival. */
  readonly requests: RecordedForm[];
  close(): Promise<void>;
}

/** Starts a recorder in front of `targetOrigin` (`http://127.0.0.1:<port>`). */
export async function startFormRecorder(targetOrigin: string): Promise<FormRecorder> {
  const target = new URL(targetOrigin);
  const requests: RecordedForm[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => {
      const body = Buffer.concat(chunks);
      const recorded = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body: `${body}` };
      requests.push(recorded);
      const upstream = forward(
        { host: target.hostname, port: target.port, method: recorded.method, path: recorded.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
