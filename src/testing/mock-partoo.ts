/**
 * A real HTTP server that answers like Partoo's
 * `GET /v2/connection/check_token?user_id=&token=`.
 */
import { STATUS_CODES } from 'node:http';
import { z } from 'zod';
import { checkOptions, headerSecretOption, nameOption, optionsObject, shown } from '../options.js';
import { CONNECTION_TOKEN_STATUSES, type ConnectionTokenStatus } from '../providers/partoo.js';
import { type MockProvider, startMockServer } from './mock-server.js';

/** A connection token the Partoo mock knows. */
export interface PartooTokenEntry {
  /** The user the token belongs to (`user_id` in the query). */
  readonly userId: string;
  /** The connection token (`token` in the query), answered back as `token`. */
  readonly token: string;
  /** Answered as `status` (default `'valid'`); `'consumed'` also sets `consumption_date`. */
  readonly status?: ConnectionTokenStatus | undefined;
  /**
   * Answered as `expiration_date`: a string is sent verbatim, a `Date` as
   * `2019-08-02T17:15:54.256000+00:00`, `null` as `null`. Default: one hour
   * after the entry was set; for an `expired` token, one hour before, and it
   * was created an hour before that (Partoo API docs, Check connection token:
   * "`expired` means it has expired before being used").
   */
  readonly expirationDate?: string | Date | null | undefined;
  /**
   * When true, the mock answers 403 for this one token (this `userId` and `token`), and as usual for the user's other
   * tokens. Partoo answers 403 when the API key lacks `WRITE` access on the user (Partoo API: Check connection token),
   * which would hold for all of that user's tokens; a gate answers 401 for a 403 as for a 404, so it shows no
   * difference.
   */
  readonly forbidden?: boolean | undefined;
}

/** Options of {@link mockPartoo}. */
export interface MockPartooOptions {
  /**
   * The only `x-APIKey` header value the mock accepts: non-empty, and one a header can carry (tab, printable ASCII or
   * Latin-1), as `partoo()` requires of its `apiKey`.
   */
  readonly apiKey: string;
  /** Known connection tokens. */
  readonly tokens?: readonly PartooTokenEntry[] | undefined;
}

/** The Partoo mock; endpoint counted in `calls`: `checkToken`. */
export interface MockPartoo extends MockProvider<'checkToken'> {
  /** Adds or replaces the entry for (`userId`, `token`); dates are fixed now. */
  setToken(entry: PartooTokenEntry): void;
  /** Forgets a user's token; returns whether it was known. */
  removeToken(userId: string, token: string): boolean;
}

const booleanOption = z.boolean({ error: (issue) => `expected true or false, got ${shown(issue.input)}` });

/** The first and last instants whose year has four digits: the `Date`s the Partoo mock can write. */
const FIRST_FOUR_DIGIT_YEAR_MS = Date.parse('0000-01-01T00:00:00Z');
const LAST_FOUR_DIGIT_YEAR_MS = Date.parse('9999-12-31T23:59:59.999Z');

function writableDate(date: Date): boolean {
  const ms = date.getTime();
  return ms >= FIRST_FOUR_DIGIT_YEAR_MS && ms <= LAST_FOUR_DIGIT_YEAR_MS;
}

const PartooTokenSchema = optionsObject(
  {
    userId: nameOption,
    token: nameOption,
    status: z
      .enum(CONNECTION_TOKEN_STATUSES, { error: () => `expected one of ${CONNECTION_TOKEN_STATUSES.join(', ')}` })
      .optional(),
    expirationDate: z
      .custom<string | Date | null>(
        (value) => typeof value === 'string' || value === null || (value instanceof Date && writableDate(value)),
        {
          error: (issue) =>
            issue.input instanceof Date && !Number.isNaN(issue.input.getTime())
              ? 'expected a Date in the years 0000 to 9999, which Partoo writes with four digits (a string is sent as it is)'
              : `expected a string, a valid Date or null, got ${issue.input instanceof Date ? 'Invalid Date' : shown(issue.input)}`,
        },
      )
      .optional(),
    forbidden: booleanOption.optional(),
  },
  'a token entry ({ userId, token, status?, expirationDate?, forbidden? })',
);

/**
 * Checked as `stubProvider` and `createGate` check theirs: an unknown option (a misspelling named with the spelling
 * meant), a missing one or a value of the wrong type throws a `TypeError` naming the mock and the option, never the
 * token. A mock that took a misspelled option would answer every test wrongly.
 */
const MockPartooOptionsSchema = optionsObject(
  {
    // As partoo() checks its own: a key no header can carry would make every request to the mock fail unsent.
    apiKey: headerSecretOption,
    tokens: z
      .array(z.unknown(), { error: (issue) => `expected an array of token entries, got ${shown(issue.input)}` })
      .optional(),
  },
  'an options object with apiKey',
);

