/**
 * Why the verdict cache keeps expiry on its entries instead of lru-cache's TTL:
 * `npx tsx bench/lru-ttl-timers.ts`.
 *
 * With a TTL, lru-cache reads its clock once per `ttlResolution` (1 ms) and arms a timer to forget the
 * reading: every `get()` after a quiet millisecond arms a new one. In a server, where the event loop
 * turns between requests, that is a timer per request at any moderate rate. Counted here with an
 * async hook over 100 `get()` calls 2 ms apart, without and with a TTL.
 */
import { createHook } from 'node:async_hooks';
import { LRUCache } from 'lru-cache';

const GETS = 100;

for (const ttl of [0, 60_000]) {
  let timers = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === 'Timeout') timers++;
    },
  }).enable();
  const cache = new LRUCache<string, number>({ max: 10, ttl });
  cache.set('key', 1);
  for (let i = 0; i < GETS; i++) {
    // Let the event loop turn (and lru-cache's timer fire) for 2 ms, as between requests.
    const start = performance.now();
    while (performance.now() - start < 2) await new Promise((resolve) => setImmediate(resolve));
    cache.get('key');
  }
  hook.disable();
  console.log(`ttl ${ttl === 0 ? 'none' : `${ttl} ms`}: ${timers} timers armed by ${GETS} get() calls`);
}
