/**
 * A queue of waiters, oldest first, that takes one out at either end or anywhere in O(1) (amortized), however long
 * it is: an array's `shift` or `splice` moves every waiter behind. Each waiter keeps its place (`at`) for the queue.
 */

/** A waiter as the queue keeps it: its place in the queue's slots, -1 while in none. */
export interface Slotted {
  at: number;
}

/** Slots past which holes are compacted: when they outnumber the waiters by this much. */
const COMPACT_SLACK = 32;

export class WaitQueue<T extends Slotted> {
  /** The waiters in order of arrival, from `#head` on; one taken out leaves a hole, compacted now and then. */
  #slots: Array<T | undefined> = [];
  #head = 0;
  /** Waiters in the queue. */
  length = 0;

  push(waiter: T): void {
    waiter.at = this.#slots.length;
    this.#slots.push(waiter);
    this.length++;
  }

  /** Takes the oldest waiter out (the queue holds one). */
  shift(): T {
    let waiter: T | undefined;
    do {
      waiter = this.#slots[this.#head];
      this.#slots[this.#head++] = undefined;
    } while (waiter === undefined);
    return this.#out(waiter);
  }

  /** Takes the newest waiter out (the queue holds one). */
  pop(): T {
    let waiter: T | undefined;
    do waiter = this.#slots.pop();
    while (waiter === undefined);
    return this.#out(waiter);
  }

  /** Takes `waiter` out; false when it is not in this queue. */
  remove(waiter: T): boolean {
    if (waiter.at === -1 || this.#slots[waiter.at] !== waiter) return false;
    this.#slots[waiter.at] = undefined;
    this.#out(waiter);
    return true;
  }

  /** Takes every waiter out, oldest first. */
  drain(): T[] {
    const waiters = this.#slots.filter((waiter): waiter is T => waiter !== undefined);
    // All out at once: one taken out at a time would compact the holes halfway and give the drained a place again.
    this.#slots = [];
    this.#head = 0;
    this.length = 0;
    for (const waiter of waiters) waiter.at = -1;
    return waiters;
  }

  #out(waiter: T): T {
    waiter.at = -1;
    this.length--;
    if (this.length === 0) {
      this.#slots = [];
      this.#head = 0;
    } else if (this.#slots.length > 2 * this.length + COMPACT_SLACK) {
      const waiters = this.#slots.filter((kept): kept is T => kept !== undefined);
      waiters.forEach((kept, at) => {
        kept.at = at;
      });
      this.#slots = waiters;
      this.#head = 0;
    }
    return waiter;
  }
}
