/**
 * Providers a gate holds, and those whose `close()` a gate has called. A provider with a `close()` owns its
 * connections, and the gate that holds it admits verifications to them: a second gate asking it too would queue in
 * its pool under its own deadline, and fail as an outage does (a 503, counted against the breaker). Such a provider
 * belongs to one gate; once closed, its pools are gone and no gate may ask it again.
 */
import type { Provider } from './types.js';

/** The set named `name` on `globalThis`: one for every copy of this package in the process (its ESM and CommonJS builds), as for `AuthError`. */
function processWideSet(name: string): WeakSet<Provider> {
  const key = Symbol.for(name);
  const registry = globalThis as Record<symbol, unknown>;
  if (!(registry[key] instanceof WeakSet)) registry[key] = new WeakSet<Provider>();
  return registry[key] as WeakSet<Provider>;
}

const closedProviders = processWideSet('tokengate.closedProviders@2');
const heldProviders = processWideSet('tokengate.heldProviders@2');

/** Records that a gate holds `provider`, when it has a `close()` (connections of its own); else nothing. */
export function markHeld(provider: Provider): void {
  if (typeof provider.close === 'function') heldProviders.add(provider);
}

/** Whether a gate holds `provider` (see {@link markHeld}). */
export function isHeld(provider: Provider): boolean {
  return heldProviders.has(provider);
}

/** Records that a gate closed `provider`. */
export function markClosed(provider: Provider): void {
  closedProviders.add(provider);
}

/** Whether a gate has closed `provider`. */
export function isClosed(provider: Provider): boolean {
  return closedProviders.has(provider);
}
