/** The queue admission keeps per client, against an array: the same waiters, in the same order, after any steps. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WaitQueue } from '../src/wait-queue.js';

interface Item {
  readonly name: number;
  at: number;
}

describe('WaitQueue', () => {
  it('keeps finding its waiters once the holes they left were compacted', () => {
    const queue = new WaitQueue<Item>();
    const items = Array.from({ length: 200 }, (_, name) => ({ name, at: -1 }));
    for (const item of items) queue.push(item);
    // Every other one leaves from the middle, then the oldest ones: far more holes than the slack, compacted.
    for (const item of items.filter(({ name }) => name % 2 === 1)) expect(queue.remove(item)).toBe(true);
    for (let i = 0; i < 40; i++) expect(queue.shift()).toBe(items[2 * i]);
    const left = items.filter(({ name }) => name % 2 === 0).slice(40);
    expect(queue.remove(left[30] as Item)).toBe(true);
    expect(queue.remove(items[0] as Item)).toBe(false);
    expect(queue.pop()).toBe(left.at(-1));
    expect(queue.drain()).toEqual(left.filter((_, i) => i !== 30 && i !== left.length - 1));
  });

  it('leaves every drained waiter in no queue, however many it drained (their holes compacted or not)', () => {
    const queue = new WaitQueue<Item>();
    const items = Array.from({ length: 100 }, (_, name) => ({ name, at: -1 }));
    for (const item of items) queue.push(item);
    expect(queue.drain()).toEqual(items);
    expect(items.filter(({ at }) => at !== -1)).toEqual([]);
    expect(queue.length).toBe(0);
  });

  it('takes waiters out at either end or anywhere as an array would (property)', () => {
    const step = fc.oneof(
      fc.constant({ kind: 'push' as const, pick: 0 }),
      fc.constant({ kind: 'shift' as const, pick: 0 }),
      fc.constant({ kind: 'pop' as const, pick: 0 }),
      fc.nat().map((pick) => ({ kind: 'remove' as const, pick })),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 400 }), (steps) => {
        const queue = new WaitQueue<Item>();
        const model: Item[] = [];
        const gone: Item[] = [];
        let named = 0;
        for (const { kind, pick } of steps) {
          if (kind === 'push') {
            const item = { name: named++, at: -1 };
            queue.push(item);
            model.push(item);
          } else if (model.length === 0) {
            // Nothing to take: a waiter that left is not in the queue any more.
            if (gone.length > 0) expect(queue.remove(gone[pick % gone.length] as Item)).toBe(false);
          } else if (kind === 'shift') {
            gone.push(queue.shift());
            expect(gone.at(-1)).toBe(model.shift());
          } else if (kind === 'pop') {
            gone.push(queue.pop());
            expect(gone.at(-1)).toBe(model.pop());
          } else {
            const [item] = model.splice(pick % model.length, 1) as [Item];
            expect(queue.remove(item)).toBe(true);
            expect(queue.remove(item)).toBe(false);
            gone.push(item);
          }
          expect(queue.length).toBe(model.length);
        }
        expect(queue.drain()).toEqual(model);
        expect(queue.length).toBe(0);
      }),
    );
  });
});
