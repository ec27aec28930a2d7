/**
 * The store's policy with a leasing shared tier (store-shared.ts), against a
 * scripted tier: which answers stand in for the provider, when a flight
 * waits for another instance and when it asks itself, that an answer is
 * stored only under a claim, and that every tier failure is a miss reported
 * as an event. The Redis tier itself is in redis.test.ts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { AuthContext } from '../src/context.js';
import type { SharedClaim, SharedLease, SharedTier, SharedVerdict } from '../src/shared-tier.js';
import { type Flight, Rejection, VerdictStore } from '../src/store.js';
import type { Principal } from '../src/types.js';

const ORIGIN = Object.freeze({ provider: 'p', realm: 'api' });
const PRINCIPAL: Principal = { subject: 'user-1', permissions: ['read'], details: {} };
const fresh = (): SharedVerdict => ({
  ok: true,
  subject: 'from-tier',
  permissions: ['read'],
  details: {},
  freshUntil: Date.now() + 60_000,
  until: Date.now() + 60_000,
});

/** A leasing tier that answers from scripts, and records what the store asked. */
class ScriptedTier implements SharedTier {
  timeout?: number = 30;
  readonly calls: string[] = [];
  readonly stored: Array<{ verdict: SharedVerdict; claim: SharedClaim | undefined }> = [];
  released = 0;
  invalidated: ((key: string) => void) | undefined;
  reconnected: (() => void) | undefined;

  constructor(
    readonly leases: Array<() => Promise<SharedLease>>,
    readonly waits: Array<() => Promise<unknown>> = [],
  ) {}

  claim(): SharedLease {
    return { state: 'claimed', claim: { release: () => this.released++ } };
  }

  get(): Promise<unknown> {
    this.calls.push('get');
    return Promise.resolve(undefined);
  }

  set(_key: string, verdict: SharedVerdict, claim?: SharedClaim): Promise<void> {
    this.calls.push('set');
    this.stored.push({ verdict, claim });
    return Promise.resolve();
  }

  delete(): Promise<void> {
    this.calls.push('delete');
    return Promise.resolve();
  }

  lease(_key: string, replace: boolean): Promise<SharedLease> {
    this.calls.push(replace ? 'lease(replace)' : 'lease');
    return (this.leases.shift() ?? (() => Promise.resolve(this.claim())))();
  }

  waitFor(): Promise<unknown> {
    this.calls.push('wait');
    return (this.waits.shift() ?? (() => Promise.resolve(undefined)))();
  }

  invalidate(): Promise<void> {
    this.calls.push('invalidate');
    return Promise.resolve();
  }

  onInvalidate(listener: (key: string) => void): () => void {
    this.invalidated = listener;
    return () => {
      this.invalidated = undefined;
    };
  }

  onReconnect(listener: () => void): () => void {
    this.reconnected = listener;
    return () => {
      this.reconnected = undefined;
    };
  }
}

/** Loads `key` through a store on `tier`; the provider answers `PRINCIPAL`. */
async function load(tier: ScriptedTier, key = 'key') {
  const failures: string[] = [];
  const store = new VerdictStore({}, tier, (operation, reason) => failures.push(`${operation}:${reason}`));
  let fetched = 0;
  const { promise } = store.load(key, ORIGIN, async (flight: Flight) => {
    fetched++;
    return store.accept(flight, PRINCIPAL);
  });
  const outcome = await promise;
  return { outcome, fetched, failures, store };
}

const resolved = (lease: SharedLease) => () => Promise.resolve(lease);

