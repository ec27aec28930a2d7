/**
 * What test/decisions-model.test.ts drives: a real `node:http` server on 127.0.0.1 in front of one or more gates
 * (as the README's "Without a framework" app, through `authenticateNow`, with the socket as the connection so that
 * keep-alive memos are in play), a keep-alive client, and a kit per mock provider (accept a token, revoke it, send
 * it). The server puts each request on the model's clock as it reaches its gate and as the gate settles it.
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AuthContext,
  AuthError,
  type Gate,
  type GateRequest,
  onlineOrNot,
  type Provider,
  partoo,
  requires,
} from '../../src/index.js';
import { cacheKey } from '../../src/store.js';
import { type MockProvider, mockOnlineOrNot, mockPartoo } from '../../src/testing/index.js';
import type { Decision, DecisionModel } from './decision-model.js';

/** One mock provider, as the model drives it. */
export interface ProviderKit {
  readonly name: string;
  readonly mock: MockProvider;
  /** A new provider for one gate, on the mock. */
  provider(): Provider;
  /**
   * The provider accepts `token` from now on, as `version`; `expiresIn` (ms), when the API carries a token's expiry:
   * until then. Returns that expiry (epoch ms), if any.
   */
  accept(token: string, version: number, expiresIn?: number): number | undefined;
  /** The provider rejects `token` from now on; `pick` in [0, 1) chooses how. */
  revoke(token: string, pick: number): void;
  /** The request path (query included) and headers that carry `token`. */
  http(token: string): { readonly path: string; readonly headers: Record<string, string> };
  /** `token` as a plain request for `invalidate`, `revoke` and `extract`. */
  request(token: string): GateRequest;
  /** The version of `token` a 200's body carries, or undefined when it is another credential's. */
  versionOf(token: string, body: AnswerBody): number | undefined;
  /** Requests the mock received for verifications (one per upstream call). */
  calls(): number;
  /** Whether `version` of a token carries the permission the server's route requires (`read`). */
  grants(version: number): boolean;
}

/** The permission the server's route requires: every request goes through `gate.authorize` with it. */
export const ROUTE_PERMISSION = 'read';
const canRead = requires(ROUTE_PERMISSION);

/** The JSON body the server answers with. */
export interface AnswerBody {
  readonly subject?: string;
  readonly stale?: boolean;
  readonly expiresAt?: number | null;
  readonly error?: string;
  readonly error_description?: string;
}

export async function onlineOrNotKit(): Promise<ProviderKit> {
  const mock = await mockOnlineOrNot();
  // Every third version lacks the route's permission: a 403, on a cache hit as on a miss.
  const grants = (version: number) => version % 3 !== 0;
  return {
    name: 'onlineornot',
    mock,
    provider: () => onlineOrNot({ baseUrl: mock.url }),
    accept: (token, version) => {
      mock.setToken(token, { id: `${token}~v${version}`, permissions: grants(version) ? ['read'] : ['write'] });
      return undefined;
    },
    revoke: (token) => mock.removeToken(token),
    http: (token) => ({ path: '', headers: { authorization: `Bearer ${token}` } }),
    request: (token) => ({ headers: { authorization: `Bearer ${token}` } }),
    versionOf: (token, body) => {
      const match = /^(.*)~v(\d+)$/.exec(body.subject ?? '');
      return match?.[1] === token ? Number(match[2]) : undefined;
    },
    calls: () => mock.calls.verify,
    grants,
  };
}

const PARTOO_KEY = 'model-test-api-key';

