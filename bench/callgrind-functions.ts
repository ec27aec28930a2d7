/**
 * Reads one callgrind dump that `BENCH_CG_KEEP=1 bench/instructions.ts` kept, per counted request:
 * `npx tsx bench/callgrind-functions.ts <dump> <requests> [pattern]`.
 *
 * - the garbage collections that fell within the counted requests, and their instructions;
 * - for each function whose name matches `pattern` (a regular expression), its own instructions and
 *   those of each function it calls, callees included.
 *
 * Optimised JavaScript has no name in the dump, only an address. Run the server with
 * `NODE_OPTIONS=--perf-basic-prof` (`NODE_OPTIONS=--perf-basic-prof BENCH_CG_KEEP=1 npx tsx
 * bench/instructions.ts fastify-gate`) and Node writes `/tmp/perf-<pid>.map`, from which addresses are
 * named (`JS:*authenticateNow file:///…/gate.js:…`).
 */
import { existsSync, readFileSync } from 'node:fs';

const [dumpPath, requestsText, patternText] = process.argv.slice(2);
if (dumpPath === undefined || requestsText === undefined) {
  throw new Error('usage: npx tsx bench/callgrind-functions.ts <callgrind dump> <requests counted> [pattern]');
}
const requests = Number(requestsText);
const pattern = patternText === undefined ? undefined : new RegExp(patternText);
const dump = readFileSync(dumpPath, 'utf8').split('\n');

/** JIT code ranges from Node's perf map, when there is one. */
const pid = dump.find((line) => line.startsWith('pid:'))?.split(/\s+/)[1];
const mapPath = `/tmp/perf-${pid}.map`;
const ranges = existsSync(mapPath)
  ? readFileSync(mapPath, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [start = '0', size = '0', ...name] = line.split(' ');
        return {
          start: Number.parseInt(start, 16),
          end: Number.parseInt(start, 16) + Number.parseInt(size, 16),
          name: name.join(' '),
        };
      })
      .sort((a, b) => a.start - b.start)
  : [];

/** A dump's function name, or the JavaScript function at its address. */
function named(raw: string): string {
  if (!raw.startsWith('0x')) return raw;
  const address = Number.parseInt(raw.split("'")[0] as string, 16);
  let low = 0;
  let high = ranges.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const range = ranges[middle] as (typeof ranges)[number];
    if (address < range.start) high = middle - 1;
    else if (address >= range.end) low = middle + 1;
    else return range.name.replace(/,0x[0-9a-f]+/, '');
  }
  return raw;
}

const names = new Map<string, string>();
/** `fn=(id) name` names an id the first time; later lines give the id alone. */
function idName(line: string, prefix: string): string {
  const match = new RegExp(`^${prefix}=\\((\\d+)\\)(?: (.*))?$`).exec(line);
  if (match === null) return '';
  if (match[2] !== undefined) names.set(match[1] as string, named(match[2]));
  return names.get(match[1] as string) ?? (match[1] as string);
}

let collections = 0;
let collecting = 0;
const own = new Map<string, number>();
const callees = new Map<string, Map<string, number>>();
let caller = '';
let callee = '';
for (let i = 0; i < dump.length; i++) {
  const line = dump[i] as string;
  if (line.startsWith('fn=')) caller = idName(line, 'fn');
  else if (line.startsWith('cfn=')) callee = idName(line, 'cfn');
  else if (line.startsWith('calls=')) {
    const calls = Number(line.slice(6).split(/\s+/)[0]);
    const cost = Number((dump[++i] as string).split(/\s+/)[1]);
    if (/(Scavenger|MarkCompact)Collector::CollectGarbage/.test(callee)) {
      collections += calls;
      collecting += cost;
    }
    if (pattern?.test(caller) === true) {
      const of = callees.get(caller) ?? new Map<string, number>();
      of.set(callee, (of.get(callee) ?? 0) + cost);
      callees.set(caller, of);
    }
  } else if (/^[0-9+*-]/.test(line) && pattern?.test(caller) === true) {
    own.set(caller, (own.get(caller) ?? 0) + Number(line.split(/\s+/)[1] ?? 0));
  }
}

const perRequest = (count: number) => Math.round(count / requests).toLocaleString('en-US');
console.log(`garbage collections: ${collections}, ${perRequest(collecting)} instructions per request`);
for (const [name, cost] of own) {
  console.log(`\n${name}: ${perRequest(cost)} instructions of its own per request; it calls`);
  const sorted = [...(callees.get(name) ?? new Map<string, number>())].sort((a, b) => b[1] - a[1]);
  for (const [called, inclusive] of sorted.slice(0, 10))
    console.log(`  ${perRequest(inclusive).padStart(8)}  ${called}`);
}
