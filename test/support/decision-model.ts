/**
 * A reference model of what a gate may answer, written from the README's promises (cache, staleIfError,
 * invalidate, clear/reset, breaker, the Redis tier), for test/decisions-model.test.ts.
 *
 * Everything that can change an answer is put on one logical clock, in this process: the provider's tokens and
 * faults (set by the test), each gate's forgetting (invalidate, clear, reset, an invalidation heard through Redis),
 * and, on the server in front of the gates, the moment each request reached its gate (`asked`) and the moment the
 * gate settled it (`settled`). A mock provider answers in a callback of its own, between two ticks, so what it said
 * is what the model held after some tick; a gate's decision and the server's record of it happen in one run of
 * microtasks, so no test step falls between them. Times (`performance.now()`, the gates' own clock) bound what the
 * ttl, negativeTtl, staleIfError and breaker rules allow, each widened by `slack` for a loaded machine.
 */

/** The rules the model puts to the test, by the names it counts them under ({@link DecisionModel.tested}). */
export const RULES = {
  hit200: "hit 200: the last verification's answer, within its ttl",
  hit401: "hit 401: the last verification's answer, within its ttl",
  miss200: 'miss 200: the provider said so while asked',
  miss401: 'miss 401: the provider said so while asked',
  accepted: '200: accepted after the last forget, 401 and ttl',
  joined: 'joined: no verification from before a forget',
  due: 'liveness: no 503 for a request alone while the provider answers',
  pool: 'pool token: never a 200',
  random: 'random token: never a 200',
  staleWaited: 'stale: no forget while it waited',
  staleKept: "stale: the last verification's 200, within ttl + staleIfError",
  staleFailing: 'stale: only while the provider fails',
} as const;

/** How far the wall clock (tokens' dates) and `performance.now()` may drift apart within a run, ms. */
const CLOCKS = 20;

/** What the mock provider does with a request. */
export type Mode = 'ok' | 'down' | 'slow' | 'throttled' | 'throttled-pause';

/** The settings the model judges by: the gates' own, and the slack given to every time bound. */
export interface ModelSettings {
  readonly ttl: number;
  readonly negativeTtl: number;
  readonly staleIfError: number;
  readonly timeout: number;
  readonly cooldown: number;
  readonly maxRetryAfter: number;
  /** The shared tier's `localTtl`, when the gates share one. */
  readonly localTtl?: number | undefined;
  readonly slack: number;
}

/** Ticks, each with the time it was taken. */
export class Clock {
  readonly #times: number[] = [performance.now()];

  get now(): number {
    return this.#times.length - 1;
  }

  tick(): number {
    this.#times.push(performance.now());
    return this.#times.length - 1;
  }

  time(seq: number): number {
    return this.#times[seq] as number;
  }

  /** The last tick taken at or before `time` (0 when none). */
  at(time: number): number {
    let low = 0;
    let high = this.#times.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if ((this.#times[mid] as number) <= time) low = mid;
      else high = mid - 1;
    }
    return low;
  }
}

/** A value that changes at ticks. */
export class History<T> {
  readonly changes: { readonly seq: number; readonly value: T }[];

  constructor(initial: T) {
    this.changes = [{ seq: 0, value: initial }];
  }

  set(seq: number, value: T): void {
    this.changes.push({ seq, value });
  }

  /** The value after tick `seq`. */
  at(seq: number): T {
    for (let i = this.changes.length - 1; i >= 0; i--) {
      const change = this.changes[i] as { seq: number; value: T };
      if (change.seq <= seq) return change.value;
    }
    return (this.changes[0] as { value: T }).value;
  }

  /** The ticks in (from, to) at which it changed. */
  changedIn(from: number, to: number): number[] {
    return this.changes.filter((change) => change.seq > from && change.seq < to).map((change) => change.seq);
  }
}

/**
 * Whether `holds` is true after some tick in [from, to): the instants a provider's answer could come from, for a
 * request that reached it after tick `from` and was settled at tick `to`.
 */
