/**
 * Admission as a unit: slots, the bounded wait, fairness between clients,
 * and waits ended by their caller. No timing is asserted.
 */
import { describe, expect, it } from 'vitest';
import { Admission, type Admitted, type Waiting } from '../src/admission.js';
import { clientBlockOf } from '../src/client-key.js';

/** What `slot` comes to: itself when it was decided at once, else what its wait settles to. */
function outcome(slot: 'admitted' | 'full' | Waiting): Promise<Admitted> {
  return typeof slot === 'string' ? Promise.resolve(slot) : slot.admitted;
}

/** A slot that had to wait. */
function waiting(slot: 'admitted' | 'full' | Waiting): Waiting {
  if (typeof slot === 'string') throw new Error(`expected to wait, got ${slot}`);
  return slot;
}

describe('Admission', () => {
  it('admits up to its concurrency at once, then queues', () => {
    const admission = new Admission(2, 10);
    expect(admission.acquire(() => 'a')).toBe('admitted');
    expect(admission.acquire(() => 'a')).toBe('admitted');
    expect(waiting(admission.acquire(() => 'a')).admitted).toBeInstanceOf(Promise);
    expect(admission.inFlight).toBe(2);
  });

  it('hands a freed slot to the next waiter, keeping the in-flight count', async () => {
    const admission = new Admission(1, 10);
    admission.acquire(() => 'a');
    const next = waiting(admission.acquire(() => 'b'));
    admission.release();
    expect(await next.admitted).toBe('admitted');
    expect(admission.inFlight).toBe(1);
    admission.release();
    expect(admission.inFlight).toBe(0);
  });

  it('refuses at once when the wait is full and the newcomer waits as much as anyone', () => {
    const admission = new Admission(1, 2);
    admission.acquire(() => 'a');
    admission.acquire(() => 'a');
    admission.acquire(() => 'b');
    expect(admission.acquire(() => 'b')).toBe('full');
  });

  it('serves waiting clients in turn, however many one of them queued', async () => {
    const admission = new Admission(1, 100);
    admission.acquire(() => 'flood');
    const order: string[] = [];
    const track = (client: string) => {
      const slot = waiting(admission.acquire(() => client)).admitted;
      slot.then(() => order.push(client));
      return slot;
    };
    const pending = [...Array.from({ length: 5 }, () => track('flood')), track('b'), track('c')];
    for (let i = 0; i < pending.length; i++) {
      admission.release();
      await Promise.resolve();
    }
    await Promise.all(pending);
    // After the flood's first waiter, b and c each get the very next slots.
    expect(order.slice(0, 3)).toEqual(['flood', 'b', 'c']);
    expect(order.filter((client) => client === 'flood')).toHaveLength(5);
  });

  it("lets a client with nothing waiting take the place of the longest queue's newest waiter", async () => {
    const admission = new Admission(1, 4);
    admission.acquire(() => 'flood');
    const flood = Array.from({ length: 4 }, () => waiting(admission.acquire(() => 'flood')));
    const b = waiting(admission.acquire(() => 'b'));
    expect(await flood[3]?.admitted).toBe('full');
    admission.release();
    admission.release();
    expect(await flood[0]?.admitted).toBe('admitted');
    expect(await b.admitted).toBe('admitted');
  });

  it('weighs the clients of one block together: many addresses of one /24 cannot hold a full wait', async () => {
    const admission = new Admission(1, 4, clientBlockOf);
    admission.acquire(() => '127.0.1.1');
    const sybils = [2, 3, 4, 5].map((n) => waiting(admission.acquire(() => `127.0.1.${n}`)));
    // Another address of the same block waits as much as any of them: refused.
    expect(admission.acquire(() => '127.0.1.6')).toBe('full');
    // An address of another block takes the place of the block's newest waiter.
    const newcomer = waiting(admission.acquire(() => '127.0.2.1'));
    expect(await sybils[3]?.admitted).toBe('full');
    // Then served in turn, block by block: the newcomer's block is next after the busy block's first waiter.
    const order: string[] = [];
    for (const [name, slot] of [
      ...sybils.slice(0, 3).map((s, i) => [`127.0.1.${i + 2}`, s] as const),
      ['127.0.2.1', newcomer] as const,
    ]) {
      void slot?.admitted.then(() => order.push(name));
    }
    for (let i = 0; i < 4; i++) {
      admission.release();
      await Promise.resolve();
    }
    await newcomer.admitted;
    expect(order).toEqual(['127.0.1.2', '127.0.2.1', '127.0.1.3', '127.0.1.4']);
  });

  it('serves blocks in turn, then the clients of a block in turn: many addresses of one block get its one turn', async () => {
    const admission = new Admission(1, 64, clientBlockOf);
    admission.acquire(() => '2001:db8:1:100::/56');
    const order: string[] = [];
    const track = (client: string) => {
      const slot = waiting(admission.acquire(() => client)).admitted;
      slot.then(() => order.push(client));
      return slot;
    };
    // Forty /56s of one /48, one waiter each, then another /48 waiting twice, then an address of a third block.
    const pending = [
      ...Array.from({ length: 40 }, (_, n) => track(`2001:db8:1:${(n + 2).toString(16)}00::/56`)),
      track('2001:db8:2:100::/56'),
      track('2001:db8:2:100::/56'),
      track('192.0.2.1'),
    ];
    for (let i = 0; i < 6; i++) {
      admission.release();
      await Promise.resolve();
    }
    // The first block's addresses take one slot in three, as one address would.
    expect(order).toEqual([
      '2001:db8:1:200::/56',
      '2001:db8:2:100::/56',
      '192.0.2.1',
      '2001:db8:1:300::/56',
      '2001:db8:2:100::/56',
      '2001:db8:1:400::/56',
    ]);
    for (let i = 6; i < pending.length; i++) admission.release();
    await Promise.all(pending);
    expect(order.slice(6)).toEqual(Array.from({ length: 37 }, (_, n) => `2001:db8:1:${(n + 5).toString(16)}00::/56`));
    admission.release();
    expect(admission.inFlight).toBe(0);
  });

  it('within a block, serves its clients in turn', async () => {
    const admission = new Admission(1, 10, clientBlockOf);
    admission.acquire(() => '127.0.1.1');
    const order: string[] = [];
    const slots = ['127.0.1.1', '127.0.1.1', '127.0.1.1', '127.0.1.2', '127.0.1.3'].map((client) => {
      const slot = waiting(admission.acquire(() => client)).admitted;
      slot.then(() => order.push(client));
      return slot;
    });
    for (let i = 0; i < slots.length; i++) admission.release();
    await Promise.all(slots);
    expect(order).toEqual(['127.0.1.1', '127.0.1.2', '127.0.1.3', '127.0.1.1', '127.0.1.1']);
  });

  it('lets a newcomer of a quiet block take one place from a busy block, not more', async () => {
    const admission = new Admission(1, 6, clientBlockOf);
    admission.acquire(() => '127.0.1.1');
    const busy = [1, 2, 3, 4, 5, 6].map((n) => waiting(admission.acquire(() => `127.0.1.${n}`)));
    waiting(admission.acquire(() => '127.0.2.7'));
    expect(admission.acquire(() => '127.0.2.7')).toBe('full');
    expect(admission.acquire(() => '127.0.2.7')).toBe('full');
    expect(await busy[5]?.admitted).toBe('full');
  });

  it("a busy block with no queue long enough to give up a place does not shield another block's long queue", async () => {
    const admission = new Admission(1, 16, clientBlockOf);
    admission.acquire(() => '127.0.0.1');
    // Block 127.0.1.0/24: ten waiters, one per address. One address of 127.0.2.0/24: five.
    for (let n = 1; n <= 10; n++) waiting(admission.acquire(() => `127.0.1.${n}`));
    const hog = [1, 2, 3, 4, 5].map(() => waiting(admission.acquire(() => '127.0.2.1')));
    // A newcomer of a third block takes the last place, then a second one from the hog's queue.
    waiting(admission.acquire(() => '127.0.3.1'));
    const second = admission.acquire(() => '127.0.3.1');
    expect(second).not.toBe('full');
    expect(await hog[4]?.admitted).toBe('full');
  });

  it('without blocks, one waiter on each of as many clients as the wait holds refuses every newcomer', () => {
    const admission = new Admission(1, 4);
    admission.acquire(() => '127.0.1.1');
    for (const n of [2, 3, 4, 5]) waiting(admission.acquire(() => `127.0.1.${n}`));
    expect(admission.acquire(() => '127.0.2.1')).toBe('full');
  });

  it('ends a wait its caller expires, and the slot goes to the next one', async () => {
    const admission = new Admission(1, 10);
    admission.acquire(() => 'a');
    const short = waiting(admission.acquire(() => 'b'));
    const long = waiting(admission.acquire(() => 'c'));
    expect(admission.expire(short)).toBe(true);
    expect(await short.admitted).toBe('expired');
    admission.release();
    expect(await long.admitted).toBe('admitted');
    // A wait that already ended is not ended again.
    expect(admission.expire(long)).toBe(false);
    expect(admission.expire(short)).toBe(false);
  });

  it('never admits more than its concurrency, whatever the interleaving', async () => {
    const admission = new Admission(3, 50);
    let inFlight = 0;
    let most = 0;
    const work = async (client: string) => {
      const slot = admission.acquire(() => client);
      if (typeof slot !== 'string' && Math.random() < 0.1) admission.expire(slot);
      if ((await outcome(slot)) !== 'admitted') return;
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 5));
      inFlight--;
      admission.release();
    };
    await Promise.all(Array.from({ length: 200 }, (_, i) => work(`client-${i % 7}`)));
    expect(most).toBe(3);
    expect(admission.inFlight).toBe(0);
  });
});
