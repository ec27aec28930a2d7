/**
 * Admission against a reference model written from its header comment: random steps (a client asks for a slot, a
 * slot is released, a wait expires, a verification leaves a request running or that request ends, the admission
 * closes), and after each one the same answers, the same waiters settled the same way in the same order, and as many
 * slots in flight. The model keeps plain arrays and searches them; ties between blocks or queues as full go to the one
 * that became so last.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Admission, type Admitted, type Waiting } from '../src/admission.js';
import { clientBlockOf } from '../src/client-key.js';

/** Three blocks of three addresses (IPv4 /24s and an IPv6 /48), and two keys of the app's own. */
const CLIENTS = [
  '127.0.1.1',
  '127.0.1.2',
  '127.0.1.3',
  '127.0.2.1',
  '127.0.2.2',
  '2001:db8:1:100::/56',
  '2001:db8:1:200::/56',
  '2001:db8:1:300::/56',
  'key-a',
  'key-b',
];

type Step =
  | { readonly kind: 'acquire'; readonly client: number }
  | { readonly kind: 'release' }
  | { readonly kind: 'expire'; readonly pick: number }
  | { readonly kind: 'leave' }
  | { readonly kind: 'leftEnded' }
  | { readonly kind: 'close' };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('acquire' as const), client: fc.nat(CLIENTS.length - 1) }) },
  { weight: 4, arbitrary: fc.constant({ kind: 'release' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('expire' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'leave' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'leftEnded' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
);

interface ModelWaiter {
  readonly id: number;
  readonly client: string;
}

/** The header comment's rules over arrays, searched at each step. */
class Model {
  inFlight = 0;
  leftRunning = 0;
  /** Blocks that wait, in the order they are served; in each, its clients that wait, in the order they are served. */
  readonly blocks: { name: string; clients: string[] }[] = [];
  readonly queues = new Map<string, ModelWaiter[]>();
  /** When each waiting client's queue, and each waiting block's count, last changed: ties go to the latest. */
  readonly queueChanged = new Map<string, number>();
  readonly blockChanged = new Map<string, number>();
  readonly settled: [number, Admitted][] = [];
  #clock = 0;

  constructor(
    readonly concurrency: number,
    readonly maxWaiting: number,
  ) {}

  get waiting(): number {
    let waiting = 0;
    for (const queue of this.queues.values()) waiting += queue.length;
    return waiting;
  }

  blockWaiting(name: string): number {
    const block = this.blocks.find((kept) => kept.name === name);
    return block === undefined ? 0 : block.clients.reduce((sum, client) => sum + this.length(client), 0);
  }

  length(client: string): number {
    return this.queues.get(client)?.length ?? 0;
  }

  acquire(id: number, client: string): 'admitted' | 'full' | 'waits' {
    if (this.inFlight < this.concurrency && this.waiting === 0) {
      this.inFlight++;
      return 'admitted';
    }
    if (this.waiting >= this.maxWaiting && !this.#displaceFor(client)) return 'full';
    const name = clientBlockOf(client);
    let block = this.blocks.find((kept) => kept.name === name);
    if (block === undefined) {
      block = { name, clients: [] };
      this.blocks.push(block);
    }
    if (!block.clients.includes(client)) block.clients.push(client);
    const queue = this.queues.get(client) ?? [];
    queue.push({ id, client });
    this.queues.set(client, queue);
    this.#changed(client);
    return 'waits';
  }

  release(): void {
    const block = this.blocks[0];
    if (block === undefined) {
      this.inFlight--;
      return;
    }
    const client = block.clients[0] as string;
    const waiter = this.#takeOut(client, 0);
    // Served: the client to the back of its block's line, the block to the back of the line, while they still wait.
    if (this.length(client) > 0) block.clients.push(block.clients.shift() as string);
    if (this.blocks[0] === block) this.blocks.push(this.blocks.shift() as typeof block);
    this.settled.push([waiter.id, 'admitted']);
  }

  expire(id: number): boolean {
    for (const [client, queue] of this.queues) {
      const at = queue.findIndex((waiter) => waiter.id === id);
      if (at === -1) continue;
      this.#takeOut(client, at);
      this.settled.push([id, 'expired']);
      return true;
    }
    return false;
  }

  close(): void {
    // Settled block by block, client by client, oldest first.
    for (const block of this.blocks)
      for (const client of block.clients)
        for (const waiter of this.queues.get(client) ?? []) this.settled.push([waiter.id, 'expired']);
    this.blocks.length = 0;
    this.queues.clear();
    this.queueChanged.clear();
    this.blockChanged.clear();
  }

  /** Waiting ids, any order. */
  waiters(): number[] {
    return [...this.queues.values()].flatMap((queue) => queue.map((waiter) => waiter.id));
  }

  /**
   * When the wait is full: the newest waiter of the longest queue of the block with the most waiters, when that
   * block has at least two more than the newcomer's own and either nothing of the newcomer waits or that queue is at
   * least two longer than the newcomer's; else of the longest queue, when at least two longer than the newcomer's.
   */
  #displaceFor(client: string): boolean {
    const own = this.length(client);
    const ownBlock = this.blockWaiting(clientBlockOf(client));
    const fullest = this.#latestOfMost(
      this.blocks.map((block) => block.name),
      (name) => this.blockWaiting(name),
      this.blockChanged,
    );
    if (fullest !== undefined && this.blockWaiting(fullest) > ownBlock + 1) {
      const clients = this.blocks.find((block) => block.name === fullest)?.clients ?? [];
      const inBlock = this.#latestOfMost(clients, (held) => this.length(held), this.queueChanged) as string;
      if (own === 0 || this.length(inBlock) > own + 1) return this.#displace(inBlock);
    }
    const longest = this.#latestOfMost([...this.queues.keys()], (held) => this.length(held), this.queueChanged);
    return longest !== undefined && this.length(longest) > own + 1 && this.#displace(longest);
  }

  #latestOfMost(names: string[], count: (name: string) => number, changed: Map<string, number>): string | undefined {
    let best: string | undefined;
    for (const name of names) {
      if (best === undefined) best = name;
      else {
        const [a, b] = [count(name), count(best)];
        if (a > b || (a === b && (changed.get(name) as number) > (changed.get(best) as number))) best = name;
      }
    }
    return best;
  }

  #displace(client: string): true {
    const waiter = this.#takeOut(client, this.length(client) - 1);
    this.settled.push([waiter.id, 'full']);
    return true;
  }

  #takeOut(client: string, at: number): ModelWaiter {
    const queue = this.queues.get(client) as ModelWaiter[];
    const [waiter] = queue.splice(at, 1);
    const name = clientBlockOf(client);
    const block = this.blocks.find((kept) => kept.name === name) as { name: string; clients: string[] };
    // A client or block that waits for nothing leaves its line: it comes back at the back.
    if (queue.length === 0) {
      this.queues.delete(client);
      block.clients.splice(block.clients.indexOf(client), 1);
    }
    if (block.clients.length === 0) this.blocks.splice(this.blocks.indexOf(block), 1);
    this.#changed(client);
    return waiter as ModelWaiter;
  }

  #changed(client: string): void {
    const now = ++this.#clock;
    if (this.queues.has(client)) this.queueChanged.set(client, now);
    else this.queueChanged.delete(client);
    const name = clientBlockOf(client);
    if (this.blockWaiting(name) > 0) this.blockChanged.set(name, now);
    else this.blockChanged.delete(name);
  }
}

