/**
 * The verdict store: expiry rules, single flight, and its shared tier
 * contract (a failing, slow or garbage-answering tier is a miss, never a pass).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { AuthContext } from '../src/context.js';
import { Accepted, cacheKey, type Flight, Rejection, VerdictStore } from '../src/store.js';
import type { Principal } from '../src/types.js';
import { MemoryTier } from './support/memory-tier.js';

const ORIGIN = Object.freeze({ provider: 'p', realm: 'api' });
const KEY = cacheKey('scope', 'SECRETstoreToken');
const PRINCIPAL: Principal = { subject: 'user-1', permissions: ['read'], details: { id: 'user-1' } };

/** Loads `key` through the store, answering with `principal` (or a rejection) when asked upstream. */
async function load(store: VerdictStore, answer: Principal | string, key = KEY) {
  let fetched = 0;
  const { promise, joined } = store.load(key, ORIGIN, async (flight: Flight) => {
    fetched++;
    return typeof answer === 'string' ? store.reject(flight, answer) : store.accept(flight, answer);
  });
  return { outcome: await promise, fetched, joined };
}

describe('VerdictStore: expiry rules', () => {
  it('keeps an accepted credential fresh for ttl, then drops it', async () => {
    const store = new VerdictStore({ ttl: 1000 });
    await load(store, PRINCIPAL);
    const now = performance.now();
    const entry = store.get(KEY, now);
    expect(entry).toBeInstanceOf(Accepted);
    expect((entry as Accepted).freshUntil - now).toBeGreaterThan(900);
    expect((entry as Accepted).freshUntil - now).toBeLessThanOrEqual(1000);
    expect(store.get(KEY, now + 1001)).toBeUndefined();
  });

  it('never keeps a context past the credential expiry, and refuses one already expired', async () => {
    const store = new VerdictStore({ ttl: 60_000, staleIfError: 60_000 });
    await load(store, { ...PRINCIPAL, expiresAt: new Date(Date.now() + 2000) });
    const entry = store.get(KEY, performance.now()) as Accepted;
    expect(entry.until - performance.now()).toBeLessThanOrEqual(2000);
    const expired = await load(store, { ...PRINCIPAL, expiresAt: new Date(Date.now() - 1) }, 'other-key');
    expect(expired.outcome).toBeInstanceOf(Rejection);
    expect((expired.outcome as Rejection).reason).toBe('The access token has expired');
  });

  it('keeps a context staleIfError past its ttl, fresh only until ttl', async () => {
    const store = new VerdictStore({ ttl: 1000, staleIfError: 5000 });
    await load(store, PRINCIPAL);
    const entry = store.get(KEY, performance.now()) as Accepted;
    expect(entry.until - entry.freshUntil).toBe(5000);
  });

  it('remembers a rejection negativeTtl, and none at all with negativeTtl 0', async () => {
    const store = new VerdictStore({ negativeTtl: 300 });
    await load(store, 'The access token is invalid');
    const now = performance.now();
    expect(store.get(KEY, now)).toBeInstanceOf(Rejection);
    expect(store.get(KEY, now + 301)).toBeUndefined();
    const none = new VerdictStore({ negativeTtl: 0 });
    await load(none, 'The access token is invalid');
    expect(none.get(KEY, performance.now())).toBeUndefined();
  });

  it('shares one interned permission list between contexts with the same permissions', async () => {
    const store = new VerdictStore();
    const a = (await load(store, PRINCIPAL, 'a')).outcome as AuthContext;
    const b = (await load(store, { ...PRINCIPAL, permissions: ['read'] }, 'b')).outcome as AuthContext;
    expect(a.permissions).toBe(b.permissions);
  });

  it('interns every list, not only the last: lists that alternate keep theirs, one name off is another list', async () => {
    const store = new VerdictStore();
    const contextOf = async (permissions: string[], key: string) =>
      (await load(store, { ...PRINCIPAL, permissions }, key)).outcome as AuthContext;
    const writer = await contextOf(['read', 'write'], 'w1');
    const reader = await contextOf(['read'], 'r1');
    const writerAgain = await contextOf(['read', 'write'], 'w2');
    const almost = await contextOf(['read', 'writ'], 'x1');
    const longer = await contextOf(['read', 'write', 'admin'], 'x2');
    expect(writerAgain.permissions).toBe(writer.permissions);
    expect(reader.permissions).not.toBe(writer.permissions);
    expect(almost.permissions).toEqual(['read', 'writ']);
    expect(longer.permissions).toEqual(['read', 'write', 'admin']);
    expect(almost.can('write') || longer.can('nothing')).toBe(false);
    expect(longer.can('admin') && writerAgain.can('write')).toBe(true);
  });
});

