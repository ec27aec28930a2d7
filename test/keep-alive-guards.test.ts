/**
 * Guards on one keep-alive connection. The gate remembers a connection's last
 * `Authorization` header and the context it resolved to, and answers the same
 * header again from that memory (its fast path, reached from the third
 * identical request on). Whatever it remembers, every request still goes
 * through its route's guard, and an anonymous request is anonymous.
 *
 * Each test sends many requests over ONE TCP connection and checks that the
 * server saw one connection and the client one local port, so the requests
 * really shared it (test/support/one-connection.ts).
 */
import type { RequestListener } from 'node:http';
import { createRequire } from 'node:module';
import express from 'express';
import Koa, { type Middleware } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import * as expressGate from '../adapters/express.js';
import * as koaGate from '../adapters/koa.js';
import { createGate, type Gate, onlineOrNot } from '../src/index.js';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { serveOnOneConnection } from './support/one-connection.js';

const READ = 'uptime_checks (read)';
const WRITE = 'uptime_checks (write)';
/** Holds READ and WRITE. */
const WRITER = 'SECRETkaWriter0a1b2c3d';
/** Holds READ only. */
const READER = 'SECRETkaReader4e5f6a7b';
/** A valid token that holds no permission at all. */
const NOBODY = 'SECRETkaNobody8c9d0e1f';
const SUBJECTS: Readonly<Record<string, string>> = {
  [WRITER]: 'tok-writer',
  [READER]: 'tok-reader',
  [NOBODY]: 'tok-nobody',
};

const NEEDS_READ =
  'Bearer realm="api", error="insufficient_scope", error_description="Requires: uptime_checks (read)", scope="uptime_checks%20(read)"';
const NEEDS_WRITE =
  'Bearer realm="api", error="insufficient_scope", error_description="Requires: uptime_checks (write)", scope="uptime_checks%20(write)"';
const CREDENTIALS_REQUIRED = 'Bearer realm="api"';

/** More than enough requests to reach the fast path many times over. */
const MANY = 12;

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of cleanup.splice(0).reverse()) await close();
});

// The previous majors, installed under other names (`npm:express@4`, `npm:koa@2`) without type declarations.
const express4 = createRequire(import.meta.url)('express4') as typeof express;
const Koa2 = createRequire(import.meta.url)('koa2') as typeof Koa;

/**
 * Routes of every app below; each answers `{ subject }` (null when anonymous):
 * `/read` needs READ, `/write` needs WRITE, `/public` takes anyone,
 * `/public/read` takes anyone but needs READ from a caller with a token.
 */
type AppFactory = (gate: Gate) => RequestListener;

function expressApp(framework: typeof express): AppFactory {
  return (gate) => {
    const app = framework();
    // 'test' keeps Express's default error handler from logging each 403 to stderr.
    app.set('env', 'test');
    const answer: express.RequestHandler = (req, res) => {
      res.json({ subject: req.auth?.subject ?? null });
    };
    const { authenticate, requires } = expressGate;
    app.get('/read', authenticate(gate), requires(READ), answer);
    app.get('/write', authenticate(gate), requires(WRITE), answer);
    app.get('/public', authenticate(gate, { optional: true }), answer);
    app.get('/public/read', authenticate(gate, { optional: true }), requires(READ), answer);
    return app;
  };
}

function koaApp(Framework: typeof Koa): AppFactory {
  return (gate) => {
    const app = new Framework();
    const { authenticate, requires } = koaGate;
    const answer: Middleware = (ctx) => {
      ctx.body = { subject: ctx.state.auth?.subject ?? null };
    };
    const routes: Record<string, Middleware[]> = {
      '/read': [authenticate(gate), requires(READ), answer],
      '/write': [authenticate(gate), requires(WRITE), answer],
      '/public': [authenticate(gate, { optional: true }), answer],
      '/public/read': [authenticate(gate, { optional: true }), requires(READ), answer],
    };
    // What a router does, inline: the route's middleware in order. Koa's own error handler answers the AuthErrors.
    app.use(async (ctx, next) => {
      const chain = routes[ctx.path];
      if (chain === undefined) return next();
      const run = async (i: number): Promise<void> => {
        const current = chain[i];
        if (current) await current(ctx, () => run(i + 1));
      };
      await run(0);
    });
    return app.callback();
  };
}

const apps: ReadonlyArray<[string, AppFactory]> = [
  ['express 5', expressApp(express)],
  ['express 4', expressApp(express4)],
  ['koa 3', koaApp(Koa)],
  ['koa 2', koaApp(Koa2)],
];

interface Answer {
  readonly status: number;
  readonly challenge: string | undefined;
  /** The route's `{ subject }` for a 200, else undefined. */
  readonly subject: string | null | undefined;
}

