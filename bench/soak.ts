/**
 * Soak benchmark: mixed traffic at high concurrency through a real
 * Express app while the providers flap.
 *
 *   npm run bench:soak                       # 60 s
 *   BENCH_SOAK_SECONDS=20 npm run bench:soak  # the CI form: 20 s
 *   BENCH_SOAK_SECONDS=20 CONNECTIONS=50 FLOOD_CONNECTIONS=20 npm run bench:soak
 *
 * One file, four roles, each its own process:
 * - entry: re-runs itself with `--expose-gc` (to read the heap after a forced GC);
 * - server (with gc): the gate and an Express app on 127.0.0.1, and a schedule
 *   that switches the providers' fault every FLAP_MS (healthy, reset, 500s,
 *   slow, flapping, garbage, 429s); RSS and heap are this process's;
 * - mocks: the mock OnlineOrNot and Partoo servers, apart from the server's
 *   event loop as real providers would be;
 * - load: CONNECTIONS concurrent loops, each on its own keep-alive connection,
 *   of undici requests with mixed credentials (half of them the loop's
 *   previous request again, as clients send the same token), each answer
 *   checked against what the credential deserves; and a flooding client,
 *   FLOOD_CONNECTIONS loops from another address (127.0.0.2) sending Bearer
 *   tokens no one has seen, whose every 2xx is a wrong decision.
 *
 * Revocations run through the whole soak: every REVOKE_MS the server takes
 * the next of the revocable Bearer tokens away from the OnlineOrNot mock,
 * then revokes it in both gates, then tells the load process, for which any
 * 2xx to a request sent after that (stale included, whatever the providers'
 * phase) is a wrong decision. Beside them, every REVOKE_MS the provider drops
 * the next of the droppable Bearer tokens without either gate being told: the
 * gates may go on serving such a token (cached, then stale while the provider
 * fails) until they see the provider reject it, and once a route has answered
 * 401 for it, any 2xx from that route to a request sent after that answer came
 * is a wrong decision (a token the provider rejected is never served stale).
 *
 * Bearer requests go to two routes: `/checks`, behind a gate with both
 * providers, and `/bearer/checks`, behind a Bearer-only gate, the kind whose
 * connections also remember the context their last header resolved to.
 *
 * Prints requests served, status breakdown (overall, per credential kind and
 * per provider phase), wrong decisions (must be 0), latency percentiles, RSS
 * over time, and heap after a forced GC. Exits 1 when any decision was wrong,
 * any status was unexpected, the server answered 500, a request failed at the
 * client (a reset, a hang past 15 s, a body that is not JSON), fewer than
 * {@link MIN_PASS_SHARE} of the requests of a valid credential's kind passed
 * (the providers fail on purpose, but stale answers and the healthy phases
 * let most through), or no stale answer was served at all. Every loop is
 * bounded in time and count.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { Client } from 'undici';
import { authenticate, requires } from '../adapters/express.js';
import { AuthError, createGate, type GateEvent, onlineOrNot, partoo } from '../src/index.js';
import { type MockFault, mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';

const DURATION_S = positive('BENCH_SOAK_SECONDS', positive('DURATION', 60));
const CONNECTIONS = positive('CONNECTIONS', 100);
/** Loops of the flooding client, each on its own keep-alive connection from {@link FLOOD_ADDRESS}. */
const FLOOD_CONNECTIONS = positive('FLOOD_CONNECTIONS', 50, { zero: true });
/** The flooding client's address: the gate shares its verifications fairly between addresses. */
const FLOOD_ADDRESS = '127.0.0.2';
/** Far above what one core can serve: a count bound on top of the time bound. */
const MAX_REQUESTS = DURATION_S * 100_000;

/** Ms between two revocations. */
const REVOKE_MS = 500;
/**
 * The share of the requests of each valid credential's kind that must pass (200). A gate that refuses valid users
 * (a 503 for each, or a dropped connection) fails the soak even though each single answer could be right, and so does
 * one that serves no stale answer while the providers fail (about 0.6 here, against 0.9 for the gate, which serves none
 * while a provider throttles it: the 429s phase).
 */
const MIN_PASS_SHARE = 0.75;

const READ = 'uptime_checks (read)';
const API_KEY = 'soak-partoo-api-key';
const GATE_TIMEOUT_MS = 500;
const SLOW_MS = 1500;

function positive(name: string, fallback: number, { zero = false } = {}): number {
  const raw = process.env[name];
  const value = raw === undefined ? fallback : Number(raw);
  if (!(Number.isFinite(value) && (value > 0 || (zero && value === 0)))) {
    throw new RangeError(`${name} must be a positive number${zero ? ' or 0' : ''}`);
  }
  return value;
}

// ---- the credentials -------------------------------------------------------------

