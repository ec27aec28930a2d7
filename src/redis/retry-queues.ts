/**
 * The writes of a Redis tier that must reach Redis however long it is down: an invalidation (a revocation) and the
 * deletion of a key's value and claims (a rejection Redis missed, or one not stored). Each is sent at once and, when
 * Redis does not take it, kept in its queue and retried until it does; what that leaves unsure in Redis is not read.
 *
 * Invariants:
 * - a key whose write Redis has not taken is read from Redis only after this instance sent that write again and
 *   Redis took it; a read of a key waits for that key's write under way;
 * - each queue keeps at most {@link MAX_PENDING} keys, so that rejections never push out a revocation; past that the
 *   oldest is dropped, and no acceptance of a dropped key stored before the drop (with {@link CLOCK_MARGIN_MS} for
 *   other instances' clocks) is trusted;
 * - a deletion is not queued for a key whose invalidation is (the invalidation deletes more);
 * - the queues are tried again on recovery and every breaker cooldown, revocations first, one command first and then
 *   in batches; once closed, nothing is kept or retried.
 */

import { DroppedKeys } from './dropped-keys.js';
import { BREAKER_COOLDOWN_MS } from './guard.js';

/** Most keys kept for a retry in each queue (invalidations, rejections); the oldest goes first. */
const MAX_PENDING = 10_000;
/**
 * Once a queue dropped a key, that key's acceptances stored before then (and this long after, for other instances'
 * clocks) are not read back: one of them may be what the dropped revocation or rejection was to delete (ms).
 */
const CLOCK_MARGIN_MS = 60_000;
/** Most retried commands sent at once, once one has found Redis answering. */
const FLUSH_BATCH = 256;

const ignore = () => {};

/** The two writes the queues send for a key: each resolves once Redis took it and rejects when it did not. */
export interface RetriedWrites {
  /** Deletes `key`'s value, lease and claims, leaves a tombstone and tells every instance. */
  invalidate(key: string): Promise<unknown>;
  /** Deletes `key`'s value and claims. */
  delete(key: string): Promise<unknown>;
}

/**
 * The tier's invalidations and deletions that Redis has not taken yet, the ones under way, and the keys dropped from
 * a full queue: what a read of a key must wait for, and which acceptances read back it must not trust.
 */
export class RetryQueues {
  readonly #writes: RetriedWrites;
  /** Store keys whose invalidation Redis has not taken yet. */
  readonly #pending = new Set<string>();
  /** Store keys with a rejection Redis has not taken yet: their value and claims are deleted on a retry. */
  readonly #rejected = new Set<string>();
  /** Each key's invalidation or deletion sent and not answered yet: a read of that key waits for it. */
  readonly #sending = new Map<string, Promise<unknown>>();
  /** The keys the queues dropped: their acceptances stored before the last drop (and its margin) are not read. */
  readonly #dropped = new DroppedKeys();
  #retry: NodeJS.Timeout | undefined;
  #flushing = false;
  /** A flush was asked for while one ran: it runs again once that one ends. */
  #flushAgain = false;
  #closed = false;

  /** `writes` sends each write once (through the tier's guard); the queues decide when to send it again. */
  constructor(writes: RetriedWrites) {
    this.#writes = writes;
  }

  /**
   * Before `key` is read: waits for its invalidation or deletion under way, and sends the one Redis has not taken yet,
   * so that this instance never reads back from Redis what it revoked or heard rejected.
   * @throws Error when Redis does not take that write (the key stays queued).
   */
  async settle(key: string): Promise<void> {
    for (;;) {
      // Another read may have sent it again meanwhile: wait until nothing of this key is under way.
      const underWay = this.#sending.get(key);
      if (underWay !== undefined) {
        await underWay.catch(ignore);
        continue;
      }
      const queue = this.#pending.has(key) ? this.#pending : this.#rejected.has(key) ? this.#rejected : undefined;
      if (queue === undefined) return;
      queue.delete(key);
      await this.#send(key, queue);
      return;
    }
  }

  /**
   * Sends `key`'s invalidation now, in place of any write of it still queued; queued for a retry if Redis does not
   * take it.
   * @returns the write's answer: it rejects when Redis did not take it.
   */
  invalidate(key: string): Promise<unknown> {
    this.#pending.delete(key);
    this.#rejected.delete(key);
    return this.#send(key, this.#pending);
  }

