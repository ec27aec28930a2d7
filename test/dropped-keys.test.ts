/**
 * The Redis tier's record of dropped keys: never a false "no", and few false "yes" at the numbers a queue drops.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DroppedKeys } from '../src/redis/dropped-keys.js';

/** A store key as the store makes them: a SHA-256 digest as a Latin-1 string. */
const storeKey = () => createHash('sha256').update(randomBytes(16)).digest('binary');

describe('DroppedKeys', () => {
  it('holds nothing until a key is dropped', () => {
    const dropped = new DroppedKeys();
    expect(dropped.mayHold(storeKey())).toBe(false);
    expect(dropped.lastDrop).toBe(0);
  });

  it('holds every key it was given, and few others (under 0.1% after 20,000 drops, about 0.003% expected)', () => {
    const dropped = new DroppedKeys();
    const given = Array.from({ length: 20_000 }, storeKey);
    for (const key of given) dropped.add(key, 1000);
    expect(given.every((key) => dropped.mayHold(key))).toBe(true);
    const others = Array.from({ length: 20_000 }, storeKey).filter((key) => dropped.mayHold(key));
    expect(others.length).toBeLessThan(20);
    expect(dropped.lastDrop).toBe(1000);
  });

  it('takes keys shorter than a digest, or empty', () => {
    const dropped = new DroppedKeys();
    dropped.add('', 1);
    dropped.add('ab', 2);
    expect(dropped.mayHold('')).toBe(true);
    expect(dropped.mayHold('ab')).toBe(true);
    expect(dropped.lastDrop).toBe(2);
  });
});
