// Mutation testing of the security-critical files: `npm run test:mutation` (not part of .ci/run).
// One file or a few: `npm run test:mutation -- --mutate src/guards.ts,src/errors.ts`.
// Reports: reports/mutation/index.html and reports/mutation/mutation.json (gitignored).

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: {
    configFile: 'vitest.config.ts',
    // Same pool as `npm test`; one fork per Stryker worker.
    pool: 'forks',
    // Only the test files that import the mutated file (vitest's --related).
    related: true,
  },
  // Record which tests cover each mutant in the first run, then run only those per mutant.
  coverageAnalysis: 'perTest',
  // The machine has 2 cores.
  concurrency: 2,
  mutate: [
    // Request flow, verdict store and per-connection memo, the framework adapter seam.
    'src/{gate,store,memo,adapter}.ts',
    // Permission checks, credential parsers, the errors that reach clients.
    'src/guards.ts',
    'src/credentials/*.ts',
    'src/errors.ts',
    // The verdict cache, until src/store.ts replaces it.
    'src/cache.ts',
  ],
  ignorePatterns: ['dist', 'coverage', 'reports', 'bench', '*.tgz', '*.cpuprofile'],
  // Tests start real HTTP servers; a mutant that hangs one is a timeout (counted as detected).
  timeoutMS: 10_000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: true,
  thresholds: { high: 90, low: 75, break: null },
};
