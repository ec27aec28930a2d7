/**
 * Express middleware (Express 4 and 5) on the public adapter seam. An `AuthError` goes to `next(err)`
 * (Express passes a synchronous throw there too): the app's error handler applies `status` and `headers`.
 */
import { IncomingMessage, type ServerResponse } from 'node:http';
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

/** The parts of an Express request the middleware reads and writes. */
export interface ExpressLikeRequest extends IncomingMessage {
  query?: Readonly<Record<string, unknown>> | undefined;
  auth?: AuthContext | undefined;
}

/** An Express middleware function. */
export type ExpressMiddleware = (req: ExpressLikeRequest, res: ServerResponse, next: (error?: unknown) => void) => void;

/** Options of {@link authenticate}: `optional` lets requests without a credential through, `req.auth` undefined. */
export type ExpressAuthenticateOptions = AuthenticateOptions;

/*
 * Where `req.auth` lives. An Express request never shares its hidden class (Express changed its
 * prototype), so every property added to one, and every read of one, is a trip through V8's runtime.
 * So Express's own request object (the end of every `app.request` chain, shared by mounted sub-apps)
 * gets an `auth` accessor, once per copy of Express, that keeps each request's value in a WeakMap; the
 * middleware reads and writes that WeakMap directly. Invariant: for a request whose prototype has the
 * accessor, `req.auth` and `contexts.get(req)` are the same value. A chain that already has an `auth`
 * of its own, and any request outside Express, keep `req.auth` as a plain property.
 */

/** `req.auth` of the requests whose prototype chain ends in this module's accessor. */
const contexts = new WeakMap<object, AuthContext | undefined>();
/** Express request objects that carry this module's accessor. */
const accessorRoots = new WeakSet<object>();
/** Request prototypes seen, and whether `req.auth` on their requests is this module's accessor. */
const accessorOn = new WeakMap<object, boolean>();
let lastPrototype: object | null = null;
let lastHasAccessor = false;

function hasAccessor(req: object): boolean {
  const prototype = Object.getPrototypeOf(req) as object | null;
  if (prototype === lastPrototype) return lastHasAccessor;
  let has = prototype === null ? false : accessorOn.get(prototype);
  if (has === undefined && prototype !== null) {
    has = installAccessor(prototype);
    accessorOn.set(prototype, has);
  }
  lastPrototype = prototype;
  lastHasAccessor = has ?? false;
  return lastHasAccessor;
}

/** Gives the end of `prototype`'s chain the accessor when it is Express's and has no `auth` yet. */
function installAccessor(prototype: object): boolean {
  if (!Object.hasOwn(prototype, 'app')) return false; // not an Express `app.request`
  let root = prototype;
  let holder: object | undefined; // the nearest object of the chain with an `auth` of its own
  for (let at: object | null = prototype; at !== IncomingMessage.prototype; at = Object.getPrototypeOf(at)) {
    if (at === null) return false;
    if (holder === undefined && Object.hasOwn(at, 'auth')) holder = at;
    root = at;
  }
  if (holder !== undefined) return holder === root && accessorRoots.has(root);
  Object.defineProperty(root, 'auth', {
    configurable: true,
    get(this: object) {
      return contexts.get(this);
    },
    set(this: object, value: AuthContext | undefined) {
      contexts.set(this, value);
    },
  });
  accessorRoots.add(root);
  return true;
}

function setAuth(req: ExpressLikeRequest, auth: AuthContext | undefined): void {
  if (!hasAccessor(req)) {
    req.auth = auth;
    return;
  }
  // An `auth` of the request's own (defined before the accessor was) would hide the accessor.
  if (Object.hasOwn(req, 'auth')) delete req.auth;
  contexts.set(req, auth);
}

function getAuth(req: ExpressLikeRequest): AuthContext | undefined {
  return hasAccessor(req) ? contexts.get(req) : req.auth;
}

const NOT_EXPRESS = 'tokengate/express middleware called without next(): in a Koa app, use tokengate/koa';

/** Middleware that authenticates the request with `gate` and sets `req.auth`. */
export function authenticate(gate: Gate, options?: ExpressAuthenticateOptions): ExpressMiddleware {
  const check = authenticator(gate, options, 'tokengate/express');
  return function tokengateAuthenticate(req, _res, next) {
    if (typeof next !== 'function') throw new Error(NOT_EXPRESS);
    const auth = check(req, req); // `req` is a plain request as it is; its `connection` is the socket
    // A cached answer comes back as it is: no promise, no extra turn of the event loop.
    if (!(auth instanceof Promise)) {
      setAuth(req, auth);
      return next();
    }
    auth.then((verified) => {
      setAuth(req, verified);
      next();
    }, next);
  };
}

function guardMiddleware(guard: Guard): ExpressMiddleware {
  return function tokengateGuard(req, _res, next) {
    if (typeof next !== 'function') throw new Error(NOT_EXPRESS);
    authorize(getAuth(req), guard, req);
    next();
  };
}

/** Middleware that lets the request through only when `req.auth` carries every one of `permissions`. */
export const requires = (...permissions: string[]): ExpressMiddleware => guardMiddleware(requiresGuard(...permissions));

/** Middleware that lets the request through when `req.auth` carries at least one of `permissions`. */
export const requiresAny = (...permissions: string[]): ExpressMiddleware =>
  guardMiddleware(requiresAnyGuard(...permissions));
