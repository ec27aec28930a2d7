/**
 * Scenario 5: heap bytes per cached entry. Fills a gate's cache with
 * 100,000 distinct tokens whose provider answers look like OnlineOrNot's
 * (a token id, one of a few realistic permission lists parsed fresh from
 * JSON each time, details `{ id, status }`), then divides the heap growth
 * after full GCs by the number of entries. The growth is measured from
 * before the gate exists, so the cache's own preallocation counts too.
 * Run with --expose-gc (bench/run.ts does).
 */
import { type AuthContext, createGate, extractBearer, type Provider, type Verdict } from '../src/index.js';

export interface MemoryResult {
  readonly entries: number;
  readonly heapBytesPerEntry: number;
  /** Of which: what the gate holds before the first entry (cache preallocation), per entry. */
  readonly emptyGateBytesPerEntry: number;
  readonly rssBytesPerEntry: number;
  /** Off the V8 heap, not in `heapBytesPerEntry`: ArrayBuffers (lru-cache keeps its TTLs and links in typed arrays). */
  readonly arrayBufferBytesPerEntry: number;
  readonly heapUsedBefore: number;
  readonly heapUsedAfter: number;
  readonly rssBefore: number;
  readonly rssAfter: number;
  /** Every entry answered from the cache when asked again (none was evicted). */
  readonly allCached: boolean;
  /** Contexts with the same permission list share one array. */
  readonly sharedPermissionLists: boolean;
  readonly distinctPermissionLists: number;
}

const ENTRIES = Number(process.env.BENCH_MEMORY_ENTRIES ?? 100_000);

// A few roles, as an API's tokens have: many tokens, few distinct lists.
const ROLES: readonly (readonly string[])[] = [
  ['monitors:read', 'incidents:read', 'status_pages:read'],
  ['monitors:read', 'monitors:write', 'incidents:read', 'incidents:write', 'status_pages:read', 'heartbeats:read'],
  [
    'monitors:read',
    'monitors:write',
    'incidents:read',
    'incidents:write',
    'status_pages:read',
    'status_pages:write',
    'heartbeats:read',
    'heartbeats:write',
    'users:read',
    'billing:read',
  ],
  ['heartbeats:write'],
  ['monitors:read', 'status_pages:read'],
];
const ROLE_JSON = ROLES.map((role) => JSON.stringify({ permissions: role }));

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

function fullGc(): void {
  for (let i = 0; i < 4; i++) gc?.();
}

/** A 40-character opaque token, as providers issue them. */
function token(i: number): string {
  return `oon_${i.toString(36).padStart(8, '0')}${'x'.repeat(28)}`;
}

/** Answers like the OnlineOrNot provider: fresh strings and arrays from JSON, details `{ id, status }`. */
const provider: Provider = {
  name: 'onlineornot',
  cacheScope: JSON.stringify(['onlineornot', 'onlineornot', 'https://api.onlineornot.com/']),
  extract: extractBearer,
  // It answers in process: a whole batch of the fill is admitted at once.
  concurrency: 1000,
  async verify(credential): Promise<Verdict> {
    const n = Number.parseInt(credential.secret.slice(4, 12), 36);
    const verify = JSON.parse(`{"id":"tok_${n.toString(16).padStart(16, '0')}","status":"active"}`) as { id: string };
    const { permissions } = JSON.parse(ROLE_JSON[n % ROLE_JSON.length] as string) as { permissions: string[] };
    // Frozen, as onlineOrNot() freezes its own: the gate keeps frozen plain data as it is.
    const details = Object.freeze({ id: verify.id, status: 'active' });
    return { ok: true, principal: { subject: verify.id, permissions, details } };
  },
};

async function fill(gate: ReturnType<typeof createGate>, keep: AuthContext[]): Promise<void> {
  const batch = 1000;
  for (let start = 0; start < ENTRIES; start += batch) {
    const pending: Promise<AuthContext>[] = [];
    for (let i = start; i < Math.min(ENTRIES, start + batch); i++) {
      pending.push(gate.authenticate({ headers: { authorization: `Bearer ${token(i)}` } }));
    }
    const contexts = await Promise.all(pending);
    // Keep one context per role to check sharing; the cache holds them anyway.
    if (start === 0) keep.push(...contexts.slice(0, ROLES.length * 2));
  }
}

fullGc();
const before = process.memoryUsage();
const gate = createGate({ providers: [provider], cache: { max: ENTRIES, ttl: 3_600_000 } });
fullGc();
const empty = process.memoryUsage();
const kept: AuthContext[] = [];
await fill(gate, kept);
fullGc();
const after = process.memoryUsage();

// Ask again: every token must be a hit, or the figure is not per cached entry.
const hitsBefore = gate.stats().hits;
for (let i = 0; i < ENTRIES; i++) await gate.authenticate({ headers: { authorization: `Bearer ${token(i)}` } });
const allCached = gate.stats().hits - hitsBefore === ENTRIES && gate.stats().misses === ENTRIES;
const lists = new Set(kept.map((context) => context.permissions));
const sharedPermissionLists =
  lists.size === ROLES.length && kept.every((c, i) => c.permissions === kept[i % ROLES.length]?.permissions);

const result: MemoryResult = {
  entries: ENTRIES,
  heapBytesPerEntry: Math.round((after.heapUsed - before.heapUsed) / ENTRIES),
  emptyGateBytesPerEntry: Math.round((empty.heapUsed - before.heapUsed) / ENTRIES),
  rssBytesPerEntry: Math.round((after.rss - before.rss) / ENTRIES),
  arrayBufferBytesPerEntry: Math.round((after.arrayBuffers - before.arrayBuffers) / ENTRIES),
  heapUsedBefore: before.heapUsed,
  heapUsedAfter: after.heapUsed,
  rssBefore: before.rss,
  rssAfter: after.rss,
  allCached,
  sharedPermissionLists,
  distinctPermissionLists: lists.size,
};
console.log(JSON.stringify(result, null, 2));
process.send?.({ type: 'result', result });
await gate.close();
process.disconnect?.();
