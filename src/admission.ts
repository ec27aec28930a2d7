/**
 * Admission of cold verifications to one provider: at most `concurrency`
 * in flight (what its connection pool can serve), at most `maxWaiting`
 * waiting, and the free slots shared fairly between clients.
 *
 * Fairness: each client (an address, or whatever key the gate is given)
 * waits in its own queue, in its block (a group of clients: an IPv6 /48,
 * an IPv4 /24; a key of the app's own is a block of its own), and a freed
 * slot goes to the blocks in turn, and within a block to its clients in
 * turn (round robin at both levels): a block flooding random tokens, from
 * one address or from each of its addresses, gets one slot in N when N
 * blocks wait. When the wait is full, a newcomer takes the place of the
 * newest waiter of the longest queue of the block with the most waiters,
 * when that block has at least two more than the newcomer's own and either
 * nothing of the newcomer waits or that queue is at least two longer than
 * the newcomer's; else of the newest waiter of the longest queue, when it is
 * at least two longer than the newcomer's; otherwise it is refused at once.
 * Of blocks or queues as full, the one that became so last. So neither
 * one address nor many addresses of one block can hold the wait against
 * the others. Waiting is our own time, never the provider's: a wait that
 * ends unserved says nothing about it.
 *
 * Every step costs the same however many wait: the fullest block and the
 * longest queues are ranked as waiters come and go (see `Ranking`), never
 * searched for, and a queue takes a waiter out anywhere without moving the
 * others (see `WaitQueue`): a flood refused at a deep wait, or a deep wait
 * running out, costs no more per request.
 */
import { Ranking } from './ranking.js';
import { WaitQueue } from './wait-queue.js';

/** What a waiter learns: a slot, or why not. */
export type Admitted = 'admitted' | 'full' | 'expired';

/** A verification waiting for a slot: `admitted` settles once it has one, or is refused one. */
export interface Waiting {
  readonly admitted: Promise<Admitted>;
}

class Waiter implements Waiting {
  readonly queue: Queue;
  /** Its place in its queue (see `WaitQueue`). */
  at = -1;
  readonly admitted: Promise<Admitted>;
  settle!: (admitted: Admitted) => void;

  constructor(queue: Queue) {
    this.queue = queue;
    this.admitted = new Promise<Admitted>((resolve) => {
      this.settle = resolve;
    });
  }
}

/** One client's waiters, oldest first. */
class Queue extends WaitQueue<Waiter> {
  constructor(
    readonly client: string,
    readonly block: Block,
  ) {
    super();
  }
}

/** The clients of one block that wait, in the order they are served, and their queues ranked by length. */
class Block {
  waiting = 0;
  readonly queues = new Map<string, Queue>();
  readonly longest = new Ranking<Queue>();

  constructor(readonly name: string) {}
}

export class Admission {
  readonly #concurrency: number;
  readonly #maxWaiting: number;
  readonly #blockOf: (client: string) => string;
  #inFlight = 0;
  #waiting = 0;
  /** The blocks that wait, in the order they are served (a Map keeps insertion order). */
  readonly #blocks = new Map<string, Block>();
  /** The blocks, ranked by their waiters. */
  readonly #fullest = new Ranking<Block>();
  /** Every queue, ranked by length. */
  readonly #longest = new Ranking<Queue>();
  /** Requests left running by verifications that answered ({@link leaveRunning}): two of them hold one slot. */
  #leftRunning = 0;

  /** `blockOf` names the block a client belongs to (default: a block of its own). */
  constructor(concurrency: number, maxWaiting: number, blockOf: (client: string) => string = (client) => client) {
    this.#concurrency = concurrency;
    this.#maxWaiting = maxWaiting;
    this.#blockOf = blockOf;
  }

