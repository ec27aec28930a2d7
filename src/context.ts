/**
 * `AuthContext`: who a verified credential belongs to and what it may do.
 * One immutable object per verified credential lives in the cache and is
 * handed to every request that presents that credential, so it is kept
 * small: permission lists are interned and shared between contexts, and
 * `can()` is a Set lookup.
 */
import { hash } from 'node:crypto';
import { LRUCache } from 'lru-cache';

/**
 * A permission list with its lookup set, shared by every context that has the same list. Immutable:
 * the list is frozen, and the set is reachable only through {@link Grants.has}.
 */
export class Grants {
  readonly list: readonly string[];
  readonly #set: ReadonlySet<string>;

  constructor(permissions: readonly string[]) {
    this.list = Object.freeze([...permissions]);
    this.#set = new Set(this.list);
    Object.freeze(this);
  }

  has(permission: string): boolean {
    return this.#set.has(permission);
  }
}

/**
 * Most characters of permission lists the table keeps (each list counted by its names joined): lists come from
 * providers, and one may be as long as an answer (64 KiB by default), so a count alone would let 4,096 such lists
 * stay in memory after every context that held them is gone.
 */
const MAX_INTERNED_CHARACTERS = 4 * 1024 * 1024;

/**
 * The longest key the table looks up as it is. V8 hashes a longer string by its length alone, so such keys of one
 * length would share one bucket of the table's `Map`, and each lookup compare its key with every one of them (a few
 * thousand lists of one user's many groups: milliseconds of CPU per verification). A longer key is looked up by its
 * SHA-256 digest.
 */
const MAX_PLAIN_KEY_LENGTH = 16_383;

/**
 * Interns permission lists: identical lists (the common case: a few roles,
 * many tokens) share one frozen array and one Set. Bounded in count and in
 * size, because the lists come from outside; an evicted list is simply built
 * again.
 */
export class GrantsTable {
  readonly #table = new LRUCache<string, Grants>({ max: 4096, maxSize: MAX_INTERNED_CHARACTERS });
  /** The list interned last: a run of tokens of one role is answered by comparing names, without a key or lookup. */
  #last: Grants | undefined;

  intern(permissions: readonly string[]): Grants {
    const last = this.#last;
    if (last !== undefined && sameList(last.list, permissions)) return last;
    // "\n" cannot be confused with a separator inside names that matter here;
    // a collision (or a digest's) would only share an identical-looking list, so verify it.
    const joined = permissions.join('\n');
    const key = joined.length > MAX_PLAIN_KEY_LENGTH ? hash('sha256', joined, 'base64') : joined;
    let grants = this.#table.get(key);
    if (grants === undefined || !sameList(grants.list, permissions)) {
      grants = new Grants(permissions);
      // A list longer than the table's whole size is not kept (lru-cache refuses it), only shared while it is last.
      this.#table.set(key, grants, { size: joined.length + 1 });
    }
    this.#last = grants;
    return grants;
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Per gate and provider: what every context of that provider shares. */
export interface ContextOrigin {
  readonly provider: string;
  readonly realm: string;
}

/** Marks contexts made by any copy of this major version of the package (ESM and CJS builds side by side). */
const CONTEXT_BRAND = Symbol.for('tokengate.AuthContext@2');

/** @internal Whether `value` is an {@link AuthContext}, from this copy of the package or another. */
export function isAuthContext(value: unknown): value is AuthContext {
  return (
    typeof value === 'object' && value !== null && (value as { [CONTEXT_BRAND]?: unknown })[CONTEXT_BRAND] === true
  );
}

/** @internal What a context is made of; the store makes contexts. `details` is a `frozenDetails` copy already. */
export interface AuthContextInit {
  readonly origin: ContextOrigin;
  readonly subject: string;
  readonly grants: Grants;
  /** Epoch ms. */
  readonly expiresAt: number | undefined;
  readonly details: Readonly<Record<string, unknown>>;
}

/** Makes a context flagged as served stale (see the static block of {@link AuthContext}). */
let staleContext: (init: AuthContextInit) => AuthContext;

/**
 * The result of a successful `gate.authenticate()`: who the credential
 * belongs to and what it may do. Immutable; one instance is shared by every
 * request that presents the same credential while it is cached.
 */
export class AuthContext {
  /** @internal */ readonly origin: ContextOrigin;
  /**
   * Who the credential belongs to: the token id (OnlineOrNot), the user id (Partoo), `sub` (introspection; else
   * `username`, else `client_id`).
   */
  readonly subject: string;
  /** @internal */ readonly grants: Grants;
  /** @internal epoch ms */ readonly expiresAtMs: number | undefined;
  /** The validated provider answer, secrets left out. */
  readonly details: Readonly<Record<string, unknown>>;

  /** @internal Contexts are made by the gate's store: {@link AuthContext.of}. */
  static of(init: AuthContextInit): AuthContext {
    return new AuthContext(init);
  }

  /** Contexts are made by the gate; a test gets real ones from `stubProvider` (`tokengate/testing`). */
  private constructor(init: AuthContextInit) {
    this.origin = init.origin;
    this.subject = init.subject;
    this.grants = init.grants;
    this.expiresAtMs = init.expiresAt;
    this.details = init.details;
    Object.freeze(this);
  }

  /**
   * True when the provider failed and this answer was served from cache past
   * its time to live, under the gate's `staleIfError` option.
   */
  get stale(): boolean {
    return false;
  }

  /** Name of the provider that verified the credential. */
  get provider(): string {
    return this.origin.provider;
  }

  /** Permissions granted by the provider. Shared between contexts: do not mutate (it is frozen). */
  get permissions(): readonly string[] {
    return this.grants.list;
  }

  /** When the credential itself expires, if the provider said. */
  get expiresAt(): Date | undefined {
    return this.expiresAtMs === undefined ? undefined : new Date(this.expiresAtMs);
  }

  /** Whether the credential carries `permission` (exact, case-sensitive match). */
  can(permission: string): boolean {
    return this.grants.has(permission);
  }

  /** @internal A copy flagged as served stale. */
  asStale(): AuthContext {
    return staleContext({
      origin: this.origin,
      subject: this.subject,
      grants: this.grants,
      expiresAt: this.expiresAtMs,
      details: this.details,
    });
  }

  static {
    /**
     * A context served past its time to live while the provider fails. `stale` is a getter, not a
     * field: each cached context is one field (8 bytes) smaller, and stale copies are rare. Declared
     * inside the class, the one place its private constructor may be extended from.
     */
    class StaleAuthContext extends AuthContext {
      override get stale(): boolean {
        return true;
      }
    }
    staleContext = (init) => new StaleAuthContext(init);
  }

  /** What `JSON.stringify` shows: provider, subject, permissions, `expiresAt` (ISO) when known, `stale`; no details. */
  toJSON(): { provider: string; subject: string; permissions: readonly string[]; expiresAt?: string; stale: boolean } {
    const json: {
      provider: string;
      subject: string;
      permissions: readonly string[];
      expiresAt?: string;
      stale: boolean;
    } = {
      provider: this.provider,
      subject: this.subject,
      permissions: this.permissions,
      stale: this.stale,
    };
    if (this.expiresAtMs !== undefined) json.expiresAt = new Date(this.expiresAtMs).toISOString();
    return json;
  }
}

// On the prototype: one property for all contexts, none per instance.
Object.defineProperty(AuthContext.prototype, CONTEXT_BRAND, { value: true });
