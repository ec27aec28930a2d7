/**
 * The benchmark suite, `npm run bench` (bench/README.md): runs the scenarios of `BENCH_ONLY` (all by
 * default) from bench/scenarios/, prints every run and a markdown table, and writes the figures.
 *
 * This process hosts the OnlineOrNot mock and the JWKS server on the load core, beside the load
 * generators: the server core then does only the work being measured.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mockOnlineOrNot } from '../src/testing/index.js';
import { startJwksServer } from './jwks.js';
import { BENCH_PERMISSIONS, HOT_TOKEN, ROUTE_PERMISSION } from './lib.js';
import { pin } from './processes.js';
import { type Outcome, table } from './report.js';
import type { Bench } from './runs.js';
import { runCold } from './scenarios/cold.js';
import { runFlood } from './scenarios/flood.js';
import { runHot } from './scenarios/hot.js';
import { runMemory } from './scenarios/memory.js';
import { runMicro } from './scenarios/micro.js';
import { runPair } from './scenarios/pair.js';
import { runPeers } from './scenarios/peers.js';
import { runRedis } from './scenarios/redis.js';
import { runStampede } from './scenarios/stampede.js';
import { SCENARIOS, type ScenarioName, settings } from './settings.js';

type Suite = Bench & { readonly jwt: string };

const scenarios: Record<ScenarioName, (suite: Suite) => Promise<Outcome>> = {
  hot: runHot,
  peers: runPeers,
  cold: runCold,
  stampede: runStampede,
  memory: runMemory,
  micro: runMicro,
  flood: runFlood,
};

pin(process.pid, settings.loadCore);
const provider = await mockOnlineOrNot({ tokens: { [HOT_TOKEN]: { id: 'tok_hot', permissions: BENCH_PERMISSIONS } } });
const jwks = await startJwksServer();
const suite: Suite = {
  provider,
  server: { providerUrl: provider.url, jwksUri: jwks.jwksUri, issuer: jwks.issuer, audience: jwks.audience },
  jwt: jwks.sign({ sub: 'user-1', scope: BENCH_PERMISSIONS.join(' ') }),
};

// The Redis tier's scenario needs redis-server: `BENCH_REDIS=1` adds it to the run, `BENCH_REDIS=only` runs it alone.
const redisScenario = process.env.BENCH_REDIS;
const outcomes: Outcome[] = [];
if (settings.pair !== undefined) outcomes.push(await runPair(suite, settings.pair));
if (redisScenario !== 'only') {
  for (const name of SCENARIOS) if (settings.only.has(name)) outcomes.push(await scenarios[name](suite));
}
if (redisScenario === '1' || redisScenario === 'only') outcomes.push(await runRedis(suite));
const rows = outcomes.flatMap((outcome) => outcome.rows);
const results: Record<string, unknown> = Object.assign({}, ...outcomes.map((outcome) => outcome.results));
if (rows.length > 0) console.log(`\n${table(rows)}\n`);

const meta = {
  date: new Date().toISOString(),
  node: process.version,
  rounds: settings.rounds,
  hotSideBySideRounds: settings.hotRounds,
  hotSideBySideRoundsPerStart: settings.hotRoundsPerStart,
  durationSeconds: settings.durationSeconds,
  warmupSeconds: settings.warmupSeconds,
  connections: settings.connections,
  floodSeconds: settings.floodSeconds,
  serverCore: settings.serverCore,
  loadCore: settings.loadCore,
  quick: settings.quick,
  full: settings.full,
  routePermission: ROUTE_PERMISSION,
};
// Only a full run replaces the committed figures; any other run leaves them alone.
const here = dirname(fileURLToPath(import.meta.url));
const file =
  settings.full && redisScenario !== 'only' ? join(here, 'results.json') : join(here, '.build', 'results.json');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, `${JSON.stringify({ meta, table: rows, ...results }, null, 2)}\n`);
console.log(
  `wrote ${relative(process.cwd(), file)}${settings.full ? '' : ' (not a full run: bench/results.json is left alone)'}`,
);

await provider.close();
await jwks.close();
