/**
 * A real Express app with a gate in front of its routes, for tests that must
 * see what a client sees. Express's default error handler answers errors, so
 * the statuses and headers are the ones an app gets without extra code.
 *
 * Routes: `/checks` needs `uptime_checks (read)`; `/me` needs any valid
 * credential. Both answer `req.auth` as JSON and record what reached them.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import { authenticate, requires } from '../../adapters/express.js';
import type { Gate } from '../../src/index.js';

/** A request that reached a route body (past the gate). */
export interface SeenRequest {
  readonly route: string;
  readonly authorization: string | undefined;
  readonly query: unknown;
  readonly subject: string | undefined;
  readonly stale: boolean | undefined;
}

export interface GatedApp {
  readonly app: Express;
  /** Every request whose route body ran, in order. */
  readonly seen: SeenRequest[];
}

export const READ_CHECKS = 'uptime_checks (read)';

export function gatedApp(gate: Gate, options: { queryParser?: 'simple' | 'extended' } = {}): GatedApp {
  const app = express();
  if (options.queryParser !== undefined) app.set('query parser', options.queryParser);
  const seen: SeenRequest[] = [];
  const record: express.RequestHandler = (req, res) => {
    seen.push({
      route: req.path,
      authorization: req.headers.authorization,
      query: req.query,
      subject: req.auth?.subject,
      stale: req.auth?.stale,
    });
    res.json(req.auth ?? null);
  };
  app.get('/checks', authenticate(gate), requires(READ_CHECKS), record);
  app.get('/me', authenticate(gate), record);
  return { app, seen };
}

/** Listens on 127.0.0.1 (random port); `close()` also ends keep-alive connections. */
export async function listen(app: Express): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const server = await new Promise<Server>((resolve) => {
    const started = app.listen(0, '127.0.0.1', () => resolve(started));
  });
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
