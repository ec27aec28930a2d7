/**
 * A principal's `details` as the gate keeps them: a frozen copy of their plain data, so that neither the provider nor
 * the app changes what a cached context says after the answer, and nothing of the provider's runs when they are read.
 */

import { types } from 'node:util';

/** Deepest nesting of plain data kept in `details`: a deeper answer is refused, not recursed into. */
export const MAX_DETAILS_DEPTH = 64;

/**
 * A frozen copy of `details`' plain data, or undefined when it nests deeper than {@link MAX_DETAILS_DEPTH} or cannot
 * be read (a throwing proxy). Arrays and plain objects are copied and frozen to the last level, with their own
 * enumerable data members (accessors are left out: nothing of the provider's runs); anything else (a primitive, a
 * `Date`, a `Buffer`, a class instance) is kept as it is. The provider's own objects are left unfrozen. An array or
 * plain object that is frozen already, holds nothing but such members, and only such data in them, is kept as it is:
 * nothing can change it, and it is sized to its members, where a copy keeps room for four.
 */
export function frozenDetails(
  details: Readonly<Record<string, unknown>>,
): Readonly<Record<string, unknown>> | undefined {
  try {
    return frozenData(details, undefined, 0) as Readonly<Record<string, unknown>>;
  } catch {
    return undefined;
  }
}

/**
 * `value`'s frozen copy, or `value` itself when the copy would hold the same (see above). `copies` maps each object
 * already copied to its copy (a shared member is copied once, a cycle stays a cycle); it is made at the first nested
 * object, so a flat object (the usual `details`) needs none.
 */
function frozenData(value: unknown, copies: Map<object, unknown> | undefined, depth: number): unknown {
  if (typeof value !== 'object' || value === null) return value;
  const known = copies?.get(value);
  if (known !== undefined) return known;
  if (depth >= MAX_DETAILS_DEPTH) throw new RangeError('details nest too deep');
  const array = Array.isArray(value);
  const prototype = Object.getPrototypeOf(value);
  if (!array && prototype !== Object.prototype && prototype !== null) return value;
  const copy: Record<string, unknown> | unknown[] = array ? [] : {};
  copies?.set(value, copy);
  let nested = copies;
  const keys = Object.keys(value);
  // Kept only with no member but `keys` (and an array's `length`); a proxy runs the provider's code on every read.
  const members = keys.length + (array ? 1 : 0);
  let same = Object.isFrozen(value) && !types.isProxy(value) && Reflect.ownKeys(value).length === members;
  for (const key of keys) {
    const member = Object.getOwnPropertyDescriptor(value, key);
    if (member === undefined || !('value' in member)) {
      same = false;
      continue;
    }
    let data = member.value;
    if (typeof data === 'object' && data !== null) {
      if (nested === undefined) nested = new Map([[value, copy]]);
      data = frozenData(data, nested, depth + 1);
      if (data !== member.value) same = false;
    }
    // Defined, not assigned, for `__proto__` (JSON.parse makes such a member): assigned, it would set the prototype.
    if (key === '__proto__') Object.defineProperty(copy, key, { value: data, enumerable: true, writable: true });
    else (copy as Record<string, unknown>)[key] = data;
  }
  if (!same) return Object.freeze(copy);
  nested?.set(value, value);
  return value;
}
