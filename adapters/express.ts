/**
 * Express middleware (Express 4 and 5) on the public adapter seam. Every failure goes to `next(err)`, those known at
 * once too (Express would pass a synchronous throw there, but a host that calls the middleware with a `next` of its
 * own may not): the app's error handler applies an `AuthError`'s `status` and `headers`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type AuthContext,
  type AuthenticateOptions,
  authenticator,
  authorize,
  type Gate,
  type Guard,
  requiresAny as requiresAnyGuard,
  requires as requiresGuard,
} from '../src/index.js';

declare global {
  namespace Express {
    interface Request {
      /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
      auth?: AuthContext | undefined;
    }
  }
}

/**
 * The parts of an Express request the middleware reads and writes. Express's `req.query` and `req.ip` are read as the
 * gate's request reads them, and are not declared here: a route's handlers keep Express's own types for them.
 */
export interface ExpressLikeRequest extends IncomingMessage {
  /** Set by `authenticate()`; undefined for anonymous requests under `optional: true`. */
  auth?: AuthContext | undefined;
}

/** An Express middleware function. */
export type ExpressMiddleware = (req: ExpressLikeRequest, res: ServerResponse, next: (error?: unknown) => void) => void;

/** Options of {@link authenticate}: `optional` lets requests without a credential through, `req.auth` undefined. */
export type ExpressAuthenticateOptions = AuthenticateOptions;

/** The mistake of a call without `next`: Koa passes its own `next` second, a plain `node:http` server a response. */
const notExpress = (second: unknown): Error =>
  new Error(
    typeof second === 'function'
      ? 'tokengate/express middleware called without next(): in a Koa app, use tokengate/koa'
      : 'tokengate/express middleware called without next(): mount it in an Express app (app.use(authenticate(gate))); on a plain node:http server, await gate.authenticate(req) and answer its AuthError yourself',
  );
const FASTIFY_REQUEST =
  'tokengate/express middleware called with a Fastify request: in a Fastify app, use tokengate/fastify';

/** Whether `req` is Fastify's request (its Node request is `req.raw`), not a Node request or a test's plain object. */
const isFastifyRequest = (req: ExpressLikeRequest): boolean =>
  req.rawHeaders === undefined && (req as { raw?: unknown }).raw !== undefined;

/** Middleware that authenticates the request with `gate` and sets `req.auth`. */
export function authenticate(gate: Gate, options?: ExpressAuthenticateOptions): ExpressMiddleware {
  const check = authenticator(gate, options, 'tokengate/express');
  return function tokengateAuthenticate(req, res, next) {
    if (typeof next !== 'function') throw notExpress(res);
    // Fastify's request has headers but no raw ones, without which a repeated Authorization could not be refused.
    if (isFastifyRequest(req)) return next(new Error(FASTIFY_REQUEST));
    let auth: ReturnType<typeof check>;
    try {
      auth = check(req, req); // `req` is a plain request as it is; its `connection` is the socket
    } catch (error) {
      next(error); // always an Error: the gate makes anything else one
      return;
    }
    // A cached answer comes back as it is: no promise, no extra turn of the event loop.
    if (!(auth instanceof Promise)) return settle(req, auth, next);
    auth.then((verified) => settle(req, verified, next), next);
  };
}

/** Sets `req.auth` and goes on; a throw doing so (an app that made it read-only) goes to `next` as an Error. */
function settle(req: ExpressLikeRequest, auth: AuthContext | undefined, next: (error?: unknown) => void): void {
  try {
    req.auth = auth;
  } catch (error) {
    // `next(undefined)` would let the request through unauthenticated.
    next(error instanceof Error ? error : new TypeError('tokengate/express: setting req.auth threw a non-Error'));
    return;
  }
  next();
}

function guardMiddleware(guard: Guard): ExpressMiddleware {
  return function tokengateGuard(req, res, next) {
    if (typeof next !== 'function') throw notExpress(res);
    if (isFastifyRequest(req)) return next(new Error(FASTIFY_REQUEST));
    try {
      authorize(req.auth, guard, req);
    } catch (error) {
      next(error);
      return;
    }
    next();
  };
}

/** Middleware that lets the request through only when `req.auth` carries every one of `permissions`. */
export const requires = (...permissions: string[]): ExpressMiddleware => guardMiddleware(requiresGuard(...permissions));

/** Middleware that lets the request through when `req.auth` carries at least one of `permissions`. */
export const requiresAny = (...permissions: string[]): ExpressMiddleware =>
  guardMiddleware(requiresAnyGuard(...permissions));