/** Bearer tokens the OnlineOrNot mock accepts, with `uptime_checks (read)`. */
const VALID_TOKENS = Array.from({ length: 8 }, (_, i) => ({ token: `soak-valid-${i}-4f9a2c`, subject: `tok-${i}` }));
/** Accepted, but without the permission `/checks` requires. */
const UNPERMITTED_TOKENS = Array.from({ length: 2 }, (_, i) => ({
  token: `soak-noperm-${i}-77d1`,
  subject: `tok-np-${i}`,
}));
/** Bearer tokens accepted with the permission until the server revokes them, one every {@link REVOKE_MS}, in order. */
const REVOCABLE_TOKENS = Array.from({ length: Math.ceil((DURATION_S * 1000) / REVOKE_MS) + 8 }, (_, i) => ({
  token: `soak-revocable-${i}-c0d2`,
  subject: `tok-rev-${i}`,
}));
/** Bearer tokens accepted with the permission until the provider drops them, one every {@link REVOKE_MS}, in order. */
const DROPPABLE_TOKENS = Array.from({ length: Math.ceil((DURATION_S * 1000) / REVOKE_MS) + 8 }, (_, i) => ({
  token: `soak-droppable-${i}-e5a1`,
  subject: `tok-drop-${i}`,
}));
/** Connection tokens the Partoo mock accepts (the gate grants them `uptime_checks (read)`). */
const VALID_CONNECTIONS = Array.from({ length: 4 }, (_, i) => ({
  userId: `soak-user-${i}`,
  token: `soak-conn-${i}-b3e8`,
}));

/**
 * Request kinds and the statuses that are right for them. 503 is right for
 * every credential the gate has to ask a provider about, since the providers
 * fail on purpose most of the time.
 */
const KINDS = {
  /** Valid bearer token with the permission. */
  valid: { weight: 30, allowed: [200, 503] },
  /** Valid bearer token without the permission. */
  unpermitted: { weight: 5, allowed: [403, 503] },
  /** Well-formed bearer token the provider does not know. */
  invalid: { weight: 15, allowed: [401, 503] },
  /** Malformed Authorization header (or two of them). */
  malformed: { weight: 10, allowed: [400] },
  /** No credential, or another scheme. */
  missing: { weight: 10, allowed: [401] },
  /**
   * A revocable Bearer token: one of the last few revoked, or of the next few to be. Valid (200, 503) until the
   * load process hears of its revocation; for a request sent after that, 401 or 503 only.
   */
  revocable: { weight: 10, allowed: [200, 401, 503] },
  /**
   * A droppable Bearer token: one of the last few the provider dropped (the gates not told), or of the next few.
   * 200, 401 or 503, until the route it is sent to has answered 401 for it; for a request sent after that, 401 or 503.
   */
  droppable: { weight: 10, allowed: [200, 401, 503] },
  /** Valid connection token. */
  connection: { weight: 15, allowed: [200, 503] },
  /** Unknown connection token. */
  'connection-invalid': { weight: 8, allowed: [401, 503] },
  /** Connection parameters missing, empty or repeated. */
  'connection-malformed': { weight: 7, allowed: [400] },
  /** A Bearer token no one has seen, from the flooding client only (never picked by the mixed loops). */
  flood: { weight: 0, allowed: [401, 503] },
} as const satisfies Record<string, { weight: number; allowed: readonly number[] }>;
type Kind = keyof typeof KINDS;

// ---- roles ---------------------------------------------------------------------------

const self = fileURLToPath(import.meta.url);

async function rerunWithGc(): Promise<void> {
  const child = fork(self, ['server'], { execArgv: [...process.execArgv, '--expose-gc'], stdio: 'inherit' });
  process.exitCode = await exitCode(child);
}

/** This process's flags for a child: the tsx loader, without `--expose-gc`. */
function withoutGc(): string[] {
  return process.execArgv.filter((arg) => arg !== '--expose-gc');
}

/** Resolves with the child's exit code (1 when killed by a signal), also when it has already exited. */
function exitCode(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? 1);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

// ---- load (child process) -------------------------------------------------------------

interface LoadConfig {
  readonly url: string;
  readonly durationMs: number;
}

interface LoadReport {
  readonly requests: number;
  readonly elapsedMs: number;
  readonly statuses: Record<string, number>;
  readonly byKind: Record<string, Record<string, number>>;
  readonly wrongDecisions: number;
  readonly wrongExamples: string[];
  readonly unexpected: number;
  readonly unexpectedExamples: string[];
  readonly clientErrors: Record<string, number>;
  /** Revocations the load process heard of, and requests it sent for a token after hearing it was revoked. */
  readonly revocations: { readonly heard: number; readonly askedAfter: number };
  /** Requests sent for a droppable token to a route that had answered 401 for it already. */
  readonly dropped: { readonly askedAfterRejection: number };
  readonly latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number };
}

/** What the load process tells the server process. */
type LoadMessage = { readonly type: 'started' } | { readonly type: 'report'; readonly report: LoadReport };

/**
 * What the server process tells the load process: the revocable token `index` is about to be revoked (`revoking`,
 * sent before the provider drops it), or is revoked everywhere (`revoked`).
 */
type ServerToLoad = { readonly type: 'revoking' | 'revoked' | 'dropping'; readonly index: number };

