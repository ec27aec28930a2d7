/**
 * A pass-through HTTP proxy on 127.0.0.1 for tests: it records every request
 * exactly as a provider put it on the wire (method, raw URL, headers) before
 * forwarding it to a mock, and can answer chosen requests itself. Used to see
 * what reached the provider (URL encoding, `x-APIKey`) and to make one
 * endpoint answer differently from the other.
 */
import { createServer, request as forward, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request the proxy received. */
export interface RecordedRequest {
  readonly method: string;
  /** Path and query exactly as received (not decoded). */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

/** A JSON answer the proxy sends instead of forwarding. */
export interface InterceptedReply {
  readonly status: number;
  readonly body: unknown;
}

export interface RecordingProxy {
  /** The target URL with the proxy's origin: pass it as a provider's `baseUrl`. */
  readonly url: string;
  /** Requests received, in order of arrival. */
  readonly requests: RecordedRequest[];
  /** Returns a reply to answer a request itself, or `undefined` to forward it. */
  intercept: ((request: RecordedRequest) => InterceptedReply | undefined) | undefined;
  close(): Promise<void>;
}

/** Starts a recording proxy in front of `targetUrl` (`http://127.0.0.1:<port>[/base]`). */
export async function startRecordingProxy(targetUrl: string): Promise<RecordingProxy> {
  const target = new URL(targetUrl);
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const recorded: RecordedRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    requests.push(recorded);
    const reply = proxy.intercept?.(recorded);
    if (reply !== undefined) {
      const body = JSON.stringify(reply.body);
      res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const upstream = forward(
      { host: target.hostname, port: target.port, method: recorded.method, path: recorded.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const proxy: RecordingProxy = {
    url: `http://127.0.0.1:${port}${target.pathname.replace(/\/$/, '')}`,
    requests,
    intercept: undefined,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return proxy;
}
