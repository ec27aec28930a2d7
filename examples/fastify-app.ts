/**
 * The Fastify demo app: routes gated by permission. Built from a gate, so the
 * same app runs against real providers, the demo's mocks, or a stub in tests.
 * The demo serves it from its own `node:http` server, so it is handed over as
 * a request listener (Fastify's own, from `serverFactory`); an app of yours
 * calls `app.listen()` instead.
 */
import { createServer, type RequestListener } from 'node:http';
import Fastify, { type FastifyInstance } from 'fastify';
// In an app: from 'tokengate/fastify' and 'tokengate'.
import { authenticate, requires, tokengate } from '../adapters/fastify.js';
import { AuthError, type Gate } from '../src/index.js';
import { READ, WRITE } from './demo.js';

/** The app, and the request listener that serves it once its plugins have loaded. */
export interface FastifyExample {
  readonly app: FastifyInstance;
  readonly listener: RequestListener;
}

export function createExampleApp(gate: Gate): FastifyExample {
  let handler: RequestListener | undefined;
  const app = Fastify({
    serverFactory: (fastifyHandler) => {
      handler = fastifyHandler;
      return createServer(fastifyHandler);
    },
  });
  // Declares request.auth; loaded before the routes below, it also refuses a tokengate hook put where it protects nothing.
  void app.register(tokengate);
  void app.register(async (routes) => {
    // Anyone; a valid token adds a name, a bad one is still refused.
    routes.get('/public', { onRequest: authenticate(gate, { optional: true }) }, async (request) => ({
      hello: request.auth?.subject ?? 'anonymous',
    }));
    // Any valid credential, whatever its permissions.
    routes.get('/me', { onRequest: authenticate(gate) }, async (request) => request.auth);
    routes.get('/checks', { onRequest: authenticate(gate), preHandler: requires(READ) }, async (request) => ({
      owner: request.auth?.subject,
      checks: [{ id: 1, url: 'https://example.com', status: 'up' }],
    }));
    routes.post('/checks', { onRequest: authenticate(gate), preHandler: requires(WRITE) }, async (request, reply) =>
      reply.code(201).send({ created: { id: 2, owner: request.auth?.subject } }),
    );
  });
  // Renders tokengate's errors as JSON with their status and headers; anything else goes on to Fastify's own handler.
  app.setErrorHandler((error, _request, reply) => {
    if (!(error instanceof AuthError)) throw error;
    // `expose` is false only for server-side misconfiguration: keep its message in the logs.
    if (!error.expose) console.error(error);
    const description = error.expose ? error.message : 'Internal Server Error';
    return reply.code(error.status).headers(error.headers).send({ error: error.code, error_description: description });
  });
  const ready = app.ready();
  const listener: RequestListener = (req, res) => {
    ready.then(
      () => (handler as RequestListener)(req, res),
      () => {
        res.statusCode = 500;
        res.end();
      },
    );
  };
  return { app, listener };
}
