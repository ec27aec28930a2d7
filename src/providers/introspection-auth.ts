/**
 * How this server authenticates to the introspection endpoint (RFC 7662 §2.1): as an OAuth client with its id and
 * secret (RFC 6749 §2.3.1: HTTP Basic or the form body), or with an OAuth 2.0 access token of its own (RFC 6750 §2.1),
 * given once or asked of a function before each request. Each way says what goes on the wire, what the cache scope
 * holds of it (a secret or token only as its digest), and how a refusal of it reads in logs. Neither the secret nor
 * the token, nor what a token function threw, is ever in a message.
 */
import type { z } from 'zod';
import { isB64Token } from '../credentials/bearer.js';
import { shown } from '../options.js';
import { ProviderFailure } from '../provider-failure.js';
import { secretDigest } from './secret-digest.js';

/** How the client id and secret go to the introspection endpoint (RFC 6749 §2.3.1). */
export type IntrospectionClientAuth = 'basic' | 'post';

/**
 * An access token this server presents to the introspection endpoint (`Authorization: Bearer <token>`, RFC 7662
 * §2.1): the token itself, or a function returning it or a promise of it, called without arguments (nor `this`)
 * before each introspection request, so that a token that expires can be replaced while the server runs.
 */
export type IntrospectionAccessToken = string | (() => string | PromiseLike<string>);

/** The provider's authentication options, as its schema let them through. */
export interface AuthenticationOptions {
  readonly clientId?: string | undefined;
  readonly clientSecret?: string | undefined;
  readonly clientAuth?: IntrospectionClientAuth | undefined;
  readonly accessToken?: IntrospectionAccessToken | undefined;
}

/** One way of authenticating to the introspection endpoint. */
export interface EndpointAuthentication {
  /**
   * The method as authorization server metadata lists it (RFC 8414 §2), which a discovered endpoint must list when it
   * lists any; undefined when it is not checked.
   */
  readonly metadataMethod: string | undefined;
  /** What the cache scope holds of the credentials: who asks, the secret's digest, how. */
  readonly scope: readonly (string | null)[];
  /**
   * The headers of one request, after adding to `form` what goes in the body; a promise when a function gives the
   * token, which rejects with a {@link ProviderFailure} when it fails or gives no bearer token.
   */
  apply(form: URLSearchParams): Record<string, string> | Promise<Record<string, string>>;
  /** The failure of a request the server refused for its credentials (401, 403, 400 `invalid_client`). */
  refused(status: number): ProviderFailure;
}

