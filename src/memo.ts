/**
 * The per-connection memo. A keep-alive client sends the same credential on
 * every request; its connection remembers what the last one resolved to:
 *
 * - the cache key of its secret (SHA-256 is the largest single cost of a
 *   cache hit), for as long as the secret stays the same;
 * - for gates whose providers all read one header (`Provider.source`), the
 *   exact header value and the entry it resolved to, so a repeat skips
 *   `extract`, the key and the store. Guards still run on every request.
 *
 * A remembered entry is used only while the store's generation is the one
 * it was read at (no entry has left the store since), while it is fresh, and
 * for at most {@link MEMO_READ_INTERVAL_MS} after the store was last read
 * (which keeps the entry recent in the LRU).
 *
 * Memos live in a WeakMap keyed by the connection object: nothing is added
 * to the socket, nothing shows through `util.inspect`, and a memo goes away
 * with its connection. Each gate has its own.
 */
import type { AuthContext } from './context.js';
import type { Accepted } from './store.js';

/** Longest time a connection uses its remembered entry without reading the store. */
export const MEMO_READ_INTERVAL_MS = 1000;

interface Memo {
  /** The provider scope and secret the key was computed for. */
  readonly scope: string;
  readonly secret: string;
  readonly key: string;
  /** The header value `entry` was found for, when the gate reads one header only. */
  header: string | undefined;
  entry: Accepted | undefined;
  generation: number;
  readAt: number;
}

export class ConnectionMemo {
  readonly #memos = new WeakMap<object, Memo>();

  /** The context `connection` last resolved `header` to, when it is certain to be the answer again at `now`. */
  recall(connection: object, header: string, generation: number, now: number): AuthContext | undefined {
    const memo = this.#memos.get(connection);
    if (memo === undefined || memo.header !== header || memo.generation !== generation) return undefined;
    const entry = memo.entry;
    if (entry === undefined || now - memo.readAt >= MEMO_READ_INTERVAL_MS || !entry.freshAt(now)) return undefined;
    return entry.context;
  }

  /** The key for `secret` under `scope`, computed by `keyOf` only when this connection's secret changed. */
  key(connection: object, scope: string, secret: string, keyOf: (scope: string, secret: string) => string): string {
    const memo = this.#memos.get(connection);
    if (memo !== undefined && memo.secret === secret && memo.scope === scope) return memo.key;
    const fresh: Memo = {
      scope,
      secret,
      key: keyOf(scope, secret),
      header: undefined,
      entry: undefined,
      generation: -1,
      readAt: 0,
    };
    this.#memos.set(connection, fresh);
    return fresh.key;
  }

  /** Remembers that `header` on `connection` resolved to `entry`, read from the store at `now` and `generation`. */
  remember(connection: object, header: string, entry: Accepted, generation: number, now: number): void {
    const memo = this.#memos.get(connection);
    if (memo === undefined) return;
    memo.header = header;
    memo.entry = entry;
    memo.generation = generation;
    memo.readAt = now;
  }

  /** Forgets `connection`'s memo (its last request carried no credential). */
  forget(connection: object): void {
    this.#memos.delete(connection);
  }
}
