/**
 * The gate's decisions against a reference model: for fixed seeds, a few hundred random steps against real gates
 * behind a real server on 127.0.0.1, in front of a real mock provider (OnlineOrNot, then Partoo), and the same with
 * two gates sharing a real redis-server (test/support/decision-run.ts says which steps). After every request, the
 * rules the README promises (`DecisionModel.check` in test/support/decision-model.ts, and what the client sees in
 * `checkResponse`); after every step, `stats()`. A failure names its seed, its step and the steps before it.
 *
 * `MODEL_SEEDS=1,2,3 npx vitest run test/decisions-model.test.ts` runs those seeds instead, with every mock (to replay
 * a failure, or to explore: rule violations fail, a seed that leaves a rule untested does not); `MODEL_TRACE=steps`
 * prints a run's steps and answers, `MODEL_TRACE=rules` how often it put each rule to the test (to choose seeds).
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { onlineOrNotKit, partooKit } from './support/decision-harness.js';
import type { ModelSettings } from './support/decision-model.js';
import { runModel } from './support/decision-run.js';
import { type RedisServer, redisServerMissing, startRedisServer } from './support/redis-server.js';

/** Small windows, so that a few seconds see entries go stale, rejections expire and breakers cool down. */
const SETTINGS: ModelSettings = {
  ttl: 80,
  negativeTtl: 120,
  staleIfError: 1500,
  timeout: 150,
  cooldown: 250,
  maxRetryAfter: 1000,
  localTtl: 50,
  slack: 60,
};

/** Each mock with its seeds: seeds whose steps put every rule to the test several times (MODEL_TRACE=rules). */
const ONE_GATE = [
  ['OnlineOrNot', onlineOrNotKit, [10, 17]],
  ['Partoo', partooKit, [10, 17]],
] as const;
const TWO_GATES = [
  ['OnlineOrNot', onlineOrNotKit, [23]],
  ['Partoo', partooKit, [24]],
] as const;

const chosen = process.env.MODEL_SEEDS?.split(',').map(Number);
const everyRule = chosen === undefined;

describe('decisions against a model, one gate', () => {
  for (const [name, kit, seeds] of ONE_GATE) {
    for (const seed of chosen ?? seeds) {
      it(
        `${name}, seed ${seed}`,
        () => runModel({ seed, kit, settings: SETTINGS, steps: 250, gates: 1, everyRule }),
        30_000,
      );
    }
  }
});

describe.skipIf(redisServerMissing)('decisions against a model, two gates sharing a redis-server', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.close();
  });

  for (const [name, kit, seeds] of TWO_GATES) {
    for (const seed of chosen ?? seeds) {
      it(
        `${name}, seed ${seed}`,
        () => runModel({ seed, kit, settings: SETTINGS, steps: 220, gates: 2, redis, everyRule }),
        30_000,
      );
    }
  }
});
