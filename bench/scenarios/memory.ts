/** Scenario 5, memory: heap bytes per cached entry, measured (and printed) by bench/memory.ts in its own process. */
import { formatInt } from '../lib.js';
import type { MemoryResult } from '../memory.js';
import { runChild } from '../processes.js';
import type { Outcome } from '../report.js';
import { settings } from '../settings.js';

export async function runMemory(): Promise<Outcome> {
  console.log('\n## 5. Memory: 100,000 distinct cached tokens');
  const memory = await runChild<MemoryResult>(settings.serverCore, 'memory.ts', ['--expose-gc']);
  return {
    results: { memory },
    rows: [
      {
        scenario: '5. Memory',
        measure: `heap bytes per cached entry (${formatInt(memory.entries)} entries)`,
        result:
          `${memory.heapBytesPerEntry} B (plus ${memory.arrayBufferBytesPerEntry} B/entry of ArrayBuffers off the heap; ` +
          `RSS +${formatInt(memory.rssBytesPerEntry)} B/entry, ${formatInt(memory.rssAfter / 2 ** 20)} MiB in all; ` +
          `${memory.distinctPermissionLists} permission lists shared: ${memory.sharedPermissionLists ? 'yes' : 'no'})`,
        goal: '<= 300 B',
        met: memory.heapBytesPerEntry <= 300 && memory.sharedPermissionLists && memory.allCached,
      },
    ],
  };
}
