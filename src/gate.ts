/**
 * `createGate`: the request flow, in one direction.
 *
 *   extract (each provider) → cache key (hash) → store hit, or one shared
 *   upstream call → provider.verify under the upstream policy → AuthContext
 *
 * Guards run afterwards, on every request (`authorize`). The parts live in
 * their own files: the verdict store (`store.ts`), the upstream policy
 * (`upstream.ts`), the per-connection memo (`memo.ts`).
 */
import { clientBlockOf, defaultClientKey } from './client-key.js';
import { AuthContext, type ContextOrigin } from './context.js';
import {
  AuthError,
  credentialsRequired,
  forOneRequest,
  invalidRequest,
  invalidToken,
  providerUnavailable,
} from './errors.js';
import { type BreakerState, type GateEvent, safeListener } from './events.js';
import { type GateOptions, resolveGateOptions } from './gate-options.js';
import { enforce, type Guard } from './guards.js';
import { ConnectionMemo } from './memo.js';
import { shown } from './options.js';
import { ProviderFailure, withoutMessage } from './provider-failure.js';
import { checkOwnProviders, markProvider } from './provider-holds.js';
import {
  type HeaderReader,
  hasHeaders,
  headerReader,
  isRequestError,
  requestError,
  toCredentialRequest,
} from './request.js';
import { Accepted, cacheKey, type Flight, Rejection, VerdictStore } from './store.js';
import { type CacheTrace, cacheChannel } from './tracing.js';
import type {
  AdmissionLoad,
  AuthenticateOptions,
  Credential,
  CredentialRequest,
  Gate,
  GateRequest,
  GateStats,
  PartialCredential,
  Provider,
} from './types.js';
import { Upstream, type UpstreamCounters } from './upstream.js';

/** One provider as the gate holds it: with its upstream policy, its label in `stats()` and its contexts' origin. */
interface Member {
  readonly provider: Provider;
  readonly upstream: Upstream;
  readonly label: string;
  readonly origin: ContextOrigin;
}

type Outcome = AuthContext | Rejection | AuthError;

/** The provider that handles a request, and the credential it found. */
interface Found {
  readonly member: Member;
  readonly credential: Credential;
}

/**
 * Creates a gate. See {@link GateOptions} for every option.
 * @throws TypeError naming a wrong option; RangeError for a number out of its range.
 */
export function createGate(options: GateOptions): Gate {
  return new TokenGate(options);
}

/**
 * @internal Whether `gate` is one {@link createGate} of this copy of the package made, its `authenticateNow` its own:
 * an answer of it is a context, `undefined` only under `optional`, or this realm's `Promise` of one.
 */
export function isOwnGate(gate: Gate): boolean {
  return gate instanceof TokenGate && gate.authenticateNow === TokenGate.prototype.authenticateNow;
}

