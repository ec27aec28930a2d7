/** Types shared by the gate, the providers and the adapters. */
import type { AuthContext } from './context.js';
import type { BreakerState } from './events.js';
import type { Guard } from './guards.js';
import type { ProviderFailure } from './provider-failure.js';

/** A header value as Node's `IncomingMessage.headers` holds it. */
export type HeaderValue = string | readonly string[] | undefined;

/**
 * The plain request the core reads: what Express, Koa or a bare Node server
 * can hand over without copying.
 */
export interface CredentialRequest {
  /** Lower-cased header names, as in `IncomingMessage.headers`. */
  readonly headers: Readonly<Record<string, HeaderValue>>;
  /** Parsed query string (`req.query` in Express, `ctx.query` in Koa). */
  readonly query?: Readonly<Record<string, unknown>> | undefined;
  /**
   * `IncomingMessage.rawHeaders`. Node keeps only the first of repeated
   * `Authorization` headers in `headers`; with `rawHeaders` the gate can see
   * the repeat and answer 400 instead of picking one. Only read for that:
   * a header's value is always the one in `headers`. A provider that reads a
   * header of its own (`X-Api-Key`) counts its repeats here too: Node joins
   * most repeated headers into one value in `headers` (`k, k`).
   */
  readonly rawHeaders?: readonly string[] | undefined;
  /**
   * The client's connection (the request's socket): any object that lives
   * exactly as long as the connection. When given, the gate remembers the
   * connection's last credential and answer, so a keep-alive client that
   * repeats its `Authorization` header costs neither a hash nor a cache
   * lookup. Never shared between clients: give none behind a proxy that
   * multiplexes several clients over one connection if their requests must
   * not share a memo (they still get correct answers: a different header is
   * looked up afresh).
   */
  readonly connection?: object | undefined;
  /**
   * The client's address, as the framework sees it (Express `req.ip`, Koa
   * `ctx.ip`: each applies its own trust-proxy setting). The gate shares
   * each provider's capacity fairly between clients by it; without it, the
   * connection's `remoteAddress` is used.
   */
  readonly ip?: string | undefined;
}

/**
 * What the gate's own methods (`authenticate`, `invalidate`, `revoke`) take: a {@link CredentialRequest}, or a
 * framework's request as it is, whose `query` its framework types as `unknown` (Fastify's `request`). A query that
 * is not an object carries no credential.
 */
export interface GateRequest extends Omit<CredentialRequest, 'query'> {
  /** Parsed query string (`req.query` in Express, `ctx.query` in Koa, `request.query` in Fastify). */
  readonly query?: unknown;
}

/** What a provider learned about a credential it accepted. */
export interface Principal {
  /** Who the credential belongs to (token id, user id). */
  readonly subject: string;
  /** Permissions granted, as the provider names them. */
  readonly permissions: readonly string[];
  /** When the credential itself stops being valid, if the provider says. */
  readonly expiresAt?: Date | undefined;
  /** The validated provider answer, with secrets left out. */
  readonly details: Readonly<Record<string, unknown>>;
}

/** A provider's decision on a credential. */
export type Verdict =
  | { readonly ok: true; readonly principal: Principal }
  /**
   * `reason` goes to the client in `error_description`: keep it short and free of secrets. The gate keeps its first
   * 200 characters.
   */
  | { readonly ok: false; readonly reason: string };

/** The longest rejection reason kept: the gate cuts a longer one, so every instance sharing it reads the same. */
export const MAX_REASON_LENGTH = 200;

/**
 * A credential found in a request. `source` names where it was found
 * (`header:authorization`, `query:connection`): credentials in more than
 * one source are refused, credentials in the same source go to the first
 * provider that found them.
 */
export interface Credential {
  /** Where it was found: the provider's declared `source` (`header:authorization`). */
  readonly source: string;
  /** The exact bytes that decide the provider's answer; hashed, never stored. */
  readonly secret: string;
}

/**
 * What `extract` returns for a credential that is only partly there (a
 * connection `token` without its `user_id`): the gate answers it 400
 * `invalid_request` with `partial` as the description only when the request
 * carries no complete credential. Next to a complete one (a Bearer header
 * with an unrelated `?token=` in the URL) it is ignored.
 */
export interface PartialCredential {
  /** Where it was found, as {@link Credential.source}. */
  readonly source: string;
  /** Why it is incomplete, for the 400's `error_description`. */
  readonly partial: string;
}

/**
 * A token provider: finds its kind of credential in a request and verifies it.
 *
 * `extract` runs on every request and must be cheap and synchronous; it
 * returns `undefined` when the request has no credential of its kind, a
 * {@link PartialCredential} when it has part of one, and throws an
 * `invalid_request` `AuthError` when it has a malformed one (`invalidRequest(realm, description)`). Anything else it
 * throws is taken for a bug: the request gets an `Error` naming the provider, without the thrown error's message,
 * which may quote the credential.
 * `verify` runs on cache misses; it throws {@link ProviderFailure} when the
 * provider cannot give an answer, and must honour `signal`. The gate aborts
 * `signal` when the deadline passes and when `verify` throws (so that work it
 * left running stops); once `verify` has returned a verdict, the signal is
 * left alone, and any work still running is the provider's own to end.
 */
