/**
 * Guards: permission checks built once, at route definition, and run on
 * every request against the (possibly cached) `AuthContext`. A cache hit
 * never skips them.
 */
import { AuthContext, type Grants, isAuthContext } from './context.js';
import { formatScope, insufficientScope } from './errors.js';

/** A permission check made by {@link requires} or {@link requiresAny}. */
export interface Guard {
  /** The permissions named, in the order given. */
  readonly permissions: readonly string[];
  /** `all`: every permission is needed; `any`: one is enough. */
  readonly mode: 'all' | 'any';
  /** Whether `auth` passes. */
  allows(auth: AuthContext): boolean;
}

/** @throws AuthError 403 `insufficient_scope` in `realm` when `auth` does not pass `guard`. */
export function enforce(guard: Guard, auth: AuthContext, realm: string): void {
  if (!guard.allows(auth)) throw insufficientScope(realm, guard.permissions, guard.mode === 'all');
}

/** A UTF-16 surrogate that is not half of a pair: such a string has no UTF-8 form, so no scope can name it. */
const LONE_SURROGATE = /\p{Surrogate}/u;
/** A control character, or white space at either end: a typo, which no provider's permission would match. */
const NOT_A_NAME = /[\p{Cc}]|^\s|\s$/u;
/** The longest permission name, in UTF-16 units. */
const MAX_NAME_LENGTH = 256;
/**
 * The most characters the names of one guard take in its 403's `WWW-Authenticate` (in `error_description` and,
 * percent-encoded, in `scope`): past it, clients and proxies refuse the response's headers (Node's limit for all of
 * them together is 16 KiB).
 */
const MAX_CHALLENGE_NAMES = 8192;

/**
 * The permission list of a guard, each name once.
 *
 * @throws TypeError when a name is not a non-empty, well-formed string of at most 256 characters without a control
 *   character or white space at either end, or the names take more than 8,192 characters of the 403's challenge; an
 *   array among them is a list passed whole; a guard among them is a guard passed for names; another object means the
 *   factory itself was mounted as middleware (called with a request).
 */
function checkPermissions(permissions: readonly string[], factory: string): readonly string[] {
  if (permissions.length === 0) throw new TypeError(`${factory}() needs at least one permission`);
  for (const permission of permissions as readonly unknown[]) {
    if (Array.isArray(permission)) {
      throw new TypeError(
        `${factory}() takes permission names as arguments: ${factory}(...names), not ${factory}(names)`,
      );
    }
    if (permission instanceof String) {
      throw new TypeError(`${factory}() takes permission names as strings, got a String object: ${factory}('name')`);
    }
    if (typeof permission === 'object' && permission !== null) {
      throw new TypeError(
        'allows' in permission
          ? `${factory}() takes permission names, got a guard: pass the names themselves, ${factory}('permission')`
          : 'authenticateNow' in permission
            ? `${factory}() takes permission names, got a gate: ${factory}('permission') reads what authenticate(gate) found`
            : `${factory} was mounted without being called: mount ${factory}('permission'), not ${factory}`,
      );
    }
    if (typeof permission !== 'string' || permission.length === 0) {
      throw new TypeError(`${factory}() takes non-empty permission names`);
    }
    if (LONE_SURROGATE.test(permission)) {
      throw new TypeError(`${factory}() takes well-formed permission names, got ${JSON.stringify(permission)}`);
    }
    if (NOT_A_NAME.test(permission)) {
      throw new TypeError(
        `${factory}() takes names without control characters or white space at either end, got ${JSON.stringify(permission)}`,
      );
    }
    if (permission.length > MAX_NAME_LENGTH) {
      throw new TypeError(
        `${factory}() takes names of at most ${MAX_NAME_LENGTH} characters, got ${permission.length}`,
      );
    }
  }
  const list = Object.freeze([...new Set(permissions)]);
  const length = list.join(', ').length + formatScope(list).length;
  if (length > MAX_CHALLENGE_NAMES) {
    throw new TypeError(
      `${factory}() names too much for its 403's WWW-Authenticate header: ${length} characters, at most ${MAX_CHALLENGE_NAMES}`,
    );
  }
  return list;
}

/**
 * A guard that passes when the credential carries every one of `permissions`.
 *
 * @throws TypeError at route definition for a list that no 403 could name: empty, a name that is empty, over 256
 *   characters, with a control character or white space at either end, or names too long together for the header.
 */
export function requires(...permissions: string[]): Guard {
  const list = checkPermissions(permissions, 'requires');
  return Object.freeze({
    permissions: list,
    mode: 'all' as const,
    allows: allowsByGrants((auth) => list.every((permission) => auth.can(permission))),
  });
}

/**
 * A guard that passes when the credential carries at least one of `permissions`.
 *
 * @throws TypeError at route definition, as {@link requires}.
 */
export function requiresAny(...permissions: string[]): Guard {
  const list = checkPermissions(permissions, 'requiresAny');
  return Object.freeze({
    permissions: list,
    mode: 'any' as const,
    allows: allowsByGrants((auth) => list.some((permission) => auth.can(permission))),
  });
}

/** The `can` of every context the gate makes: its answer is its `grants`' answer. */
const gateCan = AuthContext.prototype.can;

/**
 * `check`, answered again without running it when `auth`, a context the gate made, has the same
 * permission list as the last such context checked. The answer depends on that list alone, and contexts with identical lists
 * share one interned `Grants` object, so one identity comparison stands for every `can()` call:
 * those Set lookups touch memory that the rest of a request has pushed out of the CPU caches
 * (bench/README.md, "Design rules", says how to measure it).
 */
function allowsByGrants(check: (auth: AuthContext) => boolean): (auth: AuthContext) => boolean {
  let lastGrants: Grants | undefined;
  let lastAllowed = false;
  return (auth) => {
    // Only a context whose `can` is the gate's own answers by its grants alone. Anything else is always asked, and its
    // answer is never reused: a test double, a spread copy, or a view an app made of a real context with a `can` of its
    // own (`Object.create(auth, { can })`), which inherits the real context's brand and grants but not its answers.
    const grants: Grants | undefined = auth.grants;
    if (grants === undefined || auth.can !== gateCan || !isAuthContext(auth)) return check(auth);
    if (grants !== lastGrants) {
      lastAllowed = check(auth);
      lastGrants = grants;
    }
    return lastAllowed;
  };
}
