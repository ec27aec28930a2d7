/**
 * Closes gates, mocks and proxies after each test, so no test leaves a
 * server or a connection pool behind. Call once at the top of a test file.
 */
import { afterEach } from 'vitest';

interface Closable {
  close(): Promise<void>;
}

/** Registers the afterEach hook and returns `closeLater(thing)`, which hands `thing` back. */
export function closeAfterEach(): <T extends Closable>(thing: T) => T {
  const open: Closable[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((thing) => thing.close()));
  });
  return (thing) => {
    open.push(thing);
    return thing;
  };
}
