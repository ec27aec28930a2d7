/**
 * Run as a child process (`node --expose-gc --import tsx`): a provider sends an introspection answer one byte per
 * write, pauses after `TRICKLED_BYTES` of them, and the gate's memory is read then, after full GCs. Prints one JSON
 * line: `{ bytes, retained, subject }`, `retained` the bytes of heap and array buffers held beyond what they held
 * before the answer began (a verification of a whole answer run first, so that nothing is held for the first time).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createGate, introspection } from '../../src/index.js';
import { reply, startAnswerServer } from './answer-server.js';

const BYTES = Number(process.env.TRICKLED_BYTES ?? 20_000);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const held = () => {
  for (let i = 0; i < 4; i++) gc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
};

const server = await startAnswerServer();
const body = `{"active":true,"sub":"u","pad":"${' '.repeat(BYTES)}"}`;
let paused!: () => void;
const pause = new Promise<void>((resolve) => {
  paused = resolve;
});
let resume!: () => void;
const resumed = new Promise<void>((resolve) => {
  resume = resolve;
});
server.answer = (_req, res) => reply(res, 200, body);
const gate = createGate({
  providers: [
    introspection({ endpoint: `${server.url}/introspect`, clientId: 'c', clientSecret: 's', connections: 1 }),
  ],
  timeout: 60_000,
  retry: false,
});
await gate.authenticate({ headers: { authorization: 'Bearer warm-up' } });
// One byte per write, the next after the event loop has turned (the gate has read the one before).
server.answer = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  let sent = 0;
  const next = () => {
    if (sent === BYTES) {
      paused();
      void resumed.then(() => res.end(body.slice(sent)));
      return;
    }
    res.write(body.slice(sent, ++sent));
    setImmediate(next);
  };
  next();
};
const before = held();
const answer = gate.authenticate({ headers: { authorization: 'Bearer trickled' } });
await pause;
await sleep(100);
const retained = held() - before;
resume();
const { subject } = await answer;
await gate.close();
await server.close();
console.log(JSON.stringify({ bytes: BYTES, retained, subject }));
