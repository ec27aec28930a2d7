/**
 * One seeded run of test/decisions-model.test.ts: real gates (one, or two sharing a real redis-server) behind the
 * decision server, a mock provider, and a few hundred random steps, each request judged by the model
 * (decision-model.ts) and the client's view of it (decision-harness.ts), `stats()` after every step.
 *
 * The steps: the provider accepts a new version of a token (now and then one that expires within the run) or
 * revokes one; fails (5xx, a reset connection, garbage, a wrong shape), turns slow past the deadline, throttles (a
 * 429, with or without a pause) or comes back, with some latency; requests with known, never accepted or random
 * credentials, awaited or left running, alone or in bursts; invalidate() (with Redis, revoke() too), clear(),
 * reset(); sleeps. A few steps are short sequences that reach what single steps seldom do: an outage once a token's
 * answer has aged past its ttl (a stale copy's moment), maybe after the provider revoked it and a gate saw it
 * rejected; the provider back past a breaker's cooldown, then a request alone; a forget on a keep-alive connection
 * or while a verification is under way.
 *
 * A seed replays the same steps, not the same timings: the rules allow only what is safe either way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createGate, type Gate, type GateOptions, type Provider } from '../../src/index.js';
import { type RedisCache, redisCache } from '../../src/redis/index.js';
import { cacheKey } from '../../src/store.js';
import type { MockFault } from '../../src/testing/index.js';
import {
  type Counters,
  checkReset,
  checkResponse,
  checkStats,
  type DecisionServer,
  keepAliveClient,
  type ProviderKit,
  startDecisionServer,
  verdictKey,
} from './decision-harness.js';
import { DecisionModel, type Mode, type ModelSettings, RULES } from './decision-model.js';
import { adminClient, type ConnectedClient, connectClient } from './redis-instances.js';
import type { RedisServer } from './redis-server.js';

const KNOWN = ['k0', 'k1', 'k2', 'k3'];
/** Tokens the provider never accepts, asked again and again: their rejections are cached. */
const POOL = ['p0', 'p1'];

export interface RunOptions {
  readonly seed: number;
  readonly kit: () => Promise<ProviderKit>;
  readonly settings: ModelSettings;
  readonly steps: number;
  readonly gates: number;
  /** A redis-server the gates share a tier on (with two gates). */
  readonly redis?: RedisServer | undefined;
  /** Whether every rule must have been put to the test: a run that never reached one proves nothing of it. */
  readonly everyRule: boolean;
}

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DOWN: readonly MockFault[] = [
  { kind: 'status', status: 503 },
  { kind: 'status', status: 500 },
  { kind: 'status', status: 502 },
  { kind: 'reset' },
  { kind: 'garbage' },
  { kind: 'wrong-shape' },
];

/** The mock's fault for `mode`; `pick` in [0, 1) chooses among the ways to be down. */
function faultOf(mode: Mode, pick: number, timeout: number): MockFault | undefined {
  switch (mode) {
    case 'ok':
      return undefined;
    case 'down':
      return DOWN[Math.floor(pick * DOWN.length)];
    case 'slow':
      return { kind: 'delay', ms: timeout + 150 };
    case 'throttled':
      return { kind: 'status', status: 429, retryAfter: 0 };
    case 'throttled-pause':
      // No Retry-After: calls pause for 1 s.
      return { kind: 'status', status: 429 };
  }
}

/** Runs `options.seed`; throws the first broken rule, with the seed, the step, and the steps that led to it. */
export async function runModel(options: RunOptions): Promise<void> {
  const run = await DecisionRun.start(options);
  try {
    for (let i = 0; i < options.steps; i++) {
      await run.step();
      // A turn of the event loop, or a few ms: requests left running reach their gate between steps.
      await (run.rng() < 0.5 ? new Promise((resolve) => setImmediate(resolve)) : sleep(Math.floor(run.rng() * 5)));
      run.checkAll(i);
    }
    await run.settle();
    run.checkAll(options.steps);
    if (process.env.MODEL_TRACE === 'steps') console.log(run.steps.join('\n'));
    if (process.env.MODEL_TRACE === 'rules')
      console.log(`seed ${options.seed}`, JSON.stringify(Object.fromEntries(run.model.tested)));
    if (options.everyRule) {
      const untested = Object.values(RULES).filter((rule) => !run.model.tested.has(rule));
      if (untested.length > 0)
        throw new Error(`seed ${options.seed}: rules never put to the test: ${untested.join('; ')}`);
    }
  } finally {
    await run.close();
  }
}

