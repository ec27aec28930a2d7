/**
 * OAuth 2.0 token introspection (RFC 7662): `Authorization: Bearer <token>`,
 * checked by POSTing the token to the authorization server's introspection
 * endpoint, which this server calls as an OAuth client (RFC 6749 §2.3.1
 * client authentication) or with an access token of its own (RFC 7662 §2.1;
 * see introspection-auth.ts). The endpoint is configured, or found through the
 * issuer's authorization server metadata (RFC 8414).
 */
import { z } from 'zod';
import { type Cancellation, cancellableVerify } from '../cancellation.js';
import { BEARER_SOURCE, type BearerCredential, extractBearer } from '../credentials/bearer.js';
import { DEFAULT_CONNECTIONS, type HttpOptions, httpOptionsShape, type JsonAnswer } from '../http.js';
import {
  allowInsecureRequestsOption,
  baseUrlOption,
  checkOptions,
  endpointUrlOption,
  nameOption,
  numberOption,
  optionsObject,
  secretOption,
  secureUrls,
} from '../options.js';
import { ProviderFailure } from '../provider-failure.js';
import type { Provider, Verdict } from '../types.js';
import {
  type AuthenticationOptions,
  checkAccessToken,
  checkAuthenticationChoice,
  endpointAuthentication,
  type IntrospectionAccessToken,
  type IntrospectionClientAuth,
} from './introspection-auth.js';
import { IntrospectionTarget } from './oauth-discovery.js';
import { secretDigest } from './secret-digest.js';

export type { IntrospectionAccessToken, IntrospectionClientAuth } from './introspection-auth.js';

/**
 * A JWT NumericDate (RFC 7519 §2): seconds since the epoch, any JSON number,
 * also one too large for a double (`1e400`, which `JSON.parse` reads as
 * `Infinity`).
 */
const NumericDate = z.custom<number>((value) => typeof value === 'number' && !Number.isNaN(value), {
  error: 'expected a number',
});
/** The latest NumericDate a `Date` can hold (8.64e15 ms); an `exp` past it is no expiry at all. */
const LATEST_DATE_SECONDS = 8.64e12;
/** The default and the largest `clockTolerance`, in seconds. */
const DEFAULT_CLOCK_TOLERANCE_SECONDS = 5;
const MAX_CLOCK_TOLERANCE_SECONDS = 300;

/**
 * 200 from the introspection endpoint for an active token (RFC 7662 §2.2).
 * Every member but `active` is optional (null counts as absent). Members the
 * RFC does not name are kept, but for the two that mark a token that is not an
 * access token (`token_use`, Keycloak's `typ`): a string or nothing, as
 * `token_type`, since one the gate cannot read could be either.
 */
const IntrospectionAnswer = z.looseObject({
  active: z.literal(true),
  scope: z.string().nullish(),
  client_id: z.string().nullish(),
  username: z.string().nullish(),
  token_type: z.string().nullish(),
  exp: NumericDate.nullish(),
  iat: NumericDate.nullish(),
  nbf: NumericDate.nullish(),
  sub: z.string().nullish(),
  aud: z.union([z.string(), z.array(z.string())]).nullish(),
  iss: z.string().nullish(),
  jti: z.string().nullish(),
  token_use: z.string().nullish(),
  typ: z.string().nullish(),
}) satisfies z.ZodType<IntrospectionDetails>;

/**
 * Details kept from an introspection answer: the validated answer of an active
 * token (RFC 7662 §2.2). A member the server left out or sent as `null` is
 * absent or `null`; members the RFC does not name are kept as they came.
 */