/** Kinds sent as Bearer headers: half of them go to the Bearer-only gate's route. */
const BEARER_KINDS: ReadonlySet<Kind> = new Set([
  'valid',
  'unpermitted',
  'invalid',
  'malformed',
  'missing',
  'flood',
  'revocable',
  'droppable',
]);

/** One request: where, with what, and (for accepted credentials) the subject the answer must name. */
interface Planned {
  readonly kind: Kind;
  readonly path: string;
  readonly headers: Record<string, string> | string[];
  readonly subject?: string;
  /** For a revocable token: its index in {@link REVOCABLE_TOKENS}. */
  readonly revocable?: number;
  /** For a droppable token: its index in {@link DROPPABLE_TOKENS}. */
  readonly droppable?: number;
}

/** Revocable tokens below this index are revoked everywhere (the load process heard so). */
let revokedBelow = 0;
/** Revocable tokens below this index may be revoked at the provider already (the load process heard so). */
let revokingBelow = 0;
/** Droppable tokens below this index may be dropped by the provider already (the load process heard so). */
let droppingBelow = 0;
/** `route token-index` of every droppable token a route has answered 401 for: none of its later requests may pass. */
const rejectedOnRoute = new Set<string>();
const droppableKey = (planned: Planned) => `${planned.path} ${planned.droppable}`;

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)] as T;
const INVALID_POOL = Array.from(
  { length: 5000 },
  (_, i) => `soak-unknown-${i}-${Math.random().toString(36).slice(2, 10)}`,
);
const MALFORMED_HEADERS: ReadonlyArray<Record<string, string> | string[]> = [
  { authorization: 'Bearer' },
  { authorization: 'Bearer two words' },
  { authorization: 'Bearer tok=en' },
  { authorization: 'Bearer "quoted"' },
  { authorization: 'Bearer caf\u00e9' },
  { authorization: `Bearer ${'a'.repeat(5000)}` },
  { authorization: '=junk' },
  ['authorization', `Bearer ${VALID_TOKENS[0]?.token}`, 'authorization', `Bearer ${VALID_TOKENS[1]?.token}`],
];
let freshInvalid = 0;
let flooded = 0;
const floodRun = Math.random().toString(36).slice(2, 10);
const floodToken = () => `soak-flood-${floodRun}-${flooded++}`;

/** A random index of a list of `length` among the 8 from `behind` places before `front`, within the list. */
function around(front: number, length: number, behind: number): number {
  return Math.min(length - 1, Math.max(0, front + Math.floor(Math.random() * 8) - behind));
}

function plan(kind: Kind): Planned {
  switch (kind) {
    case 'valid': {
      const { token, subject } = pick(VALID_TOKENS);
      return { kind, path: '/checks', headers: { authorization: `Bearer ${token}` }, subject };
    }
    case 'unpermitted':
      return { kind, path: '/checks', headers: { authorization: `Bearer ${pick(UNPERMITTED_TOKENS).token}` } };
    case 'invalid': {
      // Mostly a known pool (negative cache hits); one in five never seen before (a miss, and cache churn).
      const token = Math.random() < 0.2 ? `soak-fresh-${freshInvalid++}` : pick(INVALID_POOL);
      return { kind, path: '/checks', headers: { authorization: `Bearer ${token}` } };
    }
    case 'malformed':
      return { kind, path: '/checks', headers: pick(MALFORMED_HEADERS) };
    case 'missing':
      return { kind, path: '/checks', headers: Math.random() < 0.5 ? {} : { authorization: 'Basic dXNlcjpwYXNz' } };
    case 'connection': {
      const { userId, token } = pick(VALID_CONNECTIONS);
      return { kind, path: `/checks?${new URLSearchParams({ user_id: userId, token })}`, headers: {}, subject: userId };
    }
    case 'connection-invalid': {
      const query = new URLSearchParams({ user_id: pick(VALID_CONNECTIONS).userId, token: pick(INVALID_POOL) });
      return { kind, path: `/checks?${query}`, headers: {} };
    }
    case 'flood':
      return { kind, path: '/checks', headers: { authorization: `Bearer ${floodToken()}` } };
    case 'revocable': {
      // Around the next to be revoked: half of these revoked already, half still valid.
      const index = around(revokedBelow, REVOCABLE_TOKENS.length, 4);
      const { token, subject } = REVOCABLE_TOKENS[index] as (typeof REVOCABLE_TOKENS)[number];
      return { kind, path: '/checks', headers: { authorization: `Bearer ${token}` }, subject, revocable: index };
    }
    case 'droppable': {
      // Mostly dropped already (cached, or stale while the provider fails), some about to be (cached meanwhile).
      const index = around(droppingBelow, DROPPABLE_TOKENS.length, 6);
      const { token, subject } = DROPPABLE_TOKENS[index] as (typeof DROPPABLE_TOKENS)[number];
      return { kind, path: '/checks', headers: { authorization: `Bearer ${token}` }, subject, droppable: index };
    }
    case 'connection-malformed': {
      const { userId, token } = pick(VALID_CONNECTIONS);
      const query = pick([`user_id=${userId}&token=${token}&token=${token}`, `token=${token}`, 'user_id=&token=']);
      return { kind, path: `/checks?${query}`, headers: {} };
    }
  }
}

