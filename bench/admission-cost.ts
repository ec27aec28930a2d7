/**
 * What one step of the cold verifications' admission costs as its wait deepens: `npx tsx bench/admission-cost.ts`.
 * For each depth of a full wait, the CPU time per newcomer refused (a flood from blocks of their own, one waiter each
 * in `depth` IPv4 /24s), and per wait ended unserved (`depth` waiters of one address whose timeouts pass in turn, one
 * from the middle first). A step that searches the wait, or moves the waiters behind, grows with the depth; one kept
 * in rankings and slotted queues stays flat. Then the common path: 16 slots and 32 requests at once (half of them wait,
 * as in the cold-path scenario), from 1, 4 or 64 clients, CPU per request. Least of five rounds; run it pinned
 * (`taskset -c 0`) for steadier figures.
 */
import { Admission, type Waiting } from '../src/admission.js';
import { clientBlockOf } from '../src/client-key.js';

const DEPTHS = [64, 4096, 50_000];

function waiting(slot: 'admitted' | 'full' | Waiting): Waiting {
  if (typeof slot !== 'object') throw new Error(`expected to wait, got ${slot}`);
  return slot;
}

/** Microseconds of CPU per newcomer refused at a full wait of `depth`, one waiter per /24. */
function refusing(depth: number): number {
  let least = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 5; round++) {
    const admission = new Admission(1, depth, clientBlockOf);
    admission.acquire(() => '10.0.0.1');
    let n = 0;
    const next = () => {
      n++;
      return `${10 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}.1`;
    };
    for (let i = 0; i < depth; i++) waiting(admission.acquire(next));
    const started = process.cpuUsage();
    for (let i = 0; i < 1000; i++) if (admission.acquire(next) !== 'full') throw new Error('not refused');
    const spent = process.cpuUsage(started);
    least = Math.min(least, (spent.user + spent.system) / 1000);
    admission.close();
  }
  return least;
}

/** Microseconds of CPU per wait ended unserved, of one address's `depth` waiters, oldest first. */
function expiring(depth: number): number {
  let least = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 5; round++) {
    const admission = new Admission(1, depth);
    admission.acquire(() => 'a');
    const waits = Array.from({ length: depth }, () => waiting(admission.acquire(() => 'a')));
    const started = process.cpuUsage();
    admission.expire(waits[depth >> 1] as Waiting);
    for (const wait of waits) admission.expire(wait);
    const spent = process.cpuUsage(started);
    least = Math.min(least, (spent.user + spent.system) / depth);
  }
  return least;
}

/** Microseconds of CPU per request through 16 slots, 32 requests at once from `clients` addresses, acquired then released. */
function common(clients: number): number {
  let least = Number.POSITIVE_INFINITY;
  let n = 0;
  for (let round = 0; round < 5; round++) {
    const admission = new Admission(16, 64, clientBlockOf);
    const started = process.cpuUsage();
    for (let burst = 0; burst < 20_000; burst++) {
      for (let i = 0; i < 32; i++) {
        const address = `10.0.${n % clients}.1`;
        n++;
        admission.acquire(() => address);
      }
      for (let i = 0; i < 32; i++) admission.release();
    }
    const spent = process.cpuUsage(started);
    least = Math.min(least, (spent.user + spent.system) / (20_000 * 32));
  }
  return least;
}

refusing(64);
expiring(1000);
common(4);
console.log('depth of the full wait   µs CPU per newcomer refused   µs CPU per wait ended unserved');
for (const depth of DEPTHS) {
  const refused = refusing(depth).toFixed(2);
  const expired = expiring(depth).toFixed(2);
  console.log(`${String(depth).padStart(22)}   ${refused.padStart(27)}   ${expired.padStart(30)}`);
}
console.log('common path, 16 slots, 32 requests at once: µs CPU per request');
for (const clients of [1, 4, 64]) console.log(`${String(clients).padStart(3)} clients: ${common(clients).toFixed(3)}`);
