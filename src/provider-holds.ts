/**
 * Which gate holds a provider, and whether it closed it. A provider with a `close()` owns its connections, and the
 * gate that holds it admits verifications to them: a second gate asking it too would queue in its pool under its own
 * deadline, and fail as an outage does (a 503, counted against the breaker). Such a provider belongs to one gate;
 * once that gate closed it, its pools are gone and no gate may ask it again.
 */
import type { Provider } from './types.js';

/** A provider a gate holds, or one that gate closed. */
export type ProviderHold = 'held' | 'closed';

/** One map for every copy of this package in the process (its ESM and CommonJS builds), as for `AuthError`. */
const HOLDS = Symbol.for('tokengate.providerHolds@2');
const registry = globalThis as { [HOLDS]?: unknown };
if (!(registry[HOLDS] instanceof WeakMap)) registry[HOLDS] = new WeakMap<Provider, ProviderHold>();
const holds = registry[HOLDS] as WeakMap<Provider, ProviderHold>;

/** Records that a gate holds `provider` (`'held'`) or closed it (`'closed'`), when it has a `close()`; else nothing. */
export function markProvider(provider: Provider, hold: ProviderHold): void {
  if (typeof provider.close === 'function') holds.set(provider, hold);
}

/** Whether a gate holds `provider` or closed it; undefined when no gate has it. */
function holdOf(provider: Provider): ProviderHold | undefined {
  return holds.get(provider);
}

/** @throws TypeError naming a provider of `providers` that a gate has closed, or that another gate holds. */
export function checkOwnProviders(providers: readonly Provider[]): void {
  providers.forEach((provider, index) => {
    const hold = holdOf(provider);
    if (hold === 'closed') {
      throw new TypeError(
        `createGate: providers[${index}] (${provider.name}) was closed by gate.close(), which closes the gate's providers: create a new provider for a new gate`,
      );
    }
    if (hold === 'held') {
      throw new TypeError(
        `createGate: providers[${index}] (${provider.name}) belongs to another gate, which admits verifications to its connections and closes it: create a provider for each gate`,
      );
    }
  });
}