class DecisionRun {
  readonly rng: () => number;
  readonly model: DecisionModel;
  readonly steps: string[] = [];
  readonly #options: RunOptions;
  readonly #settings: ModelSettings;
  readonly #kit: ProviderKit;
  readonly #providers: readonly Provider[];
  readonly #gates: readonly Gate[];
  readonly #tiers: readonly RedisCache[];
  readonly #clients: readonly ConnectedClient[];
  readonly #admin: ReturnType<typeof adminClient> | undefined;
  readonly #server: DecisionServer;
  readonly #client = keepAliveClient(3);
  readonly #sharing: boolean;
  readonly #versions = new Map<string, number>();
  readonly #pending = new Set<Promise<void>>();
  readonly #violations: string[] = [];
  readonly #sharedFailures: string[];
  /** Each gate's counters at the last check (undefined after a reset). */
  readonly #previous: (Counters | undefined)[];
  /** Upstream calls counted by gates before their last reset. */
  #upstreamBeforeResets = 0;
  #nextId = 0;
  #randoms = 0;

  private constructor(
    options: RunOptions,
    parts: {
      kit: ProviderKit;
      model: DecisionModel;
      providers: Provider[];
      gates: Gate[];
      tiers: RedisCache[];
      clients: ConnectedClient[];
      admin: ReturnType<typeof adminClient> | undefined;
      server: DecisionServer;
      sharedFailures: string[];
    },
  ) {
    this.#options = options;
    this.#settings = options.settings;
    this.#sharing = options.redis !== undefined;
    this.rng = prng(options.seed);
    this.model = parts.model;
    this.#kit = parts.kit;
    this.#providers = parts.providers;
    this.#gates = parts.gates;
    this.#tiers = parts.tiers;
    this.#clients = parts.clients;
    this.#admin = parts.admin;
    this.#server = parts.server;
    this.#sharedFailures = parts.sharedFailures;
    this.#previous = parts.gates.map(() => undefined);
  }

