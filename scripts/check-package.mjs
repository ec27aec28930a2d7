#!/usr/bin/env node
// Checks the package as it will be published, not the source tree:
//
//   1. `npm run build`
//   2. the build put AuthError in one shared chunk per format (so `instanceof`
//      holds across `tokengate`, `tokengate/express`, `tokengate/koa`, `tokengate/testing`)
//   3. `publint --strict`
//   4. `npm pack` into a temp dir
//   5. `attw --profile strict` on that tarball (node10, node16-cjs, node16-esm, bundler)
//   6. a throwaway consumer project in os.tmpdir() installs the tarball + express + koa
//   7. an ESM and a CJS consumer import every entry point at run time
//   8. TypeScript consumers type-check against the shipped .d.ts/.d.cts (node16 esm+cjs, bundler)
//
// One line per check; the output of a failing check is printed below it.
// Exit code 0 when everything passed, 1 otherwise.
//
// Usage: node scripts/check-package.mjs [--no-build] [--keep] [--verbose]
//   --no-build  reuse the current dist/ (it must be fresh)
//   --keep      keep the temp dir (path is printed) for debugging
//   --verbose   print the output of passing checks as well

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = new Set(process.argv.slice(2));
const noBuild = argv.has('--no-build');
const keep = argv.has('--keep');
const verbose = argv.has('--verbose');
const requireFromRoot = createRequire(path.join(root, 'package.json'));

const ENTRIES = ['index', 'express', 'koa', 'testing'];

let failures = 0;

class CheckError extends Error {
  constructor(message, output = '') {
    super(message);
    this.output = output;
  }
}

function indent(text, max = 80) {
  const lines = text.replace(/\s+$/, '').split('\n');
  const shown = lines.length > max ? ['…', ...lines.slice(-max)] : lines;
  return shown.map((line) => `    ${line}`).join('\n');
}

/** Runs one check; `fn` returns an optional detail string or throws. */
function check(name, fn, { fatal = false } = {}) {
  const started = Date.now();
  try {
    const result = fn() ?? {};
    const detail = typeof result === 'string' ? result : result.detail;
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`ok    ${name}${detail ? ` — ${detail}` : ''} (${secs}s)`);
    if (verbose && result.output) console.log(indent(result.output));
    return true;
  } catch (error) {
    failures++;
    console.log(`FAIL  ${name}: ${error.message}`);
    if (error.output) console.log(indent(error.output));
    else if (!(error instanceof CheckError)) console.log(indent(String(error.stack ?? error)));
    if (fatal) finish();
    return false;
  }
}

/** Spawns a command without a shell; throws CheckError with its output when it fails. */
function run(cmd, args, { cwd = root, env = process.env, timeout = 10 * 60_000 } = {}) {
  const res = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 });
  const output = `${res.stdout ?? ''}${res.stderr ? `\n${res.stderr}` : ''}`.trim();
  if (res.error) throw new CheckError(`\`${cmd} ${args.join(' ')}\` could not run: ${res.error.message}`, output);
  if (res.status !== 0) {
    const how = res.signal ? `was killed by ${res.signal}` : `exited with ${res.status}`;
    throw new CheckError(`\`${cmd} ${args.join(' ')}\` ${how}`, output);
  }
  return output;
}

/**
 * Environment for npm in the consumer project. `npm run` exports npm_config_local_prefix
 * (pointing at this repo), npm_config_loglevel=silent and friends; a nested npm would obey
 * them and could install into the repo. Keep only settings about where and how to fetch.
 */
function consumerEnv() {
  const keepKeys = new Set([
    'npm_config_cache',
    'npm_config_registry',
    'npm_config_userconfig',
    'npm_config_globalconfig',
    'npm_config_cafile',
    'npm_config_proxy',
    'npm_config_https_proxy',
    'npm_config_noproxy',
    'npm_config_strict_ssl',
  ]);
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(key) && !keepKeys.has(key.toLowerCase())) continue;
    env[key] = value;
  }
  return env;
}