/** A request of `kind`, to either gate's route when it is a Bearer kind. */
function planRoute(kind: Kind): Planned {
  const planned = plan(kind);
  return BEARER_KINDS.has(kind) && Math.random() < 0.5 ? { ...planned, path: `/bearer${planned.path}` } : planned;
}

const KIND_LIST = Object.keys(KINDS) as Kind[];
const TOTAL_WEIGHT = KIND_LIST.reduce((sum, kind) => sum + KINDS[kind].weight, 0);
function randomKind(): Kind {
  let roll = Math.random() * TOTAL_WEIGHT;
  for (const kind of KIND_LIST) {
    roll -= KINDS[kind].weight;
    if (roll < 0) return kind;
  }
  return 'valid';
}

/**
 * A wrong decision, precisely:
 * - a 2xx for any request that does not carry a valid credential with the
 *   route's permission (invalid, unpermitted, malformed, missing credentials);
 * - a 2xx whose body names another subject than the credential's own;
 * - a 400, 401 or 403 for a valid credential with the permission. The mocks
 *   never deny these credentials, healthy or faulty (their faults are resets,
 *   5xx, 429, slowness and garbage, never a 401/404), so no provider answer
 *   and no cached negative entry can justify a denial; the only right
 *   answers are 200 and 503;
 * - a 2xx for a revocable token sent after the load process heard of its
 *   revocation (`revokedWhenSent`); a 400 or 403 for one at any time; and a
 *   401 for one two places or more past the last one announced as about to
 *   be revoked when the answer came (`revocableFrom`; the next one may be
 *   dropped a moment before its announcement is read);
 * - a 2xx for a droppable token sent to a route after that route answered
 *   401 for it (`rejectedWhenSent`); a 400 or 403 for one at any time; and a
 *   401 for one two places or more past the last one announced as about to
 *   be dropped when the answer came.
 * Any other status outside the kind's allowed list (a 500, a malformed
 * request answered 401…) is counted as unexpected. Both counts must be 0.
 */
function judge(
  planned: Planned,
  status: number,
  subject: unknown,
  revokedWhenSent: boolean,
  revocableFrom: number,
  rejectedWhenSent: boolean,
  droppableFrom: number,
): 'ok' | 'wrong' | 'unexpected' {
  const deservesPass =
    planned.kind === 'valid' ||
    planned.kind === 'connection' ||
    (planned.kind === 'revocable' && !revokedWhenSent) ||
    (planned.kind === 'droppable' && !rejectedWhenSent);
  if (status >= 200 && status < 300) {
    if (!deservesPass) return 'wrong';
    return subject === planned.subject ? 'ok' : 'wrong';
  }
  if ((planned.kind === 'revocable' || planned.kind === 'droppable') && (status === 400 || status === 403)) {
    return 'wrong';
  }
  if (planned.revocable !== undefined && status === 401 && planned.revocable > revocableFrom) return 'wrong';
  if (planned.droppable !== undefined && status === 401 && planned.droppable > droppableFrom) return 'wrong';
  if (
    deservesPass &&
    planned.kind !== 'revocable' &&
    planned.kind !== 'droppable' &&
    (status === 400 || status === 401 || status === 403)
  ) {
    return 'wrong';
  }
  return (KINDS[planned.kind].allowed as readonly number[]).includes(status) ? 'ok' : 'unexpected';
}

