/**
 * The mocks' option checks, as `stubProvider` and `createGate` check theirs: an unknown option (a misspelling
 * named with the spelling meant), a missing one or a value of the wrong type throws a `TypeError` naming the
 * mock and the option, never the token. A mock that took a misspelled option would answer every test wrongly.
 */
import { z } from 'zod';
import { checkOptions, headerSecretOption, nameOption, optionsObject, shown } from '../options.js';
import { CONNECTION_TOKEN_STATUSES } from '../providers/partoo.js';

const anyString = z.string({ error: (issue) => `expected a string, got ${shown(issue.input)}` });
const booleanOption = z.boolean({ error: (issue) => `expected true or false, got ${shown(issue.input)}` });
const tokenTable = (expected: string) =>
  z.record(z.string(), z.unknown(), { error: (issue) => `expected ${expected}, got ${shown(issue.input)}` });

const OnlineOrNotToken = optionsObject(
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

const MockOnlineOrNotOptions = optionsObject(
  { tokens: tokenTable('an object of tokens').optional() },
  'an options object ({ tokens? })',
);

/** The first and last instants whose year has four digits: the `Date`s the Partoo mock can write. */
const FIRST_FOUR_DIGIT_YEAR_MS = Date.parse('0000-01-01T00:00:00Z');
const LAST_FOUR_DIGIT_YEAR_MS = Date.parse('9999-12-31T23:59:59.999Z');

function writableDate(date: Date): boolean {
  const ms = date.getTime();
  return ms >= FIRST_FOUR_DIGIT_YEAR_MS && ms <= LAST_FOUR_DIGIT_YEAR_MS;
}

const PartooToken = optionsObject(
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

const MockPartooOptions = optionsObject(
  {
    // As partoo() checks its own: a key no header can carry would make every request to the mock fail unsent.
    apiKey: headerSecretOption,
    tokens: z
      .array(z.unknown(), { error: (issue) => `expected an array of token entries, got ${shown(issue.input)}` })
      .optional(),
  },
  'an options object with apiKey',
);

const IntrospectionToken = z.record(z.string(), z.unknown(), {
  error: (issue) => `expected an introspection answer object, got ${shown(issue.input)}`,
});

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

const MockIntrospectionOptions = optionsObject(
  {
    clientId: nameOption,
    clientSecret: nameOption,
    clientAuth: z.enum(['basic', 'post'], { error: () => "expected 'basic' or 'post'" }).optional(),
    tokens: tokenTable('an object of tokens').optional(),
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
    metadata: z
      .record(z.string(), z.unknown(), { error: (issue) => `expected an object, got ${shown(issue.input)}` })
      .optional(),
  },
  'an options object with clientId and clientSecret',
);

/**
 * `value` as JSON writes it, read back: what a mock answers, fixed when it is given. A value JSON cannot write (a
 * BigInt, a cycle, a getter or `toJSON` that throws, or nothing at all) throws a `TypeError` naming `where`, at once,
 * rather than as an uncaught exception in the test process when a request comes.
 */
export function jsonAnswer(value: unknown, where: string): unknown {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (cause) {
    throw new TypeError(`${where}: expected an answer JSON can write (no BigInt, cycle or throwing getter)`, { cause });
  }
  if (text === undefined) throw new TypeError(`${where}: expected an answer JSON can write, got ${shown(value)}`);
  return JSON.parse(text);
}

/** `options` of `mockOnlineOrNot`, checked. */
export function checkMockOnlineOrNot(options: unknown): void {
  checkOptions(MockOnlineOrNotOptions, options, 'mockOnlineOrNot');
}

/** A token definition of `mockOnlineOrNot`, checked; `where` names it by position, not by value. */
export function checkOnlineOrNotToken(definition: unknown, where: string): void {
  checkOptions(OnlineOrNotToken, definition, `mockOnlineOrNot: ${where}`);
}

/** `options` of `mockPartoo`, checked. */
export function checkMockPartoo(options: unknown): void {
  checkOptions(MockPartooOptions, options, 'mockPartoo');
}

/** A token entry of `mockPartoo`, checked; `where` names it by position, not by value. */
export function checkPartooToken(entry: unknown, where: string): void {
  checkOptions(PartooToken, entry, `mockPartoo: ${where}`);
}

/** `options` of `mockIntrospection`, checked. */
export function checkMockIntrospection(options: unknown): void {
  checkOptions(MockIntrospectionOptions, options, 'mockIntrospection');
}

/** A token's answer of `mockIntrospection`, checked; `where` names it by position, not by value. */
export function checkIntrospectionToken(answer: unknown, where: string): void {
  checkOptions(IntrospectionToken, answer, `mockIntrospection: ${where}`);
}
