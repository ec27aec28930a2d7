/**
 * Express middleware (Express 4 and 5). Translation only: the request goes
 * to the gate as it is, errors go to `next(err)` so the app's error handler
 * decides the body; Express's default handler already applies the
 * `AuthError`'s `status` and `headers`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authenticateNowOf, authorizeRequest } from '../src/gate.js';
import {
  type AuthContext,
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
  const authenticateNow = authenticateNowOf(gate);
  return function tokengateAuthenticate(req, _res, next) {
    let auth: ReturnType<typeof authenticateNow>;
    try {
      auth = authenticateNow(req as Parameters<Gate['authenticate']>[0], authenticateOptions, req.socket);
    } catch (error) {
      next(error);
      return;
    }
    // A cached answer comes back as it is: no promise, no closure, no extra turn of the event loop.
    if (auth === undefined || !('then' in auth)) {
      setAuth(req, gate, auth);
      next();
      return;
    }
    auth.then((verified) => {
      setAuth(req, gate, verified);
      next();
    }, next);
  };
}

/**
 * Sets `req.auth`, and for an anonymous request the gate its guards need. Only then: Express moves
 * every `req` onto its own prototype, after which V8 gives each property added to `req` a new
 * hidden class of its own (several µs per store in profiles; `bench/hidden-classes.ts` shows it).
 */
function setAuth(req: ExpressLikeRequest, gate: Gate, auth: AuthContext | undefined): void {
  if (auth === undefined) req[GATE] = gate;
  req.auth = auth;
}

/** The gate an anonymous request was let through by (see `setAuth`). */
function anonymousGateOf(req: ExpressLikeRequest): Gate | undefined {
  return req[GATE];
}

function guardMiddleware(guard: Guard): ExpressMiddleware {
  return function tokengateGuard(req, _res, next) {
    try {
      authorizeRequest(req.auth, guard, req, anonymousGateOf);
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
