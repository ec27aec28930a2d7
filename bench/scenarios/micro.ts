/**
 * Scenario 6, micro: ns per cached `gate.authenticate()` and its parts, measured (and printed) by
 * bench/micro.ts in its own process.
 */
import type { MicroResult } from '../micro.js';
import { runChild } from '../processes.js';
import type { Outcome } from '../report.js';
import { settings } from '../settings.js';

export async function runMicro(): Promise<Outcome> {
  console.log('\n## 6. Micro: cached gate.authenticate()');
  const micro = await runChild<MicroResult>(settings.serverCore, 'micro.ts');
  const headline = micro.tasks.find((task) => task.name === micro.headline);
  return {
    results: { micro },
    rows: [
      {
        scenario: '6. Micro',
        measure: 'ns per cached gate.authenticate()',
        result: `${headline === undefined ? 'n/a' : headline.nsPerOp.toFixed(0)} ns`,
        goal: '(find what to cut)',
        met: undefined,
      },
    ],
  };
}