export interface IntrospectionDetails {
  /** Always `true`: only active tokens are accepted. */
  readonly active: true;
  /** Space-separated scopes; `auth.permissions` holds them split. */
  readonly scope?: string | null | undefined;
  /** The client the token was issued to. */
  readonly client_id?: string | null | undefined;
  /** A human-readable identifier of the resource owner. */
  readonly username?: string | null | undefined;
  /** The type of the token (`Bearer`). */
  readonly token_type?: string | null | undefined;
  /** Expiry, in seconds since the epoch; `auth.expiresAt` as a `Date`. */
  readonly exp?: number | null | undefined;
  /** Issue time, in seconds since the epoch. */
  readonly iat?: number | null | undefined;
  /** Not-before time, in seconds since the epoch. */
  readonly nbf?: number | null | undefined;
  /** The subject of the token, usually the resource owner's id. */
  readonly sub?: string | null | undefined;
  /** The audience(s) the token is meant for. */
  readonly aud?: string | readonly string[] | null | undefined;
  /** The issuer of the token. */
  readonly iss?: string | null | undefined;
  /** The token's identifier. */
  readonly jti?: string | null | undefined;
  /** Members the RFC does not name, as the server sent them. */
  readonly [member: string]: unknown;
}

/**
 * Options of {@link introspection}: how this server authenticates to the introspection endpoint
 * ({@link IntrospectionClientSecretOptions} or {@link IntrospectionAccessTokenOptions}), and the rest
 * ({@link IntrospectionCommonOptions}). Give `endpoint`, or `issuer` to find it.
 */
export type IntrospectionOptions = IntrospectionClientSecretOptions | IntrospectionAccessTokenOptions;

/** {@link IntrospectionOptions} of a server that authenticates as an OAuth client, with its id and secret. */
export interface IntrospectionClientSecretOptions extends IntrospectionCommonOptions {
  /** This server's client id at the authorization server. */
  readonly clientId: string;
  /** This server's client secret. Never shown in errors; in the cache scope only as a digest. */
  readonly clientSecret: string;
  /**
   * How the id and secret are sent (RFC 6749 §2.3.1): `basic` (HTTP Basic, default; each form-urlencoded first) or
   * `post` (`client_id` and `client_secret` in the form body).
   */
  readonly clientAuth?: IntrospectionClientAuth | undefined;
  /** Not with `clientId` and `clientSecret`: see {@link IntrospectionAccessTokenOptions}. */
  readonly accessToken?: undefined;
}

/**
 * {@link IntrospectionOptions} of a server that authenticates with an OAuth 2.0 access token of its own, such as one
 * the authorization server issued it for introspection (RFC 7662 §2.1 and §4), sent as `Authorization: Bearer`.
 */
export interface IntrospectionAccessTokenOptions extends IntrospectionCommonOptions {
  /**
   * The token (RFC 6750 b64token syntax, checked at startup), or a function returning it or a promise of it, called
   * without arguments before each introspection request: return a token you keep and renew yourself, so that each
   * request does not fetch one. Never shown in errors or events; a token given as a string is in the cache scope only
   * as a digest.
   *
   * A function that throws or rejects, or gives anything but a bearer token, is a 503 for that request (its error's
   * message is never shown: its `cause` names its class alone), and nothing is sent; one that never settles is a
   * 503 at the gate's `timeout`. A 401 or 403 from the endpoint (or a 400 `invalid_client`) is a 500
   * `provider_misconfigured`, as a refused client secret is: for a second, new credentials get it without a request;
   * then the next one calls the function again.
   *
   * A function's tokens are not in the cache scope: two providers at one endpoint with the same `name`, `issuer`
   * and `audience` share their cached answers (in a `sharedCache` too), whoever their tokens belong to. When the
   * authorization server answers each API differently (RFC 7662 §4), give each its own `name` or `audience`.
   */
  readonly accessToken: IntrospectionAccessToken;
  /** Not with `accessToken`. */
  readonly clientId?: undefined;
  /** Not with `accessToken`. */
  readonly clientSecret?: undefined;
  /** Not with `accessToken`. */
  readonly clientAuth?: undefined;
}

