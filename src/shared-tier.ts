/**
 * The interface of a shared verdict tier: a cache that several instances of
 * an app share (Redis, say), behind each instance's in-process LRU. The
 * store asks it on a local miss, before the provider, and tells it every
 * answer the provider gave.
 *
 * What crosses it is plain JSON keyed by the store's SHA-256 key: never a
 * raw credential or key. Times are epoch milliseconds, so that instances
 * agree on them. What comes back is checked against {@link SharedVerdictSchema};
 * anything else (corrupt, foreign, another version) is a miss.
 */
import { z } from 'zod';

/** A verdict as a shared tier keeps it. */
export type SharedVerdict =
  | {
      readonly ok: true;
      readonly subject: string;
      readonly permissions: readonly string[];
      /** When the credential itself expires (epoch ms), if the provider said. */
      readonly expiresAt?: number | undefined;
      readonly details: Readonly<Record<string, unknown>>;
      /** Served as it is until then (epoch ms). */
      readonly freshUntil: number;
      /** Forgotten then (epoch ms); between `freshUntil` and `until` only served while the provider fails. */
      readonly until: number;
    }
  | {
      readonly ok: false;
      /** The rejection's `error_description`. */
      readonly reason: string;
      readonly until: number;
    };

/** What a shared tier must hold to for its answers to be used. */
export const SharedVerdictSchema = z.union([
  z.strictObject({
    ok: z.literal(true),
    subject: z.string(),
    permissions: z.array(z.string()),
    expiresAt: z.number().optional(),
    details: z.record(z.string(), z.unknown()),
    freshUntil: z.number(),
    until: z.number(),
  }),
  z.strictObject({ ok: z.literal(false), reason: z.string().max(200), until: z.number() }),
]);

/**
 * A shared tier. Every method may be slow and may fail: the store treats a
 * `get` that fails or takes longer than `timeout` as a miss, and a failed
 * `set` or `delete` as nothing more than an event. A shared tier can never
 * let a request through on its own: it only ever stands in for an answer the
 * provider gave.
 */
export interface SharedTier {
  /** Ms after which a `get` counts as a miss. Default 50. */
  readonly timeout?: number;
  /** The verdict stored under `key`, or `undefined`. */
  get(key: string): Promise<unknown>;
  /** Stores `verdict` under `key` until `verdict.until`. */
  set(key: string, verdict: SharedVerdict): Promise<void>;
  /** Forgets `key`. */
  delete(key: string): Promise<void>;
  /** Forgets every key of this tier. */
  clear?(): Promise<void>;
  /** Releases the tier's connections. */
  close?(): Promise<void>;
}
