/**
 * A provider's verdict as the gate takes it: a rejection with its reason cut to {@link MAX_REASON_LENGTH} characters,
 * or an acceptance of a well-formed principal with its `details` frozen. Anything else is a `ProviderFailure`: the gate
 * fails closed on it.
 */
import { frozenDetails, MAX_DETAILS_DEPTH } from './details.js';
import { shown } from './options.js';
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
  throw new ProviderFailure('invalid_answer', `${provider} returned no usable verdict: ${whatIsWrong(verdict)}`);
}

function isPrincipal(value: Principal | undefined): value is Principal {
  return principalProblem(value) === undefined;
}

/** What makes `verdict` unusable, for the provider's author: the member at fault, by its type, never its contents. */
function whatIsWrong(verdict: unknown): string {
  if (typeof verdict !== 'object' || verdict === null) {
    return `verify resolved ${shown(verdict)}, not { ok: true, principal } or { ok: false, reason }`;
  }
  const { ok, reason, principal } = verdict as { ok?: unknown; reason?: unknown; principal?: unknown };
  if (ok === false) return `reason is ${shown(reason)}, not a string`;
  if (ok !== true) return `ok is ${shown(ok)}, not true or false`;
  return principalProblem(principal) ?? 'principal changed while it was read';
}

/** What is wrong with `value` as a {@link Principal}, or undefined when nothing is. */
function principalProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return `principal is ${shown(value)}, not an object`;
  const { subject, permissions, expiresAt, details } = value as Record<keyof Principal, unknown>;
  if (typeof subject !== 'string') return `principal.subject is ${shown(subject)}, not a string`;
  if (!Array.isArray(permissions)) return `principal.permissions is ${shown(permissions)}, not an array of strings`;
  const at = notStringAt(permissions);
  if (at !== -1) return `principal.permissions[${at}] is ${shown(permissions[at])}, not a string`;
  if (expiresAt !== undefined) {
    if (!(expiresAt instanceof Date)) return `principal.expiresAt is ${shown(expiresAt)}, not a Date`;
    if (Number.isNaN(expiresAt.getTime())) return 'principal.expiresAt is an invalid Date';
  }
  if (typeof details !== 'object' || details === null) return `principal.details is ${shown(details)}, not an object`;
  return undefined;
}

/** The index of the first element of `list` that is not a string, else -1: a hole is not one (`every` would skip it). */
function notStringAt(list: readonly unknown[]): number {
  for (let i = 0; i < list.length; i++) if (typeof list[i] !== 'string') return i;
  return -1;
}

/** The first {@link MAX_REASON_LENGTH} characters of `reason`, a surrogate pair never split. */
function cutReason(reason: string): string {
  const cut = reason.slice(0, MAX_REASON_LENGTH);
  return /[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut;
}
