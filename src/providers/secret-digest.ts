/**
 * A secret's stand-in for `Provider.cacheScope`: the scope must change when
 * the secret does (a new API key may be refused, or see other users), yet
 * the secret itself must never sit in a cache key, a log or an error.
 */
import { createHash } from 'node:crypto';

/**
 * The SHA-256 digest of `secret`, base64url-encoded (43 characters): put it
 * in `cacheScope` in place of an API key or client secret.
 *
 * @example
 * cacheScope: JSON.stringify(['my-tokens', baseUrl, secretDigest(apiKey)])
 */
export function secretDigest(secret: string): string {
  return createHash('sha256').update(secret).digest('base64url');
}
