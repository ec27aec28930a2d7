/**
 * Koa middleware (Koa 2 and 3) on the public adapter seam. A failure rejects the middleware's promise with an
 * `AuthError` (those known at once too), and Koa's error handler applies its `status`, `headers`, `expose`.
 */
import type { IncomingMessage } from 'node:http';
import type {} from 'koa';
import {
  type AuthContext,
  type AuthenticateOptions,
  authenticator,
  authorize,
  type CredentialRequest,
  type Gate,
  type Guard,
  NodeRequest,
  requiresAny as requiresAnyGuard,
  requires as requiresGuard,
} from '../src/index.js';

/** What `authenticate()` adds to `ctx.state`; an app with its own state type adds it: `new Koa<MyState & AuthState>()`. */
export interface AuthState {
  /** Set by tokengate's `authenticate()`; undefined for anonymous requests under `optional: true`. */
  auth?: AuthContext | undefined;
}

declare module 'koa' {
  interface DefaultState extends AuthState {}
}

/** The parts of a Koa context the middleware reads and writes. */
export interface KoaLikeContext {
  /** The Node request: its headers and socket. */
  readonly req: IncomingMessage;
  /** Koa's parsed query. */
  readonly query: CredentialRequest['query'];
  /** Where `authenticate()` puts `auth`. */
  state: AuthState;
}

/** A Koa middleware function. */
export type KoaMiddleware = (ctx: KoaLikeContext, next: () => Promise<unknown>) => Promise<unknown>;

/** Options of {@link authenticate}: `optional` lets requests without a credential through, `ctx.state.auth` undefined. */
export type KoaAuthenticateOptions = AuthenticateOptions;

const NOT_KOA = 'tokengate/koa middleware called without a Koa context: in an Express app, use tokengate/express';

/** Middleware that authenticates the request with `gate` and sets `ctx.state.auth`. */
export function authenticate(gate: Gate, options?: KoaAuthenticateOptions): KoaMiddleware {
  const check = authenticator(gate, options, 'tokengate/koa');
  // Not `async`: a cached answer goes straight on to `next()` without an extra promise and await. Every failure is
  // a rejection all the same, as the type says (koa-compose catches a throw too; a caller's own `.catch` would not),
  // but for a call from another framework, which may not read a returned promise (Express 4): that one throws.
  return function tokengateAuthenticate(ctx, next) {
    if (typeof next !== 'function' || ctx?.req === undefined) throw new Error(NOT_KOA);
    try {
      const auth = check(new NodeRequest(ctx.req, ctx), ctx);
      if (!(auth instanceof Promise)) {
        setAuth(ctx, auth);
        return next();
      }
      return auth.then((verified) => {
        setAuth(ctx, verified);
        return next();
      });
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Sets `ctx.state.auth`; a throw doing so (an app that made it read-only) is rethrown as an Error. */
function setAuth(ctx: KoaLikeContext, auth: AuthContext | undefined): void {
  try {
    ctx.state.auth = auth;
  } catch (error) {
    // Koa's error handler ignores a rejection with `undefined` or `null`: the request would never be answered.
    throw error instanceof Error ? error : new TypeError('tokengate/koa: setting ctx.state.auth threw a non-Error');
  }
}

function guardMiddleware(guard: Guard): KoaMiddleware {
  return function tokengateGuard(ctx, next) {
    if (typeof next !== 'function' || ctx?.state === undefined) throw new Error(NOT_KOA);
    try {
      authorize(ctx.state.auth, guard, ctx);
      return next();
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Middleware that lets the request through only when `ctx.state.auth` carries every one of `permissions`. */
export const requires = (...permissions: string[]): KoaMiddleware => guardMiddleware(requiresGuard(...permissions));

/** Middleware that lets the request through when `ctx.state.auth` carries at least one of `permissions`. */
export const requiresAny = (...permissions: string[]): KoaMiddleware =>
  guardMiddleware(requiresAnyGuard(...permissions));
