/**
 * How a mock provider server writes one answer: the route's JSON, or the
 * fault injected in its place (see {@link MockFault}).
 */
import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { pipeline, Readable } from 'node:stream';
import { shown } from '../options.js';
import { hasNoContent, hugeJson, type MockFault } from './mock-faults.js';

/** A JSON answer from a route handler. */
export interface JsonReply {
  readonly status: number;
  readonly body: unknown;
  /** Headers besides `Content-Type` and `Content-Length`. */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * `value` as JSON writes it, read back: what a mock answers, fixed when it is given. A value JSON cannot write (a
 * BigInt, a cycle, a getter or `toJSON` that throws, or nothing at all) throws a `TypeError` naming `where`, at once,
 * rather than as an uncaught exception in the test process when a request comes.
 */
export function jsonAnswer(value: unknown, where: string): unknown {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new TypeError(`${where}: expected an answer JSON can write (no BigInt, cycle or throwing getter)`, { cause });
  }
  if (text === undefined) throw new TypeError(`${where}: expected an answer JSON can write, got ${shown(value)}`);
  return JSON.parse(text);
}

const JSON_TYPE = 'application/json; charset=utf-8';

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

/** What a mock's faults answer with: the body of `wrong-shape`, and its API's error body for a `status`. */
export interface FaultBodies {
  /** 200 body of the `wrong-shape` fault. */
  readonly wrongShape: unknown;
  /** The API's own error answer for `status`: the default body of a `status` fault (`{ error }` without it). */
  readonly errorBody?: ((status: number) => unknown) | undefined;
}

/** Answers one request: normally, or with the injected fault. */
export function answer(
  req: IncomingMessage,
  res: ServerResponse,
  injected: MockFault | undefined,
  normal: () => JsonReply,
  bodies: FaultBodies,
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
      const retryAfter: Record<string, string> =
        injected.retryAfter === undefined ? {} : { 'retry-after': String(injected.retryAfter) };
      if (hasNoContent(injected.status)) {
        res.writeHead(injected.status, injected.status === 205 ? { 'content-length': '0', ...retryAfter } : retryAfter);
        res.end();
        return;
      }
      const body =
        injected.body ??
        JSON.stringify(bodies.errorBody?.(injected.status) ?? { error: STATUS_CODES[injected.status] ?? 'Error' });
      const headers: Record<string, string> = { ...retryAfter };
      if (!isJson(body)) headers['content-type'] = 'text/plain; charset=utf-8';
      send(res, injected.status, body, headers);
      return;
    }
    case 'garbage':
      send(res, 200, '{"result": <html>Bad Gateway</html>');
      return;
    case 'wrong-shape':
      send(res, 200, JSON.stringify(bodies.wrongShape));
      return;
    case 'wrong-content-type': {
      const reply = normal();
      send(res, reply.status, JSON.stringify(reply.body), {
        ...reply.headers,
        'content-type': 'text/html; charset=utf-8',
      });
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
        send(res, reply.status, JSON.stringify(reply.body), reply.headers);
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
      send(res, reply.status, JSON.stringify(reply.body), reply.headers);
    }
  }
}
