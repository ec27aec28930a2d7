/**
 * One app instance of the multi-process Redis test, run as its own process
 * (`node --import tsx test/support/redis-app.ts`): an Express app with a gate
 * whose shared cache is `redisCache` on its own Redis client.
 *
 * Environment: `REDIS_PORT`, `PROVIDER_URL` (the OnlineOrNot mock, in the
 * test process), `REDIS_CLIENT` (a `ClientKind` of test/support/redis-instances.ts, e.g. `ioredis 6`), `REDIS_TIMEOUT`
 * (the tier's per-command timeout, ms; default 50), `SHARED=off` (no shared
 * tier at all: the same app with the gate alone, for the benchmark's
 * comparison). Once its tier's
 * subscription is live it sends `{ port }` to its parent over IPC, and it
 * exits when the parent goes away.
 *
 * Routes: `GET /private` answers `{ subject }` or the AuthError's status and
 * `{ code }`; `POST /revoke` revokes the request's credential and answers
 * `{ confirmed }`; `GET /events` answers the `shared_cache_error` events seen;
 * `GET /timings` answers the slowest `/private` request in this process (from
 * its arrival to its answer) and the slowest upstream verification, in ms,
 * since the last `/timings`.
 */
import type { AddressInfo } from 'node:net';
import express from 'express';
import { authenticate } from '../../adapters/express.js';
import { AuthError, createGate, type GateEvent, onlineOrNot } from '../../src/index.js';
import { redisCache } from '../../src/redis/index.js';
import { type ClientKind, connectClient, sharedErrors } from './redis-instances.js';

const shared = process.env.SHARED !== 'off';
const connected = shared
  ? await connectClient(process.env.REDIS_CLIENT as ClientKind, Number(process.env.REDIS_PORT))
  : undefined;
const tier =
  connected === undefined
    ? undefined
    : redisCache(connected.client, { timeout: Number(process.env.REDIS_TIMEOUT ?? 50) });
const events: GateEvent[] = [];
const timings = { slowestRequest: 0, slowestVerification: 0 };
const gate = createGate({
  providers: [onlineOrNot({ baseUrl: process.env.PROVIDER_URL as string })],
  ...(tier === undefined ? {} : { sharedCache: tier }),
  onEvent: (event) => {
    if (event.type === 'shared_cache_error') events.push(event);
    if (event.type === 'verify') timings.slowestVerification = Math.max(timings.slowestVerification, event.durationMs);
  },
});

const app = express();
app.use('/private', (_req, res, next) => {
  const arrived = performance.now();
  res.once('finish', () => {
    timings.slowestRequest = Math.max(timings.slowestRequest, performance.now() - arrived);
  });
  next();
});
app.get('/timings', (_req, res) => {
  res.json({ ...timings });
  timings.slowestRequest = 0;
  timings.slowestVerification = 0;
});
app.get('/private', authenticate(gate), (req, res) => {
  res.json({ subject: req.auth?.subject });
});
app.post('/revoke', async (req, res, next) => {
  try {
    res.json({ confirmed: await gate.revoke(req) });
  } catch (error) {
    next(error);
  }
});
app.get('/events', (_req, res) => {
  res.json(sharedErrors(events));
});
app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
  const status = error instanceof AuthError ? error.status : 500;
  res.status(status).json({ code: error instanceof AuthError ? error.code : 'internal' });
});

await tier?.ready();
const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ port: (server.address() as AddressInfo).port });
});
// The parent owns this process: when it goes, so does this one.
process.on('disconnect', () => process.exit(0));
