/**
 * OnlineOrNot-style API tokens: `Authorization: Bearer <token>`, checked with
 * `GET /v1/tokens/verify` (is it active, whose is it) and
 * `GET /v1/tokens/permissions` (what may it do), called concurrently (a
 * rejection by verify decides without waiting for permissions), as
 * OnlineOrNot's public API documentation describes them (API reference:
 * "Tokens", verify and permissions).
 */
import { z } from 'zod';
import { type Cancellation, cancellableVerify } from '../cancellation.js';
import { BEARER_SOURCE, type BearerCredential, extractBearer } from '../credentials/bearer.js';
import {
  BASE_URL_HINT,
  DEFAULT_CONNECTIONS,
  type HttpOptions,
  httpOptionsShape,
  type JsonAnswer,
  ProviderHttp,
} from '../http.js';
import {
  allowInsecureRequestsOption,
  baseUrlOption,
  checkOptions,
  nameOption,
  optionsObject,
  secureUrls,
} from '../options.js';
import { ProviderFailure } from '../provider-failure.js';
import type { Provider, Verdict } from '../types.js';
import { secretDigest } from './secret-digest.js';

const Message = z.object({ code: z.number(), message: z.string(), type: z.string().optional() });

/** 200 from /v1/tokens/verify. Unknown fields are dropped. */
const VerifyAnswer = z.object({
  result: z.object({ id: z.string().min(1), status: z.string() }),
  success: z.literal(true),
  errors: z.array(Message),
  messages: z.array(Message),
});

/** 200 from /v1/tokens/permissions. */
const PermissionsAnswer = z.object({
  result: z.object({ permissions: z.array(z.string()) }),
  success: z.literal(true),
  errors: z.array(Message),
  messages: z.array(Message),
});

/**
 * 401 from either endpoint. Kept loose (only `success: false` and an
 * `errors` list) so that a change in wording never turns a rejected token
 * into an outage, yet an HTML 401 from a proxy is still not taken as an answer.
 */
const UnauthorizedAnswer = z.object({ success: z.literal(false), errors: z.array(z.unknown()) });

/** Options of {@link onlineOrNot}. */
export interface OnlineOrNotOptions extends HttpOptions {
  /**
   * Most sockets open to the provider at once. Default 32: a verification makes two calls at once, so the
   * provider serves 16 verifications at once, as the other providers do on their 16.
   */
  readonly connections?: number | undefined;
  /** API root. Default `https://api.onlineornot.com`. */
  readonly baseUrl?: string | undefined;
  /**
   * Takes a plain `http:` `baseUrl` on any host. Default `false`: https only, but for loopback hosts (`localhost`,
   * 127.0.0.0/8, `[::1]`), where http crosses no network. Every token travels to this URL.
   */
  readonly allowInsecureRequests?: boolean | undefined;
  /** Name in errors, events and `AuthContext.provider`. Default `onlineornot`. */
  readonly name?: string | undefined;
}

/** Details kept from an OnlineOrNot answer. */
export interface OnlineOrNotDetails {
  readonly [key: string]: unknown;
  /** Token id. */
  readonly id: string;
  /** Token status; always `active` for an accepted token. */
  readonly status: 'active';
}

const OnlineOrNotOptionsSchema = optionsObject(
  {
    ...httpOptionsShape,
    baseUrl: baseUrlOption.optional(),
    allowInsecureRequests: allowInsecureRequestsOption,
    name: nameOption.optional(),
  },
  'an options object',
).superRefine(secureUrls(['baseUrl']));

const VERIFY_PATH = '/v1/tokens/verify';
const PERMISSIONS_PATH = '/v1/tokens/permissions';

const REJECTED_INVALID: Verdict = Object.freeze({ ok: false, reason: 'The access token is invalid' });
const REJECTED_INACTIVE: Verdict = Object.freeze({ ok: false, reason: 'The access token is not active' });

/** An active token's verdict. Its details are frozen, so that the gate keeps them as they are rather than a copy. */
function accepted(id: string, permissions: readonly string[]): Verdict {
  const details: OnlineOrNotDetails = Object.freeze({ id, status: 'active' });
  return { ok: true, principal: { subject: id, permissions, details } };
}

/** Whether a call's reading is a verdict: the token rejected. */
function isVerdict<T>(reading: T | Verdict): reading is Verdict {
  return typeof reading === 'object' && reading !== null && 'ok' in reading;
}

/**
 * A provider for OnlineOrNot-style Bearer tokens. Accepts only tokens whose
 * status is `active`; the principal's `subject` is the token id.
 *
 * A rejection by `verify` or `permissions` is returned without waiting for
 * the other call, whose request then ends with its answer or when the
 * verification's deadline (or, for `verify(credential, signal)` called
 * directly, `signal`) cancels it.
 */