export async function partooKit(): Promise<ProviderKit> {
  const mock = await mockPartoo({ apiKey: PARTOO_KEY });
  // Each version expires at its own second, an hour ahead: a 200's expiresAt names the version.
  const base = Math.floor(Date.now() / 1000) * 1000 + 3_600_000;
  const user = (token: string) => `user-${token}`;
  const expiration = (version: number) => new Date(base + version * 1000);
  /** Versions that expire soon, by their expiry. */
  const expiring = new Map<number, number>();
  return {
    name: 'partoo',
    mock,
    provider: () => partoo({ apiKey: PARTOO_KEY, baseUrl: mock.url, permissions: [ROUTE_PERMISSION] }),
    accept: (token, version, expiresIn) => {
      if (expiresIn === undefined) {
        mock.setToken({ userId: user(token), token, expirationDate: expiration(version) });
        return undefined;
      }
      let expiry = Date.now() + expiresIn;
      while (expiring.has(expiry)) expiry++;
      expiring.set(expiry, version);
      mock.setToken({ userId: user(token), token, expirationDate: new Date(expiry) });
      return expiry;
    },
    revoke: (token, pick) => {
      if (pick < 0.5) mock.removeToken(user(token), token);
      else mock.setToken({ userId: user(token), token, status: pick < 0.75 ? 'revoked' : 'consumed' });
    },
    http: (token) => ({ path: `?user_id=${user(token)}&token=${token}`, headers: {} }),
    request: (token) => ({ headers: {}, query: { user_id: user(token), token } }),
    versionOf: (token, body) => {
      if (body.subject !== user(token) || typeof body.expiresAt !== 'number') return undefined;
      const soon = expiring.get(body.expiresAt);
      if (soon !== undefined) return soon;
      const version = (body.expiresAt - base) / 1000;
      return Number.isInteger(version) && version >= 0 ? version : undefined;
    },
    calls: () => mock.calls.checkToken,
    grants: () => true,
  };
}

/** The Redis key of `token`'s verdict, as the tier names it (default prefix). */
export function verdictKey(provider: Provider, request: GateRequest): string {
  const credential = provider.extract(request as Parameters<Provider['extract']>[0], 'api');
  if (credential === undefined || !('secret' in credential)) throw new Error('no credential');
  return `tokengate:{${Buffer.from(cacheKey(provider.cacheScope, credential.secret), 'latin1').toString('base64url')}}:v`;
}

/** What the client sends with a request, and what the server knows of it by its `x-model-id`. */
export interface RequestMeta {
  readonly gate: number;
  readonly token: string;
  readonly kind: Decision['kind'];
  readonly awaited: boolean;
}

/** Per gate, what its `stats()` must show, counted by the server. */
export interface SeenCounts {
  /** Requests answered without a promise (cache hits) since the last reset. */
  hits: number;
  /** Requests answered with a promise since the last reset. */
  misses: number;
  /** Verifications (requests that joined none) settled since the last reset that served a stale copy. */
  staleFlights: number;
  /** Verifications settled since the last reset that ended in a 503 or a stale copy. */
  failedFlights: number;
}

export interface DecisionServer {
  readonly url: string;
  readonly meta: Map<number, RequestMeta>;
  readonly decisions: Map<number, Decision>;
  /** Why a request got a 500, by id. */
  readonly crashes: Map<number, string>;
  readonly seen: SeenCounts[];
  /** Requests under way in the gates. */
  readonly inFlight: number;
  close(): Promise<void>;
}