/** Stored entry: the 200 body, ready to send, and whether to answer 403 instead, for this token alone. */
interface Stored {
  readonly body: Readonly<Record<string, string | null>>;
  readonly forbidden: boolean;
}

/** Partoo's date-time style (Python `isoformat()` with microseconds and offset), in UTC. */
function partooDate(date: Date): string {
  return date.toISOString().replace('Z', '000+00:00');
}

const GENERATED_BY = '5309c3a237bbc544d8e26737';
const HOUR_MS = 3_600_000;

/** The API's documented error bodies (`errors`): 401, 403 and 404 as it words them, 400 with a field at fault. */
const ERRORS = {
  400: { json: { token: ['Not a valid string.'] } },
  401: { authentication: 'User not authenticated' },
  403: { authorization: 'Operation not allowed' },
  404: { json: 'Resource not found' },
} as const;

/**
 * Starts a Partoo mock on 127.0.0.1. Pass its `url`
 * (`http://127.0.0.1:<port>/v2`) as the provider's `baseUrl`.
 *
 * Answers, in this order: 401 for a missing or wrong `x-APIKey`; 400 naming
 * the absent query field(s) (an empty value is not absent); 404 for an
 * unknown user or a token that is not that user's; 403 for a `forbidden`
 * entry; else 200 with the token's details.
 */
export async function mockPartoo(options: MockPartooOptions): Promise<MockPartoo> {
  checkOptions(MockPartooOptionsSchema, options, 'mockPartoo');
  const { apiKey } = options;
  const users = new Map<string, Map<string, Stored>>();

  const add = (entry: PartooTokenEntry, where: string): void => {
    // `where` names the entry by its position, never by its value.
    checkOptions(PartooTokenSchema, entry, `mockPartoo: ${where}`);
    const now = new Date();
    const status = entry.status ?? 'valid';
    // An `expired` token's date has passed: given none, it was made two hours ago for an hour.
    const created =
      status === 'expired' && entry.expirationDate === undefined ? new Date(now.getTime() - 2 * HOUR_MS) : now;
    const expiration =
      entry.expirationDate === undefined ? new Date(created.getTime() + HOUR_MS) : entry.expirationDate;
    const body = {
      token: entry.token,
      expiration_date: expiration instanceof Date ? partooDate(expiration) : expiration,
      generated_by: GENERATED_BY,
      creation_date: partooDate(created),
      consumption_date: status === 'consumed' ? partooDate(now) : null,
      status,
    };
    const tokens = users.get(entry.userId) ?? new Map<string, Stored>();
    tokens.set(entry.token, { body, forbidden: entry.forbidden === true });
    users.set(entry.userId, tokens);
  };
  const removeToken = (userId: string, token: string): boolean => {
    const tokens = users.get(userId);
    const removed = tokens?.delete(token) ?? false;
    if (tokens?.size === 0) users.delete(userId);
    return removed;
  };
  const setToken = (entry: PartooTokenEntry): void => add(entry, 'setToken');
  for (const [index, entry] of (options.tokens ?? []).entries()) add(entry, `tokens (entry ${index + 1})`);
  // Made anew on reset, so that their dates are those of the reset; an expiration `Date` is copied, so that what the
  // caller does with theirs after the start changes nothing.
  const initial = (options.tokens ?? []).map((entry) =>
    entry.expirationDate instanceof Date ? { ...entry, expirationDate: new Date(entry.expirationDate) } : { ...entry },
  );

  const failure = (status: keyof typeof ERRORS) => ({ status, body: { errors: ERRORS[status] } });
  const server = await startMockServer({
    basePath: '/v2',
    routes: {
      '/v2/connection/check_token': {
        name: 'checkToken',
        handle: (req, query) => {
          if (req.headers['x-apikey'] !== apiKey) {
            return failure(401);
          }
          const userId = query.get('user_id');
          const token = query.get('token');
          if (userId === null || token === null) {
            const missing: Record<string, string[]> = {};
            if (userId === null) missing.user_id = ['Missing data for required field.'];
            if (token === null) missing.token = ['Missing data for required field.'];
            return { status: 400, body: { errors: { json: missing } } };
          }
          const stored = users.get(userId)?.get(token);
          if (stored === undefined) return failure(404);
          if (stored.forbidden) return failure(403);
          return { status: 200, body: stored.body };
        },
      },
    },
    wrongShape: { status: 'maybe' },
    errorBody: (status) => ({
      errors: ERRORS[status as keyof typeof ERRORS] ?? { json: STATUS_CODES[status] ?? 'Error' },
    }),
    reset: () => {
      users.clear();
      for (const entry of initial) add(entry, 'reset');
    },
  });
  return Object.assign(server, { setToken, removeToken });
}
