/**
 * One benchmark server process: builds the app named by `BENCH_SERVER.variant`
 * around the same route body, listens on 127.0.0.1, and answers the
 * orchestrator's `usage` requests (CPU time, gate stats) over IPC.
 * Started pinned to the server core by bench/runs.ts.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type RequestListener, type Server } from 'node:http';
import { Session } from 'node:inspector/promises';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import express, { type NextFunction, type Request, type Response } from 'express';
import { auth, requiredScopes } from 'express-oauth2-jwt-bearer';
import Fastify, { type FastifyReply, type FastifyRequest, type HookHandlerDoneFunction } from 'fastify';
import Koa from 'koa';
import passport from 'passport';
import { Strategy as BearerStrategy } from 'passport-http-bearer';
import { Pool } from 'undici';
import * as expressGate from '../adapters/express.js';
import * as fastifyGate from '../adapters/fastify.js';
import * as koaGate from '../adapters/koa.js';
import { AuthError, createGate, type Gate, type GateEvent, onlineOrNot } from '../src/index.js';
import { type HandUser, handWrittenLookup } from './hand-written.js';
import {
  BENCH_PERMISSIONS,
  type FloodServerStats,
  GATE_POOL_OPTIONS,
  HOST,
  HOT_TOKEN,
  ROUTE_PERMISSION,
  type ServerConfig,
  type ServerMessage,
  SPIN_MICROS,
  STAMPEDE_LATENCY_MS,
} from './lib.js';

const config = JSON.parse(process.env.BENCH_SERVER ?? '') as ServerConfig;

/** The route body every variant shares. */
function routeBody(_req: Request, res: Response): void {
  res.json({ ok: true });
}

function requireHandPermission(req: Request, res: Response, next: NextFunction): void {
  const user = req.user as HandUser | undefined;
  if (user?.permissions.includes(ROUTE_PERMISSION) === true) next();
  else res.sendStatus(403);
}

interface FloorUser {
  readonly permissions: ReadonlySet<string>;
}

/**
 * The `-floor` variants' table: about the least a hand-written cached-token check does, for scale. The raw
 * header is the key (no hashing, no grammar check, no expiry, no LRU): not something to ship, since raw tokens
 * become keys of a process-wide map. A reference, not a lower bound (see bench/README.md, "The floor").
 */
function floorUsers(): Map<string, FloorUser> {
  return new Map([[`Bearer ${HOT_TOKEN}`, { permissions: new Set(BENCH_PERMISSIONS) }]]);
}

let gate: Gate | undefined;

/**
 * The gate of the `-gate` variants. `BENCH_GATE_CONCURRENCY` overrides how many verifications it runs at once
 * (`Provider.concurrency`; OnlineOrNot's default is half its 32 sockets, two calls each), for measurements only.
 */
function newGate(): Gate {
  const provider = onlineOrNot({ baseUrl: config.providerUrl, ...GATE_POOL_OPTIONS });
  const concurrency = process.env.BENCH_GATE_CONCURRENCY;
  gate = createGate({
    providers: [concurrency === undefined ? provider : { ...provider, concurrency: Number(concurrency) }],
  });
  return gate;
}

/** What the `express-flood` gate went through, for `flood-stats`. */
const floodEvents = { breakerOpens: 0, overloaded: {} as Record<string, number> };

function onFloodEvent(event: GateEvent): void {
  if (event.type === 'verify') timing('verification (provider asked, answer read)', event.durationMs);
  else if (event.type === 'breaker' && event.state === 'open') floodEvents.breakerOpens++;
  else if (event.type === 'overloaded') {
    floodEvents.overloaded[event.reason] = (floodEvents.overloaded[event.reason] ?? 0) + 1;
  }
}

/** The flood scenario's app: the gated route, and errors as JSON (`{ error: code }`) with their status and headers. */
function floodApp(app: express.Express): void {
  gate = createGate({
    providers: [onlineOrNot({ baseUrl: config.providerUrl, ...GATE_POOL_OPTIONS })],
    ...(config.cache === undefined ? {} : { cache: config.cache }),
    onEvent: onFloodEvent,
  });
  app.use(timed);
  app.get('/hello', expressGate.authenticate(gate), expressGate.requires(ROUTE_PERMISSION), routeBody);
  app.use(((error, _req, res, _next) => {
    const code = error instanceof AuthError ? error.code : 'internal';
    res.locals.code = code;
    if (error instanceof AuthError) res.status(error.status).set(error.headers).json({ error: code });
    else res.status(500).json({ error: code });
  }) satisfies express.ErrorRequestHandler);
}

