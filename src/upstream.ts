/**
 * The upstream policy of one provider: how the gate asks it about a
 * credential. Each verification runs under one deadline (retries included),
 * failed attempts are retried with backoff while time is left, a circuit
 * breaker stops asking a provider that keeps failing, and while it fails a
 * context past its `ttl` may be served stale (`staleIfError`).
 *
 * It never rejects and never lets a failure through: the answer is a
 * checked verdict, a stale context, or an `AuthError` (503, or 500 for a
 * provider that refused our own credentials).
 */
import { Admission } from './admission.js';
import { verifierOf } from './cancellation.js';
import type { AuthContext } from './context.js';
import { Deadline } from './deadline.js';
import { type AuthError, overloaded, providerMisconfigured, providerUnavailable } from './errors.js';
import type { GateEvent } from './events.js';
import { asFailure, ProviderFailure } from './provider-failure.js';
import {
  type BreakerOptions,
  backoffDelay,
  CircuitBreaker,
  type RetryPolicy,
  refusesOneRequest,
  sleep,
} from './resilience.js';
import { type BreakerTrace, breakerChannel, tracingVerify, type VerifyTrace, verifyChannel } from './tracing.js';
import type { AdmissionLoad, Credential, Provider, Verdict } from './types.js';
import { checkedVerdict } from './verdict.js';

/** How long calls pause after a 429 that names no `Retry-After` (ms). */
const DEFAULT_THROTTLE_PAUSE_MS = 1000;

/** Verifications in flight per provider when it does not say (`Provider.concurrency`). */
const DEFAULT_CONCURRENCY = 16;

/**
 * The context a failing verification may serve stale, asked only once the provider has failed:
 * undefined when there is none any more (its `staleIfError` window ended, or it was invalidated,
 * rejected or evicted since the request read it).
 */
export type StaleCopy = () => AuthContext | undefined;

/**
 * What a verification comes to: the provider's verdict; or a context served stale, or an error, when it failed, was
 * held back or was cut short by {@link Upstream.close}.
 */
export type Answer = Verdict | AuthContext | AuthError;

/** Counters the upstream policy keeps for `gate.stats()`. */
export interface UpstreamCounters {
  upstreamCalls: number;
  overloaded: number;
  errors: number;
  stale: number;
  heldBack: number;
}

/** How one provider is asked. */
export interface UpstreamPolicy {
  /** Overall deadline of one verification, retries included (ms). */
  readonly timeout: number;
  readonly retry: RetryPolicy | undefined;
  readonly breaker: BreakerOptions | undefined;
  /** Most verifications waiting for a slot of one provider (see `Admission`). */
  readonly maxWaiting: (concurrency: number) => number;
  /** The block of clients a client belongs to, which admission weighs together (see `Admission`). */
  readonly clientBlock: (client: string) => string;
  /** Longest `Retry-After` passed on to clients (ms). */
  readonly maxRetryAfter: number;
  readonly emit: ((event: GateEvent) => void) | undefined;
  readonly counters: UpstreamCounters;
}

export class Upstream {
  readonly provider: Provider;
  readonly #verify: (credential: Credential, deadline: Deadline) => Promise<Verdict>;
  readonly #policy: UpstreamPolicy;
  readonly #breaker: CircuitBreaker | undefined;
  /** The deadlines of the verifications under way, which {@link close} cuts short. */
  readonly #live = new Set<Deadline>();
  /** Set by {@link close}: the cause of the 503 every verification under way or asked later ends with. */
  #closing: ProviderFailure | undefined;
  /**
   * The provider's last refusal of this server's own credentials, and until when (`performance.now()` ms) every new
   * verification gets its 500 without asking: the credentials are not sent again and again to be refused.
   */
  #refusal: ProviderFailure | undefined;
  #refusedUntil = 0;
  readonly #admission: Admission;