/** The server in front of `gates` (path `/<gate index>`), recording each decision in `model`. */
export async function startDecisionServer(
  gates: readonly Gate[],
  kit: ProviderKit,
  model: DecisionModel,
): Promise<DecisionServer> {
  const meta = new Map<number, RequestMeta>();
  const decisions = new Map<number, Decision>();
  const crashes = new Map<number, string>();
  const seen: SeenCounts[] = gates.map(() => ({ hits: 0, misses: 0, staleFlights: 0, failedFlights: 0 }));
  /** Per gate and credential, the flight under way: the tick it started at and its breaker's state then. */
  const flights = gates.map(() => new Map<string, { started: number; breaker: string }>());
  const state = { inFlight: 0 };
  const server: Server = createServer((req, res) => {
    const id = Number(req.headers['x-model-id']);
    const about = meta.get(id) as RequestMeta;
    const gate = gates[about.gate] as Gate;
    const counts = seen[about.gate] as SeenCounts;
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const query = Object.fromEntries(url.searchParams);
    const alone = about.awaited && state.inFlight === 0;
    state.inFlight++;
    const asked = model.clock.tick();
    const before = gate.stats();
    const breakerBefore = Object.values(before.breakers)[0] ?? 'closed';
    let answer: unknown;
    let sync = true;
    try {
      answer = gate.authenticateNow({
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        query,
        connection: req.socket,
      });
      sync = !(answer instanceof Promise);
    } catch (error) {
      answer = error;
    }
    const joined = gate.stats().coalesced > before.coalesced;
    if (sync) counts.hits++;
    else counts.misses++;
    const flightsOfGate = flights[about.gate] as Map<string, { started: number; breaker: string }>;
    if (!sync && !joined) flightsOfGate.set(about.token, { started: asked, breaker: breakerBefore });
    const flight = joined ? flightsOfGate.get(about.token) : undefined;
    const flightStarted = flight?.started ?? asked;
    const breaker = flight?.breaker ?? breakerBefore;
    const settle = (outcome: unknown) => {
      const settled = model.clock.tick();
      state.inFlight--;
      let status = 500;
      let headers: Record<string, string> = {};
      let body: AnswerBody = { error: 'server_error' };
      /** The 403 of the route's guard, for a context the gate let through. */
      let refused: AuthError | undefined;
      let waitedOut = false;
      let failure: string | undefined;
      if (outcome instanceof AuthContext) {
        status = 200;
        body = { subject: outcome.subject, stale: outcome.stale, expiresAt: outcome.expiresAt?.getTime() ?? null };
        try {
          gate.authorize(outcome, canRead);
        } catch (error) {
          refused = error instanceof AuthError ? error : undefined;
          if (refused === undefined) crashes.set(id, String(error));
        }
      } else if (outcome instanceof AuthError) {
        status = outcome.status;
        headers = { ...outcome.headers };
        body = { error: outcome.code, error_description: outcome.message };
        waitedOut = outcome.cause instanceof Error && outcome.cause.message.includes("another instance's verification");
        failure = (outcome.cause as { kind?: string } | undefined)?.kind;
      } else {
        crashes.set(id, outcome instanceof Error ? (outcome.stack ?? outcome.message) : String(outcome));
      }
      const stale = status === 200 ? body.stale : undefined;
      const version = status === 200 ? kit.versionOf(about.token, body) : undefined;
      const decision: Decision = {
        gate: about.gate,
        token: about.token,
        kind: about.kind,
        asked,
        flightStarted,
        settled,
        sync,
        joined,
        alone,
        breaker,
        failure,
        waitedOut,
        status,
        stale,
        version,
        granted: version === undefined ? undefined : kit.grants(version),
        expired: typeof body.expiresAt === 'number' && body.expiresAt <= Date.now() - 10,
      };
      decisions.set(id, decision);
      if (!joined && !sync && (status === 503 || stale === true)) counts.failedFlights++;
      if (!joined && !sync && stale === true) counts.staleFlights++;
      model.settled(decision);
      if (refused !== undefined) {
        // What the client sees: the guard's 403 (the decision judged is the gate's 200 before it).
        const forbidden = { error: refused.code, error_description: refused.message, subject: body.subject };
        res.writeHead(refused.status, { ...refused.headers, 'content-type': 'application/json' });
        res.end(JSON.stringify(forbidden));
        return;
      }
      res.writeHead(status, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (sync) settle(answer);
    else (answer as Promise<unknown>).then(settle, settle);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    meta,
    decisions,
    crashes,
    seen,
    get inFlight() {
      return state.inFlight;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface Response {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: AnswerBody;
}

/** A keep-alive client of a few connections: consecutive requests share them, and so the gates' memos. */
export function keepAliveClient(sockets: number): {
  send(url: string, headers: Record<string, string>): Promise<Response>;
  close(): void;
} {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets });
  return {
    send: (url, headers) =>
      new Promise((resolve, reject) => {
        const req = httpRequest(url, { agent, headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            try {
              const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as AnswerBody;
              resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
            } catch (error) {
              reject(error);
            }
          });
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      }),
    close: () => agent.destroy(),
  };
}

/** What a user sees of an answer, against the RFC 6750 rules and the README's table; the broken rule, or undefined. */
export function checkResponse(response: Response, decision: Decision, maxRetryAfter: number): string | undefined {
  const { status, headers, body } = response;
  const challenge = headers['www-authenticate'];
  if (decision.status === 200 && decision.granted === false) {
    // The guard's refusal of a version without the route's permission: RFC 6750 insufficient_scope.
    if (status !== 403) return `a version without the route's permission got ${status}, not the guard's 403`;
    const expected = `Bearer realm="api", error="insufficient_scope", error_description="Requires: ${ROUTE_PERMISSION}", scope="${ROUTE_PERMISSION}"`;
    if (challenge !== expected) return `a 403 whose WWW-Authenticate is ${JSON.stringify(challenge)}`;
    if (body.error !== 'insufficient_scope') return `a 403 with error ${body.error}`;
    return undefined;
  }
  if (status !== decision.status) return `the client got ${status}, the gate answered ${decision.status}`;
  if (status === 401) {
    if (body.error !== 'invalid_token') return `a 401 with error ${body.error}`;
    if (
      typeof challenge !== 'string' ||
      !challenge.startsWith('Bearer realm="api", error="invalid_token", error_description="')
    ) {
      return `a 401 whose WWW-Authenticate is ${JSON.stringify(challenge)}`;
    }
  }
  if (status === 503) {
    // The README's table: a 503 carries no challenge, and Retry-After when known (at most maxRetryAfter).
    if (challenge !== undefined) return `a 503 with WWW-Authenticate ${JSON.stringify(challenge)}`;
    if (body.error !== 'provider_unavailable') return `a 503 ${body.error} with no overload to cause it`;
    const retryAfter = headers['retry-after'];
    if (retryAfter !== undefined) {
      const seconds = Number(retryAfter);
      if (!/^\d+$/.test(retryAfter) || seconds < 1 || seconds > Math.floor(maxRetryAfter / 1000)) {
        return `a 503 with Retry-After ${JSON.stringify(retryAfter)}`;
      }
    }
  }
  if (status === 200 && typeof body.stale !== 'boolean') return 'a 200 without its stale flag';
  return undefined;
}

const COUNTERS = ['hits', 'misses', 'coalesced', 'upstreamCalls', 'errors', 'stale', 'overloaded', 'heldBack'] as const;
export type Counters = Record<(typeof COUNTERS)[number], number>;

/**
 * `gate.stats()` against what the server saw since the last reset (`previous`: the counters at the last check);
 * `quiet`: no request is under way, so every verification settled has been counted; `exact`: every 503 or stale
 * copy came from a verification of this gate (no shared tier, whose waits can end a request by themselves).
 */
export function checkStats(
  gate: Gate,
  seen: SeenCounts,
  previous: Counters | undefined,
  quiet: boolean,
  exact: boolean,
): { counters: Counters; broken: string | undefined } {
  const stats = gate.stats();
  const counters = Object.fromEntries(COUNTERS.map((name) => [name, stats[name]])) as Counters;
  const broken = (): string | undefined => {
    for (const name of COUNTERS) {
      if (!Number.isSafeInteger(counters[name]) || counters[name] < 0) return `stats().${name} is ${counters[name]}`;
      if (previous !== undefined && counters[name] < previous[name]) {
        return `stats().${name} went down from ${previous[name]} to ${counters[name]} without a reset`;
      }
    }
    if (counters.hits !== seen.hits) return `stats().hits ${counters.hits}, cache hits answered ${seen.hits}`;
    if (counters.misses !== seen.misses) return `stats().misses ${counters.misses}, misses answered ${seen.misses}`;
    if (counters.coalesced > counters.misses) return 'stats().coalesced above misses';
    if (counters.overloaded !== 0) return `stats().overloaded ${counters.overloaded} with no overload`;
    for (const [name, state] of Object.entries(stats.breakers)) {
      if (state !== 'closed' && state !== 'open' && state !== 'half-open') return `breaker ${name} is ${state}`;
    }
    for (const [name, load] of Object.entries(stats.admission)) {
      if (load.waiting !== 0 || load.running < 0 || load.running > 16) {
        return `admission ${name} ${JSON.stringify(load)} with at most a few requests at once`;
      }
    }
    if (!quiet) return undefined;
    if (counters.stale !== seen.staleFlights) {
      return `stats().stale ${counters.stale}, verifications that served a stale copy ${seen.staleFlights}`;
    }
    const unanswered = counters.errors + counters.heldBack;
    if (exact ? unanswered !== seen.failedFlights : unanswered > seen.failedFlights) {
      return `stats().errors + heldBack ${unanswered}, verifications that ended in a 503 or a stale copy ${seen.failedFlights}`;
    }
    return undefined;
  };
  return { counters, broken: broken() };
}

/** `gate.stats()` right after `reset()`: every counter zero, every breaker closed. */
export function checkReset(gate: Gate): string | undefined {
  const stats = gate.stats();
  for (const name of COUNTERS) if (stats[name] !== 0) return `stats().${name} is ${stats[name]} right after reset()`;
  for (const [name, state] of Object.entries(stats.breakers)) {
    if (state !== 'closed') return `breaker ${name} is ${state} right after reset()`;
  }
  return undefined;
}
