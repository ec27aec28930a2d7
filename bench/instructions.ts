/**
 * Instructions per cached request, counted by valgrind's callgrind: `npx tsx bench/instructions.ts
 * [variant ...]` (default the Fastify, Express and Koa bare, floor and gated variants, Fastify's gated one
 * without the `tokengate` plugin, and its bare route in a process that has made an HTTP call). A count of
 * instructions does not move with what else the machine runs, so it answers "what does the gate
 * add to a request" on a machine whose neighbours make req/s ratios swing by several per cent.
 *
 * Each variant's server runs under callgrind; one keep-alive connection sends `BENCH_CG_WARMUP`
 * requests (V8 has optimised the hot functions by then), the counters are zeroed, `BENCH_CG_REQUESTS`
 * more are sent, and the server's instructions over those, divided by their number, are printed
 * beside the bare variant's. The client's own work is not counted: it is another process.
 * `BENCH_CG_KEEP=1` keeps each dump and prints its path, for `callgrind_annotate` (V8's builtins and
 * runtime functions show by name; optimised JavaScript does not). `BENCH_CG_COLD=1` counts the cold path
 * instead: every request carries a token never sent before, which the mock (in this process, not counted)
 * knows; compare `express-hand express-gate`, the cold-path scenario's pair.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'undici';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { compiled } from './compile.js';
import { BENCH_PERMISSIONS, HOT_TOKEN, type ServerConfig, type ServerMessage, type Variant } from './lib.js';
import { nextMessage, stop } from './processes.js';

const DEFAULT_VARIANTS: readonly Variant[] = [
  'fastify-bare',
  'fastify-floor',
  'fastify-gate',
  'fastify-undeclared',
  'fastify-client',
  'express-bare',
  'express-floor',
  'express-gate',
  'koa-bare',
  'koa-floor',
  'koa-gate',
];
const variants = (process.argv.length > 2 ? process.argv.slice(2) : DEFAULT_VARIANTS) as Variant[];
const warmup = Number(process.env.BENCH_CG_WARMUP ?? 10000);
const requests = Number(process.env.BENCH_CG_REQUESTS ?? 3000);
const keep = process.env.BENCH_CG_KEEP === '1';
const cold = process.env.BENCH_CG_COLD === '1';
/** The cold tokens sent so far, over every variant: each is sent once. */
let sent = 0;

/** Sends `count` requests one after another on `client`; throws on any answer but 200. */
async function send(client: Client, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const { statusCode, body } = await client.request({
      method: 'GET',
      path: '/hello',
      headers: { authorization: `Bearer ${cold ? `cold-${sent++}` : HOT_TOKEN}` },
    });
    await body.dump();
    if (statusCode !== 200) throw new Error(`answered ${statusCode}`);
  }
}

/** Instructions in the dump of `--dump`, by thread: the JavaScript thread (1), and V8's helper threads. */
function dumpedInstructions(folder: string): { main: number; helpers: number } {
  const counts = { main: 0, helpers: 0 };
  for (const name of readdirSync(folder)) {
    // callgrind.out.<dump>-<thread>: dump 1 is the one `--dump` wrote.
    const dump = /^callgrind\.out\.1-(\d+)$/.exec(name);
    if (dump === null) continue;
    const line = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(folder, name), 'utf8'));
    if (line === null) throw new Error(`callgrind dump ${name} without a summary`);
    if (dump[1] === '01') counts.main += Number(line[1]);
    else counts.helpers += Number(line[1]);
  }
  return counts;
}

async function instructionsPerRequest(
  variant: Variant,
  providerUrl: string,
): Promise<{ main: number; helpers: number }> {
  const folder = mkdtempSync(join(tmpdir(), 'tokengate-cg-'));
  const config: ServerConfig = { variant, providerUrl, jwksUri: '', issuer: '', audience: '' };
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      '--separate-threads=yes',
      `--callgrind-out-file=${join(folder, 'callgrind.out')}`,
      process.execPath,
      compiled('server.ts'),
    ],
    { env: { ...process.env, BENCH_SERVER: JSON.stringify(config) }, stdio: ['ignore', 'ignore', 'ignore', 'ipc'] },
  );
  try {
    const { port } = await nextMessage<Extract<ServerMessage, { type: 'ready' }>>(child, 'ready');
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1 });
    await send(client, warmup);
    execFileSync('callgrind_control', ['--zero', String(child.pid)], { stdio: 'ignore' });
    await send(client, requests);
    execFileSync('callgrind_control', ['--dump', String(child.pid)], { stdio: 'ignore' });
    await client.close();
    const { main, helpers } = dumpedInstructions(folder);
    return { main: main / requests, helpers: helpers / requests };
  } finally {
    await stop(child);
    if (keep) console.log(`${variant}: callgrind dumps kept in ${folder}`);
    else rmSync(folder, { recursive: true, force: true });
  }
}

const figure = (count: number) => Math.round(count).toLocaleString('en-US');

const provider = await mockOnlineOrNot({ tokens: { [HOT_TOKEN]: { id: 'tok_hot', permissions: BENCH_PERMISSIONS } } });
if (cold) {
  const tokens = variants.length * (warmup + requests);
  for (let i = 0; i < tokens; i++) provider.setToken(`cold-${i}`, { id: `tok_${i}`, permissions: BENCH_PERMISSIONS });
}
try {
  const path = cold ? 'cold request (a token never sent before)' : 'cached request';
  console.log(`instructions per ${path} (callgrind; ${warmup} requests to warm up, ${requests} counted)`);
  const base = cold ? 'hand' : 'bare';
  console.log(`variant              JS thread  ${base} / this   V8 helper threads (compiler, GC)`);
  const counts = new Map<Variant, number>();
  for (const variant of variants) {
    const { main, helpers } = await instructionsPerRequest(variant, provider.url);
    counts.set(variant, main);
    const baseCount = counts.get(variant.replace(/-[a-z]+$/, `-${base}`) as Variant);
    const ratio = baseCount === undefined ? '' : (baseCount / main).toFixed(3);
    console.log(
      `${variant.padEnd(20)} ${figure(main).padStart(9)}  ${ratio.padStart(11)}   ${figure(helpers).padStart(9)}`,
    );
  }
} finally {
  await provider.close();
}
