/**
 * Seals on the verdicts the Redis tier stores, when `redisCache({ secret })`
 * is set: an HMAC-SHA256 over the Redis key and the value, written before
 * the value (`<mac>.<json>`).
 *
 * Invariants:
 * - a value is opened only when its MAC was made with one of the secrets for
 *   this very key: a value written without a secret, or copied from another
 *   key, opens to nothing;
 * - the first secret seals; every secret opens (rotation: put the new one
 *   first, and drop the old one once every instance runs with the new one);
 * - a MAC is read only in its canonical base64url spelling, and compared in
 *   constant time.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Length of a MAC in base64url (32 bytes), and the separator after it. */
const MAC_LENGTH = 43;

export class VerdictSeal {
  readonly #secrets: readonly Buffer[];

  /** `secrets`: at least one; the first seals. */
  constructor(secrets: readonly string[]) {
    this.#secrets = secrets.map((secret) => Buffer.from(secret, 'utf8'));
  }

  /** `json`, sealed for the Redis key `key`. */
  seal(key: string, json: string): string {
    return `${mac(this.#secrets[0] as Buffer, key, json).toString('base64url')}.${json}`;
  }

  /** The JSON that `stored` seals for `key`, or undefined when no secret made its seal. */
  open(key: string, stored: string): string | undefined {
    if (stored.length <= MAC_LENGTH || stored[MAC_LENGTH] !== '.') return undefined;
    const written = stored.slice(0, MAC_LENGTH);
    const given = Buffer.from(written, 'base64url');
    // Node's decoder is lenient (spare bits, '+' and '/'): only the one canonical spelling of a MAC opens.
    if (given.length !== 32 || given.toString('base64url') !== written) return undefined;
    const json = stored.slice(MAC_LENGTH + 1);
    for (const secret of this.#secrets) {
      if (timingSafeEqual(given, mac(secret, key, json))) return json;
    }
    return undefined;
  }
}

function mac(secret: Buffer, key: string, json: string): Buffer {
  return createHmac('sha256', secret).update(key).update('\0').update(json).digest();
}
