/**
 * The Express demo app: routes gated by permission. Built from a gate, so
 * the same app runs against real providers, the demo's mocks, or a stub in
 * tests.
 */
import express, { type ErrorRequestHandler, type Express } from 'express';
// In an app: from 'tokengate/express' and 'tokengate'.
import { authenticate, requires } from '../adapters/express.js';
import { AuthError, type Gate } from '../src/index.js';
import { READ, WRITE } from './demo.js';

/**
 * Renders tokengate's errors as JSON with their status and headers (`WWW-Authenticate`, `Retry-After`);
 * anything else goes on to Express's default handler. Without it, Express would answer an HTML page and log
 * every 401 with a stack trace.
 */
const authErrorsAsJson = ((err, _req, res, next) => {
  if (!(err instanceof AuthError)) return next(err);
  // `expose` is false only for server-side misconfiguration: keep its message in the logs.
  if (!err.expose) console.error(err);
  const description = err.expose ? err.message : 'Internal Server Error';
  res.status(err.status).set(err.headers).json({ error: err.code, error_description: description });
}) satisfies ErrorRequestHandler;

export function createExampleApp(gate: Gate): Express {
  const app = express();

  // Anyone; a valid token adds a name, a bad one is still refused.
  app.get('/public', authenticate(gate, { optional: true }), (req, res) => {
    res.json({ hello: req.auth?.subject ?? 'anonymous' });
  });

  // Any valid credential, whatever its permissions.
  app.get('/me', authenticate(gate), (req, res) => {
    res.json(req.auth);
  });

  app.get('/checks', authenticate(gate), requires(READ), (req, res) => {
    res.json({ owner: req.auth?.subject, checks: [{ id: 1, url: 'https://example.com', status: 'up' }] });
  });

  app.post('/checks', authenticate(gate), requires(WRITE), (req, res) => {
    res.status(201).json({ created: { id: 2, owner: req.auth?.subject } });
  });

  app.use(authErrorsAsJson);
  return app;
}
