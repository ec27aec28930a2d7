/**
 * Express middleware (Express 4 and 5), on the public adapter seam. Errors
 * go to `next(err)`, so the app's error handler decides the body; Express's
 * default handler already applies an `AuthError`'s `status` and `headers`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type AuthContext,
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

/** The parts of an Express request the middleware reads and writes. */
export interface ExpressLikeRequest extends IncomingMessage {
  query?: unknown;
  auth?: AuthContext | undefined;
}

/** An Express middleware function. */
export type ExpressMiddleware = (req: ExpressLikeRequest, res: ServerResponse, next: (error?: unknown) => void) => void;

/** Options of {@link authenticate}. */
export interface ExpressAuthenticateOptions {
  /** Let requests with no credential through with `req.auth` undefined; bad credentials are still rejected. */
  readonly optional?: boolean;
}

const NOT_EXPRESS = 'tokengate/express middleware called without next(): in a Koa app, use tokengate/koa';

/** Middleware that authenticates the request with `gate` and sets `req.auth`. */
export function authenticate(gate: Gate, options?: ExpressAuthenticateOptions): ExpressMiddleware {
  const check = authenticator(gate, options, 'tokengate/express');
  return function tokengateAuthenticate(req, _res, next) {
    if (typeof next !== 'function') throw new Error(NOT_EXPRESS);
    let auth: ReturnType<typeof check>;
    try {
      // The request is the plain request as it is (its `connection` is the socket): no copy.
      auth = check(req as ExpressLikeRequest & { query?: Record<string, unknown> }, req);
    } catch (error) {
      next(error);
      return;
    }
    // A cached answer comes back as it is: no promise, no extra turn of the event loop.
    if (!(auth instanceof Promise)) {
      req.auth = auth;
      next();
      return;
    }
    auth.then((verified) => {
      req.auth = verified;
      next();
    }, next);
  };
}

function guardMiddleware(guard: Guard): ExpressMiddleware {
  return function tokengateGuard(req, _res, next) {
    if (typeof next !== 'function') throw new Error(NOT_EXPRESS);
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
export function requires(...permissions: string[]): ExpressMiddleware {
  return guardMiddleware(requiresGuard(...permissions));
}

/** Middleware that lets the request through when `req.auth` carries at least one of `permissions`. */
export function requiresAny(...permissions: string[]): ExpressMiddleware {
  return guardMiddleware(requiresAnyGuard(...permissions));
}
