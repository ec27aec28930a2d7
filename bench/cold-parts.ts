/**
 * Where a cold verification's time goes, without a web framework in the way:
 * `npx tsx bench/cold-parts.ts [rounds]`. This process (compiled, pinned to
 * core 0) runs 32 concurrent loops (`BENCH_COLD_PARTS_LOOPS`) of one variant at a time, a new token per
 * call, against the OnlineOrNot mock in a child process on core 1, and prints
 * the median CPU time per call of each variant over alternating rounds:
 *
 * - `hand`: the hand-written middleware's lookup of the cold-path scenario
 *   (bench/hand-written.ts: both endpoints through an undici pool, `body.json()`);
 * - `provider`: `onlineOrNot().verify()` with a fresh AbortSignal (deadline
 *   signal, size cap, content-type check, zod on both answers);
 * - `gate, cache.max 1`: `gate.authenticate()` whose cache keeps one entry
 *   (the gate's own work: key, single flight, deadline, context);
 * - `gate`: the default gate, whose cache keeps every answer (10,000);
 * - with `BENCH_COLD_PARTS_BASE=<another checkout of this repository>` (its `node_modules` installed or linked):
 *   `base gate, cache.max 1`, that checkout's code compiled the same way and run in this process beside this one's,
 *   so that two commits' cold paths are compared within seconds of each other; printed also is the median over
 *   rounds of base / this, CPU per call.
 */
import { execFileSync, fork } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { compiled, compileTree } from './compile.js';
import { handWrittenLookup } from './hand-written.js';
import { BENCH_PERMISSIONS, median, round } from './lib.js';
import { pin } from './processes.js';

/** Rounds after the warm-up (the first argument). */
const ROUNDS = Number(process.argv[2] ?? 8);
/** Cold tokens the mock knows: enough for 20,000 calls per variant a second, warm-up included. */
const TOKENS = (ROUNDS + 1) * (process.env.BENCH_COLD_PARTS_BASE === undefined ? 4 : 5) * 20_000;
/** Concurrent loops per variant (`BENCH_COLD_PARTS_LOOPS`, default 32). */
const LOOPS = Number(process.env.BENCH_COLD_PARTS_LOOPS ?? 32);
/** Another checkout whose gate runs beside this one's (`BENCH_COLD_PARTS_BASE`). */
const BASE = process.env.BENCH_COLD_PARTS_BASE;

if (process.env.BENCH_COLD_PARTS_MOCK === '1') {
  // The child: the mock, on core 1.
  const { mockOnlineOrNot } = await import('../src/testing/index.js');
  const mock = await mockOnlineOrNot({ tokens: {} });
  for (let i = 0; i < TOKENS; i++) mock.setToken(`cold-${i}`, { id: `tok_${i}`, permissions: BENCH_PERMISSIONS });
  process.send?.({ url: mock.url });
} else if (process.env.BENCH_COLD_PARTS_RUN !== '1') {
  // Launcher (under tsx): run the compiled copy of this file pinned to core 0.
  const self = compiled('cold-parts.ts');
  if (BASE !== undefined) compileTree(BASE);
  execFileSync('taskset', ['-c', '0', process.execPath, self, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, BENCH_COLD_PARTS_RUN: '1' },
  });
} else {
  const { createGate, onlineOrNot } = await import('../src/index.js');
  const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, BENCH_COLD_PARTS_MOCK: '1' } });
  pin(child.pid as number, '1');
  const { url } = await new Promise<{ url: string }>((resolve) => child.once('message', resolve as never));
  const provider = onlineOrNot({ baseUrl: url });
  const gate = createGate({ providers: [onlineOrNot({ baseUrl: url })] });
  const smallGate = createGate({ providers: [onlineOrNot({ baseUrl: url })], cache: { max: 1 } });
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  const variants: Record<string, (token: string) => Promise<unknown>> = {
    hand: handWrittenLookup(url),
    provider: (token) =>
      provider.verify({ source: 'header:authorization', secret: token }, new AbortController().signal),
    'gate, cache.max 1': (token) => smallGate.authenticate(bearer(token)),
    gate: (token) => gate.authenticate(bearer(token)),
  };
  let baseGate: { close(): Promise<void> } | undefined;
  if (BASE !== undefined) {
    const base = (await import(
      pathToFileURL(join(BASE, 'bench', '.build', 'src', 'index.js')).href
    )) as typeof import('../src/index.js');
    const made = base.createGate({ providers: [base.onlineOrNot({ baseUrl: url })], cache: { max: 1 } });
    baseGate = made;
    variants['base gate, cache.max 1'] = (token) => made.authenticate(bearer(token));
  }

  let next = 0;
  /** Kernel CPU µs per call of each sample of `cpuPerCall`, by variant, in the same order. */
  const kernel: Record<string, number[]> = {};
  /** CPU µs per call of `call` over `ms` of LOOPS concurrent loops (its kernel share kept under `name`). */
  async function cpuPerCall(call: (token: string) => Promise<unknown>, ms: number, name?: string): Promise<number> {
    const end = performance.now() + ms;
    let calls = 0;
    const start = process.cpuUsage();
    await Promise.all(
      Array.from({ length: LOOPS }, async () => {
        while (performance.now() < end) {
          if (next >= TOKENS) throw new Error('ran out of cold tokens: fewer rounds');
          await call(`cold-${next++}`);
          calls++;
        }
      }),
    );
    const used = process.cpuUsage(start);
    if (name !== undefined) (kernel[name] ??= []).push(used.system / calls);
    return (used.user + used.system) / calls;
  }

  const names = Object.keys(variants);
  for (const name of names) await cpuPerCall(variants[name] as (token: string) => Promise<unknown>, 1000); // warm-up
  const samples: Record<string, number[]> = Object.fromEntries(names.map((name) => [name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 === 0 ? names : [...names].reverse()) {
      samples[name]?.push(await cpuPerCall(variants[name] as (token: string) => Promise<unknown>, 1000, name));
    }
  }
  for (const name of names) {
    const values = samples[name] ?? [];
    console.log(
      `${name.padEnd(18)} ${round(median(values), 1).toFixed(1).padStart(7)} µs CPU per call, ${round(median(kernel[name] ?? []), 1).toFixed(1)} of it in the kernel (rounds ${values.map((v) => round(v)).join(', ')})`,
    );
  }
  const [base, own] = [samples['base gate, cache.max 1'], samples['gate, cache.max 1']];
  if (base !== undefined && own !== undefined) {
    const ratios = base.map((value, i) => value / (own[i] as number));
    console.log(`base / this (gate, cache.max 1), median of per-round ratios: ${round(median(ratios), 3)}`);
  }
  await Promise.all([provider.close?.(), gate.close(), smallGate.close(), baseGate?.close()]);
  child.kill();
}