describe('VerdictStore: long permission lists', () => {
  /** About 63,000 characters of group names, different for each `n` from the first name on. */
  const groups = (n: number) => Array.from({ length: 700 }, (_, i) => `group-${n}-${String(i).padStart(80, '0')}`);

  it('shares identical long lists, as it shares short ones', async () => {
    const store = new VerdictStore();
    const a = (await load(store, { ...PRINCIPAL, permissions: groups(1) }, 'a')).outcome as AuthContext;
    await load(store, PRINCIPAL, 'between');
    const b = (await load(store, { ...PRINCIPAL, permissions: groups(1) }, 'b')).outcome as AuthContext;
    const c = (await load(store, { ...PRINCIPAL, permissions: groups(2) }, 'c')).outcome as AuthContext;
    expect(b.permissions).toBe(a.permissions);
    expect(c.permissions).not.toBe(a.permissions);
    expect(c.can(`group-2-${'0'.repeat(80)}`) && !c.can(`group-1-${'0'.repeat(80)}`)).toBe(true);
  });

  it('forgets a list no context holds once others take its room: lists kept are bounded by size, not only by count', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const store = new VerdictStore({ max: 10 });
    let first: AuthContext | undefined = (await load(store, { ...PRINCIPAL, permissions: groups(0) }, 'k0'))
      .outcome as AuthContext;
    const list = new WeakRef(first.permissions);
    first = undefined;
    // 80 lists of 63,000 characters: about 5 million characters, which 4,096 lists of any length let the table keep.
    for (let n = 1; n <= 80; n++) await load(store, { ...PRINCIPAL, permissions: groups(n) }, `k${n}`);
    store.clear();
    await new Promise((resolve) => setImmediate(resolve));
    gc();
    expect(list.deref()).toBeUndefined();
  });
});

describe('VerdictStore: rejections in a space of their own', () => {
  it('a flood of rejections evicts other rejections, never an accepted credential', async () => {
    const store = new VerdictStore({ max: 50, negativeMax: 10 });
    for (let i = 0; i < 20; i++) await load(store, PRINCIPAL, `good-${i}`);
    for (let i = 0; i < 5000; i++) await load(store, 'The access token is invalid', `random-${i}`);
    const now = performance.now();
    for (let i = 0; i < 20; i++) expect(store.get(`good-${i}`, now)).toBeInstanceOf(Accepted);
    expect(store.get('random-4999', now)).toBeInstanceOf(Rejection);
    expect(store.get('random-0', now)).toBeUndefined();
  });

  it('keeps a tenth of max for rejections by default', async () => {
    const store = new VerdictStore({ max: 100 });
    for (let i = 0; i < 11; i++) await load(store, 'The access token is invalid', `random-${i}`);
    expect(store.get('random-0', performance.now())).toBeUndefined();
    expect(store.get('random-10', performance.now())).toBeInstanceOf(Rejection);
  });

  it('a rejection replaces what was accepted for the key, stale copy included', async () => {
    const store = new VerdictStore({ ttl: 1, staleIfError: 60_000 });
    await load(store, PRINCIPAL);
    expect(store.get(KEY, performance.now())).toBeInstanceOf(Accepted);
    await load(store, 'The access token was revoked');
    expect(store.get(KEY, performance.now())).toBeInstanceOf(Rejection);
    const none = new VerdictStore({ ttl: 1, staleIfError: 60_000, negativeTtl: 0 });
    await load(none, PRINCIPAL);
    await load(none, 'The access token was revoked');
    expect(none.get(KEY, performance.now())).toBeUndefined();
  });

  it('a flood of rejections leaves the generation alone (remembered contexts stay usable)', async () => {
    const store = new VerdictStore({ max: 10, negativeMax: 2 });
    await load(store, PRINCIPAL);
    const generation = store.generation;
    for (let i = 0; i < 100; i++) await load(store, 'The access token is invalid', `random-${i}`);
    expect(store.generation).toBe(generation);
  });

  it('delete forgets accepted and rejected entries alike', async () => {
    const store = new VerdictStore();
    await load(store, PRINCIPAL, 'a');
    await load(store, 'The access token is invalid', 'b');
    expect([store.delete('a', ORIGIN), store.delete('b', ORIGIN), store.delete('c', ORIGIN)]).toEqual([
      true,
      true,
      false,
    ]);
    expect(store.get('a', performance.now())).toBeUndefined();
    expect(store.get('b', performance.now())).toBeUndefined();
  });
});

describe('VerdictStore: single flight', () => {
  it('runs one load per key at a time; later callers join it', async () => {
    const store = new VerdictStore();
    let fetched = 0;
    const slow = (flight: Flight) =>
      sleep(20).then(() => {
        fetched++;
        return store.accept(flight, PRINCIPAL);
      });
    const first = store.load(KEY, ORIGIN, slow);
    const second = store.load(KEY, ORIGIN, slow);
    expect([first.joined, second.joined]).toEqual([false, true]);
    expect(await second.promise).toBe(await first.promise);
    expect(fetched).toBe(1);
  });

  it('does not store the answer of a load whose key was deleted meanwhile', async () => {
    const store = new VerdictStore();
    const { promise } = store.load(KEY, ORIGIN, (flight) => sleep(20).then(() => store.accept(flight, PRINCIPAL)));
    expect(store.delete(KEY, ORIGIN)).toBe(true);
    expect(await promise).toBeInstanceOf(AuthContext);
    expect(store.get(KEY, performance.now())).toBeUndefined();
  });

  it('moves its generation on whenever an entry leaves', async () => {
    const store = new VerdictStore({ max: 1 });
    await load(store, PRINCIPAL, 'a');
    const before = store.generation;
    await load(store, PRINCIPAL, 'b'); // evicts a
    expect(store.generation).toBeGreaterThan(before);
    const after = store.generation;
    store.delete('b', ORIGIN);
    expect(store.generation).toBeGreaterThan(after);
  });
});

