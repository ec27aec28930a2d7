/**
 * The Koa demo app: routes gated by permission. Built from a gate, so the
 * same app runs against real providers, the demo's mocks, or a stub in tests.
 */
import Koa, { type Middleware } from 'koa';
// In an app: from 'tokengate/koa' and 'tokengate'.
import { authenticate, requires } from '../adapters/koa.js';
import { AuthError, type Gate } from '../src/index.js';
import { READ, WRITE } from './demo.js';

/**
 * A minimal route: runs `middleware` in order for `method path`, else passes
 * on. With @koa/router it reads `router.get('/checks', authenticate(gate), requires(READ), handler)`.
 */
function route(method: string, path: string, ...middleware: Middleware[]): Middleware {
  return async (ctx, next) => {
    if (ctx.method !== method || ctx.path !== path) return next();
    const run = async (i: number): Promise<void> => {
      const current = middleware[i];
      if (current) await current(ctx, () => run(i + 1));
    };
    await run(0);
  };
}

/**
 * Renders tokengate's errors as JSON. Without it Koa's default handling
 * already answers with the error's status, headers and (when exposed) message.
 */
const authErrorsAsJson: Middleware = async (ctx, next) => {
  try {
    await next();
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    ctx.set(err.headers);
    ctx.status = err.status;
    // `expose` is false only for server-side misconfiguration: keep its message in the logs.
    ctx.body = { error: err.code, error_description: err.expose ? err.message : 'Internal Server Error' };
    if (!err.expose) ctx.app.emit('error', err, ctx);
  }
};

export function createExampleApp(gate: Gate): Koa {
  const app = new Koa();
  app.use(authErrorsAsJson);

  // Anyone; a valid token adds a name, a bad one is still refused.
  app.use(
    route('GET', '/public', authenticate(gate, { optional: true }), (ctx) => {
      ctx.body = { hello: ctx.state.auth?.subject ?? 'anonymous' };
    }),
  );

  // Any valid credential, whatever its permissions.
  app.use(
    route('GET', '/me', authenticate(gate), (ctx) => {
      ctx.body = ctx.state.auth;
    }),
  );

  app.use(
    route('GET', '/checks', authenticate(gate), requires(READ), (ctx) => {
      ctx.body = { owner: ctx.state.auth?.subject, checks: [{ id: 1, url: 'https://example.com', status: 'up' }] };
    }),
  );

  app.use(
    route('POST', '/checks', authenticate(gate), requires(WRITE), (ctx) => {
      ctx.status = 201;
      ctx.body = { created: { id: 2, owner: ctx.state.auth?.subject } };
    }),
  );

  return app;
}