  constructor(provider: Provider, policy: UpstreamPolicy) {
    this.provider = provider;
    const concurrency = provider.concurrency ?? DEFAULT_CONCURRENCY;
    this.#admission = new Admission(concurrency, policy.maxWaiting(concurrency), policy.clientBlock);
    this.#verify = verifierOf(provider);
    this.#policy = policy;
    this.#breaker =
      policy.breaker === undefined
        ? undefined
        : new CircuitBreaker(policy.breaker, (state) => {
            policy.emit?.({ type: 'breaker', provider: provider.name, state });
            if (breakerChannel.hasSubscribers)
              breakerChannel.publish({ provider: provider.name, state } satisfies BreakerTrace);
          });
  }

  /** The breaker's state (`closed` when there is none). */
  get breakerState(): CircuitBreaker['state'] {
    return this.#breaker?.state ?? 'closed';
  }

  /** The ms left of a 429's pause, rounded up; 0 when calls are not paused (always, without a breaker). */
  get pausedMs(): number {
    return this.#breaker === undefined ? 0 : Math.ceil(this.#breaker.pauseLeft(performance.now()));
  }

  /** Verifications in flight with the provider, and waiting for a slot, now. */
  get admission(): AdmissionLoad {
    return { running: this.#admission.inFlight, waiting: this.#admission.waiting };
  }

  /**
   * Asks the provider about `credential`. `stale` gives the context to serve if
   * the provider fails (one past its `ttl`, within `staleIfError`), asked at
   * that moment; `clientOf` names the request's client, read only if it has
   * to wait for a slot. A verification that waited is given the provider's
   * whole deadline from its slot; when the request's `timeout` passes first,
   * `expire` is called with the 503 for the requests, and the answer still
   * comes, to be kept.
   */
  async verify(
    credential: Credential,
    stale: StaleCopy | undefined,
    clientOf: () => string,
    expire: (error: AuthError) => void,
  ): Promise<Answer> {
    const requested = performance.now();
    const refused = this.#holdForRefusal(requested);
    if (refused !== undefined) return refused;
    const wait = this.#breaker?.admit(requested) ?? 0;
    if (wait > 0) return this.#holdBack(wait, stale);
    // Admitted while the breaker is half-open, this verification is its one probe, named by its number.
    const probe = this.#breaker?.probe;
    let slot: ReturnType<Admission['acquire']>;
    try {
      slot = this.#admission.acquire(clientOf);
    } catch (error) {
      // The app's `clientKey` threw (asked only of a verification that has to wait): nothing was sent, and a probe
      // this verification was is over, so that the breaker's next call probes.
      throw this.#unsent(probe, error);
    }
    if (slot === 'full') return this.#unsent(probe, this.#overloaded('full'));
    // Awaited, not returned: an async function that returns a promise takes two more turns to settle.
    if (slot === 'admitted') return await this.#askInSlot(credential, stale, probe);
    // One timer, armed as the request asks, ends both its wait and the request: the provider gets its
    // whole deadline from the moment it has a slot, and the request still ends `timeout` after it asked.
    // Either way the time that ran out was spent in our own wait first: overloaded, not the provider's failure.
    return new Promise((resolve) => {
      let state: 'waiting' | 'asking' | 'ended' = 'waiting';
      const timer = setTimeout(() => {
        if (state === 'asking') {
          // The requests end; the verification goes on, and its answer is kept for the next ones.
          expire(this.#overloaded('expired'));
          return;
        }
        // Still waiting, or given a slot a moment ago without having asked: it never asks.
        this.#admission.expire(slot);
        state = 'ended';
        resolve(this.#unsent(probe, this.#overloaded('expired')));
      }, this.#policy.timeout);
      slot.admitted.then((admitted) => {
        if (state === 'ended') {
          if (admitted === 'admitted') this.#admission.release();
          return;
        }
        if (this.#closing !== undefined) {
          if (admitted === 'admitted') this.#admission.release();
          clearTimeout(timer);
          state = 'ended';
          resolve(this.#unsent(probe, this.closedError()));
          return;
        }
        if (admitted !== 'admitted') {
          clearTimeout(timer);
          state = 'ended';
          resolve(this.#unsent(probe, this.#overloaded(admitted)));
          return;
        }
        // While this verification waited, the provider may have refused this server's credentials (not sent again),
        // the breaker opened, or a 429 paused calls.
        const now = performance.now();
        const heldBack = this.#breaker?.holdsBack(now) ?? 0;
        const unsent = this.#holdForRefusal(now) ?? (heldBack > 0 ? this.#holdBack(heldBack, stale) : undefined);
        if (unsent !== undefined) {
          this.#admission.release();
          clearTimeout(timer);
          state = 'ended';
          resolve(this.#unsent(probe, unsent));
          return;
        }
        state = 'asking';
        this.#askInSlot(credential, stale, probe).then((answer) => {
          clearTimeout(timer);
          resolve(answer);
        });
      });
    });
  }

  /**
   * The provider asked under the slot just taken, released when it is done (see `Admission.leaveRunning`); traced when
   * anything listens. A trace's subscribers see its {@link VerifyTrace} fields alone, never the answer, which they
   * could change.
   */
  #askInSlot(credential: Credential, stale: StaleCopy | undefined, probe: number | undefined): Promise<Answer> {
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.#admission.release();
    };
    let asked: Promise<Answer>;
    if (tracingVerify()) {
      const trace: VerifyTrace = { provider: this.provider.name };
      let answer: Answer | undefined;
      const traced = async (): Promise<undefined> => {
        answer = await this.#ask(credential, stale, probe, release, trace);
        return undefined;
      };
      asked = verifyChannel.tracePromise(traced, trace).then(() => answer as Answer);
    } else {
      asked = this.#ask(credential, stale, probe, release);
    }
    asked.then(undefined, release);
    return asked;
  }

  /**
   * A verification the breaker holds back for `ms` (open, probing, or paused after a 429): never sent. A stale copy
   * is served while the breaker is open or probing (the provider failing), and not during a 429's pause unless the
   * breaker is open too (see {@link #throttled}).
   */
  #holdBack(ms: number, stale: StaleCopy | undefined): AuthContext | AuthError {
    const breaker = this.#breaker as CircuitBreaker;
    const state = breaker.pausedAt(performance.now()) ? 'paused' : breaker.state;
    const reason = state === 'closed' ? 'paused' : state;
    const retryAfterMs = Math.ceil(Math.min(ms, this.#policy.maxRetryAfter));
    this.#policy.counters.heldBack++;
    this.#policy.emit?.({ type: 'held_back', provider: this.provider.name, reason, retryAfterMs });
    const unavailable = this.#unavailable(retryAfterMs);
    return reason === 'paused' ? this.#throttled(stale, unavailable) : this.#staleOr(stale, unavailable);
  }

  /**
   * The answer of a verification throttled by the provider (a 429, or the pause after one): `error`, as being
   * throttled is no outage (a flood can cause it) and a stale copy would revive a token revoked since; but the stale
   * copy while the breaker is open, as it is only once the provider failed (a 429 of a call under way changes that
   * no more than it changes the breaker).
   */
  #throttled(stale: StaleCopy | undefined, error: AuthError): AuthContext | AuthError {
    return this.#breaker?.state === 'open' ? this.#staleOr(stale, error) : error;
  }

  /**
   * The answer of a verification not sent because the provider's refusal of this server's credentials holds at `now`
   * (the same 500), or undefined when none holds.
   */
  #holdForRefusal(now: number): AuthError | undefined {
    const refusal = this.#refusal;
    if (refusal === undefined || now >= this.#refusedUntil) return undefined;
    this.#policy.counters.heldBack++;
    this.#policy.emit?.({
      type: 'held_back',
      provider: this.provider.name,
      reason: 'refused',
      retryAfterMs: Math.ceil(this.#refusedUntil - now),
    });
    return providerMisconfigured(this.provider.name, refusal);
  }

  /** `answer`, for a verification that was never sent: when it was the breaker's probe, the probe is over. */
  #unsent<T>(probe: number | undefined, answer: T): T {
    if (probe !== undefined) this.#breaker?.inconclusive(probe);
    return answer;
  }

  /** Verifications refused or timed out in our own wait: a fast 503 that never touches the breaker or serves stale. */
  #overloaded(reason: 'full' | 'expired'): AuthError {
    this.#policy.counters.overloaded++;
    this.#policy.emit?.({ type: 'overloaded', provider: this.provider.name, reason });
    return overloaded(this.provider.name);
  }