/** The {@link IntrospectionOptions} that do not depend on how this server authenticates. */
export interface IntrospectionCommonOptions extends HttpOptions {
  /** The introspection endpoint. Without it, `issuer`'s metadata names it. */
  readonly endpoint?: string | undefined;
  /**
   * The authorization server's issuer identifier. With `endpoint`, only
   * compared with `iss` (which the answer must then carry); without it, its
   * metadata is fetched to find the endpoint, and an `iss` in an answer must
   * equal it.
   */
  readonly issuer?: string | undefined;
  /**
   * When given, only tokens whose `aud` is or contains it pass. Without it, refusing a token meant for another API
   * is left to the authorization server (RFC 7662 §4).
   */
  readonly audience?: string | undefined;
  /**
   * Seconds this server's clock may run behind the authorization server's: a token the server calls active whose
   * `nbf` is at most this far ahead passes (a token used the second it was issued, its `nbf` its issue time). An
   * `exp` gets no tolerance. Default 5; at most 300.
   */
  readonly clockTolerance?: number | undefined;
  /**
   * Takes plain `http:` for `endpoint`, `issuer` and a discovered endpoint on
   * any host. Default `false`: https only (RFC 7662 §4, RFC 8414 §2), but for
   * loopback hosts (`localhost`, 127.0.0.0/8, `[::1]`), where http crosses no
   * network. The client secret or access token and every token travel to these URLs.
   */
  readonly allowInsecureRequests?: boolean | undefined;
  /** Name in errors, events and `AuthContext.provider`. Default `introspection`. */
  readonly name?: string | undefined;
}

const IntrospectionOptionsSchema = optionsObject(
  {
    ...httpOptionsShape,
    endpoint: endpointUrlOption.optional(),
    issuer: baseUrlOption.optional(),
    clientId: nameOption.optional(),
    clientSecret: secretOption.optional(),
    clientAuth: z.enum(['basic', 'post'], { error: 'expected basic or post' }).optional(),
    accessToken: z.unknown().superRefine(checkAccessToken).optional(),
    audience: nameOption.optional(),
    clockTolerance: numberOption(0, { max: MAX_CLOCK_TOLERANCE_SECONDS }).optional(),
    allowInsecureRequests: allowInsecureRequestsOption,
    name: nameOption.optional(),
  },
  'an options object with endpoint or issuer, and clientId and clientSecret or accessToken',
)
  .refine((options) => options.endpoint !== undefined || options.issuer !== undefined, {
    error: 'expected endpoint or issuer',
  })
  .superRefine((options, ctx) => checkAuthenticationChoice(options as AuthenticationOptions, ctx))
  .superRefine(secureUrls(['endpoint', 'issuer']))
  .superRefine(({ issuer }, ctx) => {
    if (typeof issuer === 'string' && URL.canParse(issuer) && new URL(issuer).pathname.includes('/.well-known/')) {
      ctx.addIssue({
        code: 'custom',
        path: ['issuer'],
        message:
          'expected the issuer identifier (the `issuer` its metadata names), not the URL of a metadata document under /.well-known/',
      });
    }
  });

/** What an active token's answer is checked against. */
interface ClaimChecks {
  readonly name: string;
  readonly audience: string | undefined;
  readonly issuer: string | undefined;
  /** Whether an answer without `iss` fails the issuer check. */
  readonly issRequired: boolean;
  /** How far ahead an `nbf` may be, in seconds. */
  readonly clockTolerance: number;
}

const NOT_ACTIVE: Verdict = Object.freeze({ ok: false, reason: 'The access token is not active' });
const EXPIRED: Verdict = Object.freeze({ ok: false, reason: 'The access token has expired' });
const NOT_YET_VALID: Verdict = Object.freeze({ ok: false, reason: 'The access token is not valid yet' });
const WRONG_ISSUER: Verdict = Object.freeze({ ok: false, reason: 'The access token is from another issuer' });
const WRONG_AUDIENCE: Verdict = Object.freeze({ ok: false, reason: 'The access token is not meant for this API' });
const KEY_BOUND: Verdict = Object.freeze({
  ok: false,
  reason: 'The access token is bound to a key (cnf): it is not accepted as a bearer token',
});
const NOT_BEARER: Verdict = Object.freeze({ ok: false, reason: 'The token is not a bearer access token' });
const NO_SUBJECT: Verdict = Object.freeze({
  ok: false,
  reason: 'The access token names no subject (sub, username or client_id)',
});