  /** Verifications in flight now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Verifications waiting for a slot now. */
  get waiting(): number {
    return this.#waiting;
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
    const name = this.#blockOf(client);
    if (this.#waiting >= this.#maxWaiting && !this.#displaceFor(client, name)) return 'full';
    let block = this.#blocks.get(name);
    if (block === undefined) {
      block = new Block(name);
      this.#blocks.set(name, block);
    }
    let queue = block.queues.get(client);
    if (queue === undefined) {
      queue = new Queue(client, block);
      block.queues.set(client, queue);
    }
    const waiter = new Waiter(queue);
    queue.push(waiter);
    this.#counted(queue, 1);
    return waiter;
  }

  /** Ends `waiting`'s wait unserved: it settles `'expired'`. False when it no longer waited (it was settled before). */
  expire(waiting: Waiting): boolean {
    const waiter = waiting as Waiter;
    const queue = waiter.queue;
    if (!queue.remove(waiter)) return false;
    this.#counted(queue, -1);
    waiter.settle('expired');
    return true;
  }

  /** Ends every wait unserved: each settles `'expired'`. */
  close(): void {
    const queues = [...this.#blocks.values()].flatMap((block) => [...block.queues.values()]);
    this.#blocks.clear();
    this.#fullest.clear();
    this.#longest.clear();
    this.#waiting = 0;
    for (const queue of queues) for (const waiter of queue.drain()) waiter.settle('expired');
  }

  /** Frees a slot: the next client in turn of the next block in turn gets it. */
  release(): void {
    const block = this.#blocks.values().next().value;
    if (block === undefined) {
      this.#inFlight--;
      return;
    }
    const queue = block.queues.values().next().value as Queue;
    const waiter = queue.shift();
    this.#counted(queue, -1);
    // The client goes to the back of its block's line and the block to the back of the line, unless it left its
    // line, nothing of it waiting any more.
    if (queue.length > 0) {
      block.queues.delete(queue.client);
      block.queues.set(queue.client, queue);
    }
    if (block.waiting > 0) {
      this.#blocks.delete(block.name);
      this.#blocks.set(block.name, block);
    }
    waiter.settle('admitted');
  }

  /**
   * A verification answered, leaving a request its answer did not need running (a built-in provider's second call,
   * after the first decided; work a provider of the app's own leaves running on its signal is not seen). That
   * request still holds a connection of the pool, half of what the slot of a provider that makes two calls stands
   * for: two such requests share one slot, so that requests in flight never outnumber the pool's connections and no
   * verification waits for a connection under its own deadline. Whether the verification's slot is to be released
   * now: true when the request joins another left running in a slot they share.
   */
  leaveRunning(): boolean {
    return this.#leftRunning++ % 2 === 1;
  }

  /** A request left running ({@link leaveRunning}) ended: the slot it shared is freed once no other shares it. */
  readonly leftRunningEnded = (): void => {
    if (--this.#leftRunning % 2 === 0) this.release();
  };

  /**
   * Counts a waiter in (`by` 1, just pushed) or out (`by` -1, just taken out) of `queue`, its block and the
   * rankings. A queue left empty leaves its block, and a block left empty the line: a client or block that waits
   * for nothing holds no state.
   */
  #counted(queue: Queue, by: 1 | -1): void {
    const block = queue.block;
    const length = queue.length;
    this.#waiting += by;
    block.waiting += by;
    this.#longest.moved(queue, length - by, length);
    block.longest.moved(queue, length - by, length);
    this.#fullest.moved(block, block.waiting - by, block.waiting);
    if (length === 0) block.queues.delete(queue.client);
    if (block.waiting === 0) this.#blocks.delete(block.name);
  }

  /**
   * Makes room for `client` of block `name`: refuses the newest waiter of the fullest block's longest queue, when
   * that block holds at least two more waiters than `name` and nothing of `client` waits (or that queue is at least
   * two longer than its own); else of the longest queue, when it is at least two longer than the client's own. Of
   * blocks or queues as full, the one that became so last.
   */
  #displaceFor(client: string, name: string): boolean {
    const own = this.#blocks.get(name);
    const ownQueue = own?.queues.get(client)?.length ?? 0;
    const fullest = this.#fullest.top;
    if (fullest !== undefined && fullest !== own && this.#fullest.most > (own?.waiting ?? 0) + 1) {
      // Between blocks, a newcomer takes one place while nothing of its own waits; past that, as within a block.
      const inBlock = fullest.longest.top as Queue;
      if (ownQueue === 0 || inBlock.length > ownQueue + 1) return this.#displace(inBlock);
    }
    const longest = this.#longest.top;
    return longest !== undefined && longest.length > ownQueue + 1 && this.#displace(longest);
  }

  /** Refuses the newest waiter of `queue`: always true. */
  #displace(queue: Queue): true {
    const displaced = queue.pop();
    this.#counted(queue, -1);
    displaced.settle('full');
    return true;
  }
}
