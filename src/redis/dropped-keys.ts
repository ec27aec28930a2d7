/**
 * The keys a Redis tier's retry queues had to drop, as a Bloom filter: whether a key may be one of them (never a
 * false "no"), in 128 KiB however many there are, allocated on the first drop. A false "maybe" costs one verdict asked
 * of the provider rather than read from Redis; past a million keys nearly every answer is one.
 */

/** Bits in the filter: 2^20. */
const BITS = 1 << 20;
/** Bits set per key, each from three bytes of the key (a SHA-256 digest, so already uniform). */
const PROBES = 4;

export class DroppedKeys {
  #bits: Uint32Array | undefined;
  #lastDrop = 0;

  /** When the last key was dropped (wall clock, ms); 0 while none was. */
  get lastDrop(): number {
    return this.#lastDrop;
  }

  /** Records `key` as dropped at `now` (wall clock, ms). */
  add(key: string, now: number): void {
    this.#bits ??= new Uint32Array(BITS / 32);
    for (let probe = 0; probe < PROBES; probe++) {
      const bit = position(key, probe);
      this.#bits[bit >>> 5] = (this.#bits[bit >>> 5] as number) | (1 << (bit & 31));
    }
    this.#lastDrop = now;
  }

  /** Whether `key` may have been dropped. */
  mayHold(key: string): boolean {
    const bits = this.#bits;
    if (bits === undefined) return false;
    for (let probe = 0; probe < PROBES; probe++) {
      const bit = position(key, probe);
      if (((bits[bit >>> 5] as number) & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

/** The bit of `key`'s `probe`-th probe: three of its characters (bytes of a digest), masked to the filter's size. */
function position(key: string, probe: number): number {
  const at = probe * 3;
  // A key shorter than the probes read reads NaN there, which `|` takes as 0.
  return ((key.charCodeAt(at) << 16) | (key.charCodeAt(at + 1) << 8) | key.charCodeAt(at + 2)) & (BITS - 1);
}
