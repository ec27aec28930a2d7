/**
 * Partoo-style connection tokens: `?user_id=…&token=…` in the request,
 * checked with `GET {baseUrl}/connection/check_token` and the server's own
 * key in `x-APIKey`, as Partoo's public API documentation describes it
 * (API reference: "Check connection token").
 */
import { z } from 'zod';
import { type Cancellation, cancellableVerify } from '../cancellation.js';
import {
  CONNECTION_SOURCE,
  type ConnectionCredential,
  type ConnectionQueryNames,
  findConnection,
} from '../credentials/connection.js';
import { BASE_URL_HINT, DEFAULT_CONNECTIONS, type HttpOptions, httpOptionsShape, ProviderHttp } from '../http.js';
import {
  allowInsecureRequestsOption,
  baseUrlOption,
  checkOptions,
  headerSecretOption,
  nameOption,
  optionsObject,
  secureUrls,
  stringListOption,
} from '../options.js';
import { ProviderFailure } from '../provider-failure.js';
import type { Provider, Verdict } from '../types.js';
import { DateTimeText, dateTimeMs } from './date-time.js';
import { secretDigest } from './secret-digest.js';

/** Connection token statuses, as the API names them. */
export const CONNECTION_TOKEN_STATUSES = ['valid', 'consumed', 'revoked', 'expired'] as const;
const STATUSES = CONNECTION_TOKEN_STATUSES;

/** A connection token's status, as the API names it. */
export type ConnectionTokenStatus = (typeof STATUSES)[number];

/**
 * 200 from check_token. Every field but `status` may be null or absent in
 * real answers. The dates are RFC 3339 date-times, or the same without an
 * offset, which is UTC (see `dateTimeMs`); an answer with any other date
 * does not match. The `token` field (a new connection token) is dropped: it
 * is a secret and must not travel on in `details`.
 */
export const CheckTokenAnswer = z.object({
  status: z.enum(STATUSES),
  expiration_date: DateTimeText.nullish(),
  generated_by: z.string().nullish(),
  creation_date: DateTimeText.nullish(),
  consumption_date: DateTimeText.nullish(),
}) satisfies z.ZodType<PartooDetails>;

/** 400, 403 and 404 from check_token: `{ "errors": { … } }`. */
const CheckTokenError = z.object({ errors: z.record(z.string(), z.unknown()) });

/** Details kept from a check_token answer: the validated body, without `token` (a secret). */
export interface PartooDetails {
  /** The connection token's status; `valid` (or another status in `accept`) for an accepted one. */
  readonly status: ConnectionTokenStatus;
  /** When the token expires: an RFC 3339 date-time, or the same without an offset (UTC). */
  readonly expiration_date?: string | null | undefined;
  /** Who generated the token. */
  readonly generated_by?: string | null | undefined;
  /** When the token was created (as `expiration_date`). */
  readonly creation_date?: string | null | undefined;
  /** When the token was consumed, if it was (as `expiration_date`). */
  readonly consumption_date?: string | null | undefined;
  readonly [member: string]: unknown;
}

/** Options of {@link partoo}. */
export interface PartooOptions extends HttpOptions {
  /** This server's Partoo API key, sent as `x-APIKey`. Needs WRITE access on the users it checks. */
  readonly apiKey: string;
  /** API root. Default `https://api.partoo.co/v2`; Partoo's sandbox is `https://api.sandbox.partoo.co/v2`. */
  readonly baseUrl?: string | undefined;
  /**
   * Takes a plain `http:` `baseUrl` on any host. Default `false`: https only, but for loopback hosts (`localhost`,
   * 127.0.0.0/8, `[::1]`), where http crosses no network. The API key and every token travel to this URL.
   */
  readonly allowInsecureRequests?: boolean | undefined;
  /**
   * Statuses that let the request through. Default `['valid']`. A token past its `expiration_date` is still refused,
   * whatever its status: with `expired` here, only a token so marked whose date is still ahead passes.
   */
  readonly accept?: readonly ConnectionTokenStatus[] | undefined;
  /** Query parameter names. Default `{ userId: 'user_id', token: 'token' }`. */
  readonly query?: { readonly [Name in keyof ConnectionQueryNames]?: string | undefined } | undefined;
  /** Permissions granted to every accepted connection token (the API reports none). Default `[]`. */
  readonly permissions?: readonly string[] | undefined;
  /** Name in errors, events and `AuthContext.provider`. Default `partoo`. */
  readonly name?: string | undefined;
}

