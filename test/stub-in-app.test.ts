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
import { MemoryTier } from './support/memory-tier.js';

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

describe('stubProvider under a burst of requests', () => {
  it('answers 100 new tokens at once, none refused as overload: it has no pool to protect', async () => {
    const tokens = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`burst-${i}`, { subject: `u${i}` }]));
    const gate = createGate({ providers: [stubProvider({ tokens })] });
    const subjects = await Promise.all(
      Object.keys(tokens).map((token) =>
        gate.authenticate({ headers: { authorization: `Bearer ${token}` } }).then(
          (auth) => auth.subject,
          (error: { status: number }) => error.status,
        ),
      ),
    );
    expect(subjects).toEqual(Object.values(tokens).map((token) => token.subject));
    expect(gate.stats().overloaded).toBe(0);
    await gate.close();
  });
});

describe('stubProvider keeps the table it was given', () => {
  it('answers as its table was at creation, whatever the caller changes in it afterwards', async () => {
    const expiresAt = new Date(Date.now() + 3_600_000);
    const tokens = { 'tok-1234': { subject: 'u1', permissions: ['read'], expiresAt } };
    const gate = createGate({ providers: [stubProvider({ tokens })], cache: { ttl: 1 } });
    tokens['tok-1234'].permissions.push('admin');
    (tokens['tok-1234'] as { subject: string }).subject = '';
    expiresAt.setTime(Date.now() - 1000);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const auth = await gate.authenticate({ headers: { authorization: 'Bearer tok-1234' } });
    expect(auth.subject).toBe('u1');
    expect(auth.permissions).toEqual(['read']);
    expect(auth.can('admin')).toBe(false);
    expect(auth.expiresAt?.getTime()).toBeGreaterThan(Date.now());
    await gate.close();
  });

  it('shares answers on a shared tier only with stubs of the same table (two test processes on one Redis)', async () => {
    const tier = new MemoryTier();
    const gateOf = (subject: string) =>
      createGate({ providers: [stubProvider({ tokens: { 'tok-1234': { subject } } })], sharedCache: tier });
    const request = { headers: { authorization: 'Bearer tok-1234' } };
    const first = gateOf('u1');
    const other = gateOf('u2');
    const same = gateOf('u1');
    expect((await first.authenticate(request)).subject).toBe('u1');
    expect((await other.authenticate(request)).subject).toBe('u2');
    const writes = tier.writes.length;
    expect((await same.authenticate(request)).subject).toBe('u1');
    expect(tier.writes.length).toBe(writes); // read from the tier: nothing new to store
    for (const { key, value } of tier.writes) expect(`${key}${value}`).not.toContain('tok-1234');
    await Promise.all([first.close(), other.close(), same.close()]);
  });
});