export interface Provider<C extends Credential = Credential> {
  /** Short name for errors, events and `AuthContext.provider` (`onlineornot`). */
  readonly name: string;
  /**
   * Where `extract` finds its credential: the `source` of every credential
   * it returns (`header:authorization`, `query:connection`). `header:<name>`
   * is a promise that `extract` reads that one header and nothing else, so
   * the same header value always gives the same credential: a gate whose
   * providers all read the same header then remembers each keep-alive
   * connection's last answer, and a repeated header skips `extract`, the
   * cache key and the cache lookup (never the guards). Leave it out when
   * `extract` reads anything else.
   */
  readonly source?: string | undefined;
  /**
   * Most verifications the provider can serve at once (what its connection
   * pool serves without queueing). The gate admits no more: the rest wait,
   * a bounded number of them, shared fairly between clients. Default 16.
   */
  readonly concurrency?: number | undefined;
  /**
   * Everything besides the credential that decides the answer (name, base
   * URL, a digest of the server's API key, every option that changes a
   * verdict). Part of every cache key: providers share cached answers exactly
   * when their scopes are equal, in one gate and across the instances that
   * share a `sharedCache` (where a scope that differs, a `name` given per
   * instance, shares nothing).
   */
  readonly cacheScope: string;
  /** The request's credential of this provider's kind, part of one, or `undefined` (see above). */
  extract(req: CredentialRequest, realm: string): C | PartialCredential | undefined;
  /** The provider's verdict on `credential`, asked on a cache miss; `signal` aborts at the deadline (see above). */
  verify(credential: C, signal: AbortSignal): Promise<Verdict>;
  /** Releases connection pools. */
  close?(): Promise<void>;
}

/** Counters since the gate was created or last `reset()` (`clear()` empties the cache, not the counters). */
export interface GateStats {
  /** Requests answered from the cache: accepted, or rejected by a cached rejection. */
  readonly hits: number;
  /**
   * Requests this process's cache could not answer (including those that joined a verification under way). With a
   * shared tier, those it answered count here too ({@link sharedHits} counts them apart): `misses - coalesced` is the
   * verifications this process started, whether the shared tier, the provider or neither (held back, overloaded)
   * answered them.
   */
  readonly misses: number;
  /** Misses that joined an upstream call already under way instead of making their own. */
  readonly coalesced: number;
  /**
   * Misses the shared tier (`sharedCache`) answered without an upstream call: requests, coalesced ones included, that
   * got another instance's verdict (an acceptance or a rejection), whether the tier held it already or this process
   * waited for it on that instance's lease. Part of {@link misses}: `hits + sharedHits` requests were answered
   * without asking a provider. Always 0 without a shared tier.
   */
  readonly sharedHits: number;
  /** Upstream verifications attempted, retries included. */
  readonly upstreamCalls: number;
  /** Verifications that ended in a provider failure: their requests got a 503 or 500, or the stale copy (`stale`). */
  readonly errors: number;
  /**
   * Verifications answered with the stale copy under `staleIfError` in place of a 503 (the provider failed, or its
   * breaker held it back): once each, however many requests joined it.
   */
  readonly stale: number;
  /**
   * Verifications answered 503 `overloaded`: no room to wait for a slot with the provider, or the request's
   * `timeout` passed during the wait or, after it, before the provider answered.
   */
  readonly overloaded: number;
  /**
   * Verifications never sent because the provider's breaker held them back: open, half-open with its probe under
   * way, or calls paused after a 429 (each got a 503 with `Retry-After`, or a stale answer); or because the provider
   * refused this server's own credentials less than a second before (each got that 500; a verification sent before,
   * whose retry was held back so, counts too).
   */
  readonly heldBack: number;
  /**
   * Circuit breaker state per provider, by name (a second provider of the same name is `name#2`, and so on; events and
   * traces carry the `name` as given, so give providers of one kind a `name` each to tell them apart there).
   */
  readonly breakers: Readonly<Record<string, BreakerState>>;
  /**
   * Per provider, keyed as {@link breakers}: the ms left of the pause a 429 asked for (its `Retry-After`, 1 s when it
   * named none, at most `maxRetryAfter`), 0 when calls are not paused. While it is above 0 no verification is sent to
   * that provider, whatever {@link breakers} says: a 429 is no failure, so a paused provider's breaker stays `closed`,
   * and each verification held back is counted in {@link heldBack} (a `held_back` event with `reason: 'paused'`).
   * Always 0 with `breaker: false`, which pauses nothing. `reset()` lifts the pause.
   */
  readonly paused: Readonly<Record<string, number>>;
  /**
   * Per provider, keyed as {@link breakers}: the cold verifications asking it now (`running`, at most its
   * `concurrency`) and those waiting for a slot (`waiting`, at most `admission.maxWaiting`). A wait that stays full
   * comes before the `overloaded` 503s.
   */
  readonly admission: Readonly<Record<string, AdmissionLoad>>;
}