const PartooOptionsSchema = optionsObject(
  {
    ...httpOptionsShape,
    apiKey: headerSecretOption,
    baseUrl: baseUrlOption.optional(),
    allowInsecureRequests: allowInsecureRequestsOption,
    accept: z
      .array(z.enum(STATUSES, { error: `expected ${STATUSES.slice(0, -1).join(', ')} or ${STATUSES.at(-1)}` }), {
        error: 'expected an array of statuses',
      })
      .min(1, { error: 'expected at least one status' })
      .optional(),
    query: optionsObject(
      { userId: nameOption.optional(), token: nameOption.optional() },
      'an object ({ userId, token })',
    )
      .refine((names) => (names.userId ?? 'user_id') !== (names.token ?? 'token'), {
        error: 'expected userId and token to differ',
      })
      .optional(),
    permissions: stringListOption.optional(),
    name: nameOption.optional(),
  },
  'an options object with apiKey',
).superRefine(secureUrls(['baseUrl']));

const NOT_ACCEPTED: Verdict = Object.freeze({ ok: false, reason: 'The connection token was not accepted' });

/**
 * One `extract` per pair of query names: two providers reading the same parameters find the same credentials, and
 * `createGate` refuses the second, which no request would reach. As many entries as the pairs of names configured.
 */
const EXTRACTS = new Map<string, Provider<ConnectionCredential>['extract']>();

function extractFor(names: ConnectionQueryNames): Provider<ConnectionCredential>['extract'] {
  const key = JSON.stringify([names.userId, names.token]);
  let extract = EXTRACTS.get(key);
  if (extract === undefined) {
    extract = (req, realm) => findConnection(req, names, realm);
    EXTRACTS.set(key, extract);
  }
  return extract;
}

const CHECK_TOKEN_PATH = '/connection/check_token';

/**
 * A provider for Partoo-style connection tokens. `subject` is the user id,
 * `expiresAt` the token's `expiration_date`.
 */
export function partoo(options: PartooOptions): Provider<ConnectionCredential> {
  checkOptions(PartooOptionsSchema, options, 'partoo');
  const name = options.name ?? 'partoo';
  const apiKey = options.apiKey;
  const baseUrl = options.baseUrl ?? 'https://api.partoo.co/v2';
  const accept = new Set<string>(options.accept ?? ['valid']);
  const names: ConnectionQueryNames = {
    userId: options.query?.userId ?? 'user_id',
    token: options.query?.token ?? 'token',
  };
  const permissions = Object.freeze([...(options.permissions ?? [])]);
  const http = new ProviderHttp(name, baseUrl, options, BASE_URL_HINT);
  // Everything that decides the cached answer besides the credential. The key
  // decides too (403 for users it may not check); only its digest is kept.
  const cacheScope = JSON.stringify([
    'partoo',
    name,
    // The base URL's path may carry a key (a proxy's): like the API key, only its digest is kept.
    secretDigest(new URL(baseUrl).href),
    secretDigest(apiKey),
    [...accept].sort(),
    permissions,
  ]);

  async function verifyConnectionToken(credential: ConnectionCredential, cancellation: Cancellation): Promise<Verdict> {
    // URLSearchParams encodes both values: a token can never add or rewrite user_id.
    const query = new URLSearchParams({ user_id: credential.userId, token: credential.token });
    const answer = await http.getJson(`${CHECK_TOKEN_PATH}?${query}`, { 'x-apikey': apiKey }, cancellation);
    switch (answer.status) {
      case 200: {
        const parsed = CheckTokenAnswer.safeParse(answer.body);
        if (!parsed.success)
          throw new ProviderFailure(
            'invalid_answer',
            `${http.named('GET', CHECK_TOKEN_PATH)} answered 200 with a body that does not match its schema`,
            { status: 200 },
          );
        const body = parsed.data;
        if (!accept.has(body.status)) return { ok: false, reason: `The connection token is ${body.status}` };
        // The schema has checked the date; `dateTimeMs` cannot fail on it.
        const expiresMs = body.expiration_date ? dateTimeMs(body.expiration_date) : undefined;
        const expiresAt = expiresMs === undefined ? undefined : new Date(expiresMs);
        return { ok: true, principal: { subject: credential.userId, permissions, expiresAt, details: body } };
      }
      case 401:
        throw new ProviderFailure('misconfigured', `${name} refused the server's API key`, { status: 401 });
      case 400:
      case 403:
      case 404:
        // 403: this server's key may not check that user; for the client it is the same as an unknown token.
        if (!CheckTokenError.safeParse(answer.body).success) {
          throw new ProviderFailure(
            'invalid_answer',
            `${http.named('GET', CHECK_TOKEN_PATH)} answered ${answer.status} with a body that does not match its error schema${answer.status === 404 ? BASE_URL_HINT : ''}`,
            { status: answer.status },
          );
        }
        return NOT_ACCEPTED;
      default:
        throw new ProviderFailure('status', `${http.named('GET', CHECK_TOKEN_PATH)} answered ${answer.status}`, {
          status: answer.status,
        });
    }
  }

  return {
    name,
    source: CONNECTION_SOURCE,
    concurrency: options.connections ?? DEFAULT_CONNECTIONS,
    cacheScope,
    extract: extractFor(names),
    verify: cancellableVerify(verifyConnectionToken),
    close: () => http.close(),
  };
}
