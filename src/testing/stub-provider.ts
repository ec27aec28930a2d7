/**
 * An in-process provider for an app's own tests: Bearer tokens from a fixed
 * table, no network. Goes through the same gate, cache and guards as the
 * real providers, so routes behave as in production.
 */
import { z } from 'zod';
import { BEARER_SOURCE, type BearerCredential, extractBearer, isBearerToken } from '../credentials/bearer.js';
import { checkOptions, nameOption, optionsObject, recordOption, shown, stringListOption } from '../options.js';
import { secretDigest } from '../providers/secret-digest.js';
import type { Provider, Verdict } from '../types.js';

/** One token the stub accepts. */
export interface StubToken {
  /** `AuthContext.subject` for this token. */
  readonly subject: string;
  /** Permissions it carries. Default none. */
  readonly permissions?: readonly string[] | undefined;
  /** When it expires. Default never. */
  readonly expiresAt?: Date | undefined;
}

/** Verifications a stub serves at once: as many as a test sends. */
const STUB_CONCURRENCY = 1_000_000;

/** Options of {@link stubProvider}. */
export interface StubProviderOptions {
  /** Accepted tokens; any other Bearer token is rejected as invalid. */
  readonly tokens: Readonly<Record<string, StubToken>>;
  /** Name in `AuthContext.provider`. Default `stub`. */
  readonly name?: string | undefined;
}

const StubTokenSchema = optionsObject(
  {
    subject: nameOption,
    permissions: stringListOption.optional(),
    expiresAt: z.date({
      error: (issue) =>
        `expected a valid Date, got ${issue.input instanceof Date ? 'Invalid Date' : shown(issue.input)}`,
    }),
  },
  'a token ({ subject, permissions?, expiresAt? })',
).partial({ permissions: true, expiresAt: true });

const StubOptionsSchema = optionsObject(
  {
    tokens: recordOption('an object of tokens'),
    name: nameOption.optional(),
  },
  'an options object with tokens',
);

/**
 * The options, checked; a token is named by its position in `tokens`, never by its value.
 * A key that is not a b64token is refused: no Bearer header could carry it.
 */
function checkStubOptions(options: StubProviderOptions): void {
  checkOptions(StubOptionsSchema, options, 'stubProvider');
  Object.entries(options.tokens).forEach(([token, definition], index) => {
    const where = `stubProvider: tokens (entry ${index + 1})`;
    if (!isBearerToken(token)) throw new TypeError(`${where}: expected a b64token (RFC 6750) as the key`);
    checkOptions(StubTokenSchema, definition, where);
  });
}

const REJECTED: Verdict = Object.freeze({ ok: false, reason: 'The access token is invalid' });

/** A checked definition, copied whole: what the caller's object holds later changes nothing. */
interface StubEntry {
  readonly subject: string;
  readonly permissions: readonly string[];
  /** Epoch ms, or undefined for never. */
  readonly expiresAt: number | undefined;
}

/** A Bearer-token provider that answers from `options.tokens`, in process. */
export function stubProvider(options: StubProviderOptions): Provider<BearerCredential> {
  checkStubOptions(options);
  const name = options.name ?? 'stub';
  const tokens = new Map<string, StubEntry>();
  for (const [token, { subject, permissions, expiresAt }] of Object.entries(options.tokens)) {
    tokens.set(token, {
      subject,
      permissions: Object.freeze([...(permissions ?? [])]),
      expiresAt: expiresAt?.getTime(),
    });
  }
  // Stubs share cached answers, on a shared tier too, only when their tables, and so their answers, are the same.
  const table = secretDigest(JSON.stringify([...tokens]));
  return {
    name,
    source: BEARER_SOURCE,
    cacheScope: JSON.stringify(['stub', name, table]),
    // Answered in process, with no pool to protect: a test's burst of requests is never refused as overload.
    concurrency: STUB_CONCURRENCY,
    extract: extractBearer,
    async verify(credential: BearerCredential): Promise<Verdict> {
      const token = tokens.get(credential.secret);
      if (token === undefined) return REJECTED;
      return {
        ok: true,
        principal: {
          subject: token.subject,
          permissions: token.permissions,
          expiresAt: token.expiresAt === undefined ? undefined : new Date(token.expiresAt),
          details: { subject: token.subject },
        },
      };
    },
  };
}