function localVersion(name) {
  return JSON.parse(readFileSync(requireFromRoot.resolve(`${name}/package.json`), 'utf8')).version;
}

let tmp;
function finish() {
  if (tmp) {
    if (keep) console.log(`kept  ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
  console.log(failures === 0 ? '\ncheck:package passed' : `\ncheck:package FAILED (${failures} check(s))`);
  process.exit(failures === 0 ? 0 : 1);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (tmp && !keep) rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------
// 1. build

if (noBuild) console.log('skip  npm run build (--no-build)');
else check('npm run build', () => void run('npm', ['run', 'build']), { fatal: true });

// ---------------------------------------------------------------------------
// 2. AuthError lives in one shared chunk per format

check('dist: AuthError defined once per format, in a shared chunk', () => {
  const dist = path.join(root, 'dist');
  const files = readdirSync(dist);
  const formats = {
    '.js': /(?:\bclass\s+AuthError\b|\b(?:var|let|const)\s+AuthError\s*=)/,
    '.cjs': /(?:\bclass\s+AuthError\b|\b(?:var|let|const)\s+AuthError\s*=)/,
    '.d.ts': /\bclass\s+AuthError\b/,
    '.d.cts': /\bclass\s+AuthError\b/,
  };
  const missing = [];
  for (const entry of ENTRIES) {
    for (const ext of Object.keys(formats)) if (!files.includes(`${entry}${ext}`)) missing.push(`dist/${entry}${ext}`);
  }
  if (missing.length) throw new CheckError(`missing build outputs: ${missing.join(', ')}`);
  const found = [];
  const problems = [];
  for (const [ext, pattern] of Object.entries(formats)) {
    // `.js` must not match `.d.ts`-style names, nor `.cjs` match `.d.cts`.
    const ofFormat = files.filter((f) => f.endsWith(ext) && !(ext === '.js' && f.endsWith('.d.js')));
    const defining = ofFormat.filter((f) => pattern.test(readFileSync(path.join(dist, f), 'utf8')));
    if (defining.length !== 1) {
      problems.push(
        `${ext}: AuthError defined in ${defining.length} files (${defining.join(', ') || 'none'}), expected 1`,
      );
    } else if (ENTRIES.some((e) => defining[0] === `${e}${ext}`)) {
      problems.push(`${ext}: AuthError is defined in entry ${defining[0]}, not in a shared chunk`);
    } else {
      found.push(defining[0]);
    }
  }
  if (problems.length) throw new CheckError(problems.join('; '), `dist/: ${files.join(' ')}`);
  return found.join(', ');
});

// ---------------------------------------------------------------------------
// 3. publint

check('publint --strict', () => {
  const output = run('npx', ['--no-install', 'publint', '--strict']);
  return { output };
});

// ---------------------------------------------------------------------------
// 4. npm pack

tmp = mkdtempSync(path.join(os.tmpdir(), 'tokengate-check-'));
const packDir = path.join(tmp, 'pack');
const consumer = path.join(tmp, 'consumer');
mkdirSync(packDir);
mkdirSync(consumer);
let tarball;

check(
  'npm pack',
  () => {
    // The build above is fresh, so skip `prepack` (it would only build again).
    const out = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir]);
    const info = JSON.parse(out.slice(out.indexOf('[')))[0];
    tarball = path.join(packDir, info.filename);
    const files = info.files.map((f) => f.path);
    const expected = ENTRIES.flatMap((e) => ['.js', '.cjs', '.d.ts', '.d.cts'].map((ext) => `dist/${e}${ext}`));
    const missing = expected.filter((f) => !files.includes(f));
    if (missing.length) throw new CheckError(`tarball lacks ${missing.join(', ')}`, files.join('\n'));
    const stray = files.filter((f) => !/^(dist\/|package\.json$|README\.md$|LICENSE)/i.test(f));
    if (stray.length) throw new CheckError(`tarball ships unexpected files: ${stray.join(', ')}`);
    return `${info.filename}, ${files.length} files, ${(info.size / 1024).toFixed(1)} kB`;
  },
  { fatal: true },
);

// ---------------------------------------------------------------------------
// 5. are the types wrong?

check('attw --profile strict (node10, node16-cjs, node16-esm, bundler)', () => {
  // Same analysis as `attw --pack .`, on the exact tarball the consumer installs below.
  const output = run('npx', [
    '--no-install',
    'attw',
    tarball,
    '--profile',
    'strict',
    '--format',
    'table-flipped',
    '--no-color',
    '--no-emoji',
  ]);
  return { output };
});

// ---------------------------------------------------------------------------
// 6. consumer project

const typesFor = ['@types/express', '@types/koa', '@types/node'];
check(
  'consumer project: npm install <tarball> express koa',
  () => {
    writeFileSync(
      path.join(consumer, 'package.json'),
      `${JSON.stringify({ name: 'tokengate-consumer', private: true, version: '0.0.0', type: 'module' }, null, 2)}\n`,
    );
    // Same versions as this repo's lockfile, so npm finds them in its cache (prefer-offline).
    const specs = [tarball, ...['express', 'koa', ...typesFor].map((name) => `${name}@${localVersion(name)}`)];
    run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...specs], {
      cwd: consumer,
      env: consumerEnv(),
    });
    return `express@${localVersion('express')}, koa@${localVersion('koa')}`;
  },
  { fatal: true },
);

// ---------------------------------------------------------------------------
// 7. run time: ESM and CJS

/** Shared body: `core`, `express`, `koa`, `testing` are the four module namespaces. */
const runtimeAssertions = `
const problems = [];
const expect = (ok, what) => { if (!ok) problems.push(what); };
expect(typeof core.createGate === 'function', 'tokengate: createGate is not a function');
expect(typeof core.requires === 'function', 'tokengate: requires is not a function');
expect(typeof core.AuthError === 'function' && core.AuthError.prototype instanceof Error,
  'tokengate: AuthError is not a class extending Error');
expect(typeof express.authenticate === 'function', 'tokengate/express: authenticate is not a function');
expect(Object.values(koa).some((v) => typeof v === 'function'), 'tokengate/koa: exports no function');
expect(typeof testing.mockOnlineOrNot === 'function', 'tokengate/testing: mockOnlineOrNot is not a function');
const shared = [];
for (const [name, mod] of Object.entries({ 'tokengate/express': express, 'tokengate/koa': koa, 'tokengate/testing': testing })) {
  if (!('AuthError' in mod)) continue;
  shared.push(name);
  expect(mod.AuthError === core.AuthError, name + ': AuthError is a different class from tokengate\\'s');
}
if (problems.length) { console.error(problems.join('\\n')); process.exit(1); }
console.log('AuthError identical in tokengate' + (shared.length ? ' and ' + shared.join(', ') : ' (no adapter re-exports it)'));
`;

writeFileSync(
  path.join(consumer, 'esm.mjs'),
  `import * as core from 'tokengate';
import { AuthError, createGate, requires } from 'tokengate';
import * as express from 'tokengate/express';
import { authenticate } from 'tokengate/express';
import * as koa from 'tokengate/koa';
import * as testing from 'tokengate/testing';
import { mockOnlineOrNot } from 'tokengate/testing';
void [AuthError, createGate, requires, authenticate, mockOnlineOrNot];
${runtimeAssertions}`,
);
writeFileSync(
  path.join(consumer, 'cjs.cjs'),
  `'use strict';
const core = require('tokengate');
const { AuthError, createGate, requires } = require('tokengate');
const express = require('tokengate/express');
const { authenticate } = require('tokengate/express');
const koa = require('tokengate/koa');
const testing = require('tokengate/testing');
const { mockOnlineOrNot } = require('tokengate/testing');
void [AuthError, createGate, requires, authenticate, mockOnlineOrNot];
${runtimeAssertions}`,
);

for (const [label, file] of [
  ['ESM consumer: import every entry point', 'esm.mjs'],
  ['CJS consumer: require every entry point', 'cjs.cjs'],
]) {
  check(label, () => run(process.execPath, [file], { cwd: consumer }).split('\n').pop());
}

// ---------------------------------------------------------------------------
// 8. TypeScript consumers

const tsBody = `
export const functions: Array<(...args: never[]) => unknown> = [createGate, requires, authenticate, mockOnlineOrNot];
export const koaAdapter: object = koa;
export function describe(error: unknown): string | undefined {
  return error instanceof AuthError ? \`\${error.name}: \${error.message}\` : undefined;
}
`;
const tsImports = `import { AuthError, createGate, requires } from 'tokengate';
import { authenticate } from 'tokengate/express';
import * as koa from 'tokengate/koa';
import { mockOnlineOrNot } from 'tokengate/testing';
`;
mkdirSync(path.join(consumer, 'ts-node16'));
mkdirSync(path.join(consumer, 'ts-bundler'));
writeFileSync(path.join(consumer, 'ts-node16', 'esm.mts'), tsImports + tsBody);
writeFileSync(path.join(consumer, 'ts-node16', 'cjs.cts'), tsImports + tsBody);
writeFileSync(path.join(consumer, 'ts-bundler', 'index.ts'), tsImports + tsBody);
const baseCompilerOptions = {
  target: 'ES2022',
  lib: ['ES2023'],
  strict: true,
  noEmit: true,
  types: ['node'],
  // Check the shipped .d.ts files themselves, not only their use.
  skipLibCheck: false,
};
writeFileSync(
  path.join(consumer, 'tsconfig.node16.json'),
  JSON.stringify({
    compilerOptions: { ...baseCompilerOptions, module: 'node16', moduleResolution: 'node16' },
    include: ['ts-node16'],
  }),
);
writeFileSync(
  path.join(consumer, 'tsconfig.bundler.json'),
  JSON.stringify({
    compilerOptions: { ...baseCompilerOptions, module: 'preserve', moduleResolution: 'bundler' },
    include: ['ts-bundler'],
  }),
);

const tsc = requireFromRoot.resolve('typescript/bin/tsc');
const tsVersion = localVersion('typescript');

/**
 * Runs tsc and fails on errors in the consumer files or in tokengate's own .d.ts files.
 * Errors inside other packages' declarations (e.g. @types/koa against whichever
 * content-disposition npm hoisted) are not ours to fix: they are counted, not failed on.
 */
function typecheck(project) {
  let output;
  try {
    output = run(process.execPath, [tsc, '-p', project, '--pretty', 'false'], { cwd: consumer });
  } catch (error) {
    if (!(error instanceof CheckError)) throw error;
    output = error.output;
  }
  const errors = output.split('\n').filter((line) => /error TS\d+/.test(line));
  const foreign = errors.filter((line) => /^node_modules\//.test(line) && !/^node_modules\/tokengate\//.test(line));
  const ours = errors.filter((line) => !foreign.includes(line));
  if (ours.length) throw new CheckError(`${ours.length} type error(s)`, ours.join('\n'));
  if (errors.length === 0 && /error/i.test(output)) throw new CheckError('tsc failed', output);
  return foreign.length
    ? { detail: `ignored ${foreign.length} error(s) in third-party .d.ts`, output: foreign.join('\n') }
    : undefined;
}
check(`tsc --noEmit, moduleResolution node16 (.mts + .cts consumer), TypeScript ${tsVersion}`, () =>
  typecheck('tsconfig.node16.json'),
);
check(`tsc --noEmit, moduleResolution bundler, TypeScript ${tsVersion}`, () => typecheck('tsconfig.bundler.json'));

finish();