/** A mock OnlineOrNot knowing the three tokens, a gate, `build`'s app on 127.0.0.1, and a one-connection client. */
async function setup(build: AppFactory) {
  const mock = await mockOnlineOrNot({
    tokens: {
      [WRITER]: { id: SUBJECTS[WRITER] as string, permissions: [READ, WRITE] },
      [READER]: { id: SUBJECTS[READER] as string, permissions: [READ] },
      [NOBODY]: { id: SUBJECTS[NOBODY] as string, permissions: [] },
    },
  });
  cleanup.push(() => mock.close());
  const gate = createGate({ providers: [onlineOrNot({ baseUrl: mock.url })], retry: false, breaker: false });
  cleanup.push(() => gate.close());
  const client = await serveOnOneConnection(build(gate));
  cleanup.push(() => client.close());

  /** GET `path` over the one connection, with `token` as a Bearer credential when given. */
  const send = async (path: string, token?: string): Promise<Answer> => {
    const res = await client.get(path, token === undefined ? {} : { authorization: `Bearer ${token}` });
    const subject = res.status === 200 ? (JSON.parse(res.body) as { subject: string | null }).subject : undefined;
    return { status: res.status, challenge: res.challenge, subject };
  };
  return { mock, gate, send, expectOneConnection: client.expectOneConnection };
}

const allowed = (token: string): Answer => ({ status: 200, challenge: undefined, subject: SUBJECTS[token] });
const forbidden = (challenge: string): Answer => ({ status: 403, challenge, subject: undefined });
const anonymous: Answer = { status: 200, challenge: undefined, subject: null };
const unauthenticated: Answer = { status: 401, challenge: CREDENTIALS_REQUIRED, subject: undefined };

describe.each(apps)('guards on one keep-alive connection (%s)', (_name, build) => {
  it(`a token without the route's permission is refused ${MANY} times in a row, 403 with the challenge`, async () => {
    const { mock, gate, send, expectOneConnection } = await setup(build);
    const answers: Answer[] = [];
    for (let i = 0; i < MANY; i++) answers.push(await send('/read', NOBODY));
    expect(answers).toEqual(Array(MANY).fill(forbidden(NEEDS_READ)));
    // One verification: every later request was answered from the gate's memory, and still refused.
    expect(mock.calls.verify).toBe(1);
    expect(gate.stats().hits).toBe(MANY - 1);
    expectOneConnection();
  });

  it('one token alternating between a route it may use and one it may not', async () => {
    const { mock, send, expectOneConnection } = await setup(build);
    const answers: Answer[] = [];
    const expected: Answer[] = [];
    for (let i = 0; i < MANY; i++) {
      // Three on each route in turn, then strict alternation: both reach the remembered context.
      const onWrite = i < 6 ? Math.floor(i / 3) % 2 === 1 : i % 2 === 1;
      answers.push(await send(onWrite ? '/write' : '/read', READER));
      expected.push(onWrite ? forbidden(NEEDS_WRITE) : allowed(READER));
    }
    expect(answers).toEqual(expected);
    expect(mock.calls.verify).toBe(1);
    expectOneConnection();
  });

  it('two tokens taking turns on one connection: each gets its own answer', async () => {
    const { mock, send, expectOneConnection } = await setup(build);
    // Runs of three (the third of each reaches the fast path), then strict alternation.
    const tokens = [WRITER, WRITER, WRITER, READER, READER, READER, WRITER, WRITER, WRITER, READER, READER, READER];
    for (let i = 0; i < MANY; i++) tokens.push(i % 2 === 0 ? WRITER : READER);
    const answers: Answer[] = [];
    for (const token of tokens) answers.push(await send('/write', token));
    expect(answers).toEqual(tokens.map((token) => (token === WRITER ? allowed(WRITER) : forbidden(NEEDS_WRITE))));
    expect(mock.calls.verify).toBe(2);
    expectOneConnection();
  });

  it('an optional route: anonymous requests stay anonymous between token requests, and the guard still runs', async () => {
    const { send, expectOneConnection } = await setup(build);
    /** [path, token] and what must come back. */
    const script: Array<[string, string | undefined, Answer]> = [
      ['/public/read', READER, allowed(READER)],
      ['/public/read', READER, allowed(READER)],
      ['/public/read', READER, allowed(READER)],
      ['/public/read', undefined, unauthenticated],
      ['/public', undefined, anonymous],
      ['/public', READER, allowed(READER)],
      ['/public', READER, allowed(READER)],
      ['/public', READER, allowed(READER)],
      ['/public', undefined, anonymous],
      ['/public/read', undefined, unauthenticated],
      ['/public/read', NOBODY, forbidden(NEEDS_READ)],
      ['/public/read', NOBODY, forbidden(NEEDS_READ)],
      ['/public/read', NOBODY, forbidden(NEEDS_READ)],
      ['/public/read', NOBODY, forbidden(NEEDS_READ)],
      ['/public', NOBODY, allowed(NOBODY)],
      ['/public', undefined, anonymous],
      ['/public/read', NOBODY, forbidden(NEEDS_READ)],
      ['/public/read', undefined, unauthenticated],
      ['/public/read', READER, allowed(READER)],
    ];
    const answers: Answer[] = [];
    for (const [path, token] of script) answers.push(await send(path, token));
    expect(answers).toEqual(script.map(([, , answer]) => answer));
    expectOneConnection();
  });
});