/**
 * The flood's floor, for scale: the same app with the gate replaced by a `Map` lookup of the raw header
 * that refuses every token it does not hold at once with the gate's 503 `overloaded` (`Retry-After: 1`):
 * the cheapest refusal there is.
 */
function floodFloorApp(app: express.Express): void {
  app.use(timed);
  const floor = expressFloor((res) => {
    res.locals.code = 'overloaded';
    res.status(503).set('retry-after', '1').json({ error: 'overloaded' });
  });
  app.get('/hello', ...floor, routeBody);
}

/** The Express floor's two handlers: the `Map` lookup, whose misses `refuse` answers, and the permission check. */
function expressFloor(refuse: (res: Response) => void): [express.RequestHandler, express.RequestHandler] {
  const users = floorUsers();
  return [
    (req, res, next) => {
      const user = users.get(req.headers.authorization ?? '');
      if (user === undefined) refuse(res);
      else {
        req.user = user;
        next();
      }
    },
    (req, res, next) => {
      if ((req.user as FloorUser).permissions.has(ROUTE_PERMISSION)) next();
      else res.sendStatus(403);
    },
  ];
}

/** Server-side time per answer, by client address and answer, and per verification, since the last `flood-stats`. */
const timings = new Map<string, RecordableHistogram>();

function timing(key: string, ms: number): void {
  let histogram = timings.get(key);
  if (histogram === undefined) timings.set(key, (histogram = createHistogram()));
  histogram.record(Math.max(1, Math.round(ms * 1000)));
}

function timed(req: Request, res: Response, next: NextFunction): void {
  const arrived = performance.now();
  res.once('finish', () => {
    const code = res.locals.code === undefined ? '' : ` ${res.locals.code}`;
    timing(`${req.socket.remoteAddress} ${res.statusCode}${code}`, performance.now() - arrived);
  });
  next();
}

/** The timings since the last call, in ms; starts them again. */
function takeTimings(): FloodServerStats['timings'] {
  const ms = (micros: number) => Math.round(micros / 100) / 10;
  const taken = Object.fromEntries(
    [...timings].map(([key, h]) => [
      key,
      { count: h.count, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) },
    ]),
  );
  timings.clear();
  return taken;
}

/** The flood server's memory (after a full GC when it can) and its gate's counts. */
function floodStats(): FloodServerStats {
  (globalThis as { gc?: () => void }).gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  return {
    rss,
    heapUsed,
    ...floodEvents,
    overloaded: { ...floodEvents.overloaded },
    gate: gate?.stats(),
    timings: takeTimings(),
  };
}

