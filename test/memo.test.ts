/**
 * The per-connection memo as a unit, without a socket: any object stands for
 * a connection. What it remembers is used only while it is certain to be the
 * answer again, and nothing raw shows on the connection.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AuthContext, GrantsTable } from '../src/context.js';
import { ConnectionMemo, MEMO_READ_INTERVAL_MS } from '../src/memo.js';
import { Accepted, cacheKey } from '../src/store.js';

const HEADER = 'Bearer SECRETmemoToken1';
const SECRET = 'SECRETmemoToken1';

function entry(freshUntil: number): Accepted {
  const context = AuthContext.of({
    origin: { provider: 'p', realm: 'api' },
    subject: 'subject-1',
    grants: new GrantsTable().intern(['read']),
    expiresAt: undefined,
    details: {},
  });
  return Accepted.of(context, freshUntil, freshUntil);
}

/** A memo holding `HEADER` -> entry on a fresh connection, read at `now` and generation 7. */
function remembered(now = 1000, freshUntil = now + 60_000) {
  const memo = new ConnectionMemo();
  const connection = {};
  memo.key(connection, 'scope', SECRET, cacheKey);
  const stored = entry(freshUntil);
  memo.remember(connection, HEADER, stored, 7, now);
  return { memo, connection, stored };
}

describe('ConnectionMemo: keys', () => {
  it('computes the key once per connection and secret', () => {
    const memo = new ConnectionMemo();
    const connection = {};
    let computed = 0;
    const keyOf = (scope: string, secret: string) => {
      computed++;
      return cacheKey(scope, secret);
    };
    const first = memo.key(connection, 'scope', SECRET, keyOf);
    expect(memo.key(connection, 'scope', SECRET, keyOf)).toBe(first);
    expect(first).toBe(cacheKey('scope', SECRET));
    expect(computed).toBe(1);
  });

  it('computes a new key when the secret or the scope changes, and for another connection', () => {
    const memo = new ConnectionMemo();
    const a = {};
    let computed = 0;
    const keyOf = (scope: string, secret: string) => {
      computed++;
      return cacheKey(scope, secret);
    };
    memo.key(a, 'scope', SECRET, keyOf);
    expect(memo.key(a, 'scope', 'SECRETother', keyOf)).toBe(cacheKey('scope', 'SECRETother'));
    expect(memo.key(a, 'other-scope', 'SECRETother', keyOf)).toBe(cacheKey('other-scope', 'SECRETother'));
    expect(memo.key({}, 'other-scope', 'SECRETother', keyOf)).toBe(cacheKey('other-scope', 'SECRETother'));
    expect(computed).toBe(4);
  });
});

describe('ConnectionMemo: recall', () => {
  it('gives the remembered context back for the same header, generation and time', () => {
    const { memo, connection, stored } = remembered();
    expect(memo.recall(connection, HEADER, 7, 1000)).toBe(stored.context);
    expect(memo.recall(connection, HEADER, 7, 1000 + MEMO_READ_INTERVAL_MS - 1)).toBe(stored.context);
  });

  it('gives nothing for another header, even one that differs only in case or spacing', () => {
    const { memo, connection } = remembered();
    for (const header of ['Bearer SECRETmemoToken2', 'bearer SECRETmemoToken1', 'Bearer  SECRETmemoToken1']) {
      expect(memo.recall(connection, header, 7, 1000)).toBeUndefined();
    }
  });

  it('gives nothing once an entry left the store (another generation)', () => {
    const { memo, connection } = remembered();
    expect(memo.recall(connection, HEADER, 8, 1000)).toBeUndefined();
  });

  it('gives nothing past the entry freshness, nor a read interval after the last store read', () => {
    const { memo, connection } = remembered(1000, 1500);
    expect(memo.recall(connection, HEADER, 7, 1499)).toBeDefined();
    expect(memo.recall(connection, HEADER, 7, 1500)).toBeUndefined();
    const long = remembered(1000);
    expect(long.memo.recall(long.connection, HEADER, 7, 1000 + MEMO_READ_INTERVAL_MS)).toBeUndefined();
  });

  it('gives nothing on another connection, or from another memo (another gate)', () => {
    const { memo } = remembered();
    expect(memo.recall({}, HEADER, 7, 1000)).toBeUndefined();
    const other = new ConnectionMemo();
    const { connection } = remembered();
    expect(other.recall(connection, HEADER, 7, 1000)).toBeUndefined();
  });

  it('remembers nothing for a connection it computed no key for', () => {
    const memo = new ConnectionMemo();
    const connection = {};
    memo.remember(connection, HEADER, entry(61_000), 7, 1000);
    expect(memo.recall(connection, HEADER, 7, 1000)).toBeUndefined();
  });

  it('forgets a connection whose request carried no credential', () => {
    const { memo, connection } = remembered();
    memo.forget(connection);
    expect(memo.recall(connection, HEADER, 7, 1000)).toBeUndefined();
  });

  it('forgets the remembered context when the connection sends another secret', () => {
    const { memo, connection } = remembered();
    memo.key(connection, 'scope', 'SECRETnext', cacheKey);
    expect(memo.recall(connection, HEADER, 7, 1000)).toBeUndefined();
  });

  it('leaves nothing on the connection object: no property, nothing in util.inspect', () => {
    const { connection } = remembered();
    expect(Reflect.ownKeys(connection)).toEqual([]);
    expect(inspect(connection, { showHidden: true, depth: 5 })).not.toContain('SECRET');
  });
});