async function runLoad(): Promise<void> {
  const config = JSON.parse(process.env.SOAK_LOAD ?? '') as LoadConfig;
  const clients: Client[] = [];
  const histogram = createHistogram();
  const statuses: Record<string, number> = {};
  const byKind: Record<string, Record<string, number>> = {};
  const clientErrors: Record<string, number> = {};
  const wrongExamples: string[] = [];
  const unexpectedExamples: string[] = [];
  let wrongDecisions = 0;
  let unexpected = 0;
  let issued = 0;
  let heard = 0;
  let askedAfter = 0;
  let askedAfterRejection = 0;
  const started = performance.now();
  const endAt = started + config.durationMs;
  process.on('message', (message: ServerToLoad) => {
    if (message.type === 'revoking') {
      revokingBelow = Math.max(revokingBelow, message.index + 1);
      return;
    }
    if (message.type === 'dropping') {
      droppingBelow = Math.max(droppingBelow, message.index + 1);
      return;
    }
    heard++;
    revokedBelow = Math.max(revokedBelow, message.index + 1);
  });

  /** Sends one request and records its answer; `timed` adds its latency to the mixed loops' figures. */
  async function exchange(client: Client, planned: Planned, timed: boolean): Promise<void> {
    const sent = performance.now();
    const revokedWhenSent = planned.revocable !== undefined && planned.revocable < revokedBelow;
    if (revokedWhenSent) askedAfter++;
    const rejectedWhenSent = planned.droppable !== undefined && rejectedOnRoute.has(droppableKey(planned));
    if (rejectedWhenSent) askedAfterRejection++;
    try {
      const res = await client.request({ method: 'GET', path: planned.path, headers: planned.headers });
      const status = res.statusCode;
      let subject: unknown;
      let answer = String(status);
      if (status === 200) subject = ((await res.body.json()) as { subject?: unknown }).subject;
      else if (status === 503) answer = `503 ${((await res.body.json()) as { error?: unknown }).error}`;
      else await res.body.dump();
      if (timed) histogram.record(Math.max(1, Math.round((performance.now() - sent) * 1000)));
      statuses[answer] = (statuses[answer] ?? 0) + 1;
      const kindCounts = (byKind[planned.kind] ??= {});
      kindCounts[answer] = (kindCounts[answer] ?? 0) + 1;
      // From now on this route must not pass this token: a request sent after this answer reached the gate after
      // the rejection did.
      if (planned.droppable !== undefined && status === 401) rejectedOnRoute.add(droppableKey(planned));
      const verdict = judge(planned, status, subject, revokedWhenSent, revokingBelow, rejectedWhenSent, droppingBelow);
      const example = `${planned.kind} ${planned.path.split('?')[0]} -> ${status}${subject === undefined ? '' : ` (${String(subject)})`}`;
      if (verdict === 'wrong') {
        wrongDecisions++;
        if (wrongExamples.length < 10) wrongExamples.push(example);
      } else if (verdict === 'unexpected') {
        unexpected++;
        if (unexpectedExamples.length < 10) unexpectedExamples.push(example);
      }
    } catch (error) {
      const code = (error as { code?: string }).code ?? (error as Error).name;
      clientErrors[code] = (clientErrors[code] ?? 0) + 1;
    }
  }

  async function worker(): Promise<void> {
    // One connection per loop, so that a repeated request goes over the connection that sent it before.
    const client = new Client(config.url, { pipelining: 1, headersTimeout: 15_000, bodyTimeout: 15_000 });
    clients.push(client);
    let previous: Planned | undefined;
    while (performance.now() < endAt && issued < MAX_REQUESTS) {
      issued++;
      const planned = previous !== undefined && Math.random() < 0.5 ? previous : planRoute(randomKind());
      previous = planned;
      await exchange(client, planned, true);
    }
  }

  /** A loop of the flooding client: from its own address, a never-seen Bearer token on every request. */
  async function flooder(): Promise<void> {
    const client = new Client(config.url, {
      pipelining: 1,
      headersTimeout: 15_000,
      bodyTimeout: 15_000,
      localAddress: FLOOD_ADDRESS,
    });
    clients.push(client);
    while (performance.now() < endAt && issued < MAX_REQUESTS) {
      issued++;
      await exchange(client, planRoute('flood'), false);
    }
  }

  process.send?.({ type: 'started' } satisfies LoadMessage);
  await Promise.all([
    ...Array.from({ length: CONNECTIONS }, worker),
    ...Array.from({ length: FLOOD_CONNECTIONS }, flooder),
  ]);
  const elapsedMs = performance.now() - started;
  await Promise.all(clients.map((client) => client.close()));
  const ms = (micros: number) => Math.round(micros / 10) / 100;
  const report: LoadReport = {
    requests: histogram.count,
    elapsedMs,
    statuses,
    byKind,
    wrongDecisions,
    wrongExamples,
    unexpected,
    unexpectedExamples,
    clientErrors,
    revocations: { heard, askedAfter },
    dropped: { askedAfterRejection },
    latencyMs: {
      p50: ms(histogram.percentile(50)),
      p90: ms(histogram.percentile(90)),
      p99: ms(histogram.percentile(99)),
      p999: ms(histogram.percentile(99.9)),
      max: ms(histogram.max),
    },
  };
  process.send?.({ type: 'report', report } satisfies LoadMessage);
  process.disconnect?.();
}

// ---- mock providers (child process) -------------------------------------------------------

/** What the server process tells the mocks process. */
type MocksCommand =
  | { readonly type: 'phase'; readonly fault?: MockFault; readonly latency: number }
  | { readonly type: 'revoke'; readonly index: number }
  | { readonly type: 'drop'; readonly index: number }
  | { readonly type: 'close' };

/** What the mocks process answers. */
type MocksMessage =
  | { readonly type: 'ready'; readonly onlineOrNotUrl: string; readonly partooUrl: string }
  | { readonly type: 'revoked'; readonly index: number }
  | { readonly type: 'closed'; readonly calls: Record<string, Record<string, number>> };

/**
 * The providers run in their own process, as real ones would: their answers
 * do not wait for the gate server's busy event loop, so a "healthy" phase is
 * healthy and a failure is the one injected.
 */
