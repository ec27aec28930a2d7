/**
 * Providers whose `close()` a gate has called. Their connection pools are gone, so no gate may ask them again:
 * asking would fail as an outage does (a 503, counted against the breaker) when the cause is a developer's
 * mistake, two gates sharing one provider.
 */
import type { Provider } from './types.js';

/** One set for every copy of this package in the process (its ESM and CommonJS builds), as for `AuthError`. */
const CLOSED = Symbol.for('tokengate.closedProviders@2');
const registry = globalThis as { [CLOSED]?: unknown };
if (!(registry[CLOSED] instanceof WeakSet)) registry[CLOSED] = new WeakSet<Provider>();
const closedProviders = registry[CLOSED] as WeakSet<Provider>;

/** Records that a gate closed `provider`. */
export function markClosed(provider: Provider): void {
  closedProviders.add(provider);
}

/** Whether a gate has closed `provider`. */
export function isClosed(provider: Provider): boolean {
  return closedProviders.has(provider);
}

/** A verification's outcome when its provider was found closed: each of its requests gets its own {@link closedProviderError}. */
export const PROVIDER_CLOSED: unique symbol = Symbol('tokengate.providerClosed');

/** The error a request gets when its provider was closed by another gate: a 500, never an outage's 503. */
export function closedProviderError(provider: Provider): Error {
  return new Error(
    `tokengate: provider ${provider.name} was closed by another gate's close(), which closes its providers: give each gate providers of its own`,
  );
}