function expressApp(): express.Express {
  const app = express();
  switch (config.variant) {
    case 'express-bare':
    case 'express-client':
      app.get('/hello', routeBody);
      break;
    case 'express-noop':
      // Two pass-through middleware where the gated route has authenticate() and requires():
      // what the framework itself charges for two more handlers.
      app.get('/hello', passThrough, passThrough, routeBody);
      break;
    case 'express-spin': {
      // The bare route plus a loop of a fixed count, calibrated here once to burn SPIN_MICROS of CPU: a known
      // cost for the side-by-side method to read (`BENCH_PAIR=express-bare,express-spin`).
      // One request in 64 also times its spin (two clock reads), so that the cost it had in the run is known.
      const iterations = Math.round(SPIN_MICROS * spinIterationsPerMicro());
      let requests = 0;
      app.get(
        '/hello',
        (_req, _res, next) => {
          if ((++requests & 63) === 0) {
            const started = process.hrtime.bigint();
            spin(iterations);
            spinTimes.record(Math.max(1, Number(process.hrtime.bigint() - started)));
          } else {
            spin(iterations);
          }
          next();
        },
        routeBody,
      );
      break;
    }
    case 'express-floor':
      app.get('/hello', ...expressFloor((res) => res.sendStatus(401)), routeBody);
      break;
    case 'express-gate': {
      const gate = newGate();
      app.get('/hello', expressGate.authenticate(gate), expressGate.requires(ROUTE_PERMISSION), routeBody);
      break;
    }
    case 'express-passport': {
      const lookup = handWrittenLookup(config.providerUrl);
      passport.use(
        new BearerStrategy((token, done) => {
          lookup(token).then((user) => done(null, user ?? false), done);
        }),
      );
      app.use(passport.initialize());
      app.get('/hello', passport.authenticate('bearer', { session: false }), requireHandPermission, routeBody);
      break;
    }
    case 'express-jwt':
      app.get(
        '/hello',
        auth({ jwksUri: config.jwksUri, issuer: config.issuer, audience: config.audience, tokenSigningAlg: 'RS256' }),
        requiredScopes(ROUTE_PERMISSION),
        routeBody,
      );
      break;
    case 'express-hand': {
      const lookup = handWrittenLookup(config.providerUrl);
      const bearer = /^Bearer +(\S+)$/i;
      app.get(
        '/hello',
        (req, res, next) => {
          const token = bearer.exec(req.headers.authorization ?? '')?.[1];
          if (token === undefined) {
            res.sendStatus(401);
            return;
          }
          lookup(token).then((user) => {
            if (user === undefined) {
              res.sendStatus(401);
              return;
            }
            req.user = user;
            next();
          }, next);
        },
        requireHandPermission,
        routeBody,
      );
      break;
    }
    case 'express-wait': {
      // The stampede's shape with a perfect gate: the first request for an Authorization value starts
      // one shared wait of the provider's latency, the others join it, later ones pass at once (cached).
      // No hashing, no provider, no validation: what a burst of deferred answers costs by itself.
      const waits = new Map<string, Promise<void>>();
      app.get(
        '/hello',
        (req, _res, next) => {
          const key = req.headers.authorization ?? '';
          let wait = waits.get(key);
          if (wait === undefined) {
            wait = new Promise((resolve) => setTimeout(resolve, STAMPEDE_LATENCY_MS));
            waits.set(key, wait);
          }
          wait.then(() => next(), next);
        },
        passThrough,
        routeBody,
      );
      break;
    }
    case 'express-flood':
      floodApp(app);
      break;
    case 'express-flood-floor':
      floodFloorApp(app);
      break;
    default:
      throw new Error(`not an Express variant: ${config.variant}`);
  }
  return app;
}

function passThrough(_req: Request, _res: Response, next: NextFunction): void {
  next();
}

/** `express-spin`: how long its timed spins took, ns, since the last `usage` message. */
const spinTimes = createHistogram();

/** Where {@link spin} leaves its result, so that the loop cannot be optimised away. */
let spinSink = 0;

/** A loop of `iterations` steps of integer arithmetic. */
function spin(iterations: number): void {
  let x = spinSink;
  for (let i = 0; i < iterations; i++) x = (Math.imul(x, 31) + i) | 0;
  spinSink = x;
}

/** How many {@link spin} steps take one µs of this process's CPU: the median of five timed loops, once warm. */
function spinIterationsPerMicro(): number {
  const steps = 5_000_000;
  spin(steps);
  const rates: number[] = [];
  for (let i = 0; i < 5; i++) {
    const start = process.cpuUsage();
    spin(steps);
    const used = process.cpuUsage(start);
    rates.push(steps / (used.user + used.system));
  }
  return rates.sort((a, b) => a - b)[2] as number;
}

function koaApp(): Koa {
  const app = new Koa();
  if (config.variant === 'koa-noop') {
    app.use((_ctx, next) => next());
    app.use((_ctx, next) => next());
  }
  if (config.variant === 'koa-floor') {
    const users = floorUsers();
    app.use((ctx, next) => {
      const user = users.get(ctx.get('authorization'));
      if (user === undefined) ctx.throw(401);
      ctx.state.user = user;
      return next();
    });
    app.use((ctx, next) => {
      if (!(ctx.state.user as FloorUser).permissions.has(ROUTE_PERMISSION)) ctx.throw(403);
      return next();
    });
  }
  if (config.variant === 'koa-gate') {
    const gate = newGate();
    app.use(koaGate.authenticate(gate));
    app.use(koaGate.requires(ROUTE_PERMISSION));
  }
  app.use((ctx) => {
    if (ctx.path === '/hello') ctx.body = { ok: true };
  });
  return app;
}

/** What the `-floor` Fastify hooks store on the request. */
interface FloorRequest extends FastifyRequest {
  floorUser?: FloorUser;
}

/**
 * The Fastify variants: the hooks sit where the gate's go (`onRequest` authenticates before the body is
 * read, `preHandler` guards). Served through `app.routing`, Fastify's own request handler, by the same
 * Node server as every other variant.
 */
