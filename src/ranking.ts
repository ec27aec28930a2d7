/**
 * Items ranked by a count that moves by one at a time (waiters joining and leaving a queue): the highest count, and
 * of the items holding it the one that reached it last, each in O(1), however many items there are.
 */

/** An item's place: in the list of the items of its count, oldest first. */
interface Place<T> {
  readonly item: T;
  count: number;
  before: Place<T> | undefined;
  after: Place<T> | undefined;
}

export class Ranking<T> {
  /** The items of each count above 0: the newest to reach it, each linked to the one before it. */
  readonly #newest = new Map<number, Place<T>>();
  readonly #places = new Map<T, Place<T>>();
  #most = 0;

  /** The highest count, 0 when no item counts. */
  get most(): number {
    return this.#most;
  }

  /** Of the items with the highest count, the one that reached it last; undefined when no item counts. */
  get top(): T | undefined {
    return this.#newest.get(this.#most)?.item;
  }

  /** `item`'s count moved from `from` to `to`, one apart (0 for an item that enters or leaves the ranking). */
  moved(item: T, from: number, to: number): void {
    let place = this.#places.get(item);
    if (place !== undefined && from > 0) this.#unlink(place);
    if (to === 0) {
      this.#places.delete(item);
      return;
    }
    if (place === undefined) {
      place = { item, count: to, before: undefined, after: undefined };
      this.#places.set(item, place);
    }
    place.count = to;
    const newest = this.#newest.get(to);
    place.before = newest;
    place.after = undefined;
    if (newest !== undefined) newest.after = place;
    this.#newest.set(to, place);
    if (to > this.#most) this.#most = to;
  }

  /** Forgets every item. */
  clear(): void {
    this.#newest.clear();
    this.#places.clear();
    this.#most = 0;
  }

  /** Takes `place` out of its count's list; a count left without items is no longer the highest. */
  #unlink(place: Place<T>): void {
    const { count, before, after } = place;
    if (before !== undefined) before.after = after;
    if (after !== undefined) after.before = before;
    else if (before !== undefined) this.#newest.set(count, before);
    else {
      this.#newest.delete(count);
      // The highest count was this item's alone: the counts move by one, so the next is one lower (or none).
      if (this.#most === count) this.#most = count - 1;
    }
  }
}
