/**
 * Tracing through `node:diagnostics_channel`, the mechanism undici and
 * Node itself use: free when nothing subscribes (`hasSubscribers` reads),
 * and open to any tracer (OpenTelemetry, Datadog, your own logs).
 *
 * - `tokengate:verify`, a TracingChannel around every upstream verification
 *   (`start`, `end`, `asyncStart`, `asyncEnd`, `error`): the context is a
 *   {@link VerifyTrace}, filled with the outcome when it ends. It carries
 *   no `result`: subscribers see how a verification went, never its answer,
 *   which they could otherwise change.
 * - `tokengate:cache`: every cache lookup, `{ provider, result }`.
 * - `tokengate:breaker`: every breaker change, `{ provider, state }`.
 *
 * No message carries a token, a key or a cache key: only provider names,
 * outcomes, counts and durations.
 */
import { channel, tracingChannel } from 'node:diagnostics_channel';
import type { BreakerState, CacheResult } from './events.js';

/** The context of a `tokengate:verify` trace. */
export interface VerifyTrace {
  /** The provider asked. */
  readonly provider: string;
  /**
   * How the verification ended; set when it ends. `cancelled`: its gate's `close()` cut it short (no `verify` event
   * is sent for it, and nothing counts it).
   */
  outcome?: 'accepted' | 'rejected' | 'failed' | 'cancelled';
  /** Upstream attempts made, retries included; set when it ends. */
  attempts?: number;
  /** Milliseconds from the first attempt to the answer; set when it ends. */
  durationMs?: number;
}

/** A message on `tokengate:cache`. */
export interface CacheTrace {
  /** The provider's name. */
  readonly provider: string;
  /** Answered from this process's cache, not found there (the shared tier, then the provider, are asked), or joined a verification under way. */
  readonly result: CacheResult;
}

/** A message on `tokengate:breaker`. */
export interface BreakerTrace {
  /** The provider's name. */
  readonly provider: string;
  /** The state the breaker moved to. */
  readonly state: BreakerState;
}

/** Names of the channels, for `diagnostics_channel.subscribe` / `tracingChannel`. */
export const CHANNELS = Object.freeze({
  verify: 'tokengate:verify',
  cache: 'tokengate:cache',
  breaker: 'tokengate:breaker',
});

/** @internal */ export const verifyChannel = tracingChannel<VerifyTrace>(CHANNELS.verify);
/** @internal */ export const cacheChannel = channel(CHANNELS.cache);
/** @internal */ export const breakerChannel = channel(CHANNELS.breaker);

/** @internal Whether anything listens to the verify trace (Node 20 has no `hasSubscribers` on TracingChannel before 20.13). */
export function tracingVerify(): boolean {
  const { start, end, asyncStart, asyncEnd, error } = verifyChannel;
  return (
    start.hasSubscribers ||
    end.hasSubscribers ||
    asyncStart.hasSubscribers ||
    asyncEnd.hasSubscribers ||
    error.hasSubscribers
  );
}
