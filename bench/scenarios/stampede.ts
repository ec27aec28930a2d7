/**
 * Scenario 4, the stampede: 1,000 connections send one request each, at once, for a token the gate has
 * never seen, while the mock takes `STAMPEDE_LATENCY_MS` per answer. Goals: one upstream call per
 * endpoint, p99 under the latency plus 20 ms. Each round sends the same burst to two baselines: the bare
 * route (what the machine needs to get through 1,000 requests at all) and `express-wait` (one shared
 * wait, no gate: a perfect gate). Fresh servers every round, as the token must be new to each.
 */
import { randomUUID } from 'node:crypto';
import { BENCH_PERMISSIONS, HOT_TOKEN, median, round, STAMPEDE_LATENCY_MS, type Variant } from '../lib.js';
import { stop } from '../processes.js';
import { clean, type Outcome, variantSummary } from '../report.js';
import { type Bench, counted, describeRun, measured, type Run, startServer, withBurst, withLoader } from '../runs.js';
import { settings } from '../settings.js';

const REQUESTS = 1000;

/**
 * One measured burst against a fresh `variant` server, with `authorization` (or none). The server is
 * warmed first as a running one would be: a second of autocannon with `warmAuthorization`, then an
 * unmeasured burst with `warmBurstAuthorization`, which compiles the miss and join paths the measured
 * burst takes.
 */
async function measureBurst(
  bench: Bench,
  variant: Variant,
  authorizations: { warm?: string; warmBurst?: string; measured?: string },
): Promise<Run> {
  const server = await startServer(bench, variant);
  const burst = (authorization: string | undefined) => ({
    url: server.url,
    connections: REQUESTS,
    duration: 0,
    ...(authorization === undefined ? {} : { authorization }),
  });
  try {
    await withLoader((loader) =>
      counted(bench, server, () => loader.run({ ...burst(authorizations.warm), connections: 32, duration: 1 })),
    );
    await withBurst(burst(authorizations.warmBurst), (go) => counted(bench, server, go));
    return await withBurst(burst(authorizations.measured), (go) => measured(bench, server, go));
  } finally {
    await stop(server.child);
  }
}

export async function runStampede(bench: Bench): Promise<Outcome> {
  const { provider } = bench;
  const rounds = settings.stampedeRounds;
  console.log(
    `\n## 4. Stampede: ${REQUESTS} concurrent requests for one cold token, provider latency ${STAMPEDE_LATENCY_MS} ms`,
  );
  const runs: Run[] = [];
  const bareRuns: Run[] = [];
  const waitRuns: Run[] = [];
  for (let r = 0; r < rounds; r++) {
    const bare = await measureBurst(bench, 'express-bare', {});
    bareRuns.push(bare);
    console.log(`round ${r + 1}/${rounds}  ${describeRun(bare)}  (same burst, bare route)`);
    const token = `stampede-${randomUUID()}`;
    const warmToken = `stampede-warm-${randomUUID()}`;
    provider.setToken(warmToken, { id: `tok_stampede_warm_${r}`, permissions: BENCH_PERMISSIONS });
    const coldBurst = {
      warm: `Bearer ${HOT_TOKEN}`,
      warmBurst: `Bearer ${warmToken}`,
      measured: `Bearer ${token}`,
    };
    const wait = await measureBurst(bench, 'express-wait', coldBurst);
    waitRuns.push(wait);
    console.log(
      `round ${r + 1}/${rounds}  ${describeRun(wait)}  (same burst, one shared ${STAMPEDE_LATENCY_MS} ms wait, no gate)`,
    );
    provider.setToken(token, { id: `tok_stampede_${r}`, permissions: BENCH_PERMISSIONS });
    provider.latency = STAMPEDE_LATENCY_MS;
    try {
      const run = await measureBurst(bench, 'express-gate', coldBurst);
      runs.push(run);
      console.log(
        `round ${r + 1}/${rounds}  ${describeRun(run)}  upstream: gate ${run.gateUpstreamCalls}, mock verify ${run.providerCalls.verify} permissions ${run.providerCalls.permissions}`,
      );
    } finally {
      provider.latency = 0;
    }
  }
  const p99s = (of: readonly Run[]) => of.map((run) => run.load.latencyP99);
  /** Median over rounds of the gate's p99 minus the baseline's in the same round. */
  const addedOver = (baseline: readonly Run[]) =>
    median(runs.map((run, i) => run.load.latencyP99 - (baseline[i]?.load.latencyP99 ?? Number.NaN)));
  const maxUpstream = Math.max(
    ...runs.map((run) =>
      Math.max(run.gateUpstreamCalls ?? Number.NaN, run.providerCalls.verify, run.providerCalls.permissions),
    ),
  );
  const p99 = median(p99s(runs));
  const bareP99 = median(p99s(bareRuns));
  const waitP99 = median(p99s(waitRuns));
  const added = addedOver(bareRuns);
  const addedOverWait = addedOver(waitRuns);
  const allAnswered =
    [...runs, ...bareRuns, ...waitRuns].every((run) => run.load.requests === REQUESTS) &&
    clean(runs, bareRuns, waitRuns);
  const goal = STAMPEDE_LATENCY_MS + 20;
  return {
    results: {
      stampede: {
        requests: REQUESTS,
        providerLatencyMs: STAMPEDE_LATENCY_MS,
        rounds: variantSummary(runs).rounds,
        bareBurstRounds: variantSummary(bareRuns).rounds,
        sharedWaitRounds: variantSummary(waitRuns).rounds,
        maxUpstreamCalls: maxUpstream,
        medianP99: p99,
        medianBareBurstP99: bareP99,
        medianP99AddedOverBareBurst: added,
        medianSharedWaitP99: waitP99,
        medianP99AddedOverSharedWait: addedOverWait,
        clean: allAnswered,
      },
    },
    rows: [
      {
        scenario: '4. Stampede',
        measure: 'upstream calls per endpoint (max over rounds)',
        result: `${maxUpstream}`,
        goal: 'exactly 1',
        met: allAnswered && maxUpstream === 1,
      },
      {
        scenario: '4. Stampede',
        measure: 'p99 latency, ms (median over rounds)',
        result:
          `${p99} (rounds ${p99s(runs).join(', ')}); the same burst on the bare route: ${bareP99}; ` +
          `with one shared ${STAMPEDE_LATENCY_MS} ms wait and no gate: ${waitP99}`,
        goal: `< ${goal}`,
        met: allAnswered && p99 < goal,
      },
      {
        scenario: '4. Stampede',
        measure: 'p99 added over the same burst on the bare route, ms (median of per-round differences)',
        result: `${round(added, 1)}`,
        goal: `(information: the bare route has no ${STAMPEDE_LATENCY_MS} ms wait, so this holds the provider's latency as well as the gate's own cost)`,
        met: undefined,
      },
      {
        scenario: '4. Stampede',
        measure: `p99 added over the same burst through one shared ${STAMPEDE_LATENCY_MS} ms wait and no gate, ms (median of per-round differences)`,
        result: `${round(addedOverWait, 1)}`,
        goal: `(information: what the gate itself adds to a stampede; the goal above allows it ${goal - STAMPEDE_LATENCY_MS} ms over the wait)`,
        met: undefined,
      },
    ],
  };
}
