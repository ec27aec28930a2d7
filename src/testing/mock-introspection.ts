/**
 * A real HTTP server that answers like an OAuth 2.0 authorization server's
 * token introspection endpoint (RFC 7662, `POST /introspect`), with client
 * authentication (RFC 6749 §2.3.1) or an access token of the caller's
 * (RFC 7662 §2.1, RFC 6750), and its metadata documents (RFC 8414, OpenID
 * Connect Discovery).
 */
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { isB64Token, isBearerToken } from '../credentials/bearer.js';
import { checkOptions, nameOption, optionsObject, recordOption } from '../options.js';
import { type JsonReply, jsonAnswer } from './mock-answer.js';
import { type MockProvider, type MockRoute, startMockServer } from './mock-server.js';

/**
 * The introspection answer for a token the mock knows, sent as JSON as it is
 * (members left `undefined` are left out).
 */
export interface IntrospectionTokenDef {
  /** `true` for an active token; anything else (`false`, the string `"true"`, `undefined`) as a server might send it. */
  readonly active: unknown;
  /** Space-separated scopes. */
  readonly scope?: string | undefined;
  /** The subject (RFC 7662 §2.2). */
  readonly sub?: string | undefined;
  /** A human-readable name of the resource owner. */
  readonly username?: string | undefined;
  /** The client the token was issued to. */
  readonly client_id?: string | undefined;
  /** Seconds since the epoch. */
  readonly exp?: number | undefined;
  /** Seconds since the epoch. */
  readonly nbf?: number | undefined;
  /** The audience: one or several. */
  readonly aud?: string | readonly string[] | undefined;
  /** The issuer. */
  readonly iss?: string | undefined;
  /** Any other member. */
  readonly [member: string]: unknown;
}

/** The metadata documents the mock can serve. */
export type MockMetadataDocument = 'oauth-authorization-server' | 'openid-configuration';

/**
 * Options of {@link mockIntrospection}. Its introspection endpoint accepts a client id and secret, an access token, or
 * either: give `clientId` and `clientSecret`, `accessToken`, or all three.
 */
export interface MockIntrospectionOptions {
  /** The only client id accepted (with `clientSecret`). */
  readonly clientId?: string | undefined;
  /** The only client secret accepted (with `clientId`). */
  readonly clientSecret?: string | undefined;
  /** The one client authentication accepted for `clientId` and `clientSecret`: `basic` (default) or `post`. */
  readonly clientAuth?: 'basic' | 'post' | undefined;
  /** The only access token accepted, as `Authorization: Bearer` (RFC 7662 §2.1; b64token syntax). */
  readonly accessToken?: string | undefined;
  /**
   * Known tokens, keyed by the token itself; any other token is `{ "active": false }`. Each answer is kept as JSON
   * writes it when the mock starts; one JSON cannot write (a BigInt, a cycle) throws `TypeError`.
   */
  readonly tokens?: Readonly<Record<string, IntrospectionTokenDef>> | undefined;
  /**
   * Path of the issuer on the mock (`/realms/a`): the issuer is `url + issuerPath`, a terminating `/` kept
   * (`'/'` gives `url + '/'`, as an issuer such as `https://tenant.example/` has it). Default none: the issuer is `url`.
   * It starts with a single `/` and is kept as written but for percent-encoding (`/realms/my realm` is
   * `/realms/my%20realm`): a `?`, a `#`, a `.` or `..` segment, a `\`, a tab or a line break, or white space at its
   * end is refused, as a URL would change it.
   */
  readonly issuerPath?: string | undefined;
  /** Documents served (default both); the others answer 404. */
  readonly wellKnown?: readonly MockMetadataDocument[] | undefined;
  /**
   * Members added to (or replacing those of) both metadata documents, such as another `issuer`; one left undefined
   * leaves the document's own out. Kept as JSON writes them when the mock starts, as {@link MockIntrospectionOptions.tokens} are.
   */
  readonly metadata?: Readonly<Record<string, unknown>> | undefined;
}

/**
 * The introspection mock; endpoints counted in `calls`: `introspect`,
 * `oauthMetadata` and `openidMetadata` (either location of the latter). For
 * `fault.every`, every request is a verification of its own, metadata
 * requests included unless the fault's `endpoints` leaves them out.
 */
