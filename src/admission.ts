/**
 * Admission of cold verifications to one provider: at most `concurrency`
 * in flight (what its connection pool can serve), at most `maxWaiting`
 * waiting, and the free slots shared fairly between clients.
 *
 * Fairness: each client (an address, or whatever key the gate is given)
 * waits in its own queue, and a freed slot goes to the clients in turn
 * (round robin), so a client flooding random tokens gets one slot in N
 * when N clients wait. When the wait is full, a newcomer whose client waits
 * less than the longest queue takes the place of that queue's newest
 * waiter; otherwise it is refused at once. Waiting is our own time, never
 * the provider's: a wait that ends unserved says nothing about it.
 */

/** What a waiter learns: a slot, or why not. */
export type Admitted = 'admitted' | 'full' | 'expired';

/** A verification waiting for a slot: `admitted` settles once it has one, or is refused one. */
export interface Waiting {
  readonly admitted: Promise<Admitted>;
}

class Waiter implements Waiting {
  readonly client: string;
  readonly admitted: Promise<Admitted>;
  settle!: (admitted: Admitted) => void;

  constructor(client: string) {
    this.client = client;
    this.admitted = new Promise<Admitted>((resolve) => {
      this.settle = resolve;
    });
  }
}

export class Admission {
  readonly #concurrency: number;
  readonly #maxWaiting: number;
  #inFlight = 0;
  #waiting = 0;
  /** Queues of the clients that wait, in the order they are served (a Map keeps insertion order). */
  readonly #queues = new Map<string, Waiter[]>();

  constructor(concurrency: number, maxWaiting: number) {
    this.#concurrency = concurrency;
    this.#maxWaiting = maxWaiting;
  }

  /** Verifications in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Asks for a slot for the client that `clientOf` names (read only when the
   * verification has to wait: fairness matters only between waiters):
   * `'admitted'` at once when one is free, `'full'` at once when there is no
   * room to wait, else a {@link Waiting} that settles `'admitted'`, or
   * `'full'` when a fairer waiter took its place. A wait has no bound of its
   * own: the caller ends it with {@link expire}. Every `'admitted'` must be
   * followed by one {@link release}.
   */
  acquire(clientOf: () => string): 'admitted' | 'full' | Waiting {
    if (this.#inFlight < this.#concurrency && this.#waiting === 0) {
      this.#inFlight++;
      return 'admitted';
    }
    const client = clientOf();
    if (this.#waiting >= this.#maxWaiting && !this.#displaceFor(client)) return 'full';
    const waiter = new Waiter(client);
    const queue = this.#queues.get(client);
    if (queue === undefined) this.#queues.set(client, [waiter]);
    else queue.push(waiter);
    this.#waiting++;
    return waiter;
  }

  /** Ends `waiting`'s wait unserved: it settles `'expired'`. False when it no longer waited (it was settled before). */
  expire(waiting: Waiting): boolean {
    const waiter = waiting as Waiter;
    const queue = this.#queues.get(waiter.client);
    const at = queue?.indexOf(waiter) ?? -1;
    if (queue === undefined || at === -1) return false;
    queue.splice(at, 1);
    if (queue.length === 0) this.#queues.delete(waiter.client);
    this.#waiting--;
    waiter.settle('expired');
    return true;
  }

  /** Ends every wait unserved: each settles `'expired'`. */
  close(): void {
    const queues = [...this.#queues.values()];
    this.#queues.clear();
    this.#waiting = 0;
    for (const queue of queues) for (const waiter of queue) waiter.settle('expired');
  }

  /** Frees a slot: the next client in turn gets it. */
  release(): void {
    const next = this.#queues.entries().next();
    if (next.done === true) {
      this.#inFlight--;
      return;
    }
    const [client, queue] = next.value;
    const waiter = queue.shift() as Waiter;
    this.#waiting--;
    // The client goes to the back of the line, or leaves it when nothing of it waits.
    this.#queues.delete(client);
    if (queue.length > 0) this.#queues.set(client, queue);
    waiter.settle('admitted');
  }

  /** Makes room for `client` by refusing the newest waiter of the longest queue, when that queue is longer than its own. */
  #displaceFor(client: string): boolean {
    const own = this.#queues.get(client)?.length ?? 0;
    let longest: Waiter[] | undefined;
    for (const queue of this.#queues.values()) if (queue.length > (longest?.length ?? 0)) longest = queue;
    if (longest === undefined || longest.length <= own + 1) return false;
    const displaced = longest.pop() as Waiter;
    this.#waiting--;
    displaced.settle('full');
    return true;
  }
}