/**
 * The `token_type` values of a plain bearer access token, in lower case (RFC 6749 §5.1: case-insensitive): `Bearer`
 * (RFC 6750), and `access_token` or its RFC 8693 URN from servers that name the token's use there. Any other value
 * (`DPoP`, `PoP`, `N_A`, `mac`, `refresh_token`, one with a stray space) is a type this gate does not understand, and
 * RFC 6749 §7.1 says not to use such a token.
 */
const BEARER_TYPES: ReadonlySet<string> = new Set([
  'bearer',
  'access_token',
  'urn:ietf:params:oauth:token-type:access_token',
]);

/** `token_use` values (Ory Hydra and others) of a token that is not an access token, in lower case. */
const NOT_ACCESS_USES: ReadonlySet<string> = new Set(['refresh_token', 'refresh', 'id_token', 'id']);

/** Keycloak's `typ` claim of a token that is not an access token (`Bearer`), in lower case. */
const NOT_ACCESS_TYP: ReadonlySet<string> = new Set(['refresh', 'offline', 'id', 'logout']);

/**
 * A provider for RFC 7662 token introspection. Accepts only answers with
 * `"active": true` (the JSON boolean), within their `nbf` (give or take
 * `clockTolerance`) and `exp`, and
 * passing the `audience` and `issuer` checks. `subject` is `sub`, else
 * `username`, else `client_id`; `permissions` the `scope` split on spaces;
 * `expiresAt` the `exp` (none for an `exp` past what a `Date` holds).
 *
 * An active token is still a 401 when it cannot be used as a plain bearer
 * token: bound to a key or certificate (a `cnf` member: DPoP, RFC 9449, or
 * mutual TLS, RFC 8705, whose proof this gate does not check), of a
 * `token_type` other than `Bearer`, `access_token` or its RFC 8693 URN (any case), or a refresh or ID token
 * (a `token_use` of `refresh_token`, `refresh`, `id_token` or `id`, as Ory Hydra's; Keycloak's `typ`
 * `Refresh`, `Offline`, `ID` or `Logout`; any case); and when the answer
 * names no subject.
 *
 * This server authenticates with `clientId` and `clientSecret`, or with
 * `accessToken` (see {@link IntrospectionAccessTokenOptions}). The server
 * refusing them (401, 403, or a 400 `invalid_client` or
 * `unauthorized_client`) is a 500 `provider_misconfigured`; an answer that is
 * not a 200 with a JSON object holding `active` is a 503.
 */
export function introspection(options: IntrospectionOptions): Provider<BearerCredential> {
  checkOptions(IntrospectionOptionsSchema, options, 'introspection');
  const name = options.name ?? 'introspection';
  const { endpoint, issuer, audience } = options;
  const authentication = endpointAuthentication(name, options);
  const insecure = options.allowInsecureRequests === true;
  const target = new IntrospectionTarget(name, options, {
    endpoint,
    issuer,
    insecure,
    authMethod: authentication.metadataMethod,
  });
  const checks: ClaimChecks = {
    name,
    audience,
    issuer,
    issRequired: endpoint !== undefined,
    clockTolerance: options.clockTolerance ?? DEFAULT_CLOCK_TOLERANCE_SECONDS,
  };

  async function verifyIntrospectedToken(credential: BearerCredential, cancellation: Cancellation): Promise<Verdict> {
    const { http, path } = await target.get(cancellation);
    const form = new URLSearchParams({ token: credential.secret, token_type_hint: 'access_token' });
    const applied = authentication.apply(form);
    // Awaited only when a function gives the token: the other ways cost no turn of the event loop.
    const headers = applied instanceof Promise ? await applied : applied;
    let answer: JsonAnswer;
    try {
      answer = await http.postForm(path, form, headers, cancellation);
    } catch (failure) {
      // A refusal with a body that is not JSON (an empty 401 with `WWW-Authenticate: Basic`) is still a refusal.
      const status = failure instanceof ProviderFailure ? failure.upstreamStatus : undefined;
      throw status === 401 || status === 403 ? authentication.refused(status) : failure;
    }
    if (answer.status === 401 || answer.status === 403 || refusesClient(answer)) {
      throw authentication.refused(answer.status);
    }
    if (answer.status !== 200) {
      throw new ProviderFailure('status', `${http.named('POST')} answered ${answer.status}`, {
        status: answer.status,
      });
    }
    return readIntrospection(answer.body, checks);
  }

  return {
    name,
    source: BEARER_SOURCE,
    // One request per verification (discovery aside, once).
    concurrency: options.connections ?? DEFAULT_CONNECTIONS,
    // The endpoint's path and query may carry a key (`?code=`): like the secret, only its digest is kept.
    cacheScope: JSON.stringify([
      'introspection',
      name,
      endpoint === undefined ? null : secretDigest(new URL(endpoint).href),
      issuer ?? null,
      ...authentication.scope,
      audience ?? null,
      checks.clockTolerance,
    ]),
    extract: extractBearer,
    verify: cancellableVerify(verifyIntrospectedToken),
    close: () => target.close(),
  };
}