export function someInstant<A, B>(
  from: number,
  to: number,
  a: History<A>,
  b: History<B>,
  holds: (a: A, b: B) => boolean,
): boolean {
  if (to <= from) return false;
  const ticks = [from, ...a.changedIn(from, to), ...b.changedIn(from, to)];
  return ticks.some((seq) => holds(a.at(seq), b.at(seq)));
}

/** Whether `holds` is true after every tick in [from, to). */
export function everyInstant<A>(from: number, to: number, a: History<A>, holds: (a: A) => boolean): boolean {
  return [from, ...a.changedIn(from, to)].every((seq) => holds(a.at(seq)));
}

/** What a gate forgot, and why: `heard` is an invalidation another instance sent through the shared tier. */
export interface Forget {
  readonly seq: number;
  readonly token: string | '*';
  readonly kind: 'invalidate' | 'clear' | 'reset' | 'heard';
}

/** A request as the server in front of a gate saw it. */
export interface Decision {
  readonly gate: number;
  /** The credential's model name: a known token, a pool token never accepted, or a random one. */
  readonly token: string;
  readonly kind: 'known' | 'pool' | 'random';
  readonly asked: number;
  /** The tick at which the flight this request waited on started (`asked` unless it joined one). */
  readonly flightStarted: number;
  readonly settled: number;
  /** Answered without a promise: a cache hit (an accepted context, or a cached rejection thrown). */
  readonly sync: boolean;
  /** Joined a verification under way for the same credential. */
  readonly joined: boolean;
  /**
   * For a 200, whether the version carried has the permission the server's route requires: the client must then get
   * the 200, else the guard's 403 (the gate's 200 before it is what the model judges).
   */
  readonly granted: boolean | undefined;
  /** A 200 whose credential had expired by its own date when the gate answered. */
  readonly expired: boolean;
  /** Whether the test waited for it before its next step, and no other request was under way when it was asked. */
  readonly alone: boolean;
  /** The breaker's state when the flight started. */
  readonly breaker: string;
  /** The kind of the provider failure behind a 503 (`timeout`, `unreachable`…), when it names one. */
  readonly failure: string | undefined;
  /** A 503 that ended the request while its flight, which had waited for another instance, went on. */
  readonly waitedOut: boolean;
  readonly status: number;
  readonly stale: boolean | undefined;
  /** The version of the token a 200 carried, or undefined when it named another credential. */
  readonly version: number | undefined;
}

/** A rejection read back from the shared tier: every instance that looks it up before `aliveUntil` takes it. */
export interface SharedRejection {
  readonly token: string;
  readonly seen: number;
  /** `performance.now()` time until which it stands, for every instance (they share `negativeTtl`). */
  readonly aliveUntil: number;
  /** `performance.now()` time until which the tier keeps it: no instance that looks it up before serves a stale copy. */
  readonly keptUntil: number;
}

/**
 * The model: the provider's history, what each gate forgot, the rejections each gate answered, and the checks. A
 * check returns the broken rule's description, or undefined.
 */
export class DecisionModel {
  readonly clock = new Clock();
  readonly mode = new History<Mode>('ok');
  /** Per known or pool token: the version the provider accepts (null: it rejects it). */
  readonly tokens = new Map<string, History<number | null>>();
  readonly forgets: Forget[][];
  /** Per gate and token: ticks at which a 401 for it settled that can anchor later answers. */
  readonly rejections: Map<string, number[]>[];
  readonly shared: SharedRejection[] = [];
  /**
   * Per gate and credential, the verifications that left an answer in the gate's cache (a 200 not stale, or a 401),
   * in the order they settled: those no forget cancelled while they ran.
   */
  readonly landings: Map<string, Decision[]>[];
  /** Credentials a request gave up on while its flight went on (a shared tier's wait): that flight's answer lands unseen. */
  readonly unseen = new Set<string>();
  /** How many times each rule was put to the test (not skipped): a rule never tested proves nothing. */
  readonly tested = new Map<(typeof RULES)[keyof typeof RULES], number>();
  /** `performance.now()` time at which a version of a token expires by its own date (`token~version`). */
  readonly expiries = new Map<string, number>();