async function runMocks(): Promise<void> {
  const oon = await mockOnlineOrNot({
    tokens: Object.fromEntries([
      ...VALID_TOKENS.map(({ token, subject }) => [token, { id: subject, permissions: [READ] }]),
      ...UNPERMITTED_TOKENS.map(({ token, subject }) => [token, { id: subject, permissions: ['other'] }]),
      ...REVOCABLE_TOKENS.map(({ token, subject }) => [token, { id: subject, permissions: [READ] }]),
      ...DROPPABLE_TOKENS.map(({ token, subject }) => [token, { id: subject, permissions: [READ] }]),
    ]),
  });
  const pt = await mockPartoo({ apiKey: API_KEY, tokens: VALID_CONNECTIONS });
  const send = (message: MocksMessage) => process.send?.(message);
  process.on('message', async (command: MocksCommand) => {
    if (command.type === 'phase') {
      for (const mock of [oon, pt]) {
        mock.fault = command.fault;
        mock.latency = command.latency;
      }
      return;
    }
    if (command.type === 'drop') {
      oon.removeToken((DROPPABLE_TOKENS[command.index] as (typeof DROPPABLE_TOKENS)[number]).token);
      return;
    }
    if (command.type === 'revoke') {
      oon.removeToken((REVOCABLE_TOKENS[command.index] as (typeof REVOCABLE_TOKENS)[number]).token);
      send({ type: 'revoked', index: command.index });
      return;
    }
    const calls = {
      onlineornot: { ...oon.calls, connections: oon.connections },
      partoo: { ...pt.calls, connections: pt.connections },
    };
    await oon.close();
    await pt.close();
    send({ type: 'closed', calls });
    process.disconnect?.();
  });
  // Ends with the server process, whatever happens to it.
  process.once('disconnect', () => {
    void Promise.all([oon.close(), pt.close()]);
  });
  send({ type: 'ready', onlineOrNotUrl: oon.url, partooUrl: pt.url });
}

// ---- server (this process) ---------------------------------------------------------------

interface Phase {
  readonly name: string;
  readonly fault?: MockFault;
  readonly latency?: number;
}

/** The flapping schedule, one step every FLAP_MS, round and round. */
const PHASES: readonly Phase[] = [
  { name: 'healthy' },
  { name: 'reset', fault: { kind: 'reset' } },
  { name: 'healthy' },
  { name: '500s', fault: { kind: 'status', status: 500 } },
  { name: 'healthy' },
  { name: 'slow', latency: SLOW_MS },
  { name: 'healthy' },
  { name: 'flapping', fault: { kind: 'status', status: 502, every: 2 } },
  { name: 'healthy' },
  { name: 'garbage', fault: { kind: 'garbage' } },
  { name: 'healthy' },
  { name: '429s', fault: { kind: 'status', status: 429, retryAfter: 1 } },
];

/**
 * One step of the schedule: 2 s, or less when the run is too short for every phase to come once
 * (with two steps to spare, for the timer's lag on a busy event loop).
 */
const FLAP_MS = positive('FLAP_MS', Math.min(2000, Math.floor((DURATION_S * 1000) / (PHASES.length + 2))));

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