describe('VerdictStore: shared tier', () => {
  it('answers a second instance from the shared tier: one upstream call for both', async () => {
    const tier = new MemoryTier();
    const one = new VerdictStore({}, tier);
    const two = new VerdictStore({}, tier);
    expect((await load(one, PRINCIPAL)).fetched).toBe(1);
    const second = await load(two, PRINCIPAL);
    expect(second.fetched).toBe(0);
    expect(second.outcome).toBeInstanceOf(AuthContext);
    expect((second.outcome as AuthContext).subject).toBe('user-1');
    expect(two.get(KEY, performance.now())).toBeInstanceOf(Accepted);
  });

  it("trusts a shared acceptance at most its own ttl from the provider's answer, whatever the writer's ttl", async () => {
    const tier = new MemoryTier();
    await load(new VerdictStore({ ttl: 60_000 }, tier), PRINCIPAL);
    const failures: string[] = [];
    const reader = new VerdictStore({ ttl: 200 }, tier, (operation, reason) => failures.push(`${operation}:${reason}`));
    expect((await load(reader, PRINCIPAL)).fetched).toBe(0);
    await sleep(250);
    // Its own copy ran out, and so did what it may trust of the tier's: the provider is asked again.
    expect((await load(reader, PRINCIPAL)).fetched).toBe(1);
    // A verdict too old to trust here is read, not unreadable: nothing to report.
    expect(failures).toEqual([]);
  });

  it('shares rejections too, and never for longer than negativeTtl', async () => {
    const tier = new MemoryTier();
    await load(new VerdictStore({ negativeTtl: 200 }, tier), 'The access token is invalid');
    const second = await load(new VerdictStore({ negativeTtl: 200 }, tier), PRINCIPAL);
    expect(second.fetched).toBe(0);
    expect(second.outcome).toBeInstanceOf(Rejection);
    const later = new VerdictStore({ negativeTtl: 200 }, tier);
    await sleep(250);
    expect((await load(later, PRINCIPAL)).fetched).toBe(1);
  });

  it('writes hashed keys and verdicts only: no raw secret anywhere in the tier', async () => {
    const tier = new MemoryTier();
    await load(new VerdictStore({}, tier), PRINCIPAL);
    expect(tier.writes).toHaveLength(1);
    for (const { key, value } of tier.writes) {
      expect(key).not.toContain('SECRET');
      expect(value).not.toContain('SECRET');
    }
  });

  for (const mode of ['fail', 'hang', 'garbage'] as const) {
    it(`treats a tier that ${mode === 'fail' ? 'fails' : mode === 'hang' ? 'hangs' : 'answers garbage'} as a miss: the provider decides`, async () => {
      const tier = new MemoryTier(30);
      const failures: string[] = [];
      const store = new VerdictStore({}, tier, (operation, reason) => failures.push(`${operation}:${reason}`));
      tier.mode = mode;
      const started = performance.now();
      const { outcome, fetched } = await load(store, 'The access token is invalid');
      expect(fetched).toBe(1);
      expect(outcome).toBeInstanceOf(Rejection);
      expect(performance.now() - started).toBeLessThan(2000);
      if (mode === 'fail') expect(failures).toContain('get:error');
      if (mode === 'hang') expect(failures).toContain('get:timeout');
      if (mode === 'garbage') expect(failures).toEqual(['get:unreadable']);
    });
  }

  it('never lets a foreign or corrupt value through: it is ignored, reported unreadable and overwritten', async () => {
    const tier = new MemoryTier();
    tier.put(KEY, { ok: true, subject: 'mallory', permissions: ['admin'], details: {}, freshUntil: 'soon' });
    const failures: string[] = [];
    const store = new VerdictStore({}, tier, (operation, reason) => failures.push(`${operation}:${reason}`));
    const { outcome, fetched } = await load(store, 'The access token is invalid');
    expect(fetched).toBe(1);
    expect(outcome).toBeInstanceOf(Rejection);
    expect(tier.writes.at(-1)?.value).toContain('"ok":false');
    expect(failures).toEqual(['get:unreadable']);
  });

  it('deletes in the shared tier too', async () => {
    const tier = new MemoryTier();
    const store = new VerdictStore({}, tier);
    await load(store, PRINCIPAL);
    store.delete(KEY, ORIGIN);
    expect(tier.deletes).toEqual([KEY]);
    expect((await load(new VerdictStore({}, tier), PRINCIPAL)).fetched).toBe(1);
  });
});
