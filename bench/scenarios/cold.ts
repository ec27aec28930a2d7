/**
 * Scenario 3, the cold path: a new token on every request, the mock answering without added latency;
 * tokengate against the hand-written middleware doing both undici calls itself on a pool of the same
 * size. Side by side for the goal, one after the other for the provider's connections (keep-alive).
 */
import { BENCH_PERMISSIONS, PROVIDER_POOL_SIZE } from '../lib.js';
import { clean, compared, type Outcome, ratio, ratioResult } from '../report.js';
import { type Bench, interleave, type Load, sideBySide } from '../runs.js';
import { settings } from '../settings.js';

export async function runCold(bench: Bench): Promise<Outcome> {
  for (let i = 0; i < settings.coldTokens; i++) {
    bench.provider.setToken(`cold-${i}`, { id: `tok_${i}`, permissions: BENCH_PERMISSIONS });
  }
  const coldLoad: Load = {
    connections: settings.connections,
    duration: settings.durationSeconds,
    coldPrefix: 'cold-',
    coldLimit: settings.coldTokens,
  };
  const title =
    '3. Cold path: a new token on every request, provider without latency: tokengate vs hand-written undici calls';
  const variants = ['express-gate', 'express-hand'] as const;
  // Two starts of the servers, one in each order, half the runs each: a process carries its own luck into all of its
  // runs, as on the hot path; more starts would measure servers still warming up (a cold verification runs more of
  // the gate's code than a cached one, and every run here asks the provider).
  const paired = await sideBySide(
    bench,
    title,
    variants,
    { ...coldLoad, connections: Math.max(1, settings.connections / 2) },
    settings.rounds,
    Math.max(1, Math.ceil(settings.rounds / 2)),
  );
  const runs = await interleave(bench, title, variants, () => coldLoad);
  const [pairedGated, pairedHand] = [paired['express-gate'], paired['express-hand']];
  const [gated, hand] = [runs['express-gate'], runs['express-hand']];
  const judged = ratio(pairedGated, pairedHand);
  // Per measured run: between its runs a server sits idle while the other variant is measured, long
  // enough for the mock's keep-alive timeout (5 s, announced in its Keep-Alive header) to close idle
  // sockets, so across the scenario a pool reconnects. Within a run of continuous load it must not
  // open more than its size.
  const maxConnections = Math.max(...gated.map((run) => run.providerConnectionsInRun));
  const totalConnections = Math.max(...gated.map((run) => run.providerConnections));
  const everyRequestUpstream = gated.every((run) => run.providerCalls.verify >= run.load.requests);
  const ok = clean(gated, hand, pairedGated, pairedHand) && everyRequestUpstream;
  return {
    results: {
      cold: {
        sideBySide: compared(['tokengate', pairedGated], ['handWritten', pairedHand]),
        ...compared(['tokengate', gated], ['handWritten', hand]),
        maxProviderConnectionsInOneRun: maxConnections,
        providerConnectionsWholeScenario: totalConnections,
        poolSize: PROVIDER_POOL_SIZE,
        clean: ok,
      },
    },
    rows: [
      {
        scenario: '3. Cold path',
        measure: 'req/s tokengate / hand-written undici, side by side on one core (median of per-run ratios)',
        result: ratioResult(pairedGated, pairedHand),
        goal: '>= 0.9',
        met: ok && judged.median >= 0.9,
      },
      {
        scenario: '3. Cold path',
        measure: 'the same, one after the other (A B, B A, ...)',
        result: ratioResult(gated, hand),
        goal: '(information)',
        met: undefined,
      },
      {
        scenario: '3. Cold path',
        measure: 'provider connections opened during one measured run (max over rounds)',
        result: `${maxConnections} (${totalConnections} over the whole scenario, warm-up and idle gaps included)`,
        goal: `<= ${PROVIDER_POOL_SIZE} (pool size)`,
        met: maxConnections <= PROVIDER_POOL_SIZE,
      },
    ],
  };
}
