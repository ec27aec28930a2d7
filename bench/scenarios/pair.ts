/**
 * `BENCH_PAIR=a,b`: one side-by-side comparison of two variants under the hot path's load, to check one
 * change. Prints the ratio b / a; gives the table no row.
 */
import type { Variant } from '../lib.js';
import { compared, type Outcome, ratioResult } from '../report.js';
import type { Bench } from '../runs.js';
import { hotSideBySide } from './hot.js';

export async function runPair(bench: Bench, [a, b]: readonly [Variant, Variant]): Promise<Outcome> {
  const runs = await hotSideBySide(bench, `${b} / ${a}`, [a, b]);
  console.log(`\n${b} / ${a}, side by side: ${ratioResult(runs[b], runs[a])}`);
  return { rows: [], results: { pair: compared([b, runs[b]], [a, runs[a]]) } };
}
