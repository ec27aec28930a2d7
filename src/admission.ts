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
 * blocks wait. When the wait is full, a newcomer takes the place
 * of the newest waiter of the block with the most waiters, when that block has at least two more
 * than the newcomer's own and either nothing of the newcomer waits or that
 * block's longest queue is at least two longer than the newcomer's; else
 * of the longest queue, when it is at least two longer than the
 * newcomer's; otherwise it is refused at once. So neither
 * one address nor many addresses of one block can hold the wait against
 * the others. Waiting is our own time, never the provider's: a wait that
 * ends unserved says nothing about it.
 */

/** What a waiter learns: a slot, or why not. */
export type Admitted = 'admitted' | 'full' | 'expired';

/** A verification waiting for a slot: `admitted` settles once it has one, or is refused one. */
export interface Waiting {
  readonly admitted: Promise<Admitted>;
}

class Waiter implements Waiting {
  readonly client: string;
  readonly block: string;
  readonly admitted: Promise<Admitted>;
  settle!: (admitted: Admitted) => void;

  constructor(client: string, block: string) {
    this.client = client;
    this.block = block;
    this.admitted = new Promise<Admitted>((resolve) => {
      this.settle = resolve;
    });
  }
}

export class Admission {
  readonly #concurrency: number;
  readonly #maxWaiting: number;
  readonly #blockOf: (client: string) => string;
  #inFlight = 0;
  #waiting = 0;
  /** The blocks that wait, in the order they are served (a Map keeps insertion order). */
  readonly #blocks = new Map<string, Block>();
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
    const waiter = new Waiter(client, name);
    let block = this.#blocks.get(name);
    if (block === undefined) {
      block = { waiting: 0, queues: new Map() };
      this.#blocks.set(name, block);
    }
    const queue = block.queues.get(client);
    if (queue === undefined) block.queues.set(client, [waiter]);
    else queue.push(waiter);
    block.waiting++;
    this.#waiting++;
    return waiter;
  }

  /** Ends `waiting`'s wait unserved: it settles `'expired'`. False when it no longer waited (it was settled before). */
  expire(waiting: Waiting): boolean {
    const waiter = waiting as Waiter;
    const queue = this.#blocks.get(waiter.block)?.queues.get(waiter.client);
    const at = queue?.indexOf(waiter) ?? -1;
    if (queue === undefined || at === -1) return false;
    queue.splice(at, 1);
    this.#left(waiter, queue);
    waiter.settle('expired');
    return true;
  }

  /** Ends every wait unserved: each settles `'expired'`. */
  close(): void {
    const blocks = [...this.#blocks.values()];
    this.#blocks.clear();
    this.#waiting = 0;
    for (const block of blocks)
      for (const queue of block.queues.values()) for (const waiter of queue) waiter.settle('expired');
  }

  /** Frees a slot: the next client in turn of the next block in turn gets it. */
  release(): void {
    const next = this.#blocks.entries().next();
    if (next.done === true) {
      this.#inFlight--;
      return;
    }
    const [name, block] = next.value;
    const [client, queue] = block.queues.entries().next().value as [string, Waiter[]];
    const waiter = queue.shift() as Waiter;
    this.#waiting--;
    block.waiting--;
    // The client goes to the back of its block's line and the block to the back of the line, or each leaves its
    // line when nothing of it waits.
    block.queues.delete(client);
    if (queue.length > 0) block.queues.set(client, queue);
    this.#blocks.delete(name);
    if (block.waiting > 0) this.#blocks.set(name, block);
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
   * Counts `waiter`, just taken out of `queue`, out of the wait and of its block; an empty queue leaves its block,
   * and an empty block the line (a client or block that waits for nothing holds no state).
   */
  #left(waiter: Waiter, queue: Waiter[]): void {
    this.#waiting--;
    const block = this.#blocks.get(waiter.block) as Block;
    block.waiting--;
    if (queue.length === 0) block.queues.delete(waiter.client);
    if (block.waiting === 0) this.#blocks.delete(waiter.block);
  }

  /**
   * Makes room for `client` of `block`: refuses the newest waiter of the fullest block's longest queue, when that
   * block holds at least two more waiters than `block` and nothing of `client` waits (or that queue is at least two
   * longer than its own); else of the longest queue, when it is at least two longer than the client's own.
   */
  #displaceFor(client: string, name: string): boolean {
    let fullest: Block | undefined;
    let most = 0;
    for (const block of this.#blocks.values()) {
      if (block.waiting > most) {
        fullest = block;
        most = block.waiting;
      }
    }
    const own = this.#blocks.get(name);
    const ownQueue = own?.queues.get(client)?.length ?? 0;
    if (fullest !== undefined && fullest !== own && most > (own?.waiting ?? 0) + 1) {
      // Between blocks, a newcomer takes one place while nothing of its own waits; past that, as within a block.
      const inBlock = longestOf([fullest]);
      if (inBlock !== undefined && (ownQueue === 0 || inBlock.length > ownQueue + 1)) return this.#displace(inBlock);
    }
    const longest = longestOf(this.#blocks.values());
    return longest !== undefined && longest.length > ownQueue + 1 && this.#displace(longest);
  }

  /** Refuses the newest waiter of `queue`: always true. */
  #displace(queue: Waiter[]): true {
    const displaced = queue.pop() as Waiter;
    this.#left(displaced, queue);
    displaced.settle('full');
    return true;
  }
}

/** The clients of one block that wait, each with its queue, in the order they are served; and their waiters. */
interface Block {
  waiting: number;
  readonly queues: Map<string, Waiter[]>;
}

/** The longest queue of `blocks`; of those as long, the one served last in the turn. */
function longestOf(blocks: Iterable<Block>): Waiter[] | undefined {
  let longest: Waiter[] | undefined;
  for (const block of blocks) {
    for (const queue of block.queues.values()) if (queue.length >= (longest?.length ?? 0)) longest = queue;
  }
  return longest;
}