describe('store with a leasing shared tier', () => {
  it('takes a fresh stored verdict in place of the provider', async () => {
    const tier = new ScriptedTier([resolved({ state: 'stored', value: fresh() })]);
    const { outcome, fetched } = await load(tier);
    expect(fetched).toBe(0);
    expect((outcome as AuthContext).subject).toBe('from-tier');
    expect(tier.calls).toEqual(['lease']);
  });

  it('replaces a stored value it cannot use (only stale, foreign): leases over it, asks, stores under the claim', async () => {
    const stale = { ...fresh(), freshUntil: Date.now() - 1 };
    for (const value of [stale, { ok: true, subject: 7 }, 'not json']) {
      const tier = new ScriptedTier([resolved({ state: 'stored', value })]);
      const { fetched } = await load(tier);
      expect(fetched).toBe(1);
      expect(tier.calls).toEqual(['lease', 'lease(replace)', 'set']);
      expect(tier.stored[0]?.claim).toBeDefined();
      expect(tier.released).toBe(0);
    }
  });

  it('waits for the lease holder and takes its answer', async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' })], [() => Promise.resolve(fresh())]);
    const { fetched, outcome } = await load(tier);
    expect(fetched).toBe(0);
    expect((outcome as AuthContext).subject).toBe('from-tier');
    expect(tier.calls).toEqual(['lease', 'wait']);
  });

  it('leases again when the holder ended without an answer, then asks and stores', async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' })]);
    const { fetched } = await load(tier);
    expect(fetched).toBe(1);
    expect(tier.calls).toEqual(['lease', 'wait', 'lease', 'set']);
  });

  it('asks itself after two rounds of waiting, and stores nothing without a claim', async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' }), resolved({ state: 'held' })]);
    const { fetched } = await load(tier);
    expect(fetched).toBe(1);
    expect(tier.calls).toEqual(['lease', 'wait', 'lease', 'wait']);
    expect(tier.stored).toEqual([]);
  });

  it('ends the claim when the answer is not stored (the provider failed)', async () => {
    const tier = new ScriptedTier([]);
    const store = new VerdictStore({}, tier);
    const { promise } = store.load('key', ORIGIN, async () => 'provider failed');
    expect(await promise).toBe('provider failed');
    expect(tier.released).toBe(1);
    expect(tier.stored).toEqual([]);
  });

  for (const [what, lease, reason] of [
    ['fails', () => Promise.reject(new Error('down')), 'error'],
    [
      'is skipped (its backend is down)',
      () => Promise.reject(Object.assign(new Error('down'), { code: 'EUNAVAILABLE' })),
      'unavailable',
    ],
    ['times out on its own', () => Promise.reject(Object.assign(new Error('late'), { code: 'ETIMEDOUT' })), 'timeout'],
    ['hangs', () => new Promise<SharedLease>(() => {}), 'timeout'],
    [
      'throws',
      () => {
        throw new Error('sync');
      },
      'error',
    ],
    ['answers undefined', () => Promise.resolve(undefined), 'error'],
    ['answers a state it does not know', () => Promise.resolve({ state: 'mine' }), 'error'],
    ['claims without a release', () => Promise.resolve({ state: 'claimed', claim: {} }), 'error'],
    ['answers something that is not a promise', () => ({ state: 'held' }), 'error'],
  ] as const) {
    it(`asks the provider when the lease ${what}, stores nothing, and reports lease:${reason}`, async () => {
      const tier = new ScriptedTier([lease as () => Promise<SharedLease>]);
      const { fetched, failures, outcome } = await load(tier);
      expect(fetched).toBe(1);
      expect(outcome).toBeInstanceOf(AuthContext);
      expect(failures).toEqual([`lease:${reason}`]);
      expect(tier.stored).toEqual([]);
    });
  }

  it('still answers when storing throws at once, and reports set:error', async () => {
    const tier = new ScriptedTier([]);
    tier.set = () => {
      throw new Error('sync');
    };
    const { outcome, failures } = await load(tier);
    expect(outcome).toBeInstanceOf(AuthContext);
    await sleep(0);
    expect(failures).toEqual(['set:error']);
  });

  it("ends the flight when a claim's release throws (release never throws, by contract)", async () => {
    const tier = new ScriptedTier([
      resolved({
        state: 'claimed',
        claim: {
          release: () => {
            throw new Error('sync');
          },
        },
      }),
    ]);
    const store = new VerdictStore({}, tier);
    expect(await store.load('key', ORIGIN, async () => 'provider failed').promise).toBe('provider failed');
  });

  it('ignores a lease that comes back late and malformed: no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      // Far past the tier's 50 ms, so that a loaded machine cannot run both timers in one turn.
      const tier = new ScriptedTier([() => sleep(300).then(() => ({ state: 'claimed', claim: null }) as never)]);
      const { fetched, failures } = await load(tier);
      expect(fetched).toBe(1);
      await sleep(400);
      expect(failures).toEqual(['lease:timeout']);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it("waits for another instance's answer no longer than the gate's timeout when the tier's waitFor never ends", async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' })], [() => new Promise(() => {})]);
    const failures: string[] = [];
    const store = new VerdictStore({}, tier, (operation, reason) => failures.push(`${operation}:${reason}`), 100);
    const started = performance.now();
    let fetched = 0;
    const outcome = await store.load('key', ORIGIN, async (flight: Flight) => {
      fetched++;
      return store.accept(flight, PRINCIPAL);
    }).promise;
    expect(outcome).toBeInstanceOf(AuthContext);
    expect(fetched).toBe(1);
    expect(failures).toEqual(['wait:timeout']);
    // 100 ms, and the tier's own 30 ms for the holder's lookups.
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("waits for another instance's answer under the longest timeout there is (its sum with the tier's stays a timer Node keeps)", async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' })], [() => sleep(100).then(() => fresh())]);
    const failures: string[] = [];
    const store = new VerdictStore(
      {},
      tier,
      (operation, reason) => failures.push(`${operation}:${reason}`),
      2 ** 31 - 1,
    );
    const outcome = await store.load('key', ORIGIN, async () => 'not asked').promise;
    expect((outcome as AuthContext).subject).toBe('from-tier');
    expect(failures).toEqual([]);
  });

  it('asks the provider without a claim when leasing over an unusable value fails or finds a value', async () => {
    const stale = { ...fresh(), freshUntil: Date.now() - 1 };
    for (const second of [() => Promise.reject(new Error('down')), resolved({ state: 'stored', value: fresh() })]) {
      const tier = new ScriptedTier([resolved({ state: 'stored', value: stale }), second]);
      const { fetched } = await load(tier);
      expect(fetched).toBe(1);
      expect(tier.calls).toEqual(['lease', 'lease(replace)']);
    }
  });

  it('spends one budget of `timeout` on its lookups: none is sent once it is spent', async () => {
    const stale = { ...fresh(), freshUntil: Date.now() - 1 };
    const slow = () => {
      // Holds the thread past the whole budget, then answers at once.
      const until = performance.now() + 40;
      while (performance.now() < until);
      return Promise.resolve<SharedLease>({ state: 'stored', value: stale });
    };
    const tier = new ScriptedTier([slow]);
    const { fetched, failures } = await load(tier);
    expect(fetched).toBe(1);
    expect(tier.calls).toEqual(['lease']);
    expect(failures).toEqual(['lease:timeout']);
  });

  it('releases a lease that came back after the flight gave up on it', async () => {
    const claimed: SharedLease = { state: 'claimed', claim: { release: () => tier.released++ } };
    const tier: ScriptedTier = new ScriptedTier([() => sleep(60).then(() => claimed)]);
    const store = new VerdictStore({}, tier);
    let fetched = 0;
    await store.load('key', ORIGIN, async (flight) => {
      fetched++;
      return store.accept(flight, PRINCIPAL);
    }).promise;
    expect(fetched).toBe(1);
    expect(tier.stored).toEqual([]);
    await sleep(60);
    expect(tier.released).toBe(1);
  });

  it('gives a tier without its own timeout 50 ms', async () => {
    // A lease that comes in 300 ms: a timeout of 50 ms gives up on it, a much longer one would wait for it.
    const claimed: SharedLease = { state: 'claimed', claim: { release: () => tier.released++ } };
    const tier: ScriptedTier = new ScriptedTier([() => sleep(300).then(() => claimed)]);
    delete tier.timeout;
    const started = performance.now();
    const { failures } = await load(tier);
    expect(failures).toEqual(['lease:timeout']);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
  });

  it('keeps no rejection from another instance with negativeTtl 0', async () => {
    const rejection: SharedVerdict = { ok: false, reason: 'The access token is invalid', until: Date.now() + 60_000 };
    const tier = new ScriptedTier([resolved({ state: 'stored', value: rejection })]);
    const store = new VerdictStore({ negativeTtl: 0 }, tier);
    expect(await store.load('key', ORIGIN, async () => 'not asked').promise).toBeInstanceOf(Rejection);
    expect(store.get('key', performance.now())).toBeUndefined();
  });

  it('deletes the key on a rejection it does not keep (negativeTtl 0), also under a claim', async () => {
    const tier = new ScriptedTier([]);
    const store = new VerdictStore({ negativeTtl: 0 }, tier);
    const { promise } = store.load('key', ORIGIN, async (flight) =>
      store.reject(flight, 'The access token is invalid'),
    );
    expect(await promise).toBeInstanceOf(Rejection);
    expect(tier.calls).toEqual(['lease', 'delete']);
    expect(tier.released).toBe(1);
  });

  it('asks the provider when waiting fails, and reports wait:error', async () => {
    const tier = new ScriptedTier([resolved({ state: 'held' })], [() => Promise.reject(new Error('down'))]);
    const { fetched, failures } = await load(tier);
    expect(fetched).toBe(1);
    expect(failures).toEqual(['wait:error']);
  });

  it('a rejection from another instance lives no longer than negativeTtl here', async () => {
    const rejection: SharedVerdict = { ok: false, reason: 'The access token is invalid', until: Date.now() + 60_000 };
    const tier = new ScriptedTier([resolved({ state: 'stored', value: rejection })]);
    const store = new VerdictStore({ negativeTtl: 100 }, tier);
    const { promise } = store.load('key', ORIGIN, async () => 'not asked');
    const outcome = await promise;
    expect(outcome).toBeInstanceOf(Rejection);
    expect((outcome as Rejection).until - performance.now()).toBeLessThanOrEqual(100);
  });

  it('evicts a key another instance invalidated, purges on reconnect, and stops listening on close', async () => {
    const tier = new ScriptedTier([]);
    const store = new VerdictStore({}, tier);
    const fill = (key: string) => store.load(key, ORIGIN, async (flight) => store.accept(flight, PRINCIPAL)).promise;
    await fill('a');
    await fill('b');
    tier.invalidated?.('a');
    expect(store.get('a', performance.now())).toBeUndefined();
    expect(store.get('b', performance.now())).toBeDefined();
    tier.reconnected?.();
    expect(store.get('b', performance.now())).toBeUndefined();
    store.close();
    expect(tier.invalidated).toBeUndefined();
    expect(tier.reconnected).toBeUndefined();
  });

  it('revoke resolves whether the tier confirmed in time, and true without a tier', async () => {
    const confirming = new ScriptedTier([]);
    expect(await new VerdictStore({}, confirming).revoke('key', ORIGIN)).toBe(true);
    expect(confirming.calls).toEqual(['invalidate']);
    const hanging = new ScriptedTier([]);
    hanging.invalidate = () => new Promise(() => {});
    const failures: string[] = [];
    const store = new VerdictStore({}, hanging, (operation, reason) => failures.push(`${operation}:${reason}`));
    expect(await store.revoke('key', ORIGIN)).toBe(false);
    expect(failures).toEqual(['invalidate:timeout']);
    expect(await new VerdictStore().revoke('key', ORIGIN)).toBe(true);
  });

  it('caps what it keeps in process at the tier localTtl', async () => {
    const tier = Object.assign(new ScriptedTier([]), { localTtl: 100 });
    const store = new VerdictStore({ ttl: 60_000 }, tier);
    await store.load('key', ORIGIN, async (flight) => store.accept(flight, PRINCIPAL)).promise;
    const entry = store.get('key', performance.now());
    expect(entry).toBeDefined();
    expect(store.get('key', performance.now() + 60_001)).toBeUndefined();
    expect((entry as { freshUntil: number }).freshUntil - performance.now()).toBeLessThanOrEqual(100);
  });
});