export function onlineOrNot(options: OnlineOrNotOptions = {}): Provider<BearerCredential> {
  checkOptions(OnlineOrNotOptionsSchema, options, 'onlineOrNot');
  const name = options.name ?? 'onlineornot';
  const baseUrl = options.baseUrl ?? 'https://api.onlineornot.com';
  const connections = options.connections ?? 2 * DEFAULT_CONNECTIONS;
  const http = new ProviderHttp(name, baseUrl, { ...options, connections }, BASE_URL_HINT);

  function verifyOnlineOrNotToken(credential: BearerCredential, cancellation: Cancellation): Promise<Verdict> {
    const headers = { authorization: `Bearer ${credential.secret}` };
    // Both calls go out at once. A rejection by either (401, or not active)
    // is the answer at once, whatever the other does: that call is left to
    // finish on its own, so its keep-alive socket goes back to the pool (a
    // cancelled request would destroy it), and the deadline still cancels it
    // if it hangs. A failure decides nothing about the token: it is thrown
    // only once the other call has not rejected the token either, verify's
    // before permissions'. Settled by hand, not with Promise.race and
    // allSettled: this is every cold verification's path.
    return new Promise<Verdict>((resolve, reject) => {
      /** Per call (0: verify, 1: permissions): what it read, or how it failed. */
      const readings: Array<string | readonly string[]> = [];
      const failures: [verify?: { error: unknown }, permissions?: { error: unknown }] = [];
      let waiting = 2;
      let decided = false;
      const done = () => {
        if (decided || --waiting > 0) return;
        decided = true;
        const failure = failures[0] ?? failures[1];
        if (failure !== undefined) reject(failure.error);
        else resolve(accepted(readings[0] as string, readings[1] as readonly string[]));
      };
      const failed = (call: 0 | 1, error: unknown) => {
        failures[call] = { error };
        done();
      };
      const answered = (call: 0 | 1, answer: JsonAnswer) => {
        let reading: string | readonly string[] | Verdict;
        try {
          reading = call === 0 ? readVerify(answer) : readPermissions(answer);
        } catch (error) {
          failed(call, error);
          return;
        }
        if (!isVerdict(reading)) {
          readings[call] = reading;
          done();
        } else if (!decided) {
          decided = true;
          resolve(reading);
        }
      };
      http.getJson(VERIFY_PATH, headers, cancellation).then(
        (answer) => answered(0, answer),
        (error: unknown) => failed(0, error),
      );
      http.getJson(PERMISSIONS_PATH, headers, cancellation).then(
        (answer) => answered(1, answer),
        (error: unknown) => failed(1, error),
      );
    });
  }

  /** The permissions of a valid token, or the rejection. */
  function readPermissions(answer: JsonAnswer): readonly string[] | Verdict {
    if (answer.status === 401) return readUnauthorized(answer, PERMISSIONS_PATH);
    return parseAnswer(PermissionsAnswer, answer, PERMISSIONS_PATH).result.permissions;
  }

  /** The token id of an active token, or the rejection. */
  function readVerify(answer: JsonAnswer): string | Verdict {
    if (answer.status === 401) return readUnauthorized(answer, VERIFY_PATH);
    const body = parseAnswer(VerifyAnswer, answer, VERIFY_PATH);
    if (body.result.status !== 'active') return REJECTED_INACTIVE;
    return body.result.id;
  }

  function readUnauthorized(answer: JsonAnswer, path: string): Verdict {
    parseAnswer(UnauthorizedAnswer, answer, path, 401);
    return REJECTED_INVALID;
  }

  /** Validates the answer to `path`, whose status must be `expected` (200 unless said). */
  function parseAnswer<T>(schema: z.ZodType<T>, answer: JsonAnswer, path: string, expected = 200): T {
    if (answer.status !== expected) {
      // A 404 where the API answers 200 or 401: the path is not the API's (a wrong baseUrl).
      const hint = answer.status === 404 ? BASE_URL_HINT : '';
      throw new ProviderFailure('status', `${http.named('GET', path)} answered ${answer.status}${hint}`, {
        status: answer.status,
      });
    }
    const parsed = schema.safeParse(answer.body);
    if (!parsed.success) {
      throw new ProviderFailure(
        'invalid_answer',
        `${http.named('GET', path)} answered ${answer.status} with a body that does not match its schema`,
        { status: answer.status },
      );
    }
    return parsed.data;
  }

  return {
    name,
    source: BEARER_SOURCE,
    // Two requests per verification (verify and permissions, side by side).
    concurrency: Math.max(1, Math.floor(connections / 2)),
    // The base URL's path may carry a key (a proxy's): like a secret, only its digest is kept.
    cacheScope: JSON.stringify(['onlineornot', name, secretDigest(new URL(baseUrl).href)]),
    extract: extractBearer,
    verify: cancellableVerify(verifyOnlineOrNotToken),
    close: () => http.close(),
  };
}