class TokenGate implements Gate {
  readonly realm: string;
  readonly #members: readonly Member[];
  readonly #store: VerdictStore;
  readonly #memo = new ConnectionMemo();
  /** Reads the one header every provider takes its credential from, when they all declare the same one. */
  readonly #header: HeaderReader | undefined;
  readonly #emit: ((event: GateEvent) => void) | undefined;
  readonly #counters = {
    hits: 0,
    misses: 0,
    coalesced: 0,
    sharedHits: 0,
    upstreamCalls: 0,
    errors: 0,
    stale: 0,
    overloaded: 0,
    heldBack: 0,
  };
  readonly #clientOf: (req: CredentialRequest) => string;
  #closed = false;
  /** What the first {@link close} returned: every later call returns it too. */
  #closing: Promise<void> | undefined;
  /**
   * The flights whose requests still wait on them, wherever the store keeps them: `clear()` forgets a flight, not
   * the requests waiting on it, which {@link close} ends.
   */
  readonly #waitedOn = new Set<Flight>();

  constructor(options: GateOptions) {
    const resolved = resolveGateOptions(options);
    checkOwnProviders(resolved.providers);
    this.realm = resolved.realm;
    const emit = safeListener(resolved.onEvent);
    this.#emit = emit;
    this.#store = new VerdictStore(
      resolved.cache,
      resolved.sharedCache,
      (operation, reason, provider) => emit?.({ type: 'shared_cache_error', provider, operation, reason }),
      resolved.timeout,
    );
    const counters: UpstreamCounters = this.#counters;
    const { timeout, retry, breaker, maxRetryAfter, admission } = resolved;
    const maxWaiting = (concurrency: number) => admission.maxWaiting ?? concurrency * 4;
    const { clientKey } = admission;
    // Default keys are addresses, whose blocks are known; keys of the app's own making are blocks of their own.
    const clientBlock = clientKey === undefined ? clientBlockOf : (client: string) => client;
    const policy = { timeout, retry, breaker, maxRetryAfter, maxWaiting, clientBlock, emit, counters };
    this.#clientOf =
      clientKey === undefined
        ? defaultClientKey
        : (req) => {
            let key: unknown;
            try {
              key = clientKey(req);
            } catch (error) {
              throw asError(error, 'admission.clientKey');
            }
            // Anything else (a header the client left out, a promise) counts the request by its address, as by default:
            // as a key, it would make each request a client of its own, or every such request one client.
            return typeof key === 'string' ? key : defaultClientKey(req);
          };
    const labels = new Set<string>();
    this.#members = resolved.providers.map((provider) => {
      let label = provider.name;
      for (let n = 2; labels.has(label); n++) label = `${provider.name}#${n}`;
      labels.add(label);
      const origin = Object.freeze({ provider: provider.name, realm: this.realm });
      return { provider, upstream: new Upstream(provider, policy), label, origin };
    });
    const sources = new Set(this.#members.map((member) => member.provider.source));
    const [source] = sources;
    this.#header = sources.size === 1 && source?.startsWith('header:') ? headerReader(source.slice(7)) : undefined;
    for (const provider of resolved.providers) markProvider(provider, 'held');
  }

  authenticate(req: GateRequest, options?: { readonly optional?: false }): Promise<AuthContext>;
  authenticate(req: GateRequest, options: AuthenticateOptions): Promise<AuthContext | undefined>;
  async authenticate(req: GateRequest, options?: AuthenticateOptions): Promise<AuthContext | undefined> {
    // Called by hand, unlike authenticateNow (an adapter's, with a request and options it checked itself).
    if (!hasHeaders(req)) throw requestError('authenticate', req);
    const optional = options?.optional;
    if (optional !== undefined && typeof optional !== 'boolean') {
      throw new TypeError(`gate.authenticate: options.optional: expected a boolean, got ${shown(optional)}`);
    }
    return this.authenticateNow(toCredentialRequest(req), options);
  }

  authenticateNow(
    req: CredentialRequest,
    options?: AuthenticateOptions,
  ): AuthContext | undefined | Promise<AuthContext | undefined> {
    if (this.#closed) throw closedError();
    // Anything but an object (a developer's string) cannot key the memo: the request is read as if it had no connection.
    const given = req.connection;
    const connection = typeof given === 'object' && given !== null ? given : undefined;
    const now = performance.now();
    // One header decides every credential: a repeat on this connection resolves as it did last time.
    const header = connection === undefined || this.#header === undefined ? undefined : this.#header(req);
    if (typeof header === 'string') {
      const remembered = this.#memo.recall(connection as object, header, this.#store.generation, now);
      if (remembered !== undefined) return this.#hit(remembered);
    }
    let found: Found | undefined;
    try {
      found = this.#find(req);
    } catch (error) {
      // A malformed credential is not the one remembered: the memo keeps no raw token it was not sent again.
      if (connection !== undefined) this.#memo.forget(connection);
      // An adapter's request without headers is told here, off the path of every request that has them.
      throw hasHeaders(req) ? error : requestError('authenticateNow', req);
    }
    if (found === undefined) {
      if (connection !== undefined) this.#memo.forget(connection);
      if (options?.optional === true) return undefined;
      throw credentialsRequired(this.realm);
    }
    const { member, credential } = found;
    const scope = member.provider.cacheScope;
    const key =
      connection === undefined
        ? cacheKey(scope, credential.secret)
        : this.#memo.key(connection, scope, credential.secret, cacheKey);
    const entry = this.#store.get(key, now);
    let stale: Accepted | undefined;
    if (entry instanceof Rejection) {
      this.#countHit(member.provider.name);
      throw invalidToken(this.realm, entry.reason);
    }
    if (entry instanceof Accepted) {
      if (entry.freshAt(now)) {
        if (typeof header === 'string') {
          this.#memo.remember(connection as object, header, entry, this.#store.generation, now);
        }
        return this.#hit(entry.context);
      }
      stale = entry;
    }
    return this.#miss(member, credential, key, stale, req);
  }

  authorize(auth: AuthContext | undefined, guard: Guard): void {
    if (this.#closed) throw closedError();
    if (typeof guard?.allows !== 'function') {
      throw new TypeError(
        typeof guard === 'function'
          ? `gate.authorize: expected a guard, got a function: call it (requires('read'), not requires)`
          : `gate.authorize: expected a guard such as requires('read'), got ${shown(guard)}`,
      );
    }
    if (auth === undefined) throw credentialsRequired(this.realm);
    enforce(guard, auth, this.realm);
  }

  invalidate(req: GateRequest): boolean {
    if (this.#closed) throw closedError();
    if (!hasHeaders(req)) throw requestError('invalidate', req);
    const found = this.#find(toCredentialRequest(req));
    if (found === undefined) return false;
    return this.#store.delete(cacheKey(found.member.provider.cacheScope, found.credential.secret), found.member.origin);
  }

  async revoke(req: GateRequest): Promise<boolean> {
    if (this.#closed) throw closedError();
    if (!hasHeaders(req)) throw requestError('revoke', req);
    const found = this.#find(toCredentialRequest(req));
    if (found === undefined) return false;
    return this.#store.revoke(cacheKey(found.member.provider.cacheScope, found.credential.secret), found.member.origin);
  }

  clear(): void {
    if (this.#closed) throw closedError();
    this.#store.clear();
  }

  reset(): void {
    this.clear();
    for (const member of this.#members) member.upstream.reset();
    const counters = this.#counters;
    for (const name of Object.keys(counters) as (keyof typeof counters)[]) counters[name] = 0;
  }

  stats(): GateStats {
    const breakers: Record<string, BreakerState> = {};
    const paused: Record<string, number> = {};
    const admission: Record<string, AdmissionLoad> = {};
    for (const member of this.#members) {
      breakers[member.label] = member.upstream.breakerState;
      paused[member.label] = member.upstream.pausedMs;
      admission[member.label] = member.upstream.admission;
    }
    return { ...this.#counters, breakers, paused, admission };
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    for (const { provider } of this.#members) markProvider(provider, 'closed');
    for (const member of this.#members) member.upstream.close();
    // Every request waiting on a verification ends now, wherever that verification is: waiting for a slot, for
    // another instance's answer, or asking the provider (cut short just above, and storing nothing).
    const upstreams = new Map(this.#members.map((member) => [member.origin, member.upstream]));
    for (const flight of this.#waitedOn) flight.end?.((upstreams.get(flight.origin) as Upstream).closedError());
    this.#waitedOn.clear();
    this.#store.close();
    // Every provider is closed, whichever of them fails to.
    const closed = await Promise.allSettled(
      this.#members.map((member) => Promise.resolve().then(() => member.provider.close?.())),
    );
    const failures = closed.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) throw new AggregateError(failures, 'tokengate: several providers failed to close');
  }

  #hit(context: AuthContext): AuthContext {
    this.#countHit(context.origin.provider);
    return context;
  }

  #countHit(provider: string): void {
    this.#counters.hits++;
    this.#emit?.({ type: 'cache', provider, result: 'hit' });
    if (cacheChannel.hasSubscribers) cacheChannel.publish({ provider, result: 'hit' } satisfies CacheTrace);
  }

  /** Asks upstream (or joins the call under way for `key`) and turns the outcome into the answer. */
  #miss(
    member: Member,
    credential: Credential,
    key: string,
    stale: Accepted | undefined,
    req: CredentialRequest,
  ): Promise<AuthContext> {
    this.#counters.misses++;
    // Served stale only while the store still keeps that very entry: not past its window, nor once the credential
    // was invalidated, rejected or evicted.
    const staleCopy =
      stale === undefined
        ? undefined
        : () => (this.#store.get(key, performance.now()) === stale ? stale.context : undefined);
    // Told before the flight starts, so that its verification's own events and traces come after this one.
    const joined = this.#store.hasFlight(key);
    if (joined) this.#counters.coalesced++;
    const result = joined ? 'coalesced' : 'miss';
    this.#emit?.({ type: 'cache', provider: member.provider.name, result });
    if (cacheChannel.hasSubscribers)
      cacheChannel.publish({ provider: member.provider.name, result } satisfies CacheTrace);
    const started = this.#store.load<Outcome>(key, member.origin, async (flight) => {
      // A gate closed while this flight waited for another instance asks nothing any more.
      if (this.#closed) return providerUnavailable(member.provider.name);
      const answer = await member.upstream.verify(
        credential,
        staleCopy,
        // The client's key (Express computes `req.ip` on each read) is worked out only for a verification that waits.
        () => this.#clientOf(req),
        (error) => flight.end?.(error),
      );
      if (answer instanceof AuthContext || answer instanceof AuthError) return answer;
      return answer.ok ? this.#store.accept(flight, answer.principal) : this.#store.reject(flight, answer.reason);
    });
    // The flight's requests may end before it (see Upstream.verify); those that join after that wait for the flight.
    // `started.joined` decides, not `joined`: a listener told of the lookup may have cleared the cache since.
    const { promise, flight } = started;
    const waited = started.joined
      ? ((flight.requests as typeof promise | undefined) ?? promise)
      : this.#endable(flight, promise);
    // Bounded before it is read: only a request that gets the flight's outcome counts it (sharedHits).
    const bound = this.#store.waitBound;
    const delivered = bound === undefined ? waited : this.#bounded(waited, flight, bound, member.provider.name);
    // Every request gets an error of its own: the flight's failure is shared by all its requests.
    return delivered.then(
      (outcome) => {
        if (flight.fromShared) this.#counters.sharedHits++;
        if (outcome instanceof AuthContext) return outcome;
        if (outcome instanceof Rejection) throw invalidToken(this.realm, outcome.reason);
        throw forOneRequest(outcome);
      },
      (error: unknown) => {
        throw forOneRequest(error);
      },
    );
  }

  /** {@link endable}, and known to {@link close} until the flight lands. */
  #endable<T>(flight: Flight, promise: Promise<T>): Promise<T> {
    this.#waitedOn.add(flight);
    return endable(flight, promise, () => this.#waitedOn.delete(flight));
  }

  /**
   * `answer`, or a 503 `ms` from now when its flight spent part of the request's `timeout` waiting for another
   * instance's call: the request ends then, while the flight goes on asking the provider under its own deadline
   * and keeps its answer. A flight that did not wait ends in time by itself (tier calls, then the provider).
   */
  #bounded<T>(answer: Promise<T>, flight: Flight, ms: number, provider: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (flight.waited === true) reject(providerUnavailable(provider, undefined, waitedTooLong(provider)));
      }, ms);
      answer.then(
        (outcome) => {
          clearTimeout(timer);
          resolve(outcome);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /**
   * The provider that handles `req` and its credential, or undefined when there is none. Complete
   * credentials in two places are a 400; a partial one is a 400 only when there is nothing else.
   */
  #find(req: CredentialRequest): Found | undefined {
    let found: Found | undefined;
    let partial: PartialCredential | undefined;
    for (const member of this.#members) {
      let credential: Credential | PartialCredential | undefined;
      try {
        credential = member.provider.extract(req, this.realm);
      } catch (error) {
        throw extractError(error, member.provider.name);
      }
      if (credential === undefined) continue;
      // Only a string secret keys the cache: any other value would give every such request one key, and one answer.
      if (!isExtracted(credential)) {
        throw new TypeError(
          `tokengate: ${member.provider.name}'s extract returned ${shown(credential)}, not a credential ({ source, secret: string }), a partial one ({ source, partial: string }) or undefined`,
        );
      }
      if (isPartial(credential)) partial ??= credential;
      else if (found === undefined) found = { member, credential };
      else if (credential.source !== found.credential.source) {
        throw invalidRequest(this.realm, 'Credentials were sent in more than one place');
      }
    }
    if (found === undefined && partial !== undefined) throw invalidRequest(this.realm, partial.partial);
    return found;
  }
}

/**
 * `promise` as the requests of `flight` wait for it: `flight.end(error)` ends those waiting so far with `error` (the
 * first one's time ran out while the provider still has its own), and the requests that join later wait for the
 * flight itself. `landed` runs when the flight settles, before any of its requests hears of it.
 */
function endable<T>(flight: Flight, promise: Promise<T>, landed: () => void): Promise<T> {
  const requests = new Promise<T>((resolve, reject) => {
    flight.end = (error) => {
      flight.end = undefined;
      flight.requests = promise;
      reject(error);
    };
    promise.then(
      (value) => {
        landed();
        resolve(value);
      },
      (error: unknown) => {
        landed();
        reject(error);
      },
    );
  });
  flight.requests = requests;
  return requests;
}

/** Whether `credential` is a partial one: its `partial` a string (a credential may carry the member, undefined). */
function isPartial(credential: Credential | PartialCredential): credential is PartialCredential {
  return typeof (credential as { partial?: unknown }).partial === 'string';
}

/** Whether `value`, as an `extract` returned it, is an object with a string `secret` or `partial`. */
function isExtracted(value: unknown): value is Credential | PartialCredential {
  if (typeof value !== 'object' || value === null) return false;
  const { secret, partial } = value as { secret?: unknown; partial?: unknown };
  return typeof secret === 'string' || typeof partial === 'string';
}

/**
 * `error` when it is an `Error`, else an `Error` naming `who`: a framework takes a falsy error (`undefined`, `0`, `''`)
 * for none, and would let the request go on unauthenticated.
 */
function asError(error: unknown, who: string): unknown {
  return error instanceof Error ? error : new TypeError(`tokengate: ${who} threw ${shown(error)}, not an Error`);
}

/**
 * What a provider's `extract` threw, as the request's error: its `AuthError` (a malformed credential's 400), or the
 * header reader's own `TypeError`, as they are; anything else, a bug of the provider, by its class and where it was
 * thrown, never its message, which may quote the credential (`JSON.parse` does).
 */
function extractError(error: unknown, provider: string): unknown {
  if (error instanceof AuthError || isRequestError(error)) return error;
  const isObject = (typeof error === 'object' && error !== null) || typeof error === 'function';
  return new Error(
    `tokengate: ${provider}'s extract threw ${shown(error)}${isObject ? ' (its message is withheld: it may hold the credential)' : ''}; for a malformed credential, throw invalidRequest(realm, description)`,
    isObject ? { cause: withoutMessage(error, 'thrown by extract') } : undefined,
  );
}

function closedError(): Error {
  return new Error('tokengate: gate is closed (close() was called); create a new gate');
}

/**
 * The cause of a request's 503 when its time ran out while part of it went to waiting for another instance's
 * verification of the same credential (a shared tier's lease): no event reports it, so the 503 says it.
 */
function waitedTooLong(provider: string): ProviderFailure {
  return new ProviderFailure(
    'timeout',
    `${provider} gave no answer within the request's timeout, part of which went to waiting for another instance's verification of this credential (sharedCache)`,
  );
}