export interface MockIntrospection extends MockProvider<'introspect' | 'oauthMetadata' | 'openidMetadata'> {
  /** The issuer identifier: `url` plus `issuerPath` (its terminating `/` kept), percent-encoded as in a URL. */
  readonly issuer: string;
  /** The introspection endpoint: `url` + `/introspect`. */
  readonly endpoint: string;
  /**
   * Adds or replaces a known token; its answer is kept as JSON writes it, so changing `def` afterwards changes
   * nothing. Throws `TypeError` when `token` is not RFC 6750 `b64token` syntax, or for an answer JSON cannot write.
   */
  setToken(token: string, def: IntrospectionTokenDef): void;
  /** Forgets a token; returns whether it was known. */
  removeToken(token: string): boolean;
}

/** `text` with its percent-encoded UTF-8 decoded; a `%` sequence that does not decode stays as it is. */
function percentDecoded(text: string): string {
  return text.replace(/(?:%[0-9a-f]{2})+/gi, (encoded) => {
    try {
      return decodeURIComponent(encoded);
    } catch {
      return encoded;
    }
  });
}

/**
 * Why `path` cannot be an issuer's path on the mock, or undefined when it can: it is one a URL keeps as written, but
 * for percent-encoding (a space as `%20`). A path the URL parser would rewrite (`//host/x` taken as a host, `/a?b`
 * cut at the query, `/a/../b` resolved, a `\` taken as `/`, a tab or a line break dropped, white space at the end
 * trimmed) is refused: the mock would serve another issuer than the one its options name.
 */
function issuerPathFault(path: string): string | undefined {
  if (!path.startsWith('/')) return 'expected a path starting with /';
  if (path.startsWith('//')) return 'expected a path starting with a single / (// starts a host)';
  if (/[?#]/.test(path)) return 'expected a path without ? or # (a query or fragment is no part of it)';
  const dotSegment = (segment: string) => /^\.{1,2}$/.test(segment.toLowerCase().replaceAll('%2e', '.'));
  if (path.split('/').some(dotSegment)) return 'expected a path without . or .. segments (a URL resolves them away)';
  const kept = new URL(path, 'http://mock').pathname;
  if (percentDecoded(kept) !== percentDecoded(path)) {
    return 'expected a path a URL keeps as written: no \\, tab or line break, nor white space at its end';
  }
  return undefined;
}

/**
 * Checked as `stubProvider` and `createGate` check theirs: an unknown option (a misspelling named with the spelling
 * meant), a missing one or a value of the wrong type throws a `TypeError` naming the mock and the option, never the
 * token. A mock that took a misspelled option would answer every test wrongly.
 */
const MockIntrospectionOptionsSchema = optionsObject(
  {
    clientId: nameOption.optional(),
    clientSecret: nameOption.optional(),
    clientAuth: z.enum(['basic', 'post'], { error: () => "expected 'basic' or 'post'" }).optional(),
    accessToken: nameOption.refine(isBearerToken, { error: 'expected a bearer token (b64token syntax)' }).optional(),
    tokens: recordOption('an object of tokens').optional(),
    issuerPath: nameOption
      .superRefine((path, ctx) => {
        const fault = issuerPathFault(path);
        if (fault !== undefined) ctx.addIssue({ code: 'custom', message: fault });
      })
      .optional(),
    wellKnown: z
      .array(z.enum(['oauth-authorization-server', 'openid-configuration']), {
        error: () => "expected an array of 'oauth-authorization-server' and 'openid-configuration'",
      })
      .optional(),
    metadata: recordOption('an object').optional(),
  },
  'an options object with clientId and clientSecret, or accessToken',
).superRefine(({ clientId, clientSecret, clientAuth, accessToken }, ctx) => {
  const missing = (path: string) =>
    ctx.addIssue({ code: 'custom', path: [path], message: 'expected a non-empty string, got undefined' });
  if (clientId !== undefined || clientSecret !== undefined) {
    if (clientId === undefined) missing('clientId');
    else if (clientSecret === undefined) missing('clientSecret');
  } else if (accessToken === undefined) {
    ctx.addIssue({ code: 'custom', path: ['clientId'], message: 'expected clientId and clientSecret, or accessToken' });
  } else if (clientAuth !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['clientAuth'], message: 'expected clientId and clientSecret with it' });
  }
});

const IntrospectionTokenSchema = recordOption('an introspection answer object');