/** The verdict on a 200 answer's body. */
function readIntrospection(body: unknown, checks: ClaimChecks): Verdict {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || !Object.hasOwn(body, 'active')) {
    throw invalidAnswer(checks.name);
  }
  // Only the JSON boolean: "true" (a string), 1 or null is not active.
  if ((body as { active: unknown }).active !== true) return NOT_ACTIVE;
  const parsed = IntrospectionAnswer.safeParse(body);
  if (!parsed.success) throw invalidAnswer(checks.name);
  const answer = parsed.data;
  if (answer.cnf != null) return KEY_BOUND;
  if (typeof answer.token_type === 'string' && !BEARER_TYPES.has(answer.token_type.toLowerCase())) return NOT_BEARER;
  if (typeof answer.token_use === 'string' && NOT_ACCESS_USES.has(answer.token_use.toLowerCase())) return NOT_BEARER;
  if (typeof answer.typ === 'string' && NOT_ACCESS_TYP.has(answer.typ.toLowerCase())) return NOT_BEARER;
  const nowSeconds = Date.now() / 1000;
  if (answer.exp != null && answer.exp <= nowSeconds) return EXPIRED;
  if (answer.nbf != null && answer.nbf > nowSeconds + checks.clockTolerance) return NOT_YET_VALID;
  if (checks.issuer !== undefined && !issuerMatches(answer.iss, checks)) return WRONG_ISSUER;
  if (checks.audience !== undefined && !audiences(answer.aud).includes(checks.audience)) return WRONG_AUDIENCE;
  const subject = subjectOf(answer);
  if (subject === undefined) return NO_SUBJECT;
  return {
    ok: true,
    principal: {
      subject,
      permissions: (answer.scope ?? '').split(' ').filter((scope) => scope !== ''),
      expiresAt: answer.exp == null || answer.exp > LATEST_DATE_SECONDS ? undefined : new Date(answer.exp * 1000),
      details: answer,
    },
  };
}

/** `sub`, else `username`, else `client_id` (empty strings count as absent). */
function subjectOf(answer: {
  sub?: string | null | undefined;
  username?: string | null | undefined;
  client_id?: string | null | undefined;
}): string | undefined {
  return answer.sub || answer.username || answer.client_id || undefined;
}

/** `iss` equals the configured issuer; an answer without `iss` passes only when it is not required. */
function issuerMatches(iss: string | null | undefined, checks: ClaimChecks): boolean {
  return iss == null ? !checks.issRequired : iss === checks.issuer;
}

function audiences(aud: string | readonly string[] | null | undefined): readonly string[] {
  if (aud == null) return [];
  return typeof aud === 'string' ? [aud] : aud;
}

/**
 * A 400 that refuses this server as a client (RFC 6749 §5.2: `invalid_client`, the status a server may use for a
 * client that did not authenticate with the Authorization header, or `unauthorized_client`), not the token.
 */
function refusesClient(answer: JsonAnswer): boolean {
  if (answer.status !== 400) return false;
  const error = (answer.body as { error?: unknown } | null)?.error;
  return error === 'invalid_client' || error === 'unauthorized_client';
}

function invalidAnswer(name: string): ProviderFailure {
  return new ProviderFailure('invalid_answer', `${name} answer does not match its schema`, {
    status: 200,
  });
}
