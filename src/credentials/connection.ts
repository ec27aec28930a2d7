/**
 * Connection tokens: a user id and a one-time token, both in the query
 * string (`?user_id=…&token=…`), as Partoo's connection links carry them.
 */
import { invalidRequest } from '../errors.js';
import type { Credential, CredentialRequest, PartialCredential } from '../types.js';

/** Names of the two query parameters. */
export interface ConnectionQueryNames {
  /** Parameter holding the user id. Default `user_id`. */
  readonly userId: string;
  /** Parameter holding the connection token. Default `token`. */
  readonly token: string;
}

/** A user id and connection token found in the query. */
export interface ConnectionCredential extends Credential {
  /** The user id, as sent. */
  readonly userId: string;
  /** The connection token, as sent: a secret. */
  readonly token: string;
}

/** The `source` of every connection credential. */
export const CONNECTION_SOURCE = 'query:connection';

const MAX_USER_ID_LENGTH = 256;
const MAX_CONNECTION_TOKEN_LENGTH = 1024;

// Visible ASCII only: control characters, spaces and non-ASCII never reach the provider.
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

/**
 * Finds the connection credential in `req.query`, or returns `undefined`
 * when neither parameter is present. For a provider's `extract`, use
 * {@link findConnection}: there, half a credential next to a complete Bearer
 * one is not a 400.
 *
 * @throws AuthError `invalid_request` (400) when only one of the two is
 *   present, when either is repeated (`?token=a&token=b`), empty, not a
 *   plain string (`token[x]=1` under a nested query parser), too long, or
 *   holds characters other than visible ASCII.
 */
export function extractConnection(
  req: CredentialRequest,
  names: ConnectionQueryNames,
  realm: string,
): ConnectionCredential | undefined {
  const found = findConnection(req, names, realm);
  if (found !== undefined && 'partial' in found) throw invalidRequest(realm, found.partial);
  return found;
}

/**
 * {@link extractConnection} for a provider's `extract`: a half credential
 * (only one of the two parameters) is a {@link PartialCredential}, which the
 * gate refuses only when the request carries no other credential.
 */
export function findConnection(
  req: CredentialRequest,
  names: ConnectionQueryNames,
  realm: string,
): ConnectionCredential | PartialCredential | undefined {
  const query = req.query;
  if (query === undefined || query === null) return undefined;
  // Own members only: a parser's plain object holds `constructor` and the like for every request.
  const userId = ownMember(query, names.userId);
  const token = ownMember(query, names.token);
  if (userId === undefined && token === undefined) return undefined;
  if (userId === undefined || token === undefined) {
    return { source: CONNECTION_SOURCE, partial: `Both ${names.userId} and ${names.token} are required` };
  }
  const checkedUserId = checkParameter(userId, names.userId, MAX_USER_ID_LENGTH, realm);
  const checkedToken = checkParameter(token, names.token, MAX_CONNECTION_TOKEN_LENGTH, realm);
  return {
    source: CONNECTION_SOURCE,
    userId: checkedUserId,
    token: checkedToken,
    // NUL cannot occur in either part (visible ASCII only), so the pair is unambiguous.
    secret: `${checkedUserId}\0${checkedToken}`,
  };
}

function checkParameter(value: unknown, name: string, maxLength: number, realm: string): string {
  if (typeof value !== 'string') {
    // A number or boolean was not sent so: a schema coerced the query before the gate read it.
    const coerced = typeof value === 'number' || typeof value === 'boolean' ? ` (got a ${typeof value})` : '';
    throw invalidRequest(realm, `${name} must appear once, as a plain value${coerced}`);
  }
  if (value.length === 0) throw invalidRequest(realm, `${name} is empty`);
  if (value.length > maxLength) throw invalidRequest(realm, `${name} is too long`);
  if (!VISIBLE_ASCII.test(value)) throw invalidRequest(realm, `${name} holds characters that are not allowed`);
  return value;
}

/** `query[name]` when the query holds it itself (asked only of a value found: most requests carry none). */
function ownMember(query: Readonly<Record<string, unknown>>, name: string): unknown {
  const value = query[name];
  return value === undefined || Object.hasOwn(query, name) ? value : undefined;
}
