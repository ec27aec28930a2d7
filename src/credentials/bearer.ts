/**
 * RFC 6750 §2.1: the `Authorization: Bearer <b64token>` credential.
 *
 *   credentials = "Bearer" 1*SP b64token
 *   b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
 *
 * The scheme name is case-insensitive (RFC 9110 §11.1). Other schemes (Basic,
 * Digest) are not ours: they count as no credential, so the client gets the
 * plain challenge. The query (`access_token`) and form-body methods of RFC
 * 6750 §2.2–2.3 are not read: they leak tokens into logs and caches.
 */
import { invalidRequest } from '../errors.js';
import { headerReader } from '../request.js';
import type { Credential, CredentialRequest } from '../types.js';

/** The `source` of every Bearer credential: `extractBearer` reads this header and nothing else. */
export const BEARER_SOURCE = 'header:authorization';

/** Longest token accepted; Node's own header limit (16 KiB) is the outer bound. */
export const MAX_BEARER_LENGTH = 4096;

/** A Bearer token found in the `Authorization` header. */
export interface BearerCredential extends Credential {
  readonly source: 'header:authorization';
  /** The b64token, exactly as sent. */
  readonly secret: string;
}

// Linear: the token class excludes "=", so no backtracking.
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** Whether `token` is a b64token no longer than {@link MAX_BEARER_LENGTH}: one a Bearer header can carry. */
export function isBearerToken(token: string): boolean {
  return token.length <= MAX_BEARER_LENGTH && isB64Token(token);
}

/** Whether `token` is RFC 6750 b64token syntax, of any length. */
export function isB64Token(token: string): boolean {
  return B64TOKEN.test(token);
}
const SCHEME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?: |$)/;

/**
 * Finds the Bearer token in `req`, or returns `undefined` when the request
 * has no `Authorization` header, an empty one, or one with another scheme.
 *
 * @throws AuthError `invalid_request` (400) for a repeated header, a Bearer
 *   credential that breaks the b64token grammar, or an over-long token.
 */
export function extractBearer(req: CredentialRequest, realm: string): BearerCredential | undefined {
  const header = readAuthorization(req, realm);
  // An empty header (a client's `Authorization: token ?? ''`) carries no credential, as in express-jwt and passport.
  if (header === undefined || header === '') return undefined;
  if (startsWithBearerSpace(header)) {
    // No capture group and no match array: this runs on every request.
    let start = 7;
    while (header.charCodeAt(start) === 0x20) start++;
    const token = header.slice(start);
    if (B64TOKEN.test(token)) {
      if (token.length > MAX_BEARER_LENGTH) throw invalidRequest(realm, 'Bearer token is too long');
      return { source: 'header:authorization', secret: token };
    }
    throw invalidRequest(realm, 'Malformed Bearer token');
  }
  if (!isBearerScheme(header)) {
    // Another scheme is somebody else's credential; a header with no scheme at all is malformed.
    if (SCHEME.test(header)) return undefined;
    throw invalidRequest(realm, 'Malformed Authorization header');
  }
  throw invalidRequest(realm, 'Malformed Bearer token');
}

/** `Bearer ` in any case: the scheme, then the one space RFC 6750 requires. */
function startsWithBearerSpace(header: string): boolean {
  return (
    header.length > 7 &&
    header.charCodeAt(6) === 0x20 &&
    // ASCII letters only: `| 0x20` lower-cases a letter and cannot turn a non-letter into one of these.
    (header.charCodeAt(0) | 0x20) === 0x62 && // b
    (header.charCodeAt(1) | 0x20) === 0x65 && // e
    (header.charCodeAt(2) | 0x20) === 0x61 && // a
    (header.charCodeAt(3) | 0x20) === 0x72 && // r
    (header.charCodeAt(4) | 0x20) === 0x65 && // e
    (header.charCodeAt(5) | 0x20) === 0x72 // r
  );
}

function isBearerScheme(header: string): boolean {
  return (
    header.length >= 6 &&
    header.slice(0, 6).toLowerCase() === 'bearer' &&
    (header.length === 6 || header[6] === ' ' || header[6] === '\t')
  );
}

const readHeader = headerReader('authorization');

/**
 * The one `Authorization` header of `req` (see {@link headerReader}).
 *
 * @throws AuthError `invalid_request` (400) for a repeated header.
 */
function readAuthorization(req: CredentialRequest, realm: string): string | undefined {
  const value = readHeader(req);
  if (value === null) throw invalidRequest(realm, 'Only one Authorization header is allowed');
  return value;
}
