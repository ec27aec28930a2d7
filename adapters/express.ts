/**
 * Express middleware (Express 4 and 5). Translation only: the request goes
 * to the gate as it is, errors go to `next(err)` so the app's error handler
 * decides the body; Express's default handler already applies the
 * `AuthError`'s `status` and `headers`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type AuthContext,
  type Gate,
  type Guard,
  requires as requiresGuard,
  requiresAny as requiresAnyGuard,
} from '../src/index.js';

declare global {
  namespace Express {
    interface Request {
      /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
      auth?: AuthContext | undefined;
    }
  }
}

const GATE = Symbol.for('tokengate.gate');

/** The parts of an Express request the middleware reads and writes. */
export interface ExpressLikeRequest extends IncomingMessage {
  query?: unknown;
  auth?: AuthContext | undefined;
  [GATE]?: Gate;
}

/** An Express middleware function. */
export type ExpressMiddleware = (req: ExpressLikeRequest, res: ServerResponse, next: (error?: unknown) => void) => void;

/** Options of {@link authenticate}. */
export interface ExpressAuthenticateOptions {
  /** Let requests with no credential through with `req.auth` undefined; bad credentials are still rejected. */
  readonly optional?: boolean;
}

/** Middleware that authenticates the request with `gate` and sets `req.auth`. */
export function authenticate(gate: Gate, options: ExpressAuthenticateOptions = {}): ExpressMiddleware {
  const authenticateOptions = { optional: options.optional === true };
  return function tokengateAuthenticate(req, _res, next) {
    req[GATE] = gate;
    gate.authenticate(req as Parameters<Gate['authenticate']>[0], authenticateOptions).then((auth) => {
      req.auth = auth;
      next();
    }, next);
  };
}

function guardMiddleware(guard: Guard): ExpressMiddleware {
  return function tokengateGuard(req, _res, next) {
    const gate = req[GATE];
    if (gate === undefined) return next(new Error('tokengate: mount authenticate(gate) before requires()'));
    try {
      gate.authorize(req.auth, guard);
    } catch (error) {
      return next(error);
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
