/**
 * A real HTTP server that answers like the OnlineOrNot token API
 * (`GET /v1/tokens/verify`, `GET /v1/tokens/permissions`).
 */
import { STATUS_CODES } from 'node:http';
import { z } from 'zod';
import { isBearerToken } from '../credentials/bearer.js';
import { checkOptions, optionsObject, recordOption, shown } from '../options.js';
import { type MockProvider, type RouteHandler, startMockServer } from './mock-server.js';

/** A token the OnlineOrNot mock knows. */
export interface OnlineOrNotTokenDef {
  /** Token id, answered as `result.id` by `/v1/tokens/verify`. */
  readonly id: string;
  /** Answered as `result.permissions` by `/v1/tokens/permissions` (default `[]`). */
  readonly permissions?: readonly string[] | undefined;
  /** Answered as `result.status` by `/v1/tokens/verify`, with a 200 whatever it is (default `'active'`). */
  readonly status?: string | undefined;
}

/** Options of {@link mockOnlineOrNot}. */
export interface MockOnlineOrNotOptions {
  /** Known tokens, keyed by the bearer token itself. */
  readonly tokens?: Readonly<Record<string, OnlineOrNotTokenDef>> | undefined;
}

/**
 * The OnlineOrNot mock; endpoints counted in `calls`: `verify` and
 * `permissions`. For `fault.every`, one verification is a request to each
 * with the same `Authorization` header.
 */
export interface MockOnlineOrNot extends MockProvider<'verify' | 'permissions'> {
  /**
   * Adds or replaces a known token. Throws `TypeError` when `token` is not
   * RFC 6750 `b64token` syntax, since no request could ever carry it.
   */
  setToken(token: string, def: OnlineOrNotTokenDef): void;
  /** Forgets a token; returns whether it was known. */
  removeToken(token: string): boolean;
}

const anyString = z.string({ error: (issue) => `expected a string, got ${shown(issue.input)}` });

const OnlineOrNotTokenSchema = optionsObject(
  {
    // Any strings, empty ones too: what the API answers, for the gate to judge.
    id: anyString,
    permissions: z
      .array(anyString, { error: (issue) => `expected an array of strings, got ${shown(issue.input)}` })
      .optional(),
    status: anyString.optional(),
  },
  'a token ({ id, permissions?, status? })',
);

/**
 * Checked as `stubProvider` and `createGate` check theirs: an unknown option (a misspelling named with the spelling
 * meant), a missing one or a value of the wrong type throws a `TypeError` naming the mock and the option, never the
 * token. A mock that took a misspelled option would answer every test wrongly.
 */
const MockOnlineOrNotOptionsSchema = optionsObject(
  { tokens: recordOption('an object of tokens').optional() },
  'an options object ({ tokens? })',
);

/** RFC 6750 §2.1 credentials: `Bearer` (any case), one or more spaces, a b64token. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*)$/i;

const UNAUTHORIZED = {
  status: 401,
  body: { result: null, success: false, errors: [{ code: 10000, message: 'Authentication error' }], messages: [] },
} as const;

/**
 * Starts an OnlineOrNot mock on 127.0.0.1. Pass its `url`
 * (`http://127.0.0.1:<port>`) as the provider's `baseUrl`.
 *
 * A known token gets 200 from both endpoints (whatever its `status`); a
 * missing, malformed or unknown `Authorization: Bearer` token gets the API's
 * 401; other paths get 404.
 */
export async function mockOnlineOrNot(options: MockOnlineOrNotOptions = {}): Promise<MockOnlineOrNot> {
  checkOptions(MockOnlineOrNotOptionsSchema, options, 'mockOnlineOrNot');
  const tokens = new Map<string, Required<OnlineOrNotTokenDef>>();
  const add = (token: string, def: OnlineOrNotTokenDef, where: string): void => {
    if (typeof token !== 'string' || !isBearerToken(token)) {
      throw new TypeError(`mockOnlineOrNot: ${where}: a bearer token must be b64token syntax`);
    }
    // `where` names the token by its position, never by its value.
    checkOptions(OnlineOrNotTokenSchema, def, `mockOnlineOrNot: ${where}`);
    tokens.set(token, { id: def.id, permissions: [...(def.permissions ?? [])], status: def.status ?? 'active' });
  };
  const setToken = (token: string, def: OnlineOrNotTokenDef): void => add(token, def, 'setToken');
  for (const [index, [token, def]] of Object.entries(options.tokens ?? {}).entries()) {
    add(token, def, `tokens (entry ${index + 1})`);
  }
  // Stored definitions are replaced, never changed: the first ones are kept as they are.
  const initial = new Map(tokens);

  /** Answers 200 with `result(def)` for a known bearer token, else the API's 401. */
  const authenticated =
    (result: (def: Required<OnlineOrNotTokenDef>) => unknown): RouteHandler =>
    (req) => {
      const token = BEARER.exec(req.headers.authorization ?? '')?.[1];
      const def = token === undefined ? undefined : tokens.get(token);
      if (def === undefined) return UNAUTHORIZED;
      return { status: 200, body: { result: result(def), success: true, errors: [], messages: [] } };
    };

  const server = await startMockServer({
    basePath: '',
    routes: {
      '/v1/tokens/verify': { name: 'verify', handle: authenticated(({ id, status }) => ({ id, status })) },
      '/v1/tokens/permissions': {
        name: 'permissions',
        handle: authenticated(({ permissions }) => ({ permissions })),
      },
    },
    wrongShape: { result: { id: 42 } },
    errorBody: (status) =>
      status === 401
        ? UNAUTHORIZED.body
        : {
            result: null,
            success: false,
            errors: [{ code: status, message: STATUS_CODES[status] ?? 'Error' }],
            messages: [],
          },
    // One verification asks both endpoints with the same token.
    verification: { endpoints: ['verify', 'permissions'], key: (req) => req.headers.authorization ?? '' },
    reset: () => {
      tokens.clear();
      for (const [token, def] of initial) tokens.set(token, def);
    },
  });
  return Object.assign(server, { setToken, removeToken: (token: string) => tokens.delete(token) });
}
