/**
 * `createGate`: the request flow, in one direction.
 *
 *   extract (each provider) → cache key (hash) → cache hit, or one shared
 *   upstream call → provider.verify (deadline, retries, breaker) → AuthContext
 *
 * Guards run afterwards, on every request (`authorize`).
 */
import { type CacheOptions, cacheKey, type Flight, isFresh, Rejection, VerdictCache } from './cache.js';
import { AuthContext, type ContextOrigin, GrantsTable, isAuthContext } from './context.js';
import { extractBearer, readAuthorization } from './credentials/bearer.js';
import { type CancellableVerify, type Cancellation, Deadline, VERIFY_WITHIN } from './deadline.js';
import {
  AuthError,
  credentialsRequired,
  insufficientScope,
  invalidRequest,
  invalidToken,
  providerMisconfigured,
  providerUnavailable,
} from './errors.js';
import type { BreakerState, EventListener, GateEvent } from './events.js';
import type { Guard } from './guards.js';
import { type BreakerOptions, backoffDelay, CircuitBreaker, type RetryOptions, sleep } from './resilience.js';
import {
  type Credential,
  type CredentialRequest,
  type Principal,
  type Provider,
  ProviderFailure,
  type Verdict,
} from './types.js';

/** Options of {@link createGate}. Times are in milliseconds. */
export interface GateOptions {
  /**
   * Providers, in order. Each looks for its own kind of credential; the
   * first that finds one handles the request, and its rejection is final
   * (no fallback to the next). Credentials in two places at once are a 400.
   */
  readonly providers: readonly Provider[];
  /** `realm` of the `WWW-Authenticate` challenge. Default `"api"`. */
  readonly realm?: string;
  /** Overall deadline for verifying one credential, retries included. Default 5000. */
  readonly timeout?: number;
  /** Cache of verdicts; see {@link CacheOptions}. */
  readonly cache?: CacheOptions;
  /** Retries of failed upstream calls; `false` turns them off. See {@link RetryOptions}. */
  readonly retry?: RetryOptions | false;
  /** Circuit breaker per provider; `false` turns it off. See {@link BreakerOptions}. */
  readonly breaker?: BreakerOptions | false;
  /** Receives {@link GateEvent}s (cache, verify, retry, breaker, errors) for logs and metrics. */
  readonly onEvent?: EventListener;
}

/** Counters since the gate was created (`clear()` empties the cache, not the counters). */
export interface GateStats {
  /** Requests answered from the cache. */
  readonly hits: number;
  /** Requests that needed an upstream answer (including those that joined one under way). */
  readonly misses: number;
  /** Misses that joined an upstream call already under way instead of making their own. */
  readonly coalesced: number;
  /** Upstream verifications attempted, retries included. */
  readonly upstreamCalls: number;
  /** Verifications that ended in a provider failure (503 or 500). */
  readonly errors: number;
  /** Accepted answers served stale under `staleIfError`. */
  readonly stale: number;
  /** Circuit breaker state per provider name. */
  readonly breakers: Readonly<Record<string, BreakerState>>;
}

/** Options of {@link Gate.authenticate}. */
export interface AuthenticateOptions {
  /** Resolve to `undefined` instead of throwing when the request carries no credential at all. */
  readonly optional?: boolean;
}

/** A configured gate. Create one per app with {@link createGate} and share it. */
export interface Gate {
  /** The realm used in challenges. */
  readonly realm: string;
  /**
   * Finds the request's credential and verifies it (from cache when it can).
   *
   * @throws AuthError 401 `credentials_required` (no credential), 400
   *   `invalid_request`, 401 `invalid_token`, 503 `provider_unavailable`,
   *   500 `provider_misconfigured`.
   */
  authenticate(req: CredentialRequest, options?: { readonly optional?: false }): Promise<AuthContext>;
  authenticate(req: CredentialRequest, options: AuthenticateOptions): Promise<AuthContext | undefined>;
  /**
   * Checks `guard` against `auth`. Run it on every request, cached or not.
   *
   * @throws AuthError 401 `credentials_required` when `auth` is undefined,
   *   403 `insufficient_scope` when the guard does not pass.
   */
  authorize(auth: AuthContext | undefined, guard: Guard): void;
  /** Forgets the cached answer for the request's credential. Returns whether there was one. */
  invalidate(req: CredentialRequest): boolean;
  /** Forgets every cached answer. */
  clear(): void;
  /** Counters and breaker states. */
  stats(): GateStats;
  /** Closes the providers' connection pools. The gate must not be used afterwards. */
  close(): Promise<void>;
}