  /**
   * The attempts under one deadline, with retries and the breaker; `probe`: the number of the probe it is, if one.
   * `release` runs once the provider's work is over (see {@link Deadline.end}).
   */
  async #ask(
    credential: Credential,
    stale: StaleCopy | undefined,
    probe: number | undefined,
    release: () => void,
    trace?: VerifyTrace,
  ): Promise<Answer> {
    const { provider } = this;
    const { emit, counters, timeout } = this.#policy;
    const breaker = this.#breaker;
    const started = performance.now();
    if (this.#closing !== undefined) {
      release();
      return this.#cancelled(started, 0, trace);
    }
    const deadline = new Deadline(timeout, provider.name);
    this.#live.add(deadline);
    let answered = false;
    /** A 429's pause (this verification's, or another's) was waited out, using up part of this deadline. */
    let throttled = false;
    try {
      for (let attempts = 1; ; attempts++) {
        counters.upstreamCalls++;
        const attemptStarted = performance.now();
        try {
          const verdict = checkedVerdict(await deadline.race(this.#verify(credential, deadline)), provider.name);
          answered = true;
          breaker?.succeeded();
          const accepted =
            verdict.ok &&
            !(verdict.principal.expiresAt !== undefined && verdict.principal.expiresAt.getTime() <= Date.now());
          this.#ended(accepted ? 'accepted' : 'rejected', started, attempts, trace);
          return verdict;
        } catch (error) {
          // Cut short by this gate's close(): not a fault of the provider's, so no event, count or breaker step says so.
          if (this.#closing !== undefined) return this.#cancelled(started, attempts, trace, probe);
          const failure = asFailure(error, deadline);
          emit?.({
            type: 'provider_error',
            provider: provider.name,
            reason: failure.kind,
            message: failure.message,
            ...(failure.upstreamStatus === undefined ? {} : { status: failure.upstreamStatus }),
            durationMs: performance.now() - attemptStarted,
          });
          // A 429 pauses every other call at once, not only once this verification has used up its retries, and
          // its own retry waits the pause out too.
          const paused = failure.upstreamStatus === 429 ? this.#pause(failure, probe) : 0;
          if (paused > 0) throttled = true;
          const delay =
            failure.kind === 'misconfigured'
              ? undefined
              : this.#retryDelay(failure, attempts, started + timeout, paused);
          // A breaker that is not closed (open, or half-open with its one probe out) sends no retry: end at once.
          if (delay === undefined || this.#retryHeldBack() === undefined) {
            this.#ended('failed', started, attempts, trace);
            return this.#failed(failure, stale, probe, throttled);
          }
          emit?.({ type: 'retry', provider: provider.name, attempt: attempts, delayMs: delay });
          await sleep(delay, deadline);
          if (this.#closing !== undefined) return this.#cancelled(started, attempts, trace, probe);
          // The provider may have refused this server's credentials meanwhile: the retry would send them again.
          const refused = this.#holdForRefusal(performance.now());
          if (refused !== undefined) {
            this.#ended('failed', started, attempts, trace);
            return this.#unsent(probe, refused);
          }
          // The breaker may have opened, or another verification's 429 paused calls, during the backoff: no retry
          // goes out while it holds calls back. A pause that ends within the deadline is waited out.
          for (let held = this.#retryHeldBack(); held !== 0; held = this.#retryHeldBack()) {
            if (held === undefined || performance.now() + held >= started + timeout) {
              this.#ended('failed', started, attempts, trace);
              return this.#failed(failure, stale, probe);
            }
            throttled = true;
            await sleep(held, deadline);
            if (this.#closing !== undefined) return this.#cancelled(started, attempts, trace, probe);
          }
        }
      }
    } finally {
      // A provider that failed may have left work running, which this cancels; one that answered may have left a
      // request its answer did not need, running until it ends or the deadline cancels it.
      const leftRunning = deadline.end(!answered, this.#admission.leftRunningEnded);
      if (!leftRunning || this.#admission.leaveRunning()) release();
      this.#live.delete(deadline);
    }
  }

  /**
   * Ends every verification under way now, each with a 503 whose cause says the gate closed (not served stale:
   * the provider did not fail), and answers every later one so: the gate is closing.
   */
  close(): void {
    const closing = new ProviderFailure('timeout', `the gate closed while ${this.provider.name} was asked`);
    this.#closing = closing;
    this.#admission.close();
    for (const deadline of this.#live) deadline.cut(closing);
  }

  /** The 503 a request gets once {@link close} was called, its cause saying so. */
  closedError(): AuthError {
    return this.#unavailable(undefined, this.#closing);
  }

  /** Reports the end of a verification: the `verify` event, the error count, and the trace when one runs. */
  #ended(outcome: 'accepted' | 'rejected' | 'failed', started: number, attempts: number, trace?: VerifyTrace): void {
    const durationMs = performance.now() - started;
    if (outcome === 'failed') this.#policy.counters.errors++;
    this.#policy.emit?.({ type: 'verify', provider: this.provider.name, outcome, durationMs, attempts });
    if (trace !== undefined) {
      trace.outcome = outcome;
      trace.attempts = attempts;
      trace.durationMs = durationMs;
    }
  }

  /** The answer of a verification that {@link close} cut short: its trace ends `cancelled`; no event or count. */
  #cancelled(started: number, attempts: number, trace: VerifyTrace | undefined, probe?: number): AuthError {
    // A probe cut short says nothing of the provider: the next call may probe.
    if (probe !== undefined) this.#breaker?.inconclusive(probe);
    if (trace !== undefined) {
      trace.outcome = 'cancelled';
      trace.attempts = attempts;
      trace.durationMs = performance.now() - started;
    }
    return this.closedError();
  }

  /**
   * The answer after the last failed attempt; `throttled`: a 429's pause (this verification's or another's) was
   * waited out before it (a timeout then says nothing of the provider's health).
   */
  #failed(
    failure: ProviderFailure,
    stale: StaleCopy | undefined,
    probe: number | undefined,
    throttled = false,
  ): AuthContext | AuthError {
    const { provider } = this;
    const misconfigured = failure.kind === 'misconfigured';
    // A refusal of our own credentials says nothing of the provider's health; a 429 asks for a pause, not a verdict on
    // it, and a retry that waited that pause out and then ran out of time is no verdict either.
    if (misconfigured) {
      this.#breaker?.succeeded();
      this.#refusal = failure;
      this.#refusedUntil = performance.now() + REFUSAL_HOLD_MS;
      return providerMisconfigured(provider.name, failure);
    }
    // A 429 paused calls as it came (see #ask); its pause is the Retry-After passed on (see #throttled for stale).
    if (failure.upstreamStatus === 429)
      return this.#throttled(stale, this.#unavailable(this.#pauseMs(failure), failure));
    const retryAfterMs = failure.retryAfter === undefined ? undefined : failure.retryAfter * 1000;
    if (throttled && failure.kind === 'timeout') {
      this.#breaker?.inconclusive(probe);
      return this.#throttled(stale, this.#unavailable(retryAfterMs, failure));
    }
    const now = performance.now();
    if (refusesOneRequest(failure.upstreamStatus)) this.#breaker?.inconclusive(probe);
    else this.#breaker?.failed(now);
    // A failure that finds calls held back (by the breaker it opened, one opened meanwhile, or a 429's pause) says
    // when they go out again, as the requests held back after it are told, unless the provider named its own time.
    const heldBackMs = this.#breaker?.holdsBack(now) ?? 0;
    return this.#staleOr(stale, this.#unavailable(retryAfterMs ?? (heldBackMs > 0 ? heldBackMs : undefined), failure));
  }

  /** How long a 429 pauses calls: its `Retry-After` (1 s when it names none), at most `maxRetryAfter`, in ms. */
  #pauseMs(failure: ProviderFailure): number {
    const asked = failure.retryAfter === undefined ? DEFAULT_THROTTLE_PAUSE_MS : failure.retryAfter * 1000;
    return Math.min(asked, this.#policy.maxRetryAfter);
  }

  /** Pauses calls for a 429's {@link #pauseMs}; returns that pause, or 0 without a breaker (nothing is paused). */
  #pause(failure: ProviderFailure, probe: number | undefined): number {
    if (this.#breaker === undefined) return 0;
    const ms = this.#pauseMs(failure);
    this.#breaker.pause(performance.now(), ms, probe);
    return ms;
  }

  /** 503, with `Retry-After` capped at `maxRetryAfter`; `failure` is its cause, when a provider call failed. */
  #unavailable(retryAfterMs: number | undefined, failure?: ProviderFailure): AuthError {
    // Whole seconds, rounded up, and never past the cap's whole seconds (at least 1: the cap is at least 1000 ms).
    const seconds =
      retryAfterMs === undefined
        ? undefined
        : Math.min(Math.ceil(retryAfterMs / 1000), Math.floor(this.#policy.maxRetryAfter / 1000));
    return providerUnavailable(this.provider.name, seconds, failure);
  }

  /** Closes the breaker and lifts any pause, and any hold after a refusal of this server's credentials. */
  reset(): void {
    this.#breaker?.reset();
    this.#refusal = undefined;
    this.#refusedUntil = 0;
  }

  /**
   * Ms to wait before the next attempt (at least `atLeast`), or undefined when there is none (not retryable, none
   * left, or no time left). A `Retry-After` longer than the backoff wins, up to `maxRetryAfter`.
   */
  #retryDelay(failure: ProviderFailure, attempts: number, deadline: number, atLeast: number): number | undefined {
    const retry = this.#policy.retry;
    if (retry === undefined || !failure.retryable || attempts > retry.retries) return undefined;
    const retryAfter = Math.min((failure.retryAfter ?? 0) * 1000, this.#policy.maxRetryAfter);
    const delay = Math.max(backoffDelay(attempts - 1, retry), retryAfter, atLeast);
    return performance.now() + delay < deadline ? delay : undefined;
  }

  /**
   * Whether a retry may go out now: 0 when it may, the ms left of a 429's pause, or undefined when the breaker is
   * not closed (open, or half-open with its one probe under way): the retry is not sent.
   */
  #retryHeldBack(): number | undefined {
    const breaker = this.#breaker;
    if (breaker === undefined) return 0;
    if (breaker.state !== 'closed') return undefined;
    return breaker.holdsBack(performance.now());
  }

  /** The stale copy, flagged as such, while it may still be served and the credential has not expired; else `error`. */
  #staleOr(stale: StaleCopy | undefined, error: AuthError): AuthContext | AuthError {
    const context = stale?.();
    if (context === undefined || (context.expiresAtMs !== undefined && context.expiresAtMs <= Date.now())) return error;
    this.#policy.counters.stale++;
    this.#policy.emit?.({ type: 'stale', provider: this.provider.name });
    return context.asStale();
  }
}

/** How long a refusal of this server's own credentials answers new verifications without asking, ms. */
const REFUSAL_HOLD_MS = 1000;
