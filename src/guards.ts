/**
 * Guards: permission checks built once, at route definition, and run on
 * every request against the (possibly cached) `AuthContext`. A cache hit
 * never skips them.
 */
import type { AuthContext } from './context.js';

/** A permission check made by {@link requires} or {@link requiresAny}. */
export interface Guard {
  /** The permissions named, in the order given. */
  readonly permissions: readonly string[];
  /** `all`: every permission is needed; `any`: one is enough. */
  readonly mode: 'all' | 'any';
  /** Whether `auth` passes. */
  allows(auth: AuthContext): boolean;
}

function checkPermissions(permissions: readonly string[], factory: string): readonly string[] {
  if (permissions.length === 0) throw new TypeError(`${factory}() needs at least one permission`);
  for (const permission of permissions) {
    if (typeof permission !== 'string' || permission.length === 0) {
      throw new TypeError(`${factory}() takes non-empty permission names`);
    }
  }
  return Object.freeze([...new Set(permissions)]);
}

/** A guard that passes when the credential carries every one of `permissions`. */
export function requires(...permissions: string[]): Guard {
  const list = checkPermissions(permissions, 'requires');
  return Object.freeze({
    permissions: list,
    mode: 'all' as const,
    allows(auth: AuthContext): boolean {
      for (let i = 0; i < list.length; i++) if (!auth.can(list[i] as string)) return false;
      return true;
    },
  });
}

/** A guard that passes when the credential carries at least one of `permissions`. */
export function requiresAny(...permissions: string[]): Guard {
  const list = checkPermissions(permissions, 'requiresAny');
  return Object.freeze({
    permissions: list,
    mode: 'any' as const,
    allows(auth: AuthContext): boolean {
      for (let i = 0; i < list.length; i++) if (auth.can(list[i] as string)) return true;
      return false;
    },
  });
}
