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
  readonly raw: IncomingMessage;
  readonly query: unknown;
  readonly ip: string;
  auth?: AuthContext | undefined;
}

/**
 * An `onRequest` or `preHandler` hook. Callback style, not `async`: Fastify 4 and 5 go on to the next
 * hook as soon as `done()` is called, so a cached answer passes in the same turn with no promise, and
 * both catch a synchronous throw and hand it to the error handler.
 */
export type FastifyHook = (request: FastifyLikeRequest, reply: unknown, done: (error?: Error) => void) => void;

/** Options of {@link authenticate}: `optional` lets requests without a credential through, `request.auth` undefined. */
export type FastifyAuthenticateOptions = AuthenticateOptions;

const NOT_FASTIFY = 'tokengate/fastify hook called without a Fastify request: in Express or Koa, use their adapters';

/** The parts of a Fastify instance the plugin uses. */
export interface FastifyLikeInstance {
  decorateRequest(name: string, value: undefined): unknown;
  hasRequestDecorator(name: string): boolean;
}

/**
 * Fastify plugin that declares `request.auth` (`app.register(tokengate)`, before the routes). Fastify
 * then builds every request with the property in place, and setting it does not change the request's
 * shape. Optional: the hooks work without it, at a small cost per request. Not encapsulated: it
 * applies to the instance it is registered on and every child, and registering it twice is harmless.
 */
export function tokengate(instance: FastifyLikeInstance, _options: unknown, done: (error?: Error) => void): void {
  if (!instance.hasRequestDecorator('auth')) instance.decorateRequest('auth', undefined);
  done();
}
Object.defineProperties(tokengate, {
  [Symbol.for('skip-override')]: { value: true },
  [Symbol.for('fastify.display-name')]: { value: 'tokengate' },
});

/** Hook that authenticates the request with `gate` and sets `request.auth`. */
export function authenticate(gate: Gate, options?: FastifyAuthenticateOptions): FastifyHook {
  const check = authenticator(gate, options, 'tokengate/fastify');
  return function tokengateAuthenticate(request, _reply, done) {
    if (typeof done !== 'function' || request?.raw === undefined) throw new Error(NOT_FASTIFY);
    // Fastify's request supplies the parsed query and `ip` (under its `trustProxy` setting).
    const auth = check(new NodeRequest(request.raw, request as FrameworkRequest), request);
    if (!(auth instanceof Promise)) {
      request.auth = auth;
      done();
      return;
    }
    auth.then((verified) => {
      request.auth = verified;
      done();
    }, done);
  };
}

function guardHook(guard: Guard): FastifyHook {
  return function tokengateGuard(request, _reply, done) {
    if (typeof done !== 'function' || request?.raw === undefined) throw new Error(NOT_FASTIFY);
    authorize(request.auth, guard, request);
    done();
  };
}

/** Hook that lets the request through only when `request.auth` carries every one of `permissions`. */
export const requires = (...permissions: string[]): FastifyHook => guardHook(requiresGuard(...permissions));

/** Hook that lets the request through when `request.auth` carries at least one of `permissions`. */
export const requiresAny = (...permissions: string[]): FastifyHook => guardHook(requiresAnyGuard(...permissions));
