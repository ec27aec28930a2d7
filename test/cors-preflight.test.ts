/**
 * A browser's CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) carries no
 * `Authorization`: the gate answers it 401 with the challenge, as any request without a credential, so the README
 * has each framework's CORS middleware mounted before the gate. Here, on real Express, Koa and Fastify apps, a small
 * preflight responder stands for that middleware (`cors()`, `@koa/cors`, `@fastify/cors` answer a preflight the same
 * way, before anything mounted after them runs).
 */
import express from 'express';
import Fastify from 'fastify';
import Koa from 'koa';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { authenticate as expressAuthenticate } from '../adapters/express.js';
import { authenticate as fastifyAuthenticate, tokengate } from '../adapters/fastify.js';
import { authenticate as koaAuthenticate } from '../adapters/koa.js';
import { createGate } from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';

const gate = createGate({ providers: [stubProvider({ tokens: { 'cors-token': { subject: 'u1' } } })] });
afterAll(() => gate.close());

const PREFLIGHT = { Origin: 'http://127.0.0.1:5173', 'Access-Control-Request-Method': 'GET' };
const ALLOWED = { 'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET' };

function isPreflight(method: string, headers: Record<string, unknown>): boolean {
  return method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined;
}

function expressApp(corsFirst: boolean) {
  const app = express();
  if (corsFirst) {
    app.use((req, res, next) => {
      if (!isPreflight(req.method, req.headers)) return next();
      res.set(ALLOWED).status(204).end();
    });
  }
  app.use(expressAuthenticate(gate));
  app.get('/checks', (req, res) => res.json({ owner: req.auth?.subject }));
  app.use(((err, _req, res, _next) => {
    res.status(err.status).set(err.headers).json({ error: err.code });
  }) satisfies express.ErrorRequestHandler);
  return app;
}

function koaApp(corsFirst: boolean) {
  const app = new Koa();
  app.silent = true;
  if (corsFirst) {
    app.use(async (ctx, next) => {
      if (!isPreflight(ctx.method, ctx.headers)) return next();
      ctx.set(ALLOWED);
      ctx.status = 204;
    });
  }
  app.use(koaAuthenticate(gate));
  app.use((ctx) => {
    ctx.body = { owner: ctx.state.auth?.subject };
  });
  return app.callback();
}

async function fastifyApp(corsFirst: boolean) {
  const app = Fastify();
  await app.register(tokengate);
  if (corsFirst) {
    app.addHook('onRequest', async (req, reply) => {
      if (isPreflight(req.method, req.headers)) return reply.headers(ALLOWED).code(204).send();
    });
  }
  app.addHook('onRequest', fastifyAuthenticate(gate));
  app.get('/checks', async (req) => ({ owner: req.auth?.subject }));
  app.options('/checks', async (_req, reply) => reply.code(204).send());
  await app.ready();
  return app;
}

describe.each([
  ['Express', async (corsFirst: boolean) => ({ server: expressApp(corsFirst), close: async () => {} })],
  ['Koa', async (corsFirst: boolean) => ({ server: koaApp(corsFirst), close: async () => {} })],
  [
    'Fastify',
    async (corsFirst: boolean) => {
      const app = await fastifyApp(corsFirst);
      return { server: app.server, close: () => app.close() };
    },
  ],
] as const)('a CORS preflight on %s', (_, makeApp) => {
  it('is answered 401 with the challenge when the gate comes first: it carries no credential', async () => {
    const app = await makeApp(false);
    try {
      const res = await request(app.server).options('/checks').set(PREFLIGHT);
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toBe('Bearer realm="api"');
    } finally {
      await app.close();
    }
  });

  it('is answered by CORS middleware mounted before the gate, and the request that follows is authenticated', async () => {
    const app = await makeApp(true);
    try {
      const preflight = await request(app.server).options('/checks').set(PREFLIGHT);
      expect(preflight.status).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe('*');
      const actual = await request(app.server)
        .get('/checks')
        .set({ Origin: PREFLIGHT.Origin, Authorization: 'Bearer cors-token' });
      expect(actual.status).toBe(200);
      expect(actual.body).toEqual({ owner: 'u1' });
      expect((await request(app.server).get('/checks').set({ Origin: PREFLIGHT.Origin })).status).toBe(401);
    } finally {
      await app.close();
    }
  });
});