const FORM_TYPE = 'application/x-www-form-urlencoded';
const INVALID_REQUEST: JsonReply = { status: 400, body: { error: 'invalid_request' } };

/** A form-urlencoded value decoded (`+` is a space), or undefined when its escapes are broken. */
function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/** How a request authenticates: with a client id and secret, or an access token (`secret`, no `id`). */
interface Caller {
  readonly method: 'basic' | 'post' | 'bearer';
  readonly id?: string | undefined;
  readonly secret?: string | undefined;
}

/**
 * How a request authenticates; `'both'` when it uses two methods (RFC 6749 §2.3 forbids it). A Bearer header counts
 * only when `bearerTaken`: to a mock that takes no access token it is no credential at all.
 */
function callerOf(req: IncomingMessage, form: URLSearchParams, bearerTaken: boolean): Caller | 'both' | undefined {
  const header = req.headers.authorization;
  const basic = header === undefined ? undefined : /^Basic +([A-Za-z0-9+/]+=*)$/i.exec(header)?.[1];
  const inBody = form.has('client_id') || form.has('client_secret');
  if (header !== undefined && inBody) return 'both';
  if (inBody)
    return { method: 'post', id: form.get('client_id') ?? undefined, secret: form.get('client_secret') ?? '' };
  const bearer = header === undefined || !bearerTaken ? undefined : /^Bearer +(.+)$/is.exec(header)?.[1];
  if (bearer !== undefined) return { method: 'bearer', secret: isB64Token(bearer) ? bearer : undefined };
  if (basic === undefined) return undefined;
  // Latin-1: a client that sent its id or secret without form-encoding them first matches nothing non-ASCII.
  const pair = Buffer.from(basic, 'base64').toString('latin1');
  const colon = pair.indexOf(':');
  if (colon === -1) return { method: 'basic' };
  return { method: 'basic', id: formDecode(pair.slice(0, colon)), secret: formDecode(pair.slice(colon + 1)) };
}

/**
 * Starts an introspection mock on 127.0.0.1. Give its `endpoint` to the
 * provider, or its `issuer` to have the provider discover the endpoint.
 *
 * `POST /introspect` answers, in this order: 400 `invalid_request` for a body
 * that is not `application/x-www-form-urlencoded` or uses two client
 * authentication methods; 401 `invalid_token` with `WWW-Authenticate: Bearer
 * realm="mock", error="invalid_token"` for a Bearer token other than
 * `accessToken` (RFC 6750 §3); 401 `invalid_client` (with `WWW-Authenticate:
 * Basic` when the client tried Basic, or sent nothing and `clientAuth` is
 * `basic`; `Bearer` when it sent nothing and only `accessToken` is accepted)
 * for a missing or wrong client, or another method than `clientAuth`; 400
 * for a missing `token`; else 200 with the token's answer. The metadata
 * documents are served at their RFC 8414 §3.1 locations (and, for
 * `openid-configuration` of an issuer with a path, appended to it too), and
 * list the methods accepted (`client_secret_basic` or `client_secret_post`,
 * and `Bearer`).
 */