  /**
   * Sends the deletion of `key`'s value and claims now, in place of its queued deletion; queued for a retry if Redis
   * does not take it (unless its invalidation is queued).
   * @returns the write's answer: it rejects when Redis did not take it.
   */
  delete(key: string): Promise<unknown> {
    this.#rejected.delete(key);
    return this.#send(key, this.#rejected);
  }

  /** A rejection of `key` that Redis did not take: its value and claims are deleted on a retry instead. */
  retryRejection(key: string): void {
    this.#queue(key, this.#rejected);
  }

  /**
   * Sends what waits, revocations first: one command to find Redis answering, then {@link FLUSH_BATCH} at a time,
   * each batch once the last one was answered. Stops at the first failure; the rest waits for the next try. A flush
   * asked for while one runs runs once that one ends.
   */
  async flush(): Promise<void> {
    if (this.#flushing) {
      this.#flushAgain = true;
      return;
    }
    this.#flushing = true;
    this.#flushAgain = false;
    try {
      for (let size = 1; ; size = FLUSH_BATCH) {
        const batch = this.#take(size);
        if (batch.length === 0) return;
        const sent = await Promise.allSettled(batch.map(([key, queue]) => this.#send(key, queue)));
        if (sent.some((result) => result.status === 'rejected')) return;
      }
    } finally {
      this.#flushing = false;
      if (this.#flushAgain) void this.flush();
      else if (this.#pending.size > 0 || this.#rejected.size > 0) this.#arm();
    }
  }

  /**
   * Whether an acceptance of `key` read back from Redis, stored at `storedAt` (wall clock, ms, as its writer wrote
   * it), may be used: always, unless a queue may have dropped `key`; then only when it was stored at least
   * {@link CLOCK_MARGIN_MS} after the last drop.
   */
  trustsAcceptance(key: string, storedAt: unknown): boolean {
    if (!this.#dropped.mayHold(key)) return true;
    const trustedFrom = this.#dropped.lastDrop + CLOCK_MARGIN_MS;
    return typeof storedAt === 'number' && storedAt >= trustedFrom;
  }

  /** Forgets every queued write and stops retrying; a write that fails from now on is not kept. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#pending.clear();
    this.#rejected.clear();
  }

  /**
   * Sends `key`'s invalidation (`queue` is the pending revocations) or its deletion (the rejections Redis missed);
   * if Redis does not take it, `key` goes back to `queue` for a retry.
   */
  #send(key: string, queue: Set<string>): Promise<unknown> {
    const sent = queue === this.#pending ? this.#writes.invalidate(key) : this.#writes.delete(key);
    this.#sending.set(key, sent);
    const answered = () => {
      if (this.#sending.get(key) === sent) this.#sending.delete(key);
    };
    sent.then(answered, () => {
      answered();
      this.#queue(key, queue);
    });
    return sent;
  }

  /**
   * Keeps `key` in `queue` for a retry; past {@link MAX_PENDING} keys the oldest goes, and no acceptance of it stored
   * before is read back (see {@link CLOCK_MARGIN_MS}): the one its revocation was to delete may be one.
   */
  #queue(key: string, queue: Set<string>): void {
    if (this.#closed) return;
    if (queue === this.#pending) this.#rejected.delete(key);
    else if (this.#pending.has(key)) return;
    queue.add(key);
    if (queue.size > MAX_PENDING) {
      for (const oldest of queue) {
        queue.delete(oldest);
        this.#dropped.add(oldest, Date.now());
        break;
      }
    }
    this.#arm();
  }

  /** Tries the queues again after a breaker cooldown. */
  #arm(): void {
    if (this.#closed) return;
    this.#retry ??= setTimeout(() => {
      this.#retry = undefined;
      void this.flush();
    }, BREAKER_COOLDOWN_MS).unref();
  }

  /** Takes up to `size` keys out of the queues, revocations first, each with the queue it came from. */
  #take(size: number): Array<[string, Set<string>]> {
    const batch: Array<[string, Set<string>]> = [];
    for (const queue of [this.#pending, this.#rejected]) {
      for (const key of queue) {
        if (batch.length === size) return batch;
        queue.delete(key);
        batch.push([key, queue]);
      }
    }
    return batch;
  }
}