async function runServer(gc: () => void): Promise<void> {
  const mocks = fork(self, ['mocks'], { execArgv: withoutGc(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = await new Promise<Extract<MocksMessage, { type: 'ready' }>>((resolve, reject) => {
    mocks.once('message', (message: MocksMessage) => {
      if (message.type === 'ready') resolve(message);
    });
    mocks.once('exit', () => reject(new Error('the mock providers process ended before it was ready')));
  });
  const providerErrors: Record<string, number> = {};
  const breakerTransitions: Record<string, number> = {};
  const bump = (counts: Record<string, number>, key: string) => {
    counts[key] = (counts[key] ?? 0) + 1;
  };
  const gateOptions = {
    timeout: GATE_TIMEOUT_MS,
    retry: { retries: 2, baseDelay: 20, maxDelay: 200 },
    breaker: { threshold: 5, cooldown: 500 },
    cache: { max: 10_000, ttl: 1000, negativeTtl: 500, staleIfError: 2000 },
    onEvent: (event: GateEvent) => {
      if (event.type === 'provider_error') bump(providerErrors, `${event.provider} ${event.reason}`);
      else if (event.type === 'breaker') bump(breakerTransitions, `${event.provider} ${event.state}`);
    },
  } as const;
  const gate = createGate({
    ...gateOptions,
    providers: [
      onlineOrNot({ baseUrl: ready.onlineOrNotUrl }),
      partoo({ apiKey: API_KEY, baseUrl: ready.partooUrl, permissions: [READ] }),
    ],
  });
  const bearerGate = createGate({
    ...gateOptions,
    providers: [onlineOrNot({ baseUrl: ready.onlineOrNotUrl, name: 'onlineornot-bearer-only' })],
  });

  let phase: Phase = PHASES[0] as Phase;
  const byPhase = new Map<string, Record<string, number>>();
  let serverErrors = 0;
  const app = express();
  app.use((_req, res, next) => {
    const name = phase.name;
    res.once('finish', () => {
      const counts = byPhase.get(name) ?? {};
      counts[res.statusCode] = (counts[res.statusCode] ?? 0) + 1;
      byPhase.set(name, counts);
    });
    next();
  });
  const answerSubject: express.RequestHandler = (req, res) => {
    res.json({ subject: req.auth?.subject });
  };
  app.get('/checks', authenticate(gate), requires(READ), answerSubject);
  app.get('/bearer/checks', authenticate(bearerGate), requires(READ), answerSubject);
  app.use(((error, _req, res, _next) => {
    if (error instanceof AuthError) {
      res.status(error.status).set(error.headers).json({ error: error.code });
      return;
    }
    if (serverErrors++ < 3) console.error('unexpected error:', error);
    res.status(500).json({ error: 'internal' });
  }) satisfies express.ErrorRequestHandler);
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  gc();
  const start = process.memoryUsage();
  console.log(
    `soak: ${DURATION_S} s, ${CONNECTIONS} connections and ${FLOOD_CONNECTIONS} flooding from ${FLOOD_ADDRESS}, provider phase every ${FLAP_MS} ms ` +
      `(${PHASES.map((p) => p.name).join(' > ')}), gate timeout ${GATE_TIMEOUT_MS} ms, slow = ${SLOW_MS} ms`,
  );
  console.log(`start: rss ${mb(start.rss)}, heap used after GC ${mb(start.heapUsed)}`);

  // Flapping schedule and memory samples: from the first request to the end of the load, then cleared.
  let step = 0;
  const apply = (next: Phase) => {
    phase = next;
    mocks.send({
      type: 'phase',
      latency: next.latency ?? 0,
      ...(next.fault === undefined ? {} : { fault: next.fault }),
    } satisfies MocksCommand);
  };
  let flapper: NodeJS.Timeout | undefined;
  let sampler: NodeJS.Timeout | undefined;
  let revoker: NodeJS.Timeout | undefined;
  let revocationsAsked = 0;
  let revocationsDone = 0;
  let dropsAsked = 0;
  const samples: string[] = [];
  let peakRss = start.rss;
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  let cpuAtStart = process.cpuUsage();
  let loadStarted = performance.now();
  const startSchedule = () => {
    loadStarted = performance.now();
    cpuAtStart = process.cpuUsage();
    loopDelay.enable();
    flapper = setInterval(() => apply(PHASES[++step % PHASES.length] as Phase), FLAP_MS);
    revoker = setInterval(() => {
      if (revocationsAsked < REVOCABLE_TOKENS.length && mocks.connected && load.connected) {
        const index = revocationsAsked++;
        load.send({ type: 'revoking', index } satisfies ServerToLoad);
        mocks.send({ type: 'revoke', index } satisfies MocksCommand);
      }
      // A token the provider drops with neither gate told: announced first, as a revocation is.
      if (dropsAsked < DROPPABLE_TOKENS.length && mocks.connected && load.connected) {
        const index = dropsAsked++;
        load.send({ type: 'dropping', index } satisfies ServerToLoad);
        mocks.send({ type: 'drop', index } satisfies MocksCommand);
      }
    }, REVOKE_MS);
    sampler = setInterval(() => {
      const { rss, heapUsed } = process.memoryUsage();
      peakRss = Math.max(peakRss, rss);
      samples.push(`${Math.round((performance.now() - loadStarted) / 1000)}s ${mb(rss)} (heap ${mb(heapUsed)})`);
    }, 5_000);
  };

  // A revocation: the provider has dropped the token; both gates forget it; then the load process is told.
  mocks.on('message', (message: MocksMessage) => {
    if (message.type !== 'revoked') return;
    const req = { headers: { authorization: `Bearer ${REVOCABLE_TOKENS[message.index]?.token}` } };
    void Promise.all([gate.revoke(req), bearerGate.revoke(req)]).then(() => {
      revocationsDone++;
      if (load.connected) load.send({ type: 'revoked', index: message.index } satisfies ServerToLoad);
    });
  });
  const load = fork(self, ['load'], {
    execArgv: withoutGc(),
    env: { ...process.env, SOAK_LOAD: JSON.stringify({ url, durationMs: DURATION_S * 1000 } satisfies LoadConfig) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const reportPromise = new Promise<LoadReport | undefined>((resolve) => {
    load.on('message', (message: LoadMessage) => {
      if (message.type === 'started') startSchedule();
      else resolve(message.report);
    });
    load.once('exit', () => resolve(undefined));
  });
  // A stuck child cannot keep the benchmark running: kill it well after its own deadline.
  const watchdog = setTimeout(() => load.kill('SIGKILL'), DURATION_S * 1000 + 60_000);
  const report = await reportPromise;
  clearTimeout(watchdog);
  await exitCode(load);
  clearInterval(flapper);
  clearInterval(sampler);
  clearInterval(revoker);
  loopDelay.disable();
  const cpu = process.cpuUsage(cpuAtStart);
  const cpuShare = (cpu.user + cpu.system) / 1000 / (performance.now() - loadStarted);
  apply({ name: 'healthy' });

  const end = process.memoryUsage();
  await sleep(500);
  gc();
  const afterGc = process.memoryUsage();
  const stats = { gate: gate.stats(), bearerGate: bearerGate.stats() };
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await gate.close();
  await bearerGate.close();
  const upstream = await new Promise<Record<string, Record<string, number>> | undefined>((resolve) => {
    mocks.once('message', (message: MocksMessage) => resolve(message.type === 'closed' ? message.calls : undefined));
    mocks.once('exit', () => resolve(undefined));
    if (mocks.connected) mocks.send({ type: 'close' } satisfies MocksCommand);
    else resolve(undefined);
  });
  await exitCode(mocks);

  if (report === undefined) {
    console.error('soak: the load process ended without a report');
    process.exitCode = 1;
    return;
  }
  const seconds = report.elapsedMs / 1000;
  const line = (counts: Record<string, number>) =>
    Object.entries(counts)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([status, n]) => `${status}: ${n}`)
      .join(', ');
  console.log(
    `\nrequests served: ${report.requests} in ${seconds.toFixed(1)} s (${Math.round(report.requests / seconds)} req/s)`,
  );
  console.log(`statuses: ${line(report.statuses)}`);
  for (const kind of KIND_LIST) console.log(`  ${kind.padEnd(20)} ${line(report.byKind[kind] ?? {})}`);
  console.log('by provider phase (server side):');
  for (const name of new Set(PHASES.map((p) => p.name)))
    console.log(`  ${name.padEnd(20)} ${line(byPhase.get(name) ?? {})}`);
  console.log(
    `wrong decisions: ${report.wrongDecisions}${report.wrongExamples.length ? ` e.g. ${report.wrongExamples.join('; ')}` : ''}`,
  );
  console.log(
    `unexpected statuses: ${report.unexpected}${report.unexpectedExamples.length ? ` e.g. ${report.unexpectedExamples.join('; ')}` : ''}`,
  );
  console.log(
    `client errors: ${Object.keys(report.clientErrors).length ? line(report.clientErrors) : 0}; server 500s: ${serverErrors}`,
  );
  console.log(
    `revocations: ${revocationsDone} (${report.revocations.heard} heard by the load); ${report.revocations.askedAfter} requests for a token already revoked, ${report.byKind.revocable?.['200'] ?? 0} answers 200 to revocable tokens in all`,
  );
  console.log(
    `dropped at the provider, the gates not told: ${dropsAsked}; ${report.dropped.askedAfterRejection} requests for one to a route that had answered 401 for it, ${report.byKind.droppable?.['200'] ?? 0} answers 200 to droppable tokens in all`,
  );
  const passShares = (['valid', 'connection'] as const).map((kind) => {
    const counts = report.byKind[kind] ?? {};
    const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
    return { kind, share: total === 0 ? 0 : (counts['200'] ?? 0) / total };
  });
  const tooFew = passShares.filter(({ share }) => share < MIN_PASS_SHARE);
  console.log(
    `valid credentials passed: ${passShares.map(({ kind, share }) => `${kind} ${(share * 100).toFixed(1)}%`).join(', ')} (at least ${MIN_PASS_SHARE * 100}% each)`,
  );
  const staleServed = stats.gate.stale + stats.bearerGate.stale;
  console.log(`stale answers served while the providers failed: ${staleServed} (at least one)`);
  const { p50, p90, p99, p999, max } = report.latencyMs;
  console.log(`latency: p50 ${p50} ms, p90 ${p90} ms, p99 ${p99} ms, p99.9 ${p999} ms, max ${max} ms`);
  const delay = (q: number) => Math.round(loopDelay.percentile(q) / 1e5) / 10;
  console.log(
    `server: CPU ${(cpuShare * 100).toFixed(0)}% of one core; event loop delay p50 ${delay(50)} ms, p99 ${delay(99)} ms, max ${Math.round(loopDelay.max / 1e6)} ms`,
  );
  console.log(`rss: start ${mb(start.rss)}, peak ${mb(peakRss)}, end ${mb(end.rss)}`);
  console.log(`rss every 5 s: ${samples.join(', ')}`);
  console.log(`heap used after GC: start ${mb(start.heapUsed)}, end ${mb(afterGc.heapUsed)}`);
  console.log(`gate (both providers): ${JSON.stringify(stats.gate)}`);
  console.log(`gate (Bearer only): ${JSON.stringify(stats.bearerGate)}`);
  console.log(`upstream calls (and TCP connections accepted): ${JSON.stringify(upstream)}`);
  console.log(`provider errors (attempts): ${JSON.stringify(providerErrors)}`);
  console.log(`breaker transitions: ${JSON.stringify(breakerTransitions)}`);
  const clientErrors = Object.values(report.clientErrors).reduce((sum, n) => sum + n, 0);
  if (
    report.wrongDecisions > 0 ||
    report.unexpected > 0 ||
    serverErrors > 0 ||
    clientErrors > 0 ||
    tooFew.length > 0 ||
    staleServed === 0
  ) {
    process.exitCode = 1;
  }
}

// Last, once every constant above exists.
if (process.argv[2] === 'load') await runLoad();
else if (process.argv[2] === 'mocks') await runMocks();
else if (typeof globalThis.gc !== 'function') await rerunWithGc();
else await runServer(globalThis.gc);