describe('Admission against its model', () => {
  it('answers, serves, refuses and expires as its header comment says, whatever the steps (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 8 }),
        fc.array(step, { maxLength: 120, size: 'max' }),
        async (concurrency, maxWaiting, steps) => {
          const admission = new Admission(concurrency, maxWaiting, clientBlockOf);
          const model = new Model(concurrency, maxWaiting);
          const settled: [number, Admitted][] = [];
          const waits = new Map<number, Waiting>();
          /** Slots held by verifications under way (admitted, not released, not left running). */
          let held = 0;
          let nextId = 0;
          const flush = () => new Promise((resolve) => setImmediate(resolve));
          for (const { kind, ...args } of steps) {
            if (kind === 'acquire') {
              const client = CLIENTS[(args as { client: number }).client] as string;
              const id = nextId++;
              const slot = admission.acquire(() => client);
              const expected = model.acquire(id, client);
              expect(typeof slot === 'string' ? slot : 'waits').toBe(expected);
              if (slot === 'admitted') held++;
              if (typeof slot !== 'string') {
                waits.set(id, slot);
                void slot.admitted.then((admitted) => {
                  settled.push([id, admitted]);
                  if (admitted === 'admitted') held++;
                });
              }
            } else if (kind === 'release') {
              if (held === 0) continue;
              held--;
              admission.release();
              model.release();
            } else if (kind === 'expire') {
              // Mostly a wait still open; else any asked for so far: one that no longer waits is not ended again.
              const pick = (args as { pick: number }).pick;
              const open = model.waiters();
              const ids = pick % 4 === 0 || open.length === 0 ? [...waits.keys()] : open;
              if (ids.length === 0) continue;
              const id = ids[Math.floor(pick / 4) % ids.length] as number;
              expect(admission.expire(waits.get(id) as Waiting)).toBe(model.expire(id));
            } else if (kind === 'leave') {
              if (held === 0) continue;
              held--;
              const share = admission.leaveRunning();
              expect(share).toBe(model.leftRunning++ % 2 === 1);
              if (share) {
                admission.release();
                model.release();
              }
            } else if (kind === 'leftEnded') {
              if (model.leftRunning === 0) continue;
              admission.leftRunningEnded();
              if (--model.leftRunning % 2 === 0) model.release();
            } else {
              admission.close();
              model.close();
            }
            await flush();
            expect(settled).toEqual(model.settled);
            expect(admission.inFlight).toBe(model.inFlight);
            // Slots in flight: those held, and one per two requests left running (rounded up).
            expect(model.inFlight).toBe(held + Math.ceil(model.leftRunning / 2));
            expect(admission.inFlight).toBeLessThanOrEqual(concurrency);
            expect(model.waiting).toBeLessThanOrEqual(maxWaiting);
          }
          // Every wait still open is expired by close(), none twice.
          admission.close();
          model.close();
          await flush();
          expect(settled).toEqual(model.settled);
          expect(new Set(settled.map(([id]) => id)).size).toBe(waits.size);
          for (const id of waits.keys()) expect(admission.expire(waits.get(id) as Waiting)).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });
});