/** One provider as the gate holds it: its key prefix, breaker and context origin. */
interface ProviderSlot {
  readonly provider: Provider;
  /** `provider.verify` under a deadline: the built-in providers take it directly, others get its signal. */
  readonly verify: (credential: Credential, deadline: Deadline) => Promise<Verdict>;
  readonly label: string;
  readonly origin: ContextOrigin;
  readonly breaker: CircuitBreaker | undefined;
}

/** What a shared upstream call resolves to: never a rejection, so joiners cannot miss an error. */
type Outcome = AuthContext | Rejection | AuthError;

// RFC 9110 quoted-string content that RFC 6750 also allows: visible ASCII but " and \.
const REALM = /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/;

/** @internal What the adapters call instead of `authenticate`, to skip the promise on cache hits. */
export type AuthenticateNow = (
  req: CredentialRequest,
  options?: AuthenticateOptions,
  /** The request's TCP socket: its last credential, key and context are remembered on it (see `ConnectionMemo`). */
  connection?: object,
) => AuthContext | undefined | Promise<AuthContext | undefined>;

/**
 * What a connection's last request resolved to. A keep-alive client sends the same credential
 * on every request: the key (SHA-256 is the largest single cost of a cache hit) and, for
 * Bearer-only gates, the context itself are reused while the header is the same.
 */
interface ConnectionMemo {
  readonly slot: unknown;
  readonly secret: string;
  readonly key: string;
  /** The exact `Authorization` header the context below was found for (Bearer-only gates). */
  header: string | undefined;
  context: AuthContext | undefined;
  /** `cache.generation` when the context was read from the cache. */
  generation: number;
  /** `performance.now()` of that read: the entry's recency in the LRU is refreshed at least once a second. */
  readAt: number;
}

/** How long a connection may use its remembered context without a cache read (which keeps the entry recent in the LRU). */
const MEMO_READ_INTERVAL_MS = 1000;

// A registered symbol, so adapters from another copy of the package (ESM next to CJS) still find it.
const AUTHENTICATE_NOW = Symbol.for('tokengate.authenticateNow');

/** @internal The gate's `authenticateNow`, or `authenticate` for any other object that implements {@link Gate}. */
export function authenticateNowOf(gate: Gate): AuthenticateNow {
  const now = (gate as { [AUTHENTICATE_NOW]?: AuthenticateNow })[AUTHENTICATE_NOW];
  return typeof now === 'function' ? now : (req, options) => gate.authenticate(req, options ?? {});
}

/**
 * @internal What the adapters' guards run. A request the gate authenticated carries its
 * context, whose origin knows the realm; only an anonymous request (`optional: true`) needs
 * the gate itself, for the realm of the 401, so only then is it looked up (`anonymousGateOf`):
 * reading a property that `req` does not have walks its whole prototype chain, and an Express
 * `req` has a hidden class of its own (bench/hidden-classes.ts), so no inline cache saves that
 * walk. Anything else means the guard is mounted without `authenticate()` in front of it: a
 * programming error, so a plain Error (500).
 */
export function authorizeRequest<R>(
  auth: unknown,
  guard: Guard,
  req: R,
  anonymousGateOf: (req: R) => Gate | undefined,
): void {
  if (isAuthContext(auth)) {
    if (!guard.allows(auth)) {
      throw insufficientScope(auth.origin.realm, guard.permissions, guard.mode === 'all');
    }
    return;
  }
  const anonymousGate = auth === undefined ? anonymousGateOf(req) : undefined;
  if (anonymousGate !== undefined) {
    anonymousGate.authorize(undefined, guard);
    return;
  }
  throw new Error('tokengate: mount authenticate(gate) before requires()');
}

