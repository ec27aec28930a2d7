/**
 * Admission as a unit: slots, the bounded wait, fairness between clients,
 * and waits that expire. No timing is asserted beyond "before the bound".
 */
import { describe, expect, it } from 'vitest';
import { Admission, type Admitted } from '../src/admission.js';

/** Settles `pending` and reports what each got, in order. */
async function outcomes(pending: ReadonlyArray<Admitted | Promise<Admitted>>): Promise<Admitted[]> {
  return Promise.all(pending);
}

describe('Admission', () => {
  it('admits up to its concurrency at once, then queues', () => {
    const admission = new Admission(2, 10);
    expect(admission.acquire('a', 1000)).toBe('admitted');
    expect(admission.acquire('a', 1000)).toBe('admitted');
    expect(admission.acquire('a', 1000)).toBeInstanceOf(Promise);
    expect(admission.inFlight).toBe(2);
  });

  it('hands a freed slot to the next waiter, keeping the in-flight count', async () => {
    const admission = new Admission(1, 10);
    admission.acquire('a', 1000);
    const waiting = admission.acquire('b', 1000);
    admission.release();
    expect(await waiting).toBe('admitted');
    expect(admission.inFlight).toBe(1);
    admission.release();
    expect(admission.inFlight).toBe(0);
  });

  it('refuses at once when the wait is full and the newcomer waits as much as anyone', () => {
    const admission = new Admission(1, 2);
    admission.acquire('a', 1000);
    admission.acquire('a', 1000);
    admission.acquire('b', 1000);
    expect(admission.acquire('b', 1000)).toBe('full');
  });

  it('serves waiting clients in turn, however many one of them queued', async () => {
    const admission = new Admission(1, 100);
    admission.acquire('flood', 1000);
    const order: string[] = [];
    const track = (client: string) => {
      const slot = admission.acquire(client, 1000) as Promise<Admitted>;
      slot.then(() => order.push(client));
      return slot;
    };
    const pending = [...Array.from({ length: 5 }, () => track('flood')), track('b'), track('c')];
    for (let i = 0; i < pending.length; i++) {
      admission.release();
      await Promise.resolve();
    }
    await outcomes(pending);
    // After the flood's first waiter, b and c each get the very next slots.
    expect(order.slice(0, 3)).toEqual(['flood', 'b', 'c']);
    expect(order.filter((client) => client === 'flood')).toHaveLength(5);
  });

  it("lets a client with nothing waiting take the place of the longest queue's newest waiter", async () => {
    const admission = new Admission(1, 4);
    admission.acquire('flood', 1000);
    const flood = Array.from({ length: 4 }, () => admission.acquire('flood', 1000));
    const b = admission.acquire('b', 1000);
    expect(b).toBeInstanceOf(Promise);
    expect(await flood[3]).toBe('full');
    admission.release();
    admission.release();
    expect(await flood[0]).toBe('admitted');
    expect(await b).toBe('admitted');
  });

  it('expires a wait after its bound, and the slot goes to the next one', async () => {
    const admission = new Admission(1, 10);
    admission.acquire('a', 1000);
    const short = admission.acquire('b', 20);
    const long = admission.acquire('c', 5000);
    expect(await short).toBe('expired');
    admission.release();
    expect(await long).toBe('admitted');
  });

  it('never admits more than its concurrency, whatever the interleaving', async () => {
    const admission = new Admission(3, 50);
    let inFlight = 0;
    let most = 0;
    const work = async (client: string) => {
      const slot = admission.acquire(client, 5000);
      if ((await slot) !== 'admitted') return;
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
