/**
 * A shared tier kept in a Map, for tests of the store's tier contract:
 * values go through JSON as they would through any network store, and the
 * tier can be told to fail, hang or hand back garbage.
 */
import type { SharedTier, SharedVerdict } from '../../src/index.js';

export type TierMode = 'ok' | 'fail' | 'hang' | 'garbage';

export class MemoryTier implements SharedTier {
  readonly timeout: number;
  mode: TierMode = 'ok';
  /** Ms each `get` takes. */
  latency = 0;
  /** Whether `set` declines every acceptance (resolves false, stores nothing), as a tier whose claim ended does. */
  declinesAcceptances = false;
  readonly #values = new Map<string, string>();
  /** Every key and JSON value written, in order. */
  readonly writes: Array<{ key: string; value: string }> = [];
  readonly deletes: string[] = [];
  gets = 0;

  constructor(timeout = 50) {
    this.timeout = timeout;
  }

  get(key: string): Promise<unknown> {
    this.gets++;
    if (this.mode === 'fail') return Promise.reject(new Error('tier down'));
    if (this.mode === 'hang') return new Promise(() => {});
    if (this.mode === 'garbage') return Promise.resolve({ ok: true, subject: 7 });
    const value = this.#values.get(key);
    const found = value === undefined ? undefined : JSON.parse(value);
    if (this.latency > 0) return new Promise((resolve) => setTimeout(() => resolve(found), this.latency));
    return Promise.resolve(found);
  }

  set(key: string, verdict: SharedVerdict): Promise<boolean> {
    if (this.mode === 'fail') return Promise.reject(new Error('tier down'));
    if (verdict.ok && this.declinesAcceptances) return Promise.resolve(false);
    const value = JSON.stringify(verdict);
    this.writes.push({ key, value });
    this.#values.set(key, value);
    return Promise.resolve(true);
  }

  delete(key: string): Promise<void> {
    this.deletes.push(key);
    this.#values.delete(key);
    return this.mode === 'fail' ? Promise.reject(new Error('tier down')) : Promise.resolve();
  }

  /** Puts a raw value under `key`, as another (maybe foreign or broken) writer would. */
  put(key: string, value: unknown): void {
    this.#values.set(key, JSON.stringify(value));
  }

  get size(): number {
    return this.#values.size;
  }
}
