/**
 * Why a property stored on an Express `req` costs microseconds and one on Koa's `ctx.state` does not:
 * `node --allow-natives-syntax --import tsx bench/hidden-classes.ts`.
 *
 * Each server holds two requests that arrive together, asks V8 whether they share a hidden class
 * (map), stores `auth` on both, and asks again. Express moves every request onto its own prototype
 * (`Object.setPrototypeOf(req, app.request)`), and V8 does not share the hidden classes that later
 * property additions build on an object whose prototype was changed: each such store makes a new
 * one, copying the property descriptors. Plain Node requests and Koa's `ctx.state` share theirs.
 */

import { createServer, get, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Koa from 'koa';
import { HOST } from './lib.js';

// `express4` is `npm:express@4`, without type declarations under that name.
const express4 = createRequire(import.meta.url)('express4') as typeof express;

let haveSameMap: (a: object, b: object) => boolean;
try {
  haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as typeof haveSameMap;
} catch {
  console.error('run with: node --allow-natives-syntax --import tsx bench/hidden-classes.ts');
  process.exit(2);
}

/** Holds requests until two are in, then reports on them and answers both. */
function pairUp(report: (a: object, b: object) => void): (target: object, answer: () => void) => void {
  const held: Array<{ target: object; answer: () => void }> = [];
  return (target, answer) => {
    held.push({ target, answer });
    if (held.length < 2) return;
    const [a, b] = held.splice(0, 2) as [(typeof held)[number], (typeof held)[number]];
    report(a.target, b.target);
    a.answer();
    b.answer();
  };
}

async function check(name: string, listener: (report: (a: object, b: object) => void) => Server): Promise<void> {
  let line = '';
  const server = listener((a, b) => {
    const before = haveSameMap(a, b);
    (a as { auth?: unknown }).auth = {};
    (b as { auth?: unknown }).auth = {};
    line = `| ${name} | ${before} | ${haveSameMap(a, b)} |`;
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as AddressInfo;
  // Two rounds: the first builds the hidden classes, the second shows whether they are reused.
  for (let round = 0; round < 2; round++) {
    await Promise.all(
      [0, 1].map(
        () =>
          new Promise<void>((resolve, reject) => {
            get({ host: HOST, port, path: '/hello' }, (res) => res.resume().on('end', resolve)).on('error', reject);
          }),
      ),
    );
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
  console.log(line);
}

const plain = (report: (a: object, b: object) => void) => {
  const pair = pairUp(report);
  return createServer((req: IncomingMessage, res: ServerResponse) => pair(req, () => res.end('ok')));
};
const expressApp = (app: express.Express) => (report: (a: object, b: object) => void) => {
  const pair = pairUp(report);
  app.get('/hello', (req, res) => pair(req, () => res.send('ok')));
  return createServer(app);
};
const koaState = (report: (a: object, b: object) => void) => {
  const pair = pairUp(report);
  const app = new Koa();
  app.use(
    (ctx) =>
      new Promise<void>((resolve) =>
        pair(ctx.state, () => {
          ctx.body = 'ok';
          resolve();
        }),
      ),
  );
  return createServer(app.callback());
};

console.log('| object | two requests share a hidden class | after storing `auth` on both |');
console.log('| --- | --- | --- |');
await check('Node `req`, no framework', plain);
await check('Express 5 `req`', expressApp(express()));
await check('Express 4 `req`', expressApp(express4()));
await check('Koa 3 `ctx.state`', koaState);