  constructor(
    readonly settings: ModelSettings,
    readonly gates: number,
    /** Whether the gates share a tier: clear and reset then forget nothing the tier holds. */
    readonly sharing: boolean,
  ) {
    this.forgets = Array.from({ length: gates }, () => []);
    this.rejections = Array.from({ length: gates }, () => new Map());
    this.landings = Array.from({ length: gates }, () => new Map());
  }

  /** Records a settled request: a landing when it is one, an anchor when it is a 401 for a known token. */
  settled(decision: Decision): void {
    if (decision.waitedOut) this.unseen.add(decision.token);
    if (decision.sync) return;
    if (decision.status === 401 && decision.kind === 'known') this.#anchor(decision);
    const landed = decision.status === 401 || (decision.status === 200 && decision.stale === false);
    if (!landed) return;
    if (this.#forgotIn(decision.gate, decision.token, decision.flightStarted, decision.settled).length > 0) return;
    const map = this.landings[decision.gate] as Map<string, Decision[]>;
    const list = map.get(decision.token) ?? [];
    list.push(decision);
    map.set(decision.token, list);
  }

  /**
   * The answer `gate` kept for `token` at tick `at`, as far as its verifications tell: the last landing before `at`
   * of a flight started after the last forget, or undefined.
   */
  #kept(gate: number, token: string, at: number): Decision | undefined {
    const forgot = this.#forgotIn(gate, token, 0, at).at(-1)?.seq ?? 0;
    const list = (this.landings[gate] as Map<string, Decision[]>).get(token) ?? [];
    let kept: Decision | undefined;
    for (const landing of list) {
      if (
        landing.settled < at &&
        landing.flightStarted > forgot &&
        (kept === undefined || landing.settled > kept.settled)
      ) {
        kept = landing;
      }
    }
    return kept;
  }

  history(token: string): History<number | null> {
    let history = this.tokens.get(token);
    if (history === undefined) {
      history = new History<number | null>(null);
      this.tokens.set(token, history);
    }
    return history;
  }

