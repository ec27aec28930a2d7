/**
 * Fastify hooks (Fastify 4 and 5) on the public adapter seam, and the `tokengate` plugin that gives
 * `request.auth` its place on every request. An `AuthError` is thrown or passed to `done`, and Fastify's
 * error handling answers it: the default handler applies its `statusCode` and `headers`. A hook or the plugin put
 * where it protects nothing is told by `fastify-misuse.ts`.
 */
import type { IncomingMessage } from 'node:http';
import type {} from 'fastify';
import {
  type AuthContext,
  type AuthenticateOptions,
  authenticator,
  authorize,
  type FrameworkRequest,
  type Gate,
  type Guard,
  type NodeIncoming,
  NodeRequest,
  requiresAny as requiresAnyGuard,
  requires as requiresGuard,
} from '../src/index.js';
import {
  checkRoute,
  fail,
  isFastifyInstance,
  ownFactory,
  ownHook,
  placedWell,
  pluginMisuse,
  registeredUncalled,
  uncalledGuard,
} from './fastify-misuse.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
    auth?: AuthContext | undefined;
  }
}

/** The parts of a Fastify request the hooks read and write. */
export interface FastifyLikeRequest {
  /** The Node request: its headers and socket (an `Http2ServerRequest` in an app made with `http2: true`). */
  readonly raw: NodeIncoming;
  /** The request's headers as Fastify gives them: the Node request's, or those a hook set through `request.headers`. */
  readonly headers: IncomingMessage['headers'];
  /** Fastify's parsed query. */
  readonly query: unknown;
  /** The client address under Fastify's `trustProxy`. */
  readonly ip: string;
  /** Set by `authenticate()`; undefined for anonymous requests under `optional: true`. */
  auth?: AuthContext | undefined;
}

/**
 * An `onRequest`, `preValidation` or `preHandler` hook. Callback style, not `async`: Fastify 4 and 5 go on to the next
 * hook as soon as `done()` is called, so a cached answer passes in the same turn with no promise, and
 * both catch a synchronous throw and hand it to the error handler.
 */
export type FastifyHook = (request: FastifyLikeRequest, reply: unknown, done: (error?: Error) => void) => void;

/** Options of {@link authenticate}: `optional` lets requests without a credential through, `request.auth` undefined. */
export type FastifyAuthenticateOptions = AuthenticateOptions;

/** The parts of a Fastify instance the plugin uses. */
export interface FastifyLikeInstance {
  /** Declares a request property, as Fastify's own `decorateRequest`. */
  decorateRequest(name: string, value: undefined): unknown;
  /** Whether a request property is declared, as Fastify's own `hasRequestDecorator`. */
  hasRequestDecorator(name: string): boolean;
  /** Adds an application hook, as Fastify's own `addHook` (the plugin adds an `onRoute` check). */
  addHook(name: 'onRoute', hook: (route: object) => void): unknown;
}

/**
 * Fastify plugin that declares `request.auth` (`app.register(tokengate)`, before the routes). Fastify
 * then builds every request with the property in place, and setting it does not change the request's
 * shape. Optional: the hooks work without it, at a small cost per request. Not encapsulated: it
 * applies to the instance it is registered on and every child, and registering it twice is harmless.
 * It takes no options and authenticates nothing: routes are protected by {@link authenticate}'s hook,
 * and an option (`{ gate }`) fails Fastify's startup rather than leave them open.
 */
export function tokengate(instance: FastifyLikeInstance, options: unknown, done: (error?: Error) => void): void {
  const mistake = pluginMisuse(instance, options);
  if (mistake !== undefined) {
    fail(mistake, done);
    return;
  }
  if (!instance.hasRequestDecorator('auth')) {
    instance.decorateRequest('auth', undefined);
    instance.addHook('onRoute', checkRoute);
  }
  done();
}

Object.defineProperties(tokengate, {
  [Symbol.for('skip-override')]: { value: true },
  [Symbol.for('fastify.display-name')]: { value: 'tokengate' },
});

