/**
 * CPU profile of one server variant under load: `npx tsx bench/profile.ts
 * [variant] [hot|cold|stampede|flood] [seconds]` (default `express-gate hot 8`).
 * The server runs on core 0, autocannon (or, for `stampede`, one burst of
 * 1,000 requests) on core 1; `flood` sends never-seen tokens from 200 connections to a mock taking 50 ms,
 * so that most are refused (run it on `express-flood` and `express-flood-floor`); after a 2 s warm-up the server records a CPU
 * profile through `node:inspector` (the format of `node --cpu-prof`, without
 * start-up and module loading). The profile lands in bench/profiles/ (open it
 * in Chrome DevTools); printed are tokengate's share of the CPU time, the busy
 * time split by where the code lives, and the functions with the most self time (with their µs per request).
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { BENCH_PERMISSIONS, HOT_TOKEN, type LoadConfig, STAMPEDE_LATENCY_MS, type Variant } from './lib.js';
import { nextMessage, pin, stop } from './processes.js';
import { type Bench, startServer, withBurst, withLoader } from './runs.js';
import { settings } from './settings.js';

const here = dirname(fileURLToPath(import.meta.url));
const variant = (process.argv[2] ?? 'express-gate') as Variant;
const mode = process.argv[3] ?? 'hot';
const seconds = Number(process.argv[4] ?? 8);
const profiles = join(here, 'profiles');
mkdirSync(profiles, { recursive: true });
/** Frames are labelled by their path inside the repository (or package, for node_modules). */
const repository = `${pathToFileURL(join(here, '..')).href}/`;

// The mock shares the load core with autocannon: the server's core does only the work being profiled.
pin(process.pid, settings.loadCore);