/** What keeps `value` from being a bearer token, as a message names it (never the value), or undefined. */
function tokenFault(value: unknown): string | undefined {
  if (typeof value !== 'string') return shown(value);
  if (value === '') return 'an empty string';
  if (isB64Token(value)) return undefined;
  if (/^bearer\s/i.test(value)) return 'a string that starts with the scheme (give the token alone, without Bearer)';
  const faults: string[] = [];
  if (/[\r\n]/.test(value)) faults.push('a line break (read from a file?)');
  if (/[ \t]/.test(value)) faults.push('white space');
  if (/[^\t\n\r\x20-\x7e\x80-\uffff]/.test(value)) faults.push('a control character');
  if (/[\x80-\uffff]/.test(value)) faults.push('a character past ASCII');
  if (/[!-*,:-<>-@[-\]^`{-}]/.test(value)) faults.push('a character b64token does not allow (such as , " or @)');
  if (/=[^=]/.test(value) || /^=/.test(value)) faults.push('= other than as padding at its end');
  return `a string with ${faults.join(', ')}`;
}

/** The option check of `accessToken`: a bearer token or a function. */
export function checkAccessToken(value: unknown, ctx: z.RefinementCtx): void {
  if (value === undefined || typeof value === 'function') return;
  const fault = tokenFault(value);
  if (fault === undefined) return;
  ctx.addIssue({
    code: 'custom',
    message: `expected a bearer token (RFC 6750 b64token: letters, digits and -._~+/, then = padding) or a function returning one, got ${fault}`,
  });
}

/**
 * The option check of the choice between `accessToken` and `clientId` with `clientSecret`: one of the two, not both.
 * A missing id or secret is named as the option schema names a missing option.
 */
export function checkAuthenticationChoice(options: AuthenticationOptions, ctx: z.RefinementCtx): void {
  const { accessToken, clientId, clientSecret, clientAuth } = options;
  if (accessToken !== undefined) {
    const given = [
      clientId === undefined ? undefined : 'clientId',
      clientSecret === undefined ? undefined : 'clientSecret',
      clientAuth === undefined ? undefined : 'clientAuth',
    ].filter((name) => name !== undefined);
    if (given.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['accessToken'],
        message: `expected accessToken, or clientId and clientSecret (with clientAuth), not both: got ${given.join(', ')} too`,
      });
    }
    return;
  }
  const missing = (path: string, hint = '') =>
    ctx.addIssue({ code: 'custom', path: [path], message: `expected a non-empty string, got undefined${hint}` });
  if (clientId === undefined) missing('clientId', clientSecret === undefined ? ' (or give accessToken)' : '');
  else if (clientSecret === undefined) missing('clientSecret');
}

/** The authentication `options` describe (checked by the provider's option schema); `name` names the provider. */
export function endpointAuthentication(name: string, options: AuthenticationOptions): EndpointAuthentication {
  const { accessToken } = options;
  if (accessToken === undefined) {
    return clientSecretAuthentication(
      name,
      options.clientId as string,
      options.clientSecret as string,
      options.clientAuth ?? 'basic',
    );
  }
  const refused = (status: number) =>
    new ProviderFailure('misconfigured', `${name} refused this server's access token (check accessToken)`, {
      status,
    });
  if (typeof accessToken === 'string') {
    const headers = { authorization: `Bearer ${accessToken}` };
    return {
      metadataMethod: undefined,
      scope: [null, secretDigest(accessToken), 'bearer'],
      apply: () => headers,
      refused,
    };
  }
  return {
    metadataMethod: undefined,
    scope: [null, null, 'bearer()'],
    apply: () => askToken(name, accessToken),
    refused,
  };
}

function clientSecretAuthentication(
  name: string,
  clientId: string,
  clientSecret: string,
  clientAuth: IntrospectionClientAuth,
): EndpointAuthentication {
  const headers: Record<string, string> =
    clientAuth === 'basic' ? { authorization: basicAuthorization(clientId, clientSecret) } : {};
  return {
    metadataMethod: `client_secret_${clientAuth}`,
    scope: [clientId, secretDigest(clientSecret), clientAuth],
    apply(form) {
      if (clientAuth === 'post') {
        form.append('client_id', clientId);
        form.append('client_secret', clientSecret);
      }
      return headers;
    },
    refused: (status) =>
      new ProviderFailure(
        'misconfigured',
        `${name} refused this server's client credentials (check clientId, clientSecret and clientAuth)`,
        { status },
      ),
  };
}

/**
 * The `Authorization` header for the token `source` gives now. A source that throws or rejects, or gives anything but
 * a bearer token, is a failure that sends nothing: `unreachable` (the endpoint cannot be asked without credentials),
 * retried as a connection error is when it threw (a token service may be down a moment), not when it gave a value
 * that is no token. The gate's deadline bounds a source that never settles.
 */
async function askToken(name: string, source: () => string | PromiseLike<string>): Promise<Record<string, string>> {
  let token: unknown;
  try {
    token = await source();
  } catch (error) {
    // The gate keeps the cause by its class and stack alone: what the source threw may name the token.
    throw new ProviderFailure('unreachable', `${name} accessToken() failed: the introspection endpoint was not asked`, {
      cause: error,
    });
  }
  const fault = tokenFault(token);
  if (fault !== undefined) {
    throw new ProviderFailure(
      'unreachable',
      `${name} accessToken() gave ${fault}, not a bearer token: the introspection endpoint was not asked`,
      { retryable: false },
    );
  }
  return { authorization: `Bearer ${token as string}` };
}

/**
 * `Basic` credentials as RFC 6749 §2.3.1 has them: the client id and secret
 * each form-urlencoded (so a `:` in the id cannot move the split, and
 * non-ASCII travels as UTF-8 percent-escapes), then joined and base64-encoded.
 */
function basicAuthorization(clientId: string, clientSecret: string): string {
  const encode = (value: string) => new URLSearchParams({ value }).toString().slice('value='.length);
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString('base64')}`;
}