/** Hook that authenticates the request with `gate` and sets `request.auth`. */
export function authenticate(gate: Gate, options?: FastifyAuthenticateOptions): FastifyHook {
  if (isFastifyInstance(gate)) {
    // biome-ignore lint/complexity/noArguments: registered as a plugin, it is called with Fastify's `done` third
    return registeredUncalled('authenticate', "app.addHook('onRequest', authenticate(gate))", arguments[2]);
  }
  const check = authenticator(gate, options, 'tokengate/fastify');
  let placed = false;
  return ownHook(true, function tokengateAuthenticate(this: unknown, request, reply, done, ...rest: unknown[]) {
    if (!placed || typeof done !== 'function' || request?.raw === undefined) {
      placed = placedWell(this, request, reply, done, rest[0], 'authenticate(gate)');
      if (!placed) return;
    }
    // Fastify's request supplies the parsed query and `ip` (under its `trustProxy` setting); its headers are the Node
    // request's unless a hook set some through `request.headers = ...`.
    const headers = request.headers;
    const view =
      headers === request.raw.headers
        ? new NodeRequest(request.raw, request as FrameworkRequest)
        : new FastifyRequestView(request, headers);
    const auth = check(view, request);
    if (auth instanceof Promise) auth.then((verified) => settle(request, verified, done), done);
    else settle(request, auth, done);
  });
}

/**
 * Sets `request.auth` and goes on; a throw doing so (a read-only `auth` declared by another plugin) goes to
 * `done`, as an `Error`: a value Fastify would take for no error would let the request on unauthenticated.
 */
function settle(request: FastifyLikeRequest, auth: AuthContext | undefined, done: (error?: Error) => void): void {
  try {
    request.auth = auth;
  } catch (error) {
    done(error instanceof Error ? error : new TypeError('tokengate/fastify: setting request.auth threw a non-Error'));
    return;
  }
  done();
}

/**
 * A Fastify request whose headers a hook set through `request.headers = ...`, as the gate reads it: those
 * headers (Fastify merges them with the Node request's on each read of `request.headers`; this read them
 * once), and repeats of a header told by the raw headers only for the headers no such hook replaced.
 */
class FastifyRequestView extends NodeRequest {
  readonly #request: FastifyLikeRequest;
  readonly #headers: IncomingMessage['headers'];
  #rawHeaders: readonly string[] | undefined;

  constructor(request: FastifyLikeRequest, headers: IncomingMessage['headers']) {
    super(request.raw, request as FrameworkRequest);
    this.#request = request;
    this.#headers = headers;
  }

  override get headers(): IncomingMessage['headers'] {
    return this.#headers;
  }

  override get rawHeaders(): readonly string[] {
    this.#rawHeaders ??= keptRawHeaders(this.#request.raw, this.#headers);
    return this.#rawHeaders;
  }
}

/** `raw`'s raw headers, less those whose value `headers` (Fastify's, a hook's setter applied) replaced. */
function keptRawHeaders(raw: NodeIncoming, headers: IncomingMessage['headers']): readonly string[] {
  const kept: string[] = [];
  const rawHeaders = raw.rawHeaders;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const lower = name.toLowerCase();
    if (headers[lower] === raw.headers[lower]) kept.push(name, rawHeaders[i + 1] as string);
  }
  return kept;
}

function guardHook(guard: Guard, name: string): FastifyHook {
  let placed = false;
  return ownHook(false, function tokengateGuard(this: unknown, request, reply, done, ...rest: unknown[]) {
    if (!placed || typeof done !== 'function' || request?.raw === undefined) {
      placed = placedWell(this, request, reply, done, rest[0], `${name}(...)`);
      if (!placed) return;
    }
    authorize(request.auth, guard, request);
    done();
  });
}

/** `factory`'s hook maker, which reports a maker given uncalled where a hook belongs. */
function guardFactory(factory: 'requires' | 'requiresAny', make: (...permissions: string[]) => Guard) {
  return ownFactory(factory, `${factory}('permission')`, (...permissions: string[]): FastifyHook => {
    return uncalledGuard(factory, permissions) ?? guardHook(make(...permissions), factory);
  });
}

/** Hook that lets the request through only when `request.auth` carries every one of `permissions`. */
export const requires: (...permissions: string[]) => FastifyHook = guardFactory('requires', requiresGuard);

/** Hook that lets the request through when `request.auth` carries at least one of `permissions`. */
export const requiresAny: (...permissions: string[]) => FastifyHook = guardFactory('requiresAny', requiresAnyGuard);

ownFactory('authenticate', 'authenticate(gate)', authenticate);