const provider = await mockOnlineOrNot({ tokens: { [HOT_TOKEN]: { id: 'tok_hot', permissions: BENCH_PERMISSIONS } } });
const COLD = 200_000;
/** The flood scenario's provider latency (bench/scenarios/flood.ts). */
const FLOOD_LATENCY_MS = 50;
if (mode === 'cold') {
  for (let i = 0; i < COLD; i++) provider.setToken(`cold-${i}`, { id: `tok_${i}`, permissions: BENCH_PERMISSIONS });
}
const bench: Bench = { provider, server: { providerUrl: provider.url, jwksUri: '', issuer: '', audience: '' } };
const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const server = await startServer(bench, variant, nodeFlags);
const profilePath = join(profiles, `${variant}-${mode}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);

/** Sends `type` to the server (`profile-start`, `profile-stop`) and waits for its `profiled`. */
async function profiler(type: string, path?: string): Promise<void> {
  const done = nextMessage(server.child, 'profiled');
  server.child.send({ type, path });
  await done;
}

/** Requests answered while the profile ran (hot and cold), for each function's self time per request. */
let requests: number | undefined;
try {
  await withLoader(async (loader) => {
    const flood = mode === 'flood';
    if (flood) provider.latency = FLOOD_LATENCY_MS;
    const load: LoadConfig = {
      url: server.url,
      connections: flood ? 200 : 32,
      duration: seconds,
      ...(mode === 'cold'
        ? { coldPrefix: 'cold-', coldLimit: COLD }
        : flood
          ? { coldPrefix: 'never-seen-', coldLimit: Number.MAX_SAFE_INTEGER }
          : { authorization: `Bearer ${HOT_TOKEN}` }),
    };
    await loader.run({ ...load, duration: 2 }); // warm-up, not profiled
    await profiler('profile-start');
    if (mode === 'stampede') {
      // 1,000 pre-connected sockets, one request each for a token the gate has not seen (none on the bare
      // route), the mock taking the stampede's latency.
      const token = 'stampede-token-0123456789';
      provider.setToken(token, { id: 'tok_stampede', permissions: BENCH_PERMISSIONS });
      provider.latency = STAMPEDE_LATENCY_MS;
      const burst = {
        url: server.url,
        connections: 1000,
        duration: 0,
        ...(variant.endsWith('bare') ? {} : { authorization: `Bearer ${token}` }),
      };
      const { latencyP50, latencyP99, requestsPerSecond, non2xx } = await withBurst(burst, (go) => go());
      console.log(
        `${variant} stampede: p50 ${latencyP50} ms, p99 ${latencyP99} ms, ${Math.round(requestsPerSecond)} req/s, non2xx ${non2xx}`,
      );
    } else {
      const result = await loader.run(load);
      requests = Math.round(result.requestsPerSecond * seconds);
      console.log(`${variant} ${mode}: ${Math.round(result.requestsPerSecond)} req/s, non2xx ${result.non2xx}`);
    }
    await profiler('profile-stop', profilePath);
  });
} finally {
  await stop(server.child);
  await provider.close();
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const profile = JSON.parse(readFileSync(profilePath, 'utf8')) as {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
};
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
const self = new Map<string, number>();
/** Self time by where the code lives, for the busy time's split (idle excluded). */
const byOrigin = new Map<string, number>();
let total = 0;
let underOurs = 0;
const ours = /\/(src|adapters)\/[^/]+(\/[^/]+)?\.[jt]s$/;
/** The frameworks' own packages and those they are built from. */
const FRAMEWORK_MODULES =
  /\/node_modules\/(express|router|koa|koa-compose|finalhandler|send|on-finished|delegates|fastify|find-my-way|fast-json-stringify|@fastify\/[^/]+)\//;
profile.samples.forEach((id, i) => {
  const delta = profile.timeDeltas[i] ?? 0;
  const node = byId.get(id);
  if (node === undefined) return;
  total += delta;
  const { functionName, url, lineNumber } = node.callFrame;
  const label = `${functionName || '(anonymous)'} ${url.replace(repository, '').replace(/^.*\/node_modules\//, '')}:${lineNumber + 1}`;
  self.set(label, (self.get(label) ?? 0) + delta);
  const origin = originOf(functionName, url);
  byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + delta);
  // The sample is tokengate's when the nearest frame from a file (not Node's internals, not native)
  // is ours: Express's own work called from our `next()` is not counted, our call into crypto is.
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const frameUrl = byId.get(at)?.callFrame.url ?? '';
    if (frameUrl === '' || frameUrl.startsWith('node:')) continue;
    if (ours.test(frameUrl)) underOurs += delta;
    break;
  }
});
console.log(`profile: ${profilePath}`);
console.log(
  `CPU time whose nearest non-internal frame is tokengate's (src/, adapters/): ${((100 * underOurs) / total).toFixed(1)}% of CPU time`,
);
const busy = total - (byOrigin.get('idle') ?? 0);
console.log(
  `busy CPU ${Math.round(busy / 1000)} ms, by where the code lives (self time): ${[...byOrigin.entries()]
    .filter(([origin]) => origin !== 'idle')
    .sort((a, b) => b[1] - a[1])
    .map(([origin, time]) => `${origin} ${((100 * time) / busy).toFixed(1)}%`)
    .join(', ')}`,
);
// Beside each share, the self time per request (µs, sampled: the profiler's own cost included), which compares
// across variants as shares of differently busy servers do not.
for (const [label, time] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
  const perRequest = requests === undefined ? '' : `${(time / requests).toFixed(2).padStart(7)} µs/req  `;
  console.log(`${((100 * time) / total).toFixed(2).padStart(6)}%  ${perRequest}${label}`);
}

/** Where a sampled function lives: Node's HTTP code, its sockets and streams, native code, GC, a package, or ours. */
function originOf(functionName: string, url: string): string {
  if (functionName === '(idle)') return 'idle';
  if (functionName === '(garbage collector)') return 'GC';
  if (url === '') return 'native (accept, writev, timers, ...)';
  if (/^node:(_http|internal\/http)/.test(url)) return "Node's HTTP code";
  if (/^node:(net|stream|internal\/(streams|stream_base))/.test(url)) return 'sockets and streams';
  if (url.startsWith('node:')) return 'other Node internals';
  if (ours.test(url)) return 'tokengate';
  if (FRAMEWORK_MODULES.test(url)) return 'framework (express, router, koa, fastify)';
  return 'other JavaScript';
}