  #expiry(token: string, version: number): number {
    return this.expiries.get(`${token}~${version}`) ?? Number.POSITIVE_INFINITY;
  }

  /** Whether the provider accepted `version` of `token` (and it had not expired) after some tick in [from, to). */
  accepts(token: string, version: number, from: number, to: number): boolean {
    if (to <= from) return false;
    const history = this.history(token);
    const expiry = this.#expiry(token, version) + CLOCKS;
    return [from, ...history.changedIn(from, to)].some(
      (seq) => history.at(seq) === version && this.clock.time(seq) < expiry,
    );
  }

  /** Whether the provider rejected `token` (unknown, revoked, or past its own date) after some tick in [from, to). */
  rejects(token: string, from: number, to: number): boolean {
    if (to <= from) return false;
    const history = this.history(token);
    const end = this.clock.time(to) + CLOCKS;
    return [from, ...history.changedIn(from, to)].some((seq) => {
      const version = history.at(seq);
      return version === null || this.#expiry(token, version) <= end;
    });
  }

  /** Whether the provider accepted `token` (some version, unexpired) throughout [from, to). */
  acceptsThroughout(token: string, from: number, to: number): boolean {
    const history = this.history(token);
    const end = this.clock.time(to) + CLOCKS;
    return [from, ...history.changedIn(from, to)].every((seq) => {
      const version = history.at(seq);
      return version !== null && this.#expiry(token, version) > end;
    });
  }

  forget(gate: number, token: string | '*', kind: Forget['kind']): void {
    (this.forgets[gate] as Forget[]).push({ seq: this.clock.tick(), token, kind });
  }

  /** Local forgets of `token` by `gate` in (from, to). */
  #forgotIn(gate: number, token: string, from: number, to: number): Forget[] {
    return (this.forgets[gate] as Forget[]).filter(
      (forget) => forget.seq > from && forget.seq < to && (forget.token === '*' || forget.token === token),
    );
  }

  /** Records a settled 401 for a known token, as an anchor when no local forget fell while it was asked. */
  #anchor(decision: Decision): void {
    if (this.#forgotIn(decision.gate, decision.token, decision.flightStarted, decision.settled).length > 0) return;
    const map = this.rejections[decision.gate] as Map<string, number[]>;
    const list = map.get(decision.token) ?? [];
    list.push(decision.settled);
    map.set(decision.token, list);
  }

  #tickBefore(seq: number, ms: number): number {
    return this.clock.at(this.clock.time(seq) - ms);
  }

  /**
   * The tick after which the provider must have accepted the version a 200 carried, for a request asked at
   * `decision.asked` (its flight started at `decision.flightStarted`).
   */
  #acceptedAfter(decision: Decision, stale: boolean): number {
    const { ttl, staleIfError, timeout, slack, localTtl } = this.settings;
    const { gate, token, asked, flightStarted } = decision;
    // Fresh for ttl from when it was stored, kept staleIfError longer; stored at most `timeout` after the provider said so.
    let after = this.#tickBefore(asked, ttl + (stale ? staleIfError : 0) + timeout + slack);
    // Forgotten before the request: only a provider's answer asked for since can stand (with a shared tier, only an
    // invalidation forgets what the tier holds).
    for (const forget of this.#forgotIn(gate, token, 0, asked)) {
      if (this.sharing && (forget.kind === 'clear' || forget.kind === 'reset')) continue;
      after = Math.max(after, forget.seq);
    }
    // A 401 this gate answered for it since: never served again but on a new acceptance.
    for (const settled of (this.rejections[gate] as Map<string, number[]>).get(token) ?? []) {
      if (settled < asked) after = Math.max(after, this.#tickBefore(settled, slack));
    }
    // A rejection in the shared tier, alive when this request's flight looked: taken by every instance, which may
    // still serve its own copy fresh for localTtl, never stale (nor while the tier keeps it, alive or not).
    for (const rejection of this.shared) {
      if (rejection.token !== token || rejection.seen >= flightStarted) continue;
      const voided = this.#voidedAt(rejection);
      const until = stale ? rejection.keptUntil : rejection.aliveUntil;
      if (this.clock.time(flightStarted) >= Math.min(until, voided) - slack) continue;
      const anchor = stale
        ? rejection.seen
        : Math.min(rejection.seen, this.#tickBefore(asked, (localTtl ?? ttl) + timeout + slack));
      after = Math.max(after, anchor);
    }
    return after;
  }

  /**
   * When an invalidation by any gate deleted `rejection` from the shared tier, or an acceptance by any gate replaced
   * it there (Infinity: not yet).
   */
  #voidedAt(rejection: SharedRejection): number {
    let voided = Number.POSITIVE_INFINITY;
    for (const forgets of this.forgets) {
      for (const forget of forgets) {
        if (forget.kind !== 'invalidate' || forget.seq <= rejection.seen) continue;
        if (forget.token !== rejection.token) continue;
        voided = Math.min(voided, this.clock.time(forget.seq));
      }
    }
    for (const landings of this.landings) {
      for (const landing of landings.get(rejection.token) ?? []) {
        if (landing.status !== 200 || landing.settled <= rejection.seen) continue;
        voided = Math.min(voided, this.clock.time(landing.settled));
      }
    }
    return voided;
  }

  #test(rule: (typeof RULES)[keyof typeof RULES]): void {
    this.tested.set(rule, (this.tested.get(rule) ?? 0) + 1);
  }

  /** The broken rule of a settled request, or undefined. */
  check(decision: Decision): string | undefined {
    const { status, stale, sync } = decision;
    if (status !== 200 && status !== 401 && status !== 503) return `status ${status}: only 200, 401 or 503 are due`;
    if (status === 200 && decision.version === undefined) return 'a 200 carrying another credential than the one sent';
    if (status === 200 && decision.expired) return "a 200 past the credential's own expiry";
    // invalidate(), clear() and reset() take effect on the next request: none joins a verification asked for before.
    if (!sync && decision.joined) this.#test(RULES.joined);
    const before = this.#forgotIn(decision.gate, decision.token, decision.flightStarted, decision.asked);
    if (!sync && before.length > 0)
      return `joined a verification started before ${before[0]?.kind} at tick ${before[0]?.seq}`;
    if (sync) return status === 503 ? 'a 503 without a verification' : this.#checkHit(decision);
    if (this.#due(decision)) {
      this.#test(RULES.due);
      if (status === 503) return `a 503 (${decision.failure}) for a request alone while the provider answered`;
    }
    if (status === 200 && stale === true) return this.#checkStale(decision);
    if (status === 200) return this.#checkAccepted(decision);
    if (status === 401) return this.#checkRejected(decision);
    return this.#checkUnavailable(decision);
  }

  /**
   * A cache hit (answered without a promise) is the answer the gate's last verification of the credential left, fresh:
   * a 200 within `ttl` of it (and the shared tier's `localTtl`), a 401 within `negativeTtl`; nothing after a forget.
   */
  #checkHit(decision: Decision): string | undefined {
    const { gate, token, asked, status, stale, version } = decision;
    if (status === 200 && stale !== false) return 'a cache hit was served stale';
    if (this.unseen.has(token)) return undefined;
    this.#test(status === 200 ? RULES.hit200 : RULES.hit401);
    const kept = this.#kept(gate, token, asked);
    if (kept === undefined) return `a cache hit (${status}) with nothing kept for it since the last forget`;
    if (kept.status !== status || kept.version !== version) {
      return `a cache hit (${status}, version ${version}) where the last verification left ${kept.status}, version ${kept.version} (request #${kept.asked})`;
    }
    const { ttl, negativeTtl, localTtl } = this.settings;
    const limit = Math.min(status === 200 ? ttl : negativeTtl, localTtl ?? Number.POSITIVE_INFINITY);
    const age = this.clock.time(asked) - this.clock.time(kept.settled);
    if (age >= limit + 1)
      return `a cache hit (${status}) ${Math.round(age)} ms after its verification, past ${limit} ms`;
    return undefined;
  }

  /**
   * A verification's 200 or 401: the provider said so while it ran; with a shared tier, or else another instance's
   * verification left it in the tier within `ttl` (a 401: `negativeTtl`).
   */
  #fromProvider(decision: Decision): boolean {
    const { flightStarted, settled, token, status, version } = decision;
    this.#test(status === 200 ? RULES.miss200 : RULES.miss401);
    const said =
      status === 200
        ? this.accepts(token, version as number, flightStarted, settled)
        : this.rejects(token, flightStarted, settled);
    if (said && someInstant(flightStarted, settled, this.mode, this.mode, (mode) => mode === 'ok')) return true;
    if (!this.sharing) return false;
    // A flight whose requests gave up waiting stored its answer with no request to show it: nothing to judge by.
    if (this.unseen.has(token)) return true;
    const limit = status === 200 ? this.settings.ttl : this.settings.negativeTtl;
    const since = this.clock.time(flightStarted) - limit - 1;
    return this.landings.some((map) =>
      (map.get(token) ?? []).some(
        (landing) =>
          landing.status === status &&
          landing.version === decision.version &&
          landing.settled < settled &&
          this.clock.time(landing.settled) > since,
      ),
    );
  }

  #checkUnknown(decision: Decision): string | undefined {
    const { status, kind } = decision;
    this.#test(kind === 'pool' ? RULES.pool : RULES.random);
    if (status === 200) return `a ${kind} token the provider never accepted was let through (200)`;
    if (status === 401 && !this.#fromProvider(decision)) {
      return 'a 401 that no verification of it was answered';
    }
    return undefined;
  }

  #checkAccepted(decision: Decision): string | undefined {
    if (decision.kind !== 'known') return this.#checkUnknown(decision);
    const { token, version, settled } = decision;
    if (!this.#fromProvider(decision)) {
      return `a 200 (version ${version}) that the provider did not give while it was asked`;
    }
    this.#test(RULES.accepted);
    const after = this.#acceptedAfter(decision, false);
    if (!this.accepts(token, version as number, after, settled)) {
      return `a 200 (version ${version}) that the provider did not accept after tick ${after}`;
    }
    return undefined;
  }

  /**
   * A stale copy: the 200 the gate's last verification left, within `ttl` plus `staleIfError`; served only while
   * the provider fails (or an open breaker holds calls back after failures), never after a forget while it waited.
   */
  #checkStale(decision: Decision): string | undefined {
    if (decision.kind !== 'known') return this.#checkUnknown(decision);
    const { token, version, settled, flightStarted, gate, asked, breaker } = decision;
    this.#test(RULES.staleWaited);
    const forgot = this.#forgotIn(gate, token, asked, settled);
    if (forgot.length > 0) return `served stale after ${forgot[0]?.kind} at tick ${forgot[0]?.seq}, while it waited`;
    if (!this.unseen.has(token)) {
      this.#test(RULES.staleKept);
      const kept = this.#kept(gate, token, flightStarted);
      if (kept === undefined || kept.status !== 200 || kept.version !== version) {
        return `a stale copy (version ${version}) of what the gate did not keep (last: ${kept?.status}, version ${kept?.version})`;
      }
      const { ttl, staleIfError } = this.settings;
      const age = this.clock.time(flightStarted) - this.clock.time(kept.settled);
      if (age >= ttl + staleIfError + 1) return `a stale copy ${Math.round(age)} ms old, past ttl + staleIfError`;
    }
    const after = this.#acceptedAfter(decision, true);
    if (!this.accepts(token, version as number, after, settled)) {
      return `a stale 200 (version ${version}) that the provider did not accept after tick ${after}`;
    }
    // A breaker closed when the flight started holds nothing back: the provider failed during the flight (or failed
    // calls sent just before it opened the breaker). One open then was opened by failures within its cooldown, or
    // stays open past it while a 429's pause (from a call sent before it opened) answers its admissions; the README
    // lets a stale copy be served then ("unless the breaker is open too"), and while it is half-open.
    const { cooldown, timeout, slack, maxRetryAfter } = this.settings;
    if (breaker === 'half-open') return undefined;
    this.#test(RULES.staleFailing);
    const held = breaker === 'open' ? Math.max(cooldown, maxRetryAfter + timeout) : 0;
    const from = this.#tickBefore(flightStarted, held + timeout + slack);
    const failing = (mode: Mode) => mode === 'down' || mode === 'slow';
    if (!someInstant(from, settled, this.mode, this.mode, failing)) {
      return `served stale while the provider did not fail (breaker ${breaker}, ticks ${from} to ${settled})`;
    }
    return undefined;
  }

  #checkRejected(decision: Decision): string | undefined {
    if (decision.kind !== 'known') return this.#checkUnknown(decision);
    if (!this.#fromProvider(decision)) {
      return 'a 401 for a token the provider did not reject while it was asked';
    }
    return undefined;
  }

  #checkUnavailable(decision: Decision): string | undefined {
    return decision.kind === 'known' ? undefined : this.#checkUnknown(decision);
  }

  /**
   * Whether `decision` is due an answer rather than a 503: asked alone, with nothing to hold it back, for a token the
   * provider knew throughout the time a rejection of it could still be cached (or one it never knew).
   */
  #due(decision: Decision): boolean {
    if (!decision.alone || !this.#healthy(decision)) return false;
    if (decision.kind !== 'known') return true;
    const { negativeTtl, timeout, slack } = this.settings;
    const from = this.#tickBefore(decision.asked, negativeTtl + timeout + slack);
    return this.acceptsThroughout(decision.token, from, decision.settled);
  }

  /**
   * Whether nothing could hold `decision` back: its breaker closed when it was asked, the provider answering since
   * any call that was still on its way then (and while it was asked), and no 429 whose pause could still run. A 503
   * of the gate's own deadline is the machine's load, not the gate's decision, and is let be.
   */
  #healthy(decision: Decision): boolean {
    const { timeout, slack, maxRetryAfter } = this.settings;
    const { asked, settled, breaker, failure } = decision;
    if (breaker !== 'closed' || failure === 'timeout') return false;
    const since = this.#tickBefore(asked, timeout + slack);
    const unpaused = this.#tickBefore(asked, maxRetryAfter + timeout + slack);
    return (
      everyInstant(since, settled, this.mode, (mode) => mode === 'ok') &&
      everyInstant(unpaused, settled, this.mode, (mode) => mode !== 'throttled-pause')
    );
  }
}
