/**
 * Koa middleware (Koa 2 and 3). Translation only: errors are thrown as
 * `AuthError`, whose `status`, `headers` and `expose` Koa's own error
 * handler applies.
 */
import type { IncomingMessage } from 'node:http';
import type {} from 'koa';
import { authenticateNowOf, authorizeRequest } from '../src/gate.js';
import {
  type AuthContext,
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

const GATE = Symbol.for('tokengate.gate');

/** The parts of a Koa context the middleware reads and writes. */
export interface KoaLikeContext {
  readonly req: IncomingMessage;
  readonly query: CredentialRequest['query'];
  state: { auth?: AuthContext | undefined; [GATE]?: Gate };
}

/** A Koa middleware function. */
export type KoaMiddleware = (ctx: KoaLikeContext, next: () => Promise<unknown>) => Promise<void>;

/** Options of {@link authenticate}. */
export interface KoaAuthenticateOptions {
  /** Let requests with no credential through with `ctx.state.auth` undefined; bad credentials are still rejected. */
  readonly optional?: boolean;
}

/** Reads the Koa context lazily: the query is only parsed when a provider asks for it. */
class KoaCredentialRequest implements CredentialRequest {
  constructor(private readonly ctx: KoaLikeContext) {}
  get headers() {
    return this.ctx.req.headers;
  }
  get rawHeaders() {
    return this.ctx.req.rawHeaders;
  }
  get query() {
    return this.ctx.query;
  }
}

/** Middleware that authenticates the request with `gate` and sets `ctx.state.auth`. */
export function authenticate(gate: Gate, options: KoaAuthenticateOptions = {}): KoaMiddleware {
  const authenticateOptions = { optional: options.optional === true };
  const authenticateNow = authenticateNowOf(gate);
  // Not `async`: a cached answer goes straight on to `next()` without an extra promise and await.
  return function tokengateAuthenticate(ctx, next) {
    let auth: ReturnType<typeof authenticateNow>;
    try {
      auth = authenticateNow(new KoaCredentialRequest(ctx), authenticateOptions, ctx.req.socket);
    } catch (error) {
      return Promise.reject(error);
    }
    if (auth === undefined || !('then' in auth)) {
      setAuth(ctx, gate, auth);
      return next() as Promise<void>;
    }
    return auth.then((verified) => {
      setAuth(ctx, gate, verified);
      return next() as Promise<void>;
    });
  };
}

/** Sets `ctx.state.auth`, and for an anonymous request the gate its guards need (for the realm). */
function setAuth(ctx: KoaLikeContext, gate: Gate, auth: AuthContext | undefined): void {
  if (auth === undefined) ctx.state[GATE] = gate;
  ctx.state.auth = auth;
}

/** The gate an anonymous request was let through by (see `setAuth`). */
function anonymousGateOf(ctx: KoaLikeContext): Gate | undefined {
  return ctx.state[GATE];
}

function guardMiddleware(guard: Guard): KoaMiddleware {
  return function tokengateGuard(ctx, next) {
    try {
      authorizeRequest(ctx.state.auth, guard, ctx, anonymousGateOf);
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