/** Creates a gate. See {@link GateOptions} for every option. */
export function createGate(options: GateOptions): Gate {
  const realm = options.realm ?? 'api';
  if (!REALM.test(realm)) throw new TypeError('realm must be printable ASCII without " or \\');
  const timeout = options.timeout ?? 5000;
  if (!(timeout > 0 && Number.isFinite(timeout))) throw new RangeError('timeout must be a positive number of ms');
  if (!Array.isArray(options.providers) || options.providers.length === 0) {
    throw new TypeError('createGate needs at least one provider');
  }
  const retry =
    options.retry === false
      ? undefined
      : {
          retries: options.retry?.retries ?? 2,
          baseDelay: options.retry?.baseDelay ?? 50,
          maxDelay: options.retry?.maxDelay ?? 1000,
        };
  const onEvent = options.onEvent;
  const emit =
    onEvent === undefined
      ? undefined
      : (event: GateEvent) => {
          try {
            const result: unknown = onEvent(event);
            // An async listener's rejection must not become an unhandled rejection (which ends a Node process).
            if (result instanceof Promise) result.catch(() => {});
          } catch {
            // A failing logger must not fail authentication.
          }
        };

  const cache = new VerdictCache(options.cache);
  // One per gate: two gates on one server (other providers, other scopes) keep their own key per connection.
  const connectionKey = Symbol('tokengate.connectionKey');
  const grants = new GrantsTable();
  const usedLabels = new Set<string>();
  const slots: ProviderSlot[] = options.providers.map((provider) => {
    let label = provider.name;
    for (let n = 2; usedLabels.has(label); n++) label = `${provider.name}#${n}`;
    usedLabels.add(label);
    const breaker =
      options.breaker === false
        ? undefined
        : new CircuitBreaker(options.breaker ?? {}, (state) => {
            emit?.({ type: 'breaker', provider: provider.name, state });
          });
    return {
      provider,
      verify: verifierOf(provider),
      label,
      origin: Object.freeze({ provider: provider.name, realm }),
      breaker,
    };
  });
  const counters = { hits: 0, misses: 0, coalesced: 0, upstreamCalls: 0, errors: 0, stale: 0 };
  // Every provider reads the Authorization header and nothing else, so the first one always takes the
  // credential: a request's answer then follows from that header alone (see `rememberedContext`).
  const bearerOnly = slots.every((slot) => slot.provider.extract === extractBearer);

  /** The provider that handles `req` and its credential, or undefined when there is none. */
  function findCredential(req: CredentialRequest): { slot: ProviderSlot; credential: Credential } | undefined {
    let found: { slot: ProviderSlot; credential: Credential } | undefined;
    for (const slot of slots) {
      const credential = slot.provider.extract(req, realm);
      if (credential === undefined) continue;
      if (found === undefined) found = { slot, credential };
      else if (credential.source !== found.credential.source) {
        throw invalidRequest(realm, 'Credentials were sent in more than one place');
      }
    }
    return found;
  }

  /** Runs provider.verify under the deadline, with retries and the breaker. Resolves, never rejects. */
  async function verifyUpstream(
    slot: ProviderSlot,
    credential: Credential,
    flight: Flight,
    staleCandidate: AuthContext | undefined,
  ): Promise<Outcome> {
    const { provider, breaker } = slot;
    const started = performance.now();
    const wait = breaker?.admit(started) ?? 0;
    if (wait > 0) {
      return serveStaleOr(slot, staleCandidate, providerUnavailable(provider.name, wait / 1000));
    }
    let attempts = 0;
    const deadline = new Deadline(timeout);
    let answered = false;
    try {
      for (;;) {
        attempts++;
        counters.upstreamCalls++;
        const attemptStarted = performance.now();
        try {
          const verdict = await deadline.race(slot.verify(credential, deadline));
          answered = true;
          const outcome = settleVerdict(slot, flight, verdict);
          breaker?.succeeded();
          emit?.({
            type: 'verify',
            provider: provider.name,
            outcome: outcome instanceof AuthContext ? 'accepted' : 'rejected',
            durationMs: performance.now() - started,
            attempts,
          });
          return outcome;
        } catch (error) {
          answered = false;
          const failure = asFailure(error, deadline);
          emit?.({
            type: 'provider_error',
            provider: provider.name,
            reason: failure.kind,
            ...(failure.upstreamStatus === undefined ? {} : { status: failure.upstreamStatus }),
            durationMs: performance.now() - attemptStarted,
          });
          if (failure.kind === 'misconfigured') {
            breaker?.succeeded();
            counters.errors++;
            emitFailed(provider.name, started, attempts);
            return providerMisconfigured(provider.name);
          }
          const delay = retryDelay(failure, attempts, started + timeout);
          if (delay === undefined) {
            breaker?.failed(performance.now());
            counters.errors++;
            emitFailed(provider.name, started, attempts);
            return serveStaleOr(slot, staleCandidate, providerUnavailable(provider.name, failure.retryAfter));
          }
          emit?.({ type: 'retry', provider: provider.name, attempt: attempts, delayMs: delay });
          await sleep(delay, deadline);
        }
      }
    } finally {
      // A provider that resolved is done; one that failed may have left work behind (a sibling
      // request still running), which the cancellation ends.
      deadline.end(!answered);
    }
  }

  function emitFailed(provider: string, started: number, attempts: number): void {
    emit?.({ type: 'verify', provider, outcome: 'failed', durationMs: performance.now() - started, attempts });
  }

  /** Ms to wait before the next attempt, or undefined when there is no next attempt. */
  function retryDelay(failure: ProviderFailure, attempts: number, deadline: number): number | undefined {
    if (retry === undefined || !failure.retryable || attempts > retry.retries) return undefined;
    const delay = Math.max(backoffDelay(attempts - 1, retry), (failure.retryAfter ?? 0) * 1000);
    // Only when the wait leaves time for the attempt itself.
    return performance.now() + delay < deadline ? delay : undefined;
  }

  function serveStaleOr(slot: ProviderSlot, stale: AuthContext | undefined, error: AuthError): Outcome {
    if (stale === undefined || (stale.expiresAtMs !== undefined && stale.expiresAtMs <= Date.now())) return error;
    counters.stale++;
    emit?.({ type: 'stale', provider: slot.provider.name });
    return stale.asStale();
  }

  /** Turns a provider's verdict into a cached context or rejection. A malformed verdict is a provider failure. */
  function settleVerdict(slot: ProviderSlot, flight: Flight, verdict: Verdict): Outcome {
    if (verdict?.ok === false && typeof verdict.reason === 'string') return cache.setRejected(flight, verdict.reason);
    if (verdict?.ok !== true || !isPrincipal(verdict.principal)) {
      throw new ProviderFailure('invalid_answer', `${slot.provider.name} returned no usable verdict`, false);
    }
    const { principal } = verdict;
    const expiresAtMs = principal.expiresAt?.getTime();
    const now = Date.now();
    const life = cache.lifetime(now, expiresAtMs);
    if (life === undefined) return cache.setRejected(flight, 'The access token has expired');
    const context = new AuthContext(
      slot.origin,
      principal.subject,
      grants.intern(principal.permissions),
      expiresAtMs,
      principal.details,
      Math.floor(performance.now() + life.fresh + life.staleWindow),
      life.staleWindow,
    );
    cache.setAccepted(flight, context);
    return context;
  }

  function outcomeToResult(outcome: Outcome): AuthContext {
    if (outcome instanceof AuthContext) return outcome;
    if (outcome instanceof Rejection) throw invalidToken(realm, outcome.reason);
    if (outcome instanceof AuthError) throw outcome;
    // Anything else (an undefined from a broken code path) must never pass.
    throw providerUnavailable('(unknown)');
  }

  /**
   * The memo for `secret` on the request's connection, with its cache key: a keep-alive client sends
   * the same header on every request, and SHA-256 through OpenSSL is the largest single cost of a
   * cache hit (in a profile of the Koa hot path, 6 of the 16 µs per request the gate added). Kept on
   * the socket, not in a map: the raw token stays in memory only while its own connection is open (as
   * long as that client keeps sending it anyway), one per connection, never in a process-wide table,
   * and the verdict cache itself stays keyed by the hash. A connection that carries another token (a
   * proxy multiplexing clients) simply computes and remembers the new key; the full secrets are compared.
   */
  function memoFor(connection: object, slot: ProviderSlot, secret: string): ConnectionMemo {
    const memos = connection as Record<symbol, ConnectionMemo | undefined>;
    const memo = memos[connectionKey];
    if (memo !== undefined && memo.slot === slot && memo.secret === secret) return memo;
    const fresh: ConnectionMemo = {
      slot,
      secret,
      key: cacheKey(slot.provider.cacheScope, secret),
      header: undefined,
      context: undefined,
      generation: -1,
      readAt: 0,
    };
    memos[connectionKey] = fresh;
    return fresh;
  }

  /**
   * The connection's remembered context when this request is certain to resolve to it: a Bearer-only
   * gate (the credential depends on the `Authorization` header alone, and the first provider takes
   * it), the same header as the request the context was read for, no entry left the cache since
   * (`generation`), still fresh, and read from the cache less than a second ago. Skips the grammar
   * check (an identical header passed it), the key, and the cache lookup: together most of what a
   * cache hit costs when Node and the framework have pushed the gate's data out of the CPU caches.
   */
  function rememberedContext(header: string, connection: object, now: number): AuthContext | undefined {
    const memo = (connection as Record<symbol, ConnectionMemo | undefined>)[connectionKey];
    if (memo === undefined || memo.header !== header || memo.generation !== cache.generation) return undefined;
    const context = memo.context;
    if (context === undefined || now - memo.readAt >= MEMO_READ_INTERVAL_MS) return undefined;
    return isFresh(context, now) ? context : undefined;
  }

  /**
   * `authenticate` without the promise when the answer is at hand: a fresh
   * cached context (or no credential under `optional`) comes back as it is,
   * everything else as a promise; bad credentials throw synchronously.
   */
  function authenticateNow(
    req: CredentialRequest,
    opts?: AuthenticateOptions,
    connection?: object,
  ): AuthContext | undefined | Promise<AuthContext> {
    // Bearer-only gates read the header once here; extractBearer reads it again only off the fast path.
    const header = bearerOnly && connection != null ? readAuthorization(req, realm) : undefined;
    const now = performance.now();
    if (header !== undefined) {
      const remembered = rememberedContext(header, connection as object, now);
      if (remembered !== undefined) {
        counters.hits++;
        emit?.({ type: 'cache', provider: remembered.origin.provider, result: 'hit' });
        return remembered;
      }
    }
    const found = findCredential(req);
    if (found === undefined) {
      if (opts?.optional === true) return undefined;
      throw credentialsRequired(realm);
    }
    const { slot, credential } = found;
    const memo =
      connection === undefined || connection === null ? undefined : memoFor(connection, slot, credential.secret);
    const key = memo === undefined ? cacheKey(slot.provider.cacheScope, credential.secret) : memo.key;
    const entry = cache.get(key, now);
    let staleCandidate: AuthContext | undefined;
    if (entry !== undefined) {
      if (entry instanceof Rejection) {
        counters.hits++;
        emit?.({ type: 'cache', provider: slot.provider.name, result: 'hit' });
        throw invalidToken(realm, entry.reason);
      }
      if (isFresh(entry, now)) {
        counters.hits++;
        emit?.({ type: 'cache', provider: slot.provider.name, result: 'hit' });
        if (header !== undefined && memo !== undefined) {
          memo.header = header;
          memo.context = entry;
          memo.generation = cache.generation;
          memo.readAt = now;
        }
        return entry;
      }
      staleCandidate = entry;
    }
    counters.misses++;
    const { promise, joined } = cache.singleFlight(key, (flight) =>
      verifyUpstream(slot, credential, flight, staleCandidate),
    );
    if (joined) counters.coalesced++;
    emit?.({ type: 'cache', provider: slot.provider.name, result: joined ? 'coalesced' : 'miss' });
    return promise.then(outcomeToResult);
  }

  async function authenticate(req: CredentialRequest, opts?: AuthenticateOptions): Promise<AuthContext | undefined> {
    return authenticateNow(req, opts);
  }

  const gate: Gate = {
    realm,
    authenticate: authenticate as Gate['authenticate'],
    authorize(auth: AuthContext | undefined, guard: Guard): void {
      if (auth === undefined) throw credentialsRequired(realm);
      if (!guard.allows(auth)) throw insufficientScope(realm, guard.permissions, guard.mode === 'all');
    },
    invalidate(req: CredentialRequest): boolean {
      const found = findCredential(req);
      if (found === undefined) return false;
      return cache.delete(cacheKey(found.slot.provider.cacheScope, found.credential.secret));
    },
    clear(): void {
      cache.clear();
    },
    stats(): GateStats {
      const breakers: Record<string, BreakerState> = {};
      for (const slot of slots) breakers[slot.label] = slot.breaker?.state ?? 'closed';
      return { ...counters, breakers };
    },
    async close(): Promise<void> {
      cache.clear();
      await Promise.all(slots.map((slot) => slot.provider.close?.()));
    },
  };
  // Not enumerable: the adapters' business, not the gate's public shape.
  Object.defineProperty(gate, AUTHENTICATE_NOW, { value: authenticateNow });
  return gate;
}

function isPrincipal(value: Principal | undefined): value is Principal {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof value.subject === 'string' &&
    Array.isArray(value.permissions) &&
    value.permissions.every((permission) => typeof permission === 'string') &&
    (value.expiresAt === undefined || (value.expiresAt instanceof Date && !Number.isNaN(value.expiresAt.getTime()))) &&
    typeof value.details === 'object' &&
    value.details !== null
  );
}

/** `provider.verify` as the gate calls it: the built-in providers' cancellation-taking twin when there is one. */
function verifierOf(provider: Provider): ProviderSlot['verify'] {
  const within = (provider.verify as CancellableVerify<Credential, Verdict>)[VERIFY_WITHIN];
  if (typeof within === 'function') return within;
  return (credential, deadline) => provider.verify(credential, deadline.signal);
}

/** Any error from verify as a ProviderFailure: unexpected errors fail closed too. */
function asFailure(error: unknown, cancellation: Cancellation): ProviderFailure {
  if (error instanceof ProviderFailure) return error;
  if (cancellation.aborted) return new ProviderFailure('timeout', 'provider did not answer within the deadline', false);
  return new ProviderFailure('invalid_answer', 'provider verify threw', false);
}
