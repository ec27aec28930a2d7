/**
 * Koa middleware (Koa 2 and 3), on the public adapter seam. Errors are
 * thrown as `AuthError`, whose `status`, `headers` and `expose` Koa's own
 * error handler applies.
 */
import type { IncomingMessage } from 'node:http';
import type {} from 'koa';
import {
  type AuthContext,
  authenticator,
  authorize,
  type CredentialRequest,
  type Gate,
  type Guard,
  requiresAny as requiresAnyGuard,
  requires as requiresGuard,
} from '../src/index.js';

declare module 'koa' {
  interface DefaultState {
    /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
    auth?: AuthContext | undefined;
  }
}

/** The parts of a Koa context the middleware reads and writes. */
export interface KoaLikeContext {
  readonly req: IncomingMessage;
  readonly query: CredentialRequest['query'];
  state: { auth?: AuthContext | undefined };
}

/** A Koa middleware function. */
export type KoaMiddleware = (ctx: KoaLikeContext, next: () => Promise<unknown>) => Promise<void>;

/** Options of {@link authenticate}. */
export interface KoaAuthenticateOptions {
  /** Let requests with no credential through with `ctx.state.auth` undefined; bad credentials are still rejected. */
  readonly optional?: boolean;
}

const NOT_KOA = 'tokengate/koa middleware called without a Koa context: in an Express app, use tokengate/express';

/** Reads the Koa context lazily: the query is only parsed when a provider asks for it. */
class KoaCredentialRequest implements CredentialRequest {
  readonly #ctx: KoaLikeContext;
  constructor(ctx: KoaLikeContext) {
    this.#ctx = ctx;
  }
  get headers() {
    return this.#ctx.req.headers;
  }
  get rawHeaders() {
    return this.#ctx.req.rawHeaders;
  }
  get query() {
    return this.#ctx.query;
  }
  get connection() {
    return this.#ctx.req.socket;
  }
}

/** Middleware that authenticates the request with `gate` and sets `ctx.state.auth`. */
export function authenticate(gate: Gate, options?: KoaAuthenticateOptions): KoaMiddleware {
  const check = authenticator(gate, options, 'tokengate/koa');
  // Not `async`: a cached answer goes straight on to `next()` without an extra promise and await.
  return function tokengateAuthenticate(ctx, next) {
    if (typeof next !== 'function' || ctx?.req === undefined) throw new Error(NOT_KOA);
    let auth: ReturnType<typeof check>;
    try {
      auth = check(new KoaCredentialRequest(ctx), ctx);
    } catch (error) {
      return Promise.reject(error);
    }
    if (!(auth instanceof Promise)) {
      ctx.state.auth = auth;
      return next() as Promise<void>;
    }
    return auth.then((verified) => {
      ctx.state.auth = verified;
      return next() as Promise<void>;
    });
  };
}

function guardMiddleware(guard: Guard): KoaMiddleware {
  return function tokengateGuard(ctx, next) {
    if (typeof next !== 'function' || ctx?.state === undefined) throw new Error(NOT_KOA);
    try {
      authorize(ctx.state.auth, guard, ctx);
    } catch (error) {
      return Promise.reject(error);
    }
    return next() as Promise<void>;
  };
}

/** Middleware that lets the request through only when `ctx.state.auth` carries every one of `permissions`. */
export function requires(...permissions: string[]): KoaMiddleware {
  return guardMiddleware(requiresGuard(...permissions));
}

/** Middleware that lets the request through when `ctx.state.auth` carries at least one of `permissions`. */
export function requiresAny(...permissions: string[]): KoaMiddleware {
  return guardMiddleware(requiresAnyGuard(...permissions));
}
