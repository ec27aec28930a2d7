/**
 * Scenario 1, the hot path (Express, Koa and Fastify): the bare route against `authenticate(gate)` +
 * `requires(...)` with a cached token, side by side (what the goal is judged on); for scale, the floor
 * against the bare route side by side, and bare, two pass-through middleware and gated one after the other.
 */
import { HOT_TOKEN, type Variant } from '../lib.js';
import { clean, compared, cpuRatio, type Outcome, type Row, ratio, ratioResult, variantSummary } from '../report.js';
import { type Bench, interleave, type Load, sideBySide } from '../runs.js';
import { settings } from '../settings.js';

/** The hot path's load: every request carries the cached token. */
export const hotLoad: Load = {
  connections: settings.connections,
  duration: settings.durationSeconds,
  authorization: `Bearer ${HOT_TOKEN}`,
};

/** The hot path's load per server side by side: the load process drives two, each with half the connections. */
export const sideBySideHotLoad: Load = { ...hotLoad, connections: Math.max(1, settings.connections / 2) };

/** The hot path's side-by-side runs of `variants`: `settings.hotRounds`, from three starts of the servers. */
export function hotSideBySide<V extends Variant>(bench: Bench, name: string, variants: readonly [V, V]) {
  return sideBySide(bench, name, variants, sideBySideHotLoad, settings.hotRounds, settings.hotRoundsPerStart);
}

const FRAMEWORKS = [
  { framework: 'Express', bare: 'express-bare', noop: 'express-noop', floor: 'express-floor', gated: 'express-gate' },
  { framework: 'Koa', bare: 'koa-bare', noop: 'koa-noop', floor: 'koa-floor', gated: 'koa-gate' },
  { framework: 'Fastify', bare: 'fastify-bare', noop: 'fastify-noop', floor: 'fastify-floor', gated: 'fastify-gate' },
] as const;

export async function runHot(bench: Bench): Promise<Outcome> {
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  for (const { framework, bare, noop, floor, gated } of FRAMEWORKS) {
    const title = `1. Hot path, ${framework}: bare route vs two pass-through middleware vs authenticate + requires (cached token)`;
    const paired = await hotSideBySide(bench, title, [bare, gated]);
    const floorPaired = await hotSideBySide(bench, `${title}: the floor`, [bare, floor]);
    const runs = await interleave(bench, title, [bare, noop, gated], () => hotLoad);
    const judged = ratio(paired[gated], paired[bare]);
    const ok = clean(paired[bare], paired[gated], runs[bare], runs[noop], runs[gated]);
    results[`hot${framework}`] = {
      sideBySide: compared(['gated', paired[gated]], ['bare', paired[bare]]),
      floorSideBySide: {
        ...compared(['floor', floorPaired[floor]], ['bare', floorPaired[bare]]),
        clean: clean(floorPaired[bare], floorPaired[floor]),
      },
      alternating: {
        ...compared(['gated', runs[gated]], ['bare', runs[bare]]),
        twoPassThroughMiddleware: variantSummary(runs[noop]),
        passThroughRatio: ratio(runs[noop], runs[bare]),
        passThroughCpuRatio: cpuRatio(runs[noop], runs[bare]),
      },
      clean: ok,
    };
    const scenario = `1. Hot path, ${framework}`;
    rows.push(
      {
        scenario,
        measure: 'req/s gated / bare, side by side on one core (median of per-run ratios)',
        result: ratioResult(paired[gated], paired[bare]),
        goal: '>= 0.95',
        met: ok && judged.median >= 0.95,
      },
      {
        scenario,
        measure: 'the same, one after the other (A B, B A, ...; median of per-round ratios)',
        result: ratioResult(runs[gated], runs[bare]),
        goal: '(information: the spread of sequential rounds on this machine)',
        met: undefined,
      },
      {
        scenario,
        measure: 'for scale: two pass-through middleware / bare, one after the other',
        result: ratioResult(runs[noop], runs[bare]),
        goal: '(what the framework charges for two more handlers)',
        met: undefined,
      },
      {
        scenario,
        measure:
          'for scale: the floor / bare, side by side: a hand-written check that looks the raw header up in a Map (no hash, grammar, expiry or LRU)',
        result: ratioResult(floorPaired[floor], floorPaired[bare]),
        goal: '(a reference: about what a hand-written cached-token check costs here)',
        met: undefined,
      },
    );
  }
  return { rows, results };
}
