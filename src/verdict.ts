/**
 * A provider's verdict as the gate takes it: a rejection with its reason cut to {@link MAX_REASON_LENGTH} characters,
 * or an acceptance of a well-formed principal with its `details` frozen. Anything else is a `ProviderFailure`: the gate
 * fails closed on it.
 */
import { frozenDetails, MAX_DETAILS_DEPTH } from './details.js';
import { ProviderFailure } from './provider-failure.js';
import { MAX_REASON_LENGTH, type Principal, type Verdict } from './types.js';

/**
 * `verdict` if it is a well-formed verdict, an acceptance's `details` as a frozen copy (see `frozenDetails`), a
 * rejection's reason cut to {@link MAX_REASON_LENGTH} characters; anything else is a provider failure (fail closed).
 */
export function checkedVerdict(verdict: Verdict | undefined, provider: string): Verdict {
  if (verdict?.ok === false && typeof verdict.reason === 'string') {
    return verdict.reason.length <= MAX_REASON_LENGTH ? verdict : { ok: false, reason: cutReason(verdict.reason) };
  }
  if (verdict?.ok === true && isPrincipal(verdict.principal)) {
    const details = frozenDetails(verdict.principal.details);
    if (details !== undefined) return { ok: true, principal: { ...verdict.principal, details } };
    throw new ProviderFailure(
      'invalid_answer',
      `${provider} returned details nested deeper than ${MAX_DETAILS_DEPTH} levels, or that cannot be read`,
    );
  }
  throw new ProviderFailure('invalid_answer', `${provider} returned no usable verdict`);
}

function isPrincipal(value: Principal | undefined): value is Principal {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof value.subject === 'string' &&
    Array.isArray(value.permissions) &&
    everyString(value.permissions) &&
    (value.expiresAt === undefined || (value.expiresAt instanceof Date && !Number.isNaN(value.expiresAt.getTime()))) &&
    typeof value.details === 'object' &&
    value.details !== null
  );
}

/** Whether every element of `list` is a string: a hole is not (`every` would skip it, and `can(undefined)` pass). */
function everyString(list: readonly unknown[]): boolean {
  for (let i = 0; i < list.length; i++) if (typeof list[i] !== 'string') return false;
  return true;
}

/** The first {@link MAX_REASON_LENGTH} characters of `reason`, a surrogate pair never split. */
function cutReason(reason: string): string {
  const cut = reason.slice(0, MAX_REASON_LENGTH);
  return /[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut;
}