  /** The mock, the gates (each with its own Redis client and tier when sharing) and the server in front of them. */
  static async start(options: RunOptions): Promise<DecisionRun> {
    const settings = options.settings;
    const sharing = options.redis !== undefined;
    const model = new DecisionModel(sharing ? settings : { ...settings, localTtl: undefined }, options.gates, sharing);
    const kit = await options.kit();
    const providers: Provider[] = [];
    const gates: Gate[] = [];
    const tiers: RedisCache[] = [];
    const clients: ConnectedClient[] = [];
    const sharedFailures: string[] = [];
    const admin = options.redis === undefined ? undefined : adminClient(options.redis.port);
    await admin?.flushall();
    /** Store keys of the known and pool tokens, to name the invalidations a tier hears. */
    const names = new Map<string, string>();
    for (let g = 0; g < options.gates; g++) {
      const provider = kit.provider();
      providers.push(provider);
      let tier: RedisCache | undefined;
      if (options.redis !== undefined) {
        const connected = await connectClient('ioredis 6', options.redis.port);
        clients.push(connected);
        // A generous Redis timeout: the model's Redis rules hold for a tier that answers, which a loaded machine
        // may delay past the default 50 ms.
        tier = redisCache(connected.client, { timeout: 1000, localTtl: settings.localTtl, leaseTime: 400 });
        await tier.ready();
        tiers.push(tier);
      }
      const gateOptions: GateOptions = {
        providers: [provider],
        cache: { ttl: settings.ttl, negativeTtl: settings.negativeTtl, staleIfError: settings.staleIfError },
        timeout: settings.timeout,
        retry: { retries: 1, baseDelay: 10, maxDelay: 40 },
        breaker: { threshold: 3, cooldown: settings.cooldown },
        maxRetryAfter: settings.maxRetryAfter,
        sharedCache: tier,
        onEvent: (event) => {
          if (event.type === 'shared_cache_error') sharedFailures.push(`${event.operation}:${event.reason}`);
        },
      };
      gates.push(createGate(gateOptions));
      // After the gate's own listener: the gate has forgotten the key when this one hears it.
      tier?.onInvalidate((key) => model.forget(g, names.get(key) ?? '?', 'heard'));
    }
    const scope = (providers[0] as Provider).cacheScope;
    for (const token of [...KNOWN, ...POOL]) {
      const credential = (providers[0] as Provider).extract(kit.request(token) as never, 'api');
      if (credential !== undefined && 'secret' in credential) names.set(cacheKey(scope, credential.secret), token);
    }
    const server = await startDecisionServer(gates, kit, model);
    return new DecisionRun(options, {
      kit,
      model,
      providers,
      gates,
      tiers,
      clients,
      admin,
      server,
      sharedFailures,
    });
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.rng() * items.length)] as T;
  }

  #randomToken(): string {
    return `rnd${++this.#randoms}x${Math.floor(this.rng() * 1e9)}`;
  }

  /** Reads back the verdict the tier holds for `token`: a rejection there binds every instance while the tier keeps it. */
  async #readSharedRejection(token: string): Promise<void> {
    const key = verdictKey(this.#providers[0] as Provider, this.#kit.request(token));
    // Redis may keep a rejection past its own `until` (as long as the value it replaced): its key's time says.
    const read = await this.#admin?.multi().get(key).pttl(key).exec();
    const seen = this.model.clock.tick();
    const [value, pttl] = [read?.[0]?.[1], read?.[1]?.[1]];
    if (typeof value !== 'string' || typeof pttl !== 'number' || pttl <= 0) return;
    const verdict = JSON.parse(value) as { ok: boolean; until: number; storedAt?: number };
    if (verdict.ok) return;
    const alive = Math.min(verdict.until, (verdict.storedAt ?? verdict.until) + this.#settings.negativeTtl);
    const [now, wallNow] = [performance.now(), Date.now()];
    this.model.shared.push({ token, seen, aliveUntil: now + (alive - wallNow), keptUntil: now + pttl });
  }

  /** Sends a request for `token` to gate `g`; returns its promise when `awaited`, else leaves it running. */
  #request(g: number, token: string, kind: 'known' | 'pool' | 'random', awaited: boolean): Promise<void> | undefined {
    const id = ++this.#nextId;
    const server = this.#server;
    server.meta.set(id, { gate: g, token, kind, awaited });
    const { path, headers } = this.#kit.http(token);
    this.steps.push(`#${id} ${awaited ? 'request' : 'background request'} ${kind} ${token} at gate ${g}`);
    const done = this.#client.send(`${server.url}/${g}${path}`, { ...headers, 'x-model-id': String(id) }).then(
      async (response) => {
        const decision = server.decisions.get(id);
        if (decision === undefined) {
          this.#violations.push(`#${id}: answered ${response.status} with no decision recorded`);
          return;
        }
        const broken = checkResponse(response, decision, this.#settings.maxRetryAfter) ?? this.model.check(decision);
        if (broken !== undefined) {
          const crash = server.crashes.get(id);
          this.#violations.push(
            `#${id} (${kind} ${token} at gate ${g}): ${broken}\n  ${JSON.stringify(decision)}${crash === undefined ? '' : `\n  ${crash}`}`,
          );
        }
        const why = decision.status === 503 ? ` (${decision.failure ?? 'held back'}, breaker ${decision.breaker})` : '';
        const how = `${decision.stale === true ? ' stale' : ''}${decision.sync ? ' (cached)' : ''}${why}`;
        this.steps.push(`  #${id}: ${decision.status}${how}`);
        if (this.#sharing && decision.status === 401 && kind === 'known') await this.#readSharedRejection(token);
      },
      (error: unknown) => {
        this.#violations.push(`#${id}: the request failed at the client: ${String(error)}`);
      },
    );
    if (awaited) return done;
    this.#pending.add(done);
    void done.finally(() => this.#pending.delete(done));
    return undefined;
  }

  #accept(token: string): void {
    const version = (this.#versions.get(token) ?? 0) + 1;
    this.#versions.set(token, version);
    // Now and then a version that expires by its own date within the run (where the API carries one).
    const expiresIn = this.rng() < 0.25 ? Math.floor(100 + this.rng() * 500) : undefined;
    const expiry = this.#kit.accept(token, version, expiresIn);
    if (expiry !== undefined) {
      this.model.expiries.set(`${token}~${version}`, expiry - Date.now() + performance.now());
    }
    this.model.history(token).set(this.model.clock.tick(), version);
    this.steps.push(
      `provider accepts ${token} as version ${version}${expiry === undefined ? '' : `, for ${expiresIn} ms`}`,
    );
  }

  #revoke(token: string): void {
    this.#kit.revoke(token, this.rng());
    this.model.history(token).set(this.model.clock.tick(), null);
    this.steps.push(`provider revokes ${token}`);
  }

  #changeMode(given?: Mode): void {
    const r = this.rng() * 9.25;
    const mode: Mode =
      given ?? (r < 6 ? 'ok' : r < 8 ? 'down' : r < 8.6 ? 'slow' : r < 9.1 ? 'throttled' : 'throttled-pause');
    const fault = faultOf(mode, this.rng(), this.#settings.timeout);
    const mock = this.#kit.mock;
    mock.fault = fault;
    this.model.mode.set(this.model.clock.tick(), mode);
    // Answers that take a while, so that verifications overlap the steps after them.
    mock.latency = this.rng() < 0.5 ? 0 : Math.floor(2 + this.rng() * 30);
    this.steps.push(
      `provider ${mode}${fault === undefined ? '' : ` (${JSON.stringify(fault)})`}, latency ${mock.latency} ms`,
    );
  }

  /** invalidate() `token` at gate `g` (with Redis, revoke() half the time); `what` in [0, 1) may make it clear() or reset(). */
  async #forget(g: number, token: string, what: number): Promise<void> {
    const gate = this.#gates[g] as Gate;
    if (what < 0.86) {
      if (this.#sharing && this.rng() < 0.5) {
        const confirmed = gate.revoke(this.#kit.request(token));
        this.model.forget(g, token, 'invalidate');
        this.steps.push(`gate ${g}.revoke(${token})`);
        if (!(await confirmed)) this.#violations.push(`revoke(${token}) at gate ${g} resolved false with Redis up`);
      } else {
        gate.invalidate(this.#kit.request(token));
        this.model.forget(g, token, 'invalidate');
        this.steps.push(`gate ${g}.invalidate(${token})`);
      }
    } else if (what < 0.96) {
      gate.clear();
      this.model.forget(g, '*', 'clear');
      this.steps.push(`gate ${g}.clear()`);
    } else {
      this.#upstreamBeforeResets += gate.stats().upstreamCalls;
      gate.reset();
      this.model.forget(g, '*', 'reset');
      Object.assign(this.#server.seen[g] as object, { hits: 0, misses: 0, staleFlights: 0, failedFlights: 0 });
      this.#previous[g] = undefined;
      this.steps.push(`gate ${g}.reset()`);
      const broken = checkReset(gate);
      if (broken !== undefined) this.#violations.push(broken);
    }
  }

  /** A few ms: a request left running reaches its gate meanwhile. */
  #moment(): Promise<void> {
    return sleep(2 + Math.floor(this.rng() * 6));
  }

  /** One random step. */
  async step(): Promise<void> {
    const roll = this.rng() * 22.6;
    const g = Math.floor(this.rng() * this.#gates.length);
    if (roll < 9) await this.#request(g, this.#pick(KNOWN), 'known', this.rng() < 0.7);
    else if (roll < 9.8) await this.#outage(g);
    else if (roll < 10.2) await this.#recovery(g);
    else if (roll < 11.3) {
      if (this.rng() < 0.5) await this.#request(g, this.#pick(POOL), 'pool', this.rng() < 0.7);
      else await this.#request(g, this.#randomToken(), 'random', this.rng() < 0.7);
    } else if (roll < 12) {
      // A burst for one token, across the gates: requests that join one verification (or, with Redis, one lease).
      const token = this.#pick(KNOWN);
      const count = 2 + Math.floor(this.rng() * 2);
      for (let i = 0; i < count; i++) this.#request(Math.floor(this.rng() * this.#gates.length), token, 'known', false);
    } else if (roll < 14) this.#accept(this.#pick(KNOWN));
    else if (roll < 15.2) this.#revoke(this.#pick(KNOWN));
    else if (roll < 17.4) this.#changeMode();
    else if (roll < 18.6) await this.#forget(g, this.rng() < 0.8 ? this.#pick(KNOWN) : this.#pick(POOL), this.rng());
    else if (roll < 20) await this.#forgetBetween(g);
    else {
      const r = this.rng();
      const ms = Math.floor(r < 0.6 ? 1 + this.rng() * 20 : r < 0.9 ? 20 + this.rng() * 60 : 80 + this.rng() * 120);
      this.steps.push(`sleep ${ms} ms`);
      await sleep(ms);
    }
  }

  /**
   * An outage once an accepted token's answer has aged past its ttl: the stale copy's moment (a 429 is no outage).
   * Now and then the provider revokes it first and a gate (with Redis, the other one) sees it rejected: never served
   * stale after that.
   */
  async #outage(g: number): Promise<void> {
    const token = this.#pick(KNOWN);
    if (this.model.history(token).at(this.model.clock.now) === null) this.#accept(token);
    if (this.model.mode.at(this.model.clock.now) !== 'ok') this.#changeMode('ok');
    await this.#request(g, token, 'known', true);
    this.steps.push('sleep past ttl');
    await sleep(this.#settings.ttl + Math.floor(this.rng() * 60));
    if (this.rng() < 0.3) {
      this.#revoke(token);
      await this.#request(this.#sharing ? 1 - g : g, token, 'known', true);
    }
    const r = this.rng();
    this.#changeMode(r < 0.6 ? 'down' : r < 0.77 ? 'slow' : r < 0.95 ? 'throttled' : 'throttled-pause');
    if (this.rng() < 0.3) {
      this.#request(g, token, 'known', false);
      await this.#moment();
      await this.#forget(g, token, this.rng());
    }
    await this.#request(g, token, 'known', this.rng() < 0.7);
    if (this.rng() < 0.5) this.#changeMode('ok');
  }

  /** The provider back for longer than a breaker's cooldown: a request alone is due its answer (no 503). */
  async #recovery(g: number): Promise<void> {
    if (this.model.mode.at(this.model.clock.now) !== 'ok') this.#changeMode('ok');
    this.steps.push('sleep past the cooldown');
    await sleep(this.#settings.cooldown + 20);
    await this.settle();
    if (this.rng() < 0.75) {
      const token = this.#pick(KNOWN);
      if (this.model.history(token).at(this.model.clock.now) === null) this.#accept(token);
      await this.#request(g, token, 'known', true);
    } else {
      await this.#request(g, this.#randomToken(), 'random', true);
    }
  }

  /**
   * A forget between requests for one token: on the same keep-alive connection (its memo), or while a verification
   * of it is under way (its answer, and its stale copy, are then for the requests already waiting), maybe after the
   * provider changed its mind about it.
   */
  async #forgetBetween(g: number): Promise<void> {
    const token = this.#pick(KNOWN);
    const scenario = this.rng();
    if (scenario < 0.35) {
      await this.#request(g, token, 'known', true);
      await this.#forget(g, token, this.rng());
    } else {
      this.#request(g, token, 'known', false);
      await this.#moment();
      if (scenario > 0.7) {
        if (this.rng() < 0.5) this.#revoke(token);
        else this.#accept(token);
        await this.#moment();
      }
      await this.#forget(g, token, this.rng());
    }
    await this.#request(g, token, 'known', this.rng() < 0.7);
  }

  /** Waits for every request left running. */
  async settle(): Promise<void> {
    await Promise.all(this.#pending);
  }

  /** `stats()` of every gate, the provider's call count, the tier's health; throws what broke, after step `at`. */
  checkAll(at: number): void {
    const server = this.#server;
    this.#gates.forEach((gate, g) => {
      const seen = server.seen[g] as (typeof server.seen)[number];
      const { counters, broken } = checkStats(gate, seen, this.#previous[g], server.inFlight === 0, !this.#sharing);
      this.#previous[g] = counters;
      if (broken !== undefined) this.#violations.push(`gate ${g}: ${broken}`);
    });
    const made = this.#upstreamBeforeResets + this.#gates.reduce((sum, gate) => sum + gate.stats().upstreamCalls, 0);
    const received = this.#kit.calls();
    if (received > made) this.#violations.push(`the provider got ${received} calls, the gates made ${made}`);
    if (this.#sharedFailures.length > 0) {
      this.#violations.push(
        `the shared tier failed (the model's Redis rules need it up): ${this.#sharedFailures.join(', ')}`,
      );
    }
    if (this.#violations.length === 0) return;
    const tail = this.steps.slice(-40).join('\n  ');
    throw new Error(`seed ${this.#options.seed}, step ${at}: ${this.#violations.join('\n')}\nlast steps:\n  ${tail}`);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#pending);
    this.#client.close();
    await this.#server.close();
    await Promise.all(this.#gates.map((gate) => gate.close()));
    await Promise.all(this.#tiers.map((tier) => tier.close()));
    await Promise.all(this.#clients.map((connected) => connected.close()));
    this.#admin?.disconnect();
    await this.#kit.mock.close();
  }
}