async function fastifyApp(): Promise<RequestListener> {
  const app = Fastify();
  const send = (_request: FastifyRequest, reply: FastifyReply) => reply.send({ ok: true });
  switch (config.variant) {
    case 'fastify-bare':
    case 'fastify-client':
      app.get('/hello', send);
      break;
    case 'fastify-noop': {
      const passThroughHook = (_request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction) => done();
      app.get('/hello', { onRequest: passThroughHook, preHandler: passThroughHook }, send);
      break;
    }
    case 'fastify-floor': {
      const users = floorUsers();
      app.decorateRequest('floorUser', undefined);
      app.get(
        '/hello',
        {
          onRequest: (request: FloorRequest, reply, done) => {
            const user = users.get(request.headers.authorization ?? '');
            if (user === undefined) reply.code(401).send();
            else {
              request.floorUser = user;
              done();
            }
          },
          preHandler: (request: FloorRequest, reply, done) => {
            if (request.floorUser?.permissions.has(ROUTE_PERMISSION) === true) done();
            else reply.code(403).send();
          },
        },
        send,
      );
      break;
    }
    case 'fastify-gate':
    case 'fastify-undeclared': {
      const gate = newGate();
      // `fastify-undeclared`: the hooks without the plugin that declares `request.auth`.
      if (config.variant === 'fastify-gate') await app.register(fastifyGate.tokengate);
      app.get(
        '/hello',
        { onRequest: fastifyGate.authenticate(gate), preHandler: fastifyGate.requires(ROUTE_PERMISSION) },
        send,
      );
      break;
    }
    default:
      throw new Error(`not a Fastify variant: ${config.variant}`);
  }
  await app.ready();
  return app.routing;
}

function listen(handler: RequestListener): Promise<Server> {
  return new Promise<Server>((resolve) => {
    const server = createServer(handler);
    // The stampede opens 1,000 connections at once: a backlog above Node's default 511.
    server.listen({ port: 0, host: HOST, backlog: 2048 }, () => resolve(server));
  });
}

function send(message: ServerMessage): void {
  process.send?.(message);
}

/**
 * The `-client` variants: the bare route, in a process that has made one HTTP call through undici, as
 * every gated process has (its first verification). Node's event and stream code serves every socket
 * of a process; once a client socket has been through it, some of its property reads meet more object
 * shapes than V8 caches, and the server's requests pay for that from then on
 * (`npx tsx bench/instructions.ts fastify-bare fastify-client`).
 */
if (config.variant.endsWith('-client')) {
  const pool = new Pool(config.providerUrl);
  const { body } = await pool.request({
    method: 'GET',
    path: '/v1/tokens/verify',
    headers: { authorization: `Bearer ${HOT_TOKEN}` },
  });
  await body.dump();
}

const handler: RequestListener = config.variant.startsWith('koa')
  ? koaApp().callback()
  : config.variant.startsWith('fastify')
    ? await fastifyApp()
    : expressApp();
const server = await listen(handler);
// The flood's clients connect before their run starts: their sockets stay open while the others connect.
if (config.variant.startsWith('express-flood')) server.keepAliveTimeout = 60_000;
const address = server.address();
if (address === null || typeof address === 'string') throw new Error('server has no port');

// CPU profiles for bench/profile.ts, of the warm server only (what `node --cpu-prof` records, minus start-up).
let profiler: Session | undefined;
async function profile(message: { type: string; path?: string }): Promise<void> {
  if (message.type === 'profile-start') {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.setSamplingInterval', { interval: 100 });
    await profiler.post('Profiler.start');
  } else if (message.type === 'profile-stop' && profiler !== undefined && message.path !== undefined) {
    const { profile } = await profiler.post('Profiler.stop');
    writeFileSync(message.path, JSON.stringify(profile));
    profiler.disconnect();
  }
  send({ type: 'profiled' });
}

process.on('message', (message: { type: string; path?: string }) => {
  if (message.type.startsWith('profile-')) void profile(message);
  if (message.type === 'flood-stats') send({ type: 'flood-stats', stats: floodStats() });
  if (message.type === 'usage') {
    const cpu = process.cpuUsage();
    send({
      type: 'usage',
      cpuMicros: cpu.user + cpu.system,
      wallMs: performance.now(),
      ...(gate === undefined ? {} : { gateUpstreamCalls: gate.stats().upstreamCalls }),
      ...(spinTimes.count === 0 ? {} : { spinMicros: spinTimes.percentile(50) / 1000 }),
    });
    spinTimes.reset();
  }
});
// The orchestrator going away ends the server too; a normal exit also lets --cpu-prof write its profile.
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
send({ type: 'ready', port: address.port });