export async function mockIntrospection(options: MockIntrospectionOptions): Promise<MockIntrospection> {
  checkOptions(MockIntrospectionOptionsSchema, options, 'mockIntrospection');
  const { clientId, clientSecret, accessToken } = options;
  // Client credentials are accepted only when the mock has them.
  const clientAuth = clientId === undefined ? undefined : (options.clientAuth ?? 'basic');
  // As a request carries it (percent-encoded), so that the metadata routes are found; RFC 8414 §3.1 drops a terminating /.
  // The option check let through only paths the URL parser changes by percent-encoding alone.
  const issuerPath = new URL(options.issuerPath ?? '/', 'http://mock').pathname.replace(/\/+$/, '');
  const issuer = (url: string) => `${url}${issuerPath}${options.issuerPath?.endsWith('/') ? '/' : ''}`;
  const served = new Set<MockMetadataDocument>(
    options.wellKnown ?? ['oauth-authorization-server', 'openid-configuration'],
  );
  // Each member as JSON writes it; one left undefined still leaves the document's own out.
  const metadata = Object.fromEntries(
    Object.entries(options.metadata ?? {}).map(([name, value]) => [
      name,
      value === undefined ? undefined : jsonAnswer(value, `mockIntrospection: metadata: ${name}`),
    ]),
  );
  /** Each token's answer as JSON writes it: what the caller's object holds later changes nothing. */
  const tokens = new Map<string, unknown>();
  const add = (token: string, def: IntrospectionTokenDef, where: string): void => {
    if (typeof token !== 'string' || !isBearerToken(token)) {
      throw new TypeError(`mockIntrospection: ${where}: a bearer token must be b64token syntax`);
    }
    // `where` names the token by its position, never by its value.
    checkOptions(IntrospectionTokenSchema, def, `mockIntrospection: ${where}`);
    tokens.set(token, jsonAnswer(def, `mockIntrospection: ${where}`));
  };
  for (const [index, [token, def]] of Object.entries(options.tokens ?? {}).entries()) {
    add(token, def, `tokens (entry ${index + 1})`);
  }
  const initial = new Map(tokens);
  let origin = '';

  const introspect = (req: IncomingMessage, _query: URLSearchParams, body: string): JsonReply => {
    const type = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
    if (type !== FORM_TYPE) return INVALID_REQUEST;
    const form = new URLSearchParams(body);
    const caller = callerOf(req, form, accessToken !== undefined);
    if (caller === 'both') return INVALID_REQUEST;
    if (caller?.method === 'bearer') {
      if (caller.secret !== accessToken) {
        // RFC 6750 §3: the token was tried and is not one this server takes.
        const headers = { 'www-authenticate': 'Bearer realm="mock", error="invalid_token"' };
        return { status: 401, body: { error: 'invalid_token' }, headers };
      }
    } else if (
      caller === undefined ||
      caller.method !== clientAuth ||
      caller.id !== clientId ||
      caller.secret !== clientSecret
    ) {
      // RFC 6749 §5.2: a client that tried Basic is told the scheme; so is one that sent nothing, when Basic is ours
      // (or Bearer, when only an access token is taken).
      const tried = caller?.method ?? clientAuth ?? 'bearer';
      const challenge =
        tried === 'basic' ? 'Basic realm="mock"' : tried === 'bearer' ? 'Bearer realm="mock"' : undefined;
      const headers: Record<string, string> = challenge === undefined ? {} : { 'www-authenticate': challenge };
      return { status: 401, body: { error: 'invalid_client' }, headers };
    }
    const token = form.get('token');
    if (token === null) return INVALID_REQUEST;
    return { status: 200, body: tokens.has(token) ? tokens.get(token) : { active: false } };
  };

  const document = (kind: MockMetadataDocument) => (): JsonReply => {
    if (!served.has(kind)) return { status: 404, body: { error: 'Not Found' } };
    const body = {
      issuer: issuer(origin),
      introspection_endpoint: `${origin}/introspect`,
      introspection_endpoint_auth_methods_supported: [
        ...(clientAuth === undefined ? [] : [`client_secret_${clientAuth}`]),
        ...(accessToken === undefined ? [] : ['Bearer']),
      ],
      // REQUIRED by RFC 8414 §2, for clients stricter than the gate (which reads issuer and the endpoint alone).
      response_types_supported: ['code'],
      ...metadata,
    };
    return { status: 200, body };
  };

  const openid: MockRoute<'openidMetadata'> = { name: 'openidMetadata', handle: document('openid-configuration') };
  const server = await startMockServer<'introspect' | 'oauthMetadata' | 'openidMetadata'>({
    basePath: '',
    routes: {
      '/introspect': { name: 'introspect', method: 'POST', handle: introspect },
      [`/.well-known/oauth-authorization-server${issuerPath}`]: {
        name: 'oauthMetadata',
        handle: document('oauth-authorization-server'),
      },
      [`/.well-known/openid-configuration${issuerPath}`]: openid,
      [`${issuerPath}/.well-known/openid-configuration`]: openid,
    },
    wrongShape: { scope: 'read', sub: 'no-active-member' },
    reset: () => {
      tokens.clear();
      for (const [token, def] of initial) tokens.set(token, def);
    },
  });
  origin = server.url;
  return Object.assign(server, {
    issuer: issuer(server.url),
    endpoint: `${server.url}/introspect`,
    setToken: (token: string, def: IntrospectionTokenDef) => add(token, def, 'setToken'),
    removeToken: (token: string) => tokens.delete(token),
  });
}