/** How busy a provider's admission is now: see {@link GateStats.admission}. */
export interface AdmissionLoad {
  /** Verifications asking the provider now (each holds one of its `concurrency` slots). */
  readonly running: number;
  /** Verifications waiting for a slot now. */
  readonly waiting: number;
}

/** Options of {@link Gate.authenticate}. */
export interface AuthenticateOptions {
  /** Resolve to `undefined` instead of throwing when the request carries no credential at all. */
  readonly optional?: boolean | undefined;
}

/** A configured gate. Create one per app with `createGate` and share it. */
export interface Gate {
  /** The realm used in challenges. */
  readonly realm: string;
  /**
   * Finds the request's credential and verifies it (from cache when it can).
   *
   * @throws AuthError 401 `credentials_required` (no credential), 400
   *   `invalid_request`, 401 `invalid_token`, 503 `provider_unavailable`,
   *   503 `overloaded` (no room to wait for the provider), 500
   *   `provider_misconfigured`; TypeError for a `req` without `headers`, or an
   *   `optional` that is not a boolean.
   */
  authenticate(req: GateRequest, options?: { readonly optional?: false }): Promise<AuthContext>;
  authenticate(req: GateRequest, options: AuthenticateOptions): Promise<AuthContext | undefined>;
  /**
   * {@link authenticate} for adapters: the answer itself when it is at hand
   * (a fresh cached context, or no credential under `optional`), a promise
   * otherwise. A bad credential throws synchronously. Saves a promise and a
   * turn of the event loop on every cached request.
   */
  authenticateNow(
    req: CredentialRequest,
    options?: AuthenticateOptions,
  ): AuthContext | undefined | Promise<AuthContext | undefined>;
  /**
   * Checks `guard` against `auth`. Run it on every request, cached or not.
   *
   * @throws AuthError 401 `credentials_required` when `auth` is undefined,
   *   403 `insufficient_scope` when the guard does not pass; TypeError when
   *   `guard` is not one (`requires` passed uncalled).
   */
  authorize(auth: AuthContext | undefined, guard: Guard): void;
  /**
   * Forgets the cached answer for the request's credential. Returns whether
   * this process had one, or a verification of it under way (which is then
   * kept nowhere). With a shared cache tier, every instance forgets it too,
   * in the background; {@link revoke} waits for that.
   *
   * @throws AuthError 400 `invalid_request` for a malformed credential or credentials in two places; `TypeError` for a
   *   `req` without `headers`; `Error` once the gate is closed.
   */
  invalidate(req: GateRequest): boolean;
  /**
   * {@link invalidate}, resolved once the shared cache tier has taken the
   * revocation (deleted the entry, seen to it that no answer under way
   * elsewhere is stored over it, told every instance): `true`. `false`
   * when the request carries no credential, or the tier did not confirm within
   * its `timeout` (reported through `onEvent`; other instances still stop
   * serving it within the tier's `localTtl`). Without a shared tier, `true` at once for a request with a credential.
   *
   * @throws AuthError 400 `invalid_request` (as a rejection) for a malformed credential or credentials in two
   *   places; `TypeError` (as a rejection) for a `req` without `headers`; `Error` (as a rejection) once the gate is
   *   closed.
   */
  revoke(req: GateRequest): Promise<boolean>;
  /**
   * Forgets every answer cached in this process, and the calls under way. Breakers keep their state (see
   * {@link reset}); a shared tier keeps its verdicts (its keys' prefix, or the Redis database, is yours to empty).
   */
  clear(): void;
  /**
   * Forgets every answer cached in this process, closes every provider's breaker (lifting a 429's pause), lifts the
   * hold after a provider refused this server's own credentials, and zeroes the {@link stats} counters: a fresh start,
   * as a new gate on the same shared tier (between tests). A shared tier keeps its
   * verdicts, as for {@link clear}. Verifications under way when it is called still count when they end.
   */
  reset(): void;
  /**
   * Counters and breaker states; after {@link close} too, so that a metrics scrape during shutdown reads the last ones.
   */
  stats(): GateStats;
  /**
   * Ends the verifications under way at once (their requests get a 503, their providers' signals are aborted), then
   * closes the providers' connection pools (not a `sharedCache`: close that yourself). Every other method but
   * {@link stats} throws afterwards, the async ones by rejecting; `close()` again returns what the first call returned. A provider whose
   * `close()` it called serves no gate again: `createGate` refuses it, and a gate that shared it answers its misses with
   * an `Error` (500). A provider without `close()` (`stubProvider`) serves on.
   */
  close(): Promise<void>;
}
