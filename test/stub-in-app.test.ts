/**
 * How an app tests its own routes without a token provider: `stubProvider`
 * answers from a fixed table, in process, and goes through the same gate,
 * cache and guards as the real providers.
 *
 * In an app the imports read:
 *   import { createGate } from 'tokengate';
 *   import { authenticate, requires } from 'tokengate/express';
 *   import { stubProvider } from 'tokengate/testing';
 */
import express, { type Express } from 'express';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { authenticate, requires } from '../adapters/express.js';
import { createGate, type Gate } from '../src/index.js';
import { stubProvider } from '../src/testing/index.js';

/** The app under test, as the app itself would build it: the gate is passed in. */
function createApp(gate: Gate): Express {
  const app = express();
  app.set('env', 'test');
  app.get('/checks', authenticate(gate), requires('uptime_checks (read)'), (req, res) => {
    res.json({ owner: req.auth?.subject, checks: [] });
  });
  app.post('/checks', authenticate(gate), requires('uptime_checks (write)'), (_req, res) => {
    res.status(201).json({ created: true });
  });
  return app;
}

describe('an app tested with stubProvider', () => {
  const gate = createGate({
    providers: [
      stubProvider({
        tokens: { 'test-token': { subject: 'u1', permissions: ['uptime_checks (read)'] } },
      }),
    ],
  });
  const app = createApp(gate);
  afterAll(() => gate.close());

  it('200 for the stub token on a route it has the permission for', async () => {
    const res = await request(app).get('/checks').set('Authorization', 'Bearer test-token');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ owner: 'u1', checks: [] });
  });

  it('401 without a token, and for a token the stub does not know', async () => {
    const missing = await request(app).get('/checks');
    expect(missing.status).toBe(401);
    expect(missing.headers['www-authenticate']).toBe('Bearer realm="api"');

    const unknown = await request(app).get('/checks').set('Authorization', 'Bearer other-token');
    expect(unknown.status).toBe(401);
    expect(unknown.headers['www-authenticate']).toMatch(/error="invalid_token"/);
  });

  it('403 when the stub token lacks the permission', async () => {
    const res = await request(app).post('/checks').set('Authorization', 'Bearer test-token');
    expect(res.status).toBe(403);
    expect(res.headers['www-authenticate']).toMatch(/error="insufficient_scope"/);
  });
});
