/**
 * Fastify hooks (Fastify 4 and 5) on the public adapter seam, and the `tokengate` plugin that gives
 * `request.auth` its place on every request. An `AuthError` is thrown or passed to `done`, and Fastify's
 * error handling answers it: the default handler applies its `statusCode` and `headers`.
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
  NodeRequest,
  requiresAny as requiresAnyGuard,
  requires as requiresGuard,
} from '../src/index.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
    auth?: AuthContext | undefined;
  }
}

/** The parts of a Fastify request the hooks read and write. */
export interface FastifyLikeRequest {
  /** The Node request: its headers and socket. */
  readonly raw: IncomingMessage;
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

const NOT_FASTIFY = 'tokengate/fastify hook called without a Fastify request: in Express or Koa, use their adapters';
const NO_DONE =
  "tokengate/fastify hook called without Fastify's done callback: add the hook itself (app.addHook('onRequest', authenticate(gate))), not a function that calls it";
/** The hooks a guard or `authenticate` protects a route from: they run before the handler. */
const BEFORE_HANDLER = "an onRequest, preValidation or preHandler hook (app.addHook('onRequest', authenticate(gate)))";
/** The options Fastify's `register` itself reads; any other option given to the plugin is a mistake. */
const REGISTER_OPTIONS = new Set(['prefix', 'logLevel', 'logSerializers']);

/**
 * Reports a hook called without a Fastify request and its `done` (`hook` names it): thrown, or handed
 * to the `done` Fastify passed, wherever it is. A hook registered as a plugin (instance, options,
 * `done`), or added as an application hook (`onClose`: instance, `done`; `onReady`, `preClose`:
 * nothing, on the instance), so fails Fastify's startup or `close()` naming the mistake; as `onListen`, whose
 * error Fastify only logs, it closes the server and prints the mistake as a process warning.
 */
function misused(self: unknown, request: unknown, reply: unknown, done: unknown, fourth: unknown, hook: string): void {
  const applicationHook = `tokengate/fastify: ${hook} was added as an application hook (onReady, onClose, onRoute...), not a request hook: add it as ${BEFORE_HANDLER}`;
  if (request === undefined && isFastifyInstance(self)) {
    // onReady, onListen or preClose without `done`: called on the instance, with nothing. Fastify only logs an
    // onListen hook's error and serves on, every route unprotected: its server is closed, and the mistake printed.
    const error = new Error(applicationHook);
    const server = (self as { server?: ListeningServer }).server;
    if (server?.listening === true) {
      process.emitWarning(error);
      server.close(() => {});
      server.closeAllConnections?.();
    }
    fail(error, undefined);
  } else if (isFastifyInstance(request)) {
    if (typeof done === 'function') {
      fail(new Error(`tokengate/fastify: ${hook} is a hook, not a plugin: app.addHook('onRequest', ${hook})`), done);
    } else fail(new Error(applicationHook), reply);
  } else if (isRouteOptions(request)) {
    fail(new Error(applicationHook), undefined);
  } else if ((request as { raw?: unknown } | null)?.raw === undefined) {
    fail(new Error(NOT_FASTIFY), done);
  } else if (typeof fourth === 'function') {
    // (request, reply, payload or error, done): onSend, preSerialization, preParsing, onError.
    fail(
      new Error(
        `tokengate/fastify: ${hook} was added as a hook that passes a payload or an error: add it as ${BEFORE_HANDLER}`,
      ),
      fourth,
    );
  } else fail(new Error(NO_DONE), done);
}

/** The parts of a Fastify instance's Node server that {@link misused} closes. */
interface ListeningServer {
  readonly listening: boolean;
  close(callback: () => void): unknown;
  closeAllConnections?(): void;
}

/**
 * The error of a hook that runs once the reply is sent (onResponse), or undefined. Such a hook protects
 * nothing: the handler has run. Asked of a hook's first calls only, until one finds it in place.
 */
function afterReply(reply: unknown, hook: string): Error | undefined {
  if ((reply as { sent?: unknown } | null)?.sent !== true) return undefined;
  return new Error(`tokengate/fastify: ${hook} ran after the reply was sent (onResponse): add it as ${BEFORE_HANDLER}`);
}

/**
 * The hook of a factory registered uncalled (`app.register(authenticate)`): Fastify calls it as a plugin,
 * with the instance first and `done` third, and the mistake goes to `done`, so startup fails naming it.
 */
function registeredUncalled(factory: string, use: string, done: unknown): FastifyHook {
  const error = new Error(`tokengate/fastify: ${factory} was registered uncalled, as a plugin: ${use}`);
  fail(error, done);
  return (_request, _reply, next) => next(error);
}

/** Whether `value` is a route's options (what an `onRoute` hook is called with). */
function isRouteOptions(value: unknown): boolean {
  const route = value as { method?: unknown; url?: unknown; handler?: unknown } | null;
  return route?.method !== undefined && typeof route.url === 'string' && typeof route.handler === 'function';
}

/** Whether `value` is a Fastify instance (what a plugin is called with). */
function isFastifyInstance(value: unknown): boolean {
  return typeof (value as { addHook?: unknown } | null)?.addHook === 'function';
}

/** Throws `error`, or hands it to `done` when there is one (Fastify then reports it). */
function fail(error: Error, done: unknown): void {
  if (typeof done !== 'function') throw error;
  done(error);
}

/** The parts of a Fastify instance the plugin uses. */
export interface FastifyLikeInstance {
  /** Declares a request property, as Fastify's own `decorateRequest`. */
  decorateRequest(name: string, value: undefined): unknown;
  /** Whether a request property is declared, as Fastify's own `hasRequestDecorator`. */
  hasRequestDecorator(name: string): boolean;
  /** Adds an application hook, as Fastify's own `addHook` (the plugin adds an `onRoute` check). */
  addHook(name: 'onRoute', hook: (route: object) => void): unknown;
}

/** Every hook this adapter made, so that the plugin can tell them in a route's options. */
const HOOKS = new WeakSet<object>();
/** The hooks of {@link HOOKS} that {@link authenticate} made. */
const AUTHENTICATE_HOOKS = new WeakSet<object>();

/** Route-level hooks that run once the handler has run, or with a payload: a tokengate hook there protects nothing. */
const AFTER_HANDLER = [
  'preParsing',
  'preSerialization',
  'onSend',
  'onResponse',
  'onError',
  'onTimeout',
  'onRequestAbort',
];

/** Route-level hooks that run before the handler, in the order they run. */
const BEFORE_HANDLER_HOOKS = ['onRequest', 'preValidation', 'preHandler'];

/** Every route-level hook a route's options may declare. */
const ROUTE_HOOKS = [...BEFORE_HANDLER_HOOKS, ...AFTER_HANDLER];

/**
 * An `onRoute` check: a route that declares one of this adapter's hooks where it cannot protect it (`onSend`,
 * `onResponse`...), one of its factories uncalled (`preHandler: requires`), or a guard that runs before the route's
 * own `authenticate(gate)`, fails as it is added, naming the route and the hook, rather than answer 500s or stay open.
 */
function checkRoute(options: object): void {
  const route = options as Record<string, unknown>;
  const where = `tokengate/fastify: route ${String(route.method)} ${String(route.url)}`;
  for (const name of ROUTE_HOOKS) {
    const hooks = route[name];
    const list: unknown[] = Array.isArray(hooks) ? hooks : [hooks];
    const factory = FACTORIES.get(list.find((hook) => FACTORIES.has(hook as FastifyFactory)) as FastifyFactory);
    if (factory !== undefined) {
      throw new Error(`${where} has ${factory.name} uncalled in ${name}: add ${factory.call}, the hook it makes`);
    }
    if (!AFTER_HANDLER.includes(name) || !list.some((hook) => typeof hook === 'function' && HOOKS.has(hook))) continue;
    throw new Error(`${where} has a tokengate hook in ${name}, where it protects nothing: add it as ${BEFORE_HANDLER}`);
  }
  const before = BEFORE_HANDLER_HOOKS.flatMap((name) => {
    const hooks = route[name];
    return (Array.isArray(hooks) ? hooks : [hooks]).map((hook: unknown) => ({ name, hook }));
  });
  const first = before.findIndex(({ hook }) => AUTHENTICATE_HOOKS.has(hook as object));
  const guard = before.slice(0, Math.max(first, 0)).find(({ hook }) => HOOKS.has(hook as object));
  if (guard !== undefined) {
    throw new Error(
      `${where} runs a tokengate guard in ${guard.name} before its authenticate(gate) in ${(before[first] as { name: string }).name}: add authenticate(gate) first (onRequest), its guards after it`,
    );
  }
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

/** Why the plugin cannot run as registered, or undefined. */
function pluginMisuse(instance: FastifyLikeInstance, options: unknown): Error | undefined {
  if (typeof instance?.hasRequestDecorator !== 'function') {
    return new Error(
      'tokengate/fastify: tokengate is the plugin (app.register(tokengate)), not a hook: add authenticate(gate) as the hook',
    );
  }
  const unknown = Object.keys(options ?? {}).filter((key) => !REGISTER_OPTIONS.has(key));
  if (unknown.length === 0) return undefined;
  return new TypeError(
    `tokengate/fastify: the tokengate plugin takes no options, got ${unknown.join(', ')}: it only declares request.auth; protect routes with app.addHook('onRequest', authenticate(gate))`,
  );
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
  return made(true, function tokengateAuthenticate(this: unknown, request, reply, done, ...rest: unknown[]) {
    if (typeof done !== 'function' || request?.raw === undefined) {
      misused(this, request, reply, done, rest[0], 'authenticate(gate)');
      return;
    }
    if (!placed) {
      const late = afterReply(reply, 'authenticate(gate)');
      if (late !== undefined) return done(late);
      placed = true;
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

/** `hook`, known as this adapter's (and as an `authenticate` hook when `authenticates`). */
function made(authenticates: boolean, hook: FastifyHook): FastifyHook {
  HOOKS.add(hook);
  if (authenticates) AUTHENTICATE_HOOKS.add(hook);
  return hook;
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
function keptRawHeaders(raw: IncomingMessage, headers: IncomingMessage['headers']): readonly string[] {
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
  return made(false, function tokengateGuard(this: unknown, request, reply, done, ...rest: unknown[]) {
    if (typeof done !== 'function' || request?.raw === undefined) {
      misused(this, request, reply, done, rest[0], `${name}(...)`);
      return;
    }
    if (!placed) {
      const late = afterReply(reply, `${name}(...)`);
      if (late !== undefined) return done(late);
      placed = true;
    }
    authorize(request.auth, guard, request);
    done();
  });
}

/**
 * `factory`'s hook, or the mistake: registered uncalled as a plugin (its first argument the instance), or added
 * uncalled as a hook (a request first), which then answers each request a 500 naming it.
 */
function guardFactory(factory: 'requires' | 'requiresAny', make: (...permissions: string[]) => Guard) {
  const use = `app.addHook('preHandler', ${factory}('permission'))`;
  return (...permissions: string[]): FastifyHook => {
    const first: unknown = permissions[0];
    if (isFastifyInstance(first)) return registeredUncalled(factory, use, permissions[2]);
    if ((first as { raw?: unknown } | null)?.raw !== undefined && typeof permissions[2] === 'function') {
      const error = new Error(`tokengate/fastify: ${factory} was added as a hook uncalled: ${use}`);
      fail(error, permissions[2]);
      return (_request, _reply, next) => next(error);
    }
    return guardHook(make(...permissions), factory);
  };
}

/** Hook that lets the request through only when `request.auth` carries every one of `permissions`. */
export const requires: (...permissions: string[]) => FastifyHook = guardFactory('requires', requiresGuard);

/** Hook that lets the request through when `request.auth` carries at least one of `permissions`. */
export const requiresAny: (...permissions: string[]) => FastifyHook = guardFactory('requiresAny', requiresAnyGuard);

type FastifyFactory = typeof authenticate | typeof requires;
/** This adapter's factories, and how each is called: the plugin's route check tells one given uncalled as a hook. */
const FACTORIES = new Map<FastifyFactory, { readonly name: string; readonly call: string }>([
  [authenticate, { name: 'authenticate', call: 'authenticate(gate)' }],
  [requires, { name: 'requires', call: "requires('permission')" }],
  [requiresAny, { name: 'requiresAny', call: "requiresAny('permission')" }],
]);
