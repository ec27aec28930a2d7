// Mutation testing of the security-critical files: `npm run test:mutation` (not part of .ci/run).
// One file or a few: `npm run test:mutation -- --mutate src/guards.ts,src/errors.ts`.
// StrykerJS 9: the last major that runs on Node 20 (StrykerJS 10 needs Node 22).
// Mutants in module-level code (static: constants, regular expressions) need the whole suite
// in a fresh environment each, which takes most of the time; `-- --ignoreStatic` skips them.
// Reports: reports/mutation/index.html and reports/mutation/mutation.json (gitignored).

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: {
    configFile: 'vitest.config.ts',
    // Only the test files that import the mutated file (vitest's --related).
    related: true,
  },
  // Record which tests cover each mutant in the first run, then run only those per mutant.
  coverageAnalysis: 'perTest',
  // The machine has 2 cores.
  concurrency: 2,
  mutate: [
    // Request flow, verdict store, admission, per-connection memo, the framework adapter seam and the request it reads.
    'src/{gate,store,admission,ranking,wait-queue,memo,adapter,request}.ts',
    // The upstream policy (fail closed, stale only for the provider's own failure, the breaker, Retry-After's cap),
    // the deadline, the provider answers' transport checks, a verdict's checks, and what a provider threw, cleaned.
    'src/{upstream,deadline,http,verdict,provider-failure}.ts',
    // Permission checks, credential parsers, the errors that reach clients.
    'src/guards.ts',
    'src/credentials/*.ts',
    'src/errors.ts',
  ],
  ignorePatterns: ['dist', 'coverage', 'reports', 'bench', '*.tgz', '*.cpuprofile'],
  // Tests start real HTTP servers; a mutant that hangs one is a timeout (counted as detected).
  timeoutMS: 10_000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false, reportTests: false },
  // A later run tests again only the mutants whose code or covering tests changed (`--force`: all of them).
  incremental: true,
  incrementalFile: 'reports/mutation/stryker-incremental.json',
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
  thresholds: { high: 90, low: 75, break: null },
};
