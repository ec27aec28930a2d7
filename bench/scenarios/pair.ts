/**
 * `BENCH_PAIR=a,b`: one side-by-side comparison of two variants under the hot path's load, to check one
 * change. Prints the ratio b / a, and its median per start of the servers; gives the table no row.
 * `a` and `b` may be the same variant: two servers of the same code show what the method itself spreads by.
 */
import { median, round, SPIN_MICROS, type Variant } from '../lib.js';
import { compared, type Outcome, ratio, ratioResult } from '../report.js';
import { type Bench, sideBySideRuns } from '../runs.js';
import { settings } from '../settings.js';
import { sideBySideHotLoad } from './hot.js';

/** The median of each start's per-run ratios: how far one start of the servers moves the result. */
function byStart(perRound: readonly number[], roundsPerStart: number): number[] {
  const medians: number[] = [];
  for (let first = 0; first < perRound.length; first += roundsPerStart) {
    medians.push(round(median(perRound.slice(first, first + roundsPerStart)), 3));
  }
  return medians;
}

export async function runPair(bench: Bench, [a, b]: readonly [Variant, Variant]): Promise<Outcome> {
  const [first = [], second = []] = await sideBySideRuns(
    bench,
    `${b} / ${a}`,
    [a, b],
    sideBySideHotLoad,
    settings.hotRounds,
    settings.hotRoundsPerStart,
  );
  const starts = byStart(ratio(second, first).perRound, settings.hotRoundsPerStart);
  console.log(`\n${b} / ${a}, side by side: ${ratioResult(second, first)}`);
  console.log(`median by start of the servers: ${starts.join(', ')}`);
  if (a === 'express-bare' && b === 'express-spin') {
    // What an unbiased method reads for the spin's cost: bare's CPU per request over bare's plus the spin's time in
    // the same run (calibrated to SPIN_MICROS alone, it takes what the machine's speed in the run makes of it).
    const bare = median(first.map((run) => run.serverCpuMicrosPerRequest));
    const spun = median(second.map((run) => run.spinMicros ?? Number.NaN));
    console.log(
      `the spin (${SPIN_MICROS} µs alone) took ${round(spun, 1)} µs per request in the runs, bare ${round(bare, 1)} µs of CPU: an unbiased reading is ${round(bare / (bare + spun), 3)}`,
    );
  }
  const [nameA, nameB] = a === b ? [`${a} (first)`, `${b} (second)`] : [a, b];
  return { rows: [], results: { pair: { ...compared([nameB, second], [nameA, first]), byStart: starts } } };
}
