/**
 * The request the core reads: a plain {@link CredentialRequest}, made of
 * whatever request a caller or an adapter hands over (a Node request as
 * a framework wraps it is read through {@link NodeRequest}), and one
 * header of it read. A header's value is `headers`' (so middleware that
 * sets or removes it before the gate is heard), and `rawHeaders`, when
 * given, tells whether the client sent it more than once: Node keeps only
 * the first of repeated `Authorization` headers in `headers`, while
 * `rawHeaders` shows every one.
 */
import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import { shown } from './options.js';
import type { CredentialRequest, GateRequest } from './types.js';

/**
 * Reads one header: its value, `undefined` when absent, `null` when sent more than once. A hand-made request may give
 * a header as an array of strings (one value each time it was sent); any other value that is not a string throws a
 * `TypeError`, as Node never makes one. `rawHeaders` absent or null is not consulted.
 */
export type HeaderReader = (req: CredentialRequest) => string | undefined | null;

/** A reader for the header `name` (any case). */
export function headerReader(name: string): HeaderReader {
  const lower = flat(name.toLowerCase());
  // The usual spelling (`Authorization`, `X-Api-Key`) is compared first: toLowerCase() allocates.
  const usual = lower.replace(/(^|-)([a-z])/g, (_, dash: string, letter: string) => dash + letter.toUpperCase());
  const length = lower.length;
  return (req) => {
    let header = req.headers[lower];
    if (header === undefined) return undefined;
    if (typeof header !== 'string') {
      if (!Array.isArray(header) || !header.every((value) => typeof value === 'string')) {
        throw ownError(
          new TypeError(
            `gate.authenticate: expected the request's headers.${lower} to be a string or an array of strings, got ${shownHeader(header)}`,
          ),
        );
      }
      if (header.length !== 1) return header.length === 0 ? undefined : null;
      header = header[0] as string;
    }
    const raw = req.rawHeaders;
    if (raw == null) return header;
    let sent = false;
    for (let i = 0; i < raw.length; i += 2) {
      const key = raw[i] as string;
      if (key.length === length && (key === usual || key === lower || key.toLowerCase() === lower)) {
        if (sent) return null;
        sent = true;
      }
    }
    return header;
  };
}

/** Errors the header reader made: their messages name a request's mistake and hold none of its contents. */
const ownErrors = new WeakSet<Error>();

function ownError(error: Error): Error {
  ownErrors.add(error);
  return error;
}

/** Whether `error` is one the header reader made, whose message a provider's `extract` may pass on as it is. */
export function isRequestError(error: unknown): boolean {
  return error instanceof Error && ownErrors.has(error);
}

/** A header value that is neither a string nor strings, as a message shows it: its kind, never its contents. */
function shownHeader(header: unknown): string {
  if (Array.isArray(header)) return 'an array holding something else';
  if (header === null) return 'null';
  return typeof header === 'object' ? 'an object' : `a ${typeof header}`;
}

/**
 * A flat copy of `text`. The names compared on every request must not be slices of a longer string
 * (`'header:authorization'.slice(7)` is one): V8 compares a slice in its runtime, flattening it each
 * time, which costs more than the rest of a cached request's header read.
 */
function flat(text: string): string {
  return Array.from(text).join('');
}

/** What a framework adds to a Node request: the parsed query, and the client address under its proxy settings. */
export interface FrameworkRequest {
  /** The query as the framework parsed it (`req.query`, `ctx.query`). */
  readonly query?: CredentialRequest['query'];
  /** The client address as the framework works it out (`req.ip` under `trust proxy`, `ctx.ip` under `app.proxy`). */
  readonly ip?: string | undefined;
}

/** A request of a Node HTTP server: HTTP/1 (`node:http`, `node:https`), or HTTP/2 through its compatibility API. */
export type NodeIncoming = IncomingMessage | Http2ServerRequest;

/**
 * A Node request as the gate reads it, for frameworks that wrap the request
 * (Koa's `ctx`, Fastify's `request`): headers from `req`, the query and
 * the client address from `parsed`, each read only when the gate asks for
 * it (Node builds `headers`, and frameworks parse the query and work out
 * the address, on first access).
 */
export class NodeRequest implements CredentialRequest {
  readonly #req: NodeIncoming;
  readonly #parsed: FrameworkRequest;

  /** `req`, the Node request (HTTP/1 or HTTP/2); `parsed`, what the framework adds to it (read lazily). */
  constructor(req: NodeIncoming, parsed: FrameworkRequest) {
    this.#req = req;
    this.#parsed = parsed;
  }
  /** The Node request's headers. */
  get headers(): IncomingMessage['headers'] {
    return this.#req.headers;
  }
  /** The Node request's raw headers (repeated headers told apart). */
  get rawHeaders(): readonly string[] {
    return this.#req.rawHeaders;
  }
  /** The framework's parsed query. */
  get query(): CredentialRequest['query'] {
    return this.#parsed.query;
  }
  /** The request's socket: the key of its connection's memo. */
  get connection(): object {
    return this.#req.socket;
  }
  /** The framework's client address, else the socket's. */
  get ip(): string | undefined {
    return this.#parsed.ip ?? this.#req.socket.remoteAddress;
  }
}

/**
 * `req` as the providers read it. A framework's wrapper of the Node request (Fastify's `request.raw`, Koa's
 * `ctx.req`) lends it its raw headers, without which a repeated `Authorization` could not be refused, and its socket;
 * a query that is not an object (none, or a framework's odd value) is none.
 */
export function toCredentialRequest(req: GateRequest): CredentialRequest {
  const { query } = req;
  const plainQuery = typeof query === 'object' && query !== null ? (query as CredentialRequest['query']) : undefined;
  const wrapped = (req as { raw?: unknown }).raw ?? (req as { req?: unknown }).req;
  if (req.rawHeaders === undefined && isNodeRequest(wrapped)) {
    return {
      headers: req.headers,
      rawHeaders: wrapped.rawHeaders,
      query: plainQuery,
      connection: wrapped.socket,
      ip: req.ip,
    };
  }
  if (query === undefined || plainQuery !== undefined) return req as CredentialRequest;
  return { headers: req.headers, rawHeaders: req.rawHeaders, connection: req.connection, ip: req.ip };
}

/** Whether `value` is a Node request, as a framework's wrapper holds it. */
function isNodeRequest(value: unknown): value is { rawHeaders: string[]; socket: object } {
  return Array.isArray((value as { rawHeaders?: unknown } | null)?.rawHeaders);
}

/** Whether `req` has `headers` to read: an object, as every request the gate reads has. */
export function hasHeaders(req: unknown): boolean {
  const headers: unknown = (req as { headers?: unknown } | null | undefined)?.headers;
  return typeof req === 'object' && req !== null && typeof headers === 'object' && headers !== null;
}

/**
 * The `TypeError` of a gate method (`authenticate`, `invalidate`, ...) given something that is not a request: what it
 * got, by its kind or class (`a Context without headers`), never its contents (a string may be a token).
 */
export function requestError(method: string, req: unknown): TypeError {
  const got = typeof req === 'object' && req !== null ? `${shown(req)} without headers` : shown(req);
  return new TypeError(`gate.${method}: expected a request ({ headers, query?, ip? }), got ${got}`);
}
