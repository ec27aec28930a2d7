/**
 * The ranking admission keeps of its blocks and queues, against a plain model: after any moves of one, the highest
 * count and, of the items holding it, the one that reached it last.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Ranking } from '../src/ranking.js';

describe('Ranking', () => {
  it('names the highest count and the item that reached it last, whatever the moves (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()), { maxLength: 200 }), (moves) => {
        const ranking = new Ranking<number>();
        const counts = new Map<number, number>();
        /** When each item reached its count: the model's order. */
        const reached = new Map<number, number>();
        moves.forEach(([item, up], step) => {
          const from = counts.get(item) ?? 0;
          const to = up ? from + 1 : Math.max(0, from - 1);
          if (to === from) return;
          ranking.moved(item, from, to);
          counts.set(item, to);
          reached.set(item, step);
          const most = Math.max(0, ...counts.values());
          const holders = [...counts].filter(([, count]) => count === most && most > 0).map(([held]) => held);
          const last = holders.sort((a, b) => (reached.get(b) as number) - (reached.get(a) as number))[0];
          expect([ranking.most, ranking.top]).toEqual([most, last]);
        });
        ranking.clear();
        expect([ranking.most, ranking.top]).toEqual([0, undefined]);
      }),
    );
  });
});
