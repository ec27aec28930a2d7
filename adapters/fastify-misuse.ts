/**
 * How a tokengate Fastify hook or plugin was put in the wrong place, told as Fastify starts, as a route is added, or on
 * the first request, naming the mistake: never a route left open or a bare 500. The hooks themselves are in
 * `fastify.ts`; this file knows them only as the functions {@link ownHook} and {@link ownFactory} were given.
 */

/** A hook as Fastify calls it, whatever request type it declares. */
type Hook = (request: never, reply: unknown, done: (error?: Error) => void) => void;
/** A hook that reports a mistake to every request it is given. */
type FailingHook = (request: unknown, reply: unknown, done: (error?: Error) => void) => void;

const NOT_FASTIFY = 'tokengate/fastify hook called without a Fastify request: in Express or Koa, use their adapters';
const NO_DONE =
  "tokengate/fastify hook called without Fastify's done callback: add the hook itself (app.addHook('onRequest', authenticate(gate))), not a function that calls it";
/** The hooks a guard or `authenticate` protects a route from: they run before the handler. */
const BEFORE_HANDLER = "an onRequest, preValidation or preHandler hook (app.addHook('onRequest', authenticate(gate)))";
/** The options Fastify's `register` itself reads; any other option given to the plugin is a mistake. */
const REGISTER_OPTIONS = new Set(['prefix', 'logLevel', 'logSerializers']);

/**
 * Whether a hook's call is one it can serve: with a Fastify request and its `done`, before the reply was sent. Any
 * other call is reported (see {@link misused} and {@link afterReply}) and the hook does nothing more. A hook asks this
 * of every call without a Fastify request or `done`, and of its other calls until one is placed well, and again after
 * a call whose mistake went to a callback rather than thrown: whether the reply was sent is not read on every request.
 */
export function placedWell(
  self: unknown,
  request: unknown,
  reply: unknown,
  done: unknown,
  fourth: unknown,
  hook: string,
): boolean {
  if (typeof done !== 'function' || (request as { raw?: unknown } | null)?.raw === undefined) {
    misused(self, request, reply, done, fourth, hook);
    return false;
  }
  const late = afterReply(reply, hook);
  if (late !== undefined) done(late);
  return late === undefined;
}

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
 * nothing: the handler has run.
 */
function afterReply(reply: unknown, hook: string): Error | undefined {
  if ((reply as { sent?: unknown } | null)?.sent !== true) return undefined;
  return new Error(`tokengate/fastify: ${hook} ran after the reply was sent (onResponse): add it as ${BEFORE_HANDLER}`);
}

/**
 * The hook of a factory registered uncalled (`app.register(authenticate)`): Fastify calls it as a plugin,
 * with the instance first and `done` third, and the mistake goes to `done`, so startup fails naming it.
 */
export function registeredUncalled(factory: string, use: string, done: unknown): FailingHook {
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
export function isFastifyInstance(value: unknown): boolean {
  return typeof (value as { addHook?: unknown } | null)?.addHook === 'function';
}

/** Throws `error`, or hands it to `done` when there is one (Fastify then reports it). */
export function fail(error: Error, done: unknown): void {
  if (typeof done !== 'function') throw error;
  done(error);
}

/** Every hook this adapter made, so that the plugin can tell them in a route's options. */
const HOOKS = new WeakSet<object>();
/** The hooks of {@link HOOKS} that `authenticate(gate)` made. */
const AUTHENTICATE_HOOKS = new WeakSet<object>();
/** This adapter's factories, and how each is called: the plugin's route check tells one given uncalled as a hook. */
const FACTORIES = new Map<object, { readonly name: string; readonly call: string }>();

/** `hook`, known as this adapter's (and as an `authenticate` hook when `authenticates`). */
export function ownHook<H extends Hook>(authenticates: boolean, hook: H): H {
  HOOKS.add(hook);
  if (authenticates) AUTHENTICATE_HOOKS.add(hook);
  return hook;
}

/** `factory`, known as this adapter's `name`, which is called as `call` (`requires('permission')`). */
export function ownFactory<F extends object>(name: string, call: string, factory: F): F {
  FACTORIES.set(factory, { name, call });
  return factory;
}

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
export function checkRoute(options: object): void {
  const route = options as Record<string, unknown>;
  const where = `tokengate/fastify: route ${String(route.method)} ${String(route.url)}`;
  for (const name of ROUTE_HOOKS) {
    const hooks = route[name];
    const list: unknown[] = Array.isArray(hooks) ? hooks : [hooks];
    const factory = FACTORIES.get(list.find((hook) => FACTORIES.has(hook as object)) as object);
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

/** Why the plugin cannot run as registered, or undefined. */
export function pluginMisuse(instance: unknown, options: unknown): Error | undefined {
  if (typeof (instance as { hasRequestDecorator?: unknown } | null)?.hasRequestDecorator !== 'function') {
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

/**
 * The hook that reports a guard factory given uncalled, or undefined when `permissions` are permission names:
 * registered as a plugin (its first argument the instance), or added as a hook (a request first), which then answers
 * each request a 500 naming it.
 */
export function uncalledGuard(factory: string, permissions: readonly unknown[]): FailingHook | undefined {
  const use = `app.addHook('preHandler', ${factory}('permission'))`;
  const [first, , done] = permissions;
  if (isFastifyInstance(first)) return registeredUncalled(factory, use, done);
  if ((first as { raw?: unknown } | null)?.raw === undefined || typeof done !== 'function') return undefined;
  const error = new Error(`tokengate/fastify: ${factory} was added as a hook uncalled: ${use}`);
  fail(error, done);
  return (_request, _reply, next) => next(error);
}
