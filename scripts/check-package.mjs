#!/usr/bin/env node
// Checks the package as it will be published, not the source tree:
//
//   1. `npm run build`
//   2. the build put AuthError in one shared chunk per format (so `instanceof`
//      holds across `tokengate`, `tokengate/express`, `tokengate/fastify`, `tokengate/koa`, `tokengate/testing`)
//   3. `publint --strict`
//   4. `npm pack` into a temp dir
//   5. `attw --profile strict` on that tarball (node10, node16-cjs, node16-esm, bundler)
//   6. a throwaway consumer project in os.tmpdir() installs the tarball + express + koa + fastify + ioredis + redis
//      (this repo's versions, the newest majors: their peer ranges must admit them)
//      and each runtime dependency, as installed, runs on every Node.js that `engines.node` admits
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

const ENTRIES = ['index', 'express', 'fastify', 'koa', 'testing', 'redis'];

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
// 2. AuthError is defined once per format
//
// esbuild puts a module used by several entries into a shared chunk; if AuthError
// were copied into each entry, `instanceof` would fail across entry points. For
// the declarations, one `declare class AuthError` per format keeps the type nominal
// in one place (rollup-plugin-dts may leave it in index.d.ts when no other entry's
// types mention it, which is fine).

check('dist: AuthError defined once per format (shared by all entries)', () => {
  const dist = path.join(root, 'dist');
  const files = readdirSync(dist);
  const runtime = /(?:\bclass\s+AuthError\b|\b(?:var|let|const)\s+AuthError\s*=)/;
  const declaration = /\bclass\s+AuthError\b/;
  const formats = [
    ['.js', (f) => f.endsWith('.js'), runtime],
    ['.cjs', (f) => f.endsWith('.cjs'), runtime],
    ['.d.ts', (f) => f.endsWith('.d.ts'), declaration],
    ['.d.cts', (f) => f.endsWith('.d.cts'), declaration],
  ];
  const missing = ENTRIES.flatMap((e) => formats.map(([ext]) => `${e}${ext}`)).filter((f) => !files.includes(f));
  if (missing.length) throw new CheckError(`missing build outputs: ${missing.map((f) => `dist/${f}`).join(', ')}`);
  const found = [];
  const problems = [];
  for (const [ext, isFormat, pattern] of formats) {
    const defining = files.filter(isFormat).filter((f) => pattern.test(readFileSync(path.join(dist, f), 'utf8')));
    if (defining.length !== 1) {
      problems.push(
        `${ext}: AuthError defined in ${defining.length} files (${defining.join(', ') || 'none'}), expected 1`,
      );
    } else if ((ext === '.js' || ext === '.cjs') && ENTRIES.some((e) => defining[0] === `${e}${ext}`)) {
      // Legal only while no other entry uses AuthError at run time; say so, since it is unusual.
      found.push(`${defining[0]} (entry, not a shared chunk)`);
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
    const expected = [
      'LICENSE',
      ...ENTRIES.flatMap((e) => ['.js', '.cjs', '.d.ts', '.d.cts'].map((ext) => `dist/${e}${ext}`)),
    ];
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
const peers = ['express', 'koa', 'fastify', 'ioredis', 'redis'];
check(
  'consumer project: npm install <tarball> express koa fastify ioredis redis',
  () => {
    writeFileSync(
      path.join(consumer, 'package.json'),
      `${JSON.stringify({ name: 'tokengate-consumer', private: true, version: '0.0.0', type: 'module' }, null, 2)}\n`,
    );
    // Same versions as this repo's lockfile, so npm finds them in its cache (prefer-offline).
    const specs = [tarball, ...[...peers, ...typesFor].map((name) => `${name}@${localVersion(name)}`)];
    run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...specs], {
      cwd: consumer,
      env: consumerEnv(),
    });
    return peers.map((name) => `${name}@${localVersion(name)}`).join(', ');
  },
  { fatal: true },
);

// Every Node.js version `engines.node` admits must be one each runtime dependency, as npm installed it, admits too:
// otherwise npm warns EBADENGINE on the versions between (and refuses to install under engine-strict). The README
// names the same oldest version.
check('engines.node: each runtime dependency as installed runs on every Node.js it admits, as the README says', () => {
  const semver = requireFromRoot('semver');
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const ours = manifest.engines.node;
  const installed = (name) => {
    for (const at of [path.join('tokengate', 'node_modules', name), name]) {
      try {
        return JSON.parse(readFileSync(path.join(consumer, 'node_modules', at, 'package.json'), 'utf8'));
      } catch {}
    }
    throw new CheckError(`${name} is not installed in the consumer project`);
  };
  const narrower = Object.keys(manifest.dependencies ?? {}).flatMap((name) => {
    const { version, engines } = installed(name);
    return engines?.node && !semver.subset(ours, engines.node) ? [`${name}@${version} needs ${engines.node}`] : [];
  });
  if (narrower.length) throw new CheckError(`engines.node is "${ours}", but ${narrower.join('; ')}`);
  const oldest = semver.minVersion(ours).version;
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
  if (!readme.includes(`${oldest} or later`)) {
    throw new CheckError(`README.md does not name the oldest Node.js engines.node admits ("${oldest} or later")`);
  }
  return `"${ours}"`;
});

// ---------------------------------------------------------------------------
// 7. run time: ESM and CJS
//
// Both consumers import every entry point, then drive a real Express app, a real
// Koa app and a real Fastify app through tokengate's adapters with the stub provider from
// tokengate/testing. No credential (thrown by the core gate) and a malformed Bearer
// (thrown by the provider that tokengate/testing built) must both reach the
// framework as `instanceof` the AuthError exported by `tokengate` (one class
// across entries), as 401 + WWW-Authenticate and 400; a good token -> 200.

/** Body shared by the ESM and CJS consumers; expects core, adapters, testing, expressLib, Koa, fastifyLib in scope. */
const scenario = `
const problems = [];
const expect = (ok, what) => { if (!ok) problems.push(what); };
expect(typeof core.createGate === 'function', 'tokengate: createGate is not a function');
expect(typeof core.requires === 'function', 'tokengate: requires is not a function');
expect(typeof core.AuthError === 'function' && core.AuthError.prototype instanceof Error,
  'tokengate: AuthError is not a class extending Error');
expect(typeof expressAdapter.authenticate === 'function', 'tokengate/express: authenticate is not a function');
expect(typeof koaAdapter.authenticate === 'function', 'tokengate/koa: authenticate is not a function');
expect(typeof fastifyAdapter.authenticate === 'function', 'tokengate/fastify: authenticate is not a function');
expect(typeof testing.mockOnlineOrNot === 'function', 'tokengate/testing: mockOnlineOrNot is not a function');
expect(typeof testing.stubProvider === 'function', 'tokengate/testing: stubProvider is not a function');
expect(typeof redisTier.redisCache === 'function', 'tokengate/redis: redisCache is not a function');
for (const [name, mod] of Object.entries({ 'tokengate/express': expressAdapter, 'tokengate/fastify': fastifyAdapter, 'tokengate/koa': koaAdapter, 'tokengate/testing': testing, 'tokengate/redis': redisTier })) {
  if ('AuthError' in mod) expect(mod.AuthError === core.AuthError, name + ': re-exported AuthError differs from tokengate\\'s');
}

async function listen(handler) {
  const server = http.createServer(handler);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: 'http://127.0.0.1:' + server.address().port, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Class names as logs show them: \`constructor.name\` (read by log serializers) and the
 * start of util.inspect, for each public class, on an instance this build made.
 */
function checkClassName(expected, instance) {
  const constructorName = instance && instance.constructor && instance.constructor.name;
  expect(constructorName === expected, expected + ': constructor.name is ' + JSON.stringify(constructorName));
  const shown = util.inspect(instance).split('\\n')[0];
  // An error shows as "AuthError: message" (as "[AuthError: message] {" without stack frames, as AuthError is), an
  // object as "AuthContext {"; a lost name as "_class [AuthError]: ...".
  expect(shown.startsWith(expected + ': ') || shown.startsWith('[' + expected + ': ') || shown.startsWith(expected + ' {'),
    expected + ': util.inspect starts ' + JSON.stringify(shown.slice(0, 60)));
}
checkClassName('AuthError', new core.AuthError('invalid_token', 401, 'The access token is invalid'));
checkClassName('ProviderFailure', new core.ProviderFailure('timeout', 'The provider did not answer in time', true));
expect(core.AuthContext.name === 'AuthContext', 'AuthContext: the exported class is named ' + JSON.stringify(core.AuthContext.name));

/** Requests /private three ways; \`caught\` holds the errors the app's error handler saw, in order. */
async function roundTrip(name, handler, caught) {
  const server = await listen(handler);
  const isCoreAuthError = (error, what) =>
    expect(error instanceof core.AuthError, name + ', ' + what + ': error reaching the framework is not instanceof tokengate AuthError (got ' + (error && error.constructor && error.constructor.name) + ')');
  try {
    // No credential: the gate (core) throws.
    const anonymous = await fetch(server.url + '/private');
    const firstError = caught.shift();
    isCoreAuthError(firstError, 'no credential');
    if (name === 'express') checkClassName('AuthError', firstError);
    expect(anonymous.status === 401, name + ', no credential: answered ' + anonymous.status + ', expected 401');
    expect(/^Bearer /.test(anonymous.headers.get('www-authenticate') || ''), name + ', no credential: 401 without a Bearer WWW-Authenticate challenge');
    // Malformed Bearer: the stub provider from tokengate/testing throws while extracting.
    const malformed = await fetch(server.url + '/private', { headers: { authorization: 'Bearer not a token' } });
    isCoreAuthError(caught.shift(), 'malformed Bearer (thrown via tokengate/testing)');
    expect(malformed.status === 400, name + ', malformed Bearer: answered ' + malformed.status + ', expected 400');
    // Good token.
    const ok = await fetch(server.url + '/private', { headers: { authorization: 'Bearer good-token' } });
    expect(ok.status === 200, name + ', good token: answered ' + ok.status + ', expected 200');
    const body = ok.status === 200 ? await ok.text() : '';
    expect(body === 'hello u1', name + ', good token: body ' + JSON.stringify(body) + ', expected "hello u1"');
    expect(caught.length === 0, name + ': unexpected errors ' + caught.map(String).join('; '));
  } finally {
    await server.close();
  }
}

async function main() {
  const gate = core.createGate({
    providers: [testing.stubProvider({ tokens: { 'good-token': { subject: 'u1', permissions: ['read'] } } })],
  });

  let contextChecked = false;
  const expressErrors = [];
  const app = expressLib();
  app.get('/private', expressAdapter.authenticate(gate), expressAdapter.requires('read'), (req, res) => {
    // An AuthContext the gate made, as a route sees it.
    if (!contextChecked) checkClassName('AuthContext', req.auth);
    contextChecked = true;
    res.type('text/plain').send('hello ' + req.auth.subject);
  });
  app.use((err, _req, res, _next) => {
    expressErrors.push(err);
    res.status(err.status || 500).set(err.headers || {}).end();
  });
  await roundTrip('express', app, expressErrors);
  expect(contextChecked, 'AuthContext: no request reached the Express route to check its name');

  const koaErrors = [];
  const koaApp = new Koa();
  koaApp.silent = true;
  koaApp.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      koaErrors.push(err);
      throw err;
    }
  });
  koaApp.use(koaAdapter.authenticate(gate));
  koaApp.use(koaAdapter.requires('read'));
  koaApp.use((ctx) => {
    ctx.body = 'hello ' + ctx.state.auth.subject;
  });
  await roundTrip('koa', koaApp.callback(), koaErrors);

  // Fastify's default error handler answers: a handler that records the error and throws it on hands it there.
  const fastifyErrors = [];
  const fastifyApp = fastifyLib();
  fastifyApp.setErrorHandler((err) => {
    fastifyErrors.push(err);
    throw err;
  });
  fastifyApp.addHook('onRequest', fastifyAdapter.authenticate(gate));
  fastifyApp.get('/private', { preHandler: fastifyAdapter.requires('read') }, async (request) => 'hello ' + request.auth.subject);
  await fastifyApp.ready();
  await roundTrip('fastify', fastifyApp.routing, fastifyErrors);
  await fastifyApp.close();

  if (typeof gate.close === 'function') await gate.close();
}

main().then(
  () => {
    if (problems.length) {
      console.error(problems.join('\\n'));
      process.exit(1);
    }
    console.log('express + koa + fastify: 401 and 400 errors are instanceof tokengate.AuthError, good token 200; AuthError, ProviderFailure, AuthContext keep their names');
    process.exit(0);
  },
  (error) => {
    console.error(problems.concat(String(error && error.stack || error)).join('\\n'));
    process.exit(1);
  },
);
`;

writeFileSync(
  path.join(consumer, 'esm.mjs'),
  `import http from 'node:http';
import util from 'node:util';
import expressLib from 'express';
import Koa from 'koa';
import fastifyLib from 'fastify';
import * as core from 'tokengate';
import { AuthError, createGate, requires } from 'tokengate';
import * as expressAdapter from 'tokengate/express';
import { authenticate } from 'tokengate/express';
import * as fastifyAdapter from 'tokengate/fastify';
import * as koaAdapter from 'tokengate/koa';
import * as testing from 'tokengate/testing';
import { mockOnlineOrNot } from 'tokengate/testing';
import * as redisTier from 'tokengate/redis';
void [AuthError, createGate, requires, authenticate, mockOnlineOrNot];
${scenario}`,
);
writeFileSync(
  path.join(consumer, 'cjs.cjs'),
  `'use strict';
const http = require('node:http');
const util = require('node:util');
const expressLib = require('express');
const Koa = require('koa');
const fastifyLib = require('fastify');
const core = require('tokengate');
const { AuthError, createGate, requires } = require('tokengate');
const expressAdapter = require('tokengate/express');
const { authenticate } = require('tokengate/express');
const fastifyAdapter = require('tokengate/fastify');
const koaAdapter = require('tokengate/koa');
const testing = require('tokengate/testing');
const { mockOnlineOrNot } = require('tokengate/testing');
const redisTier = require('tokengate/redis');
void [AuthError, createGate, requires, authenticate, mockOnlineOrNot];
${scenario}`,
);

// An app that both imports and requires tokengate holds two copies of AuthError: instanceof must hold across them.
writeFileSync(
  path.join(consumer, 'mixed.mjs'),
  `import { createRequire } from 'node:module';
import { AuthError } from 'tokengate';
const require = createRequire(import.meta.url);
const cjs = require('tokengate');
const { stubProvider } = require('tokengate/testing');
if (cjs.AuthError === AuthError) throw new Error('expected the CommonJS build to hold its own AuthError');
const gate = cjs.createGate({ providers: [stubProvider({ tokens: {} })] });
const thrown = await gate.authenticate({ headers: {} }).then(() => undefined, (error) => error);
await gate.close();
if (!(thrown instanceof AuthError)) throw new Error('a 401 of the CommonJS build is not instanceof the ESM AuthError');
if (!(new AuthError('invalid_token', 401, 'x') instanceof cjs.AuthError)) throw new Error('not instanceof, ESM to CJS');
if (new Error('x') instanceof AuthError || null instanceof AuthError) throw new Error('a plain Error is instanceof AuthError');
// authenticate({ optional: true }) from one build, requires() from the other: an anonymous request is still a 401.
const { authenticate } = await import('tokengate/express');
const { requires } = require('tokengate/express');
const anonymousGate = cjs.createGate({ providers: [stubProvider({ tokens: {} })] });
const req = { headers: {} };
let passed = 'next() not called';
authenticate(anonymousGate, { optional: true })(req, {}, (error) => {
  if (error !== undefined) throw error;
  try {
    requires('read')(req, {}, (guarded) => (passed = guarded));
  } catch (thrown) {
    passed = thrown; // as Express passes a guard's throw on
  }
});
await new Promise((resolve) => setTimeout(resolve, 10));
await anonymousGate.close();
if (!(passed instanceof AuthError) || passed.status !== 401) throw new Error(\`anonymous across builds: \${passed}\`);
console.log('a 401 thrown by the CommonJS build is instanceof the ESM AuthError, and back; a plain Error is not; an anonymous request let through by one build is a 401 to the guard of the other');
`,
);

for (const [label, file] of [
  ['ESM consumer (import): every entry point, Express + Koa + Fastify round trip', 'esm.mjs'],
  ['CJS consumer (require): every entry point, Express + Koa + Fastify round trip', 'cjs.cjs'],
  ['ESM and CJS copies in one app: AuthError and anonymous requests are known across them', 'mixed.mjs'],
]) {
  check(label, () => run(process.execPath, [file], { cwd: consumer, timeout: 60_000 }).split('\n').pop());
}

// ---------------------------------------------------------------------------
// 8. TypeScript consumers
//
// The same imports, plus the adapters mounted on real Express, Koa and Fastify apps, so the
// shipped declarations must fit the frameworks' own types (@types/express, @types/koa, fastify's).

const tsSource = (importExpress, importKoa, importFastify) => `${importExpress}
${importKoa}
${importFastify}
import { AuthContext, AuthError, createGate, onlineOrNot, type Provider, requires, type SharedTier } from 'tokengate';
import { authenticate, requires as expressRequires } from 'tokengate/express';
import * as fastifyGate from 'tokengate/fastify';
import * as koa from 'tokengate/koa';
import { mockOnlineOrNot, stubProvider } from 'tokengate/testing';
import { type RedisCache, type RedisCacheOptions, redisCache } from 'tokengate/redis';
import { Cluster, Redis } from 'ioredis';
import { createClient, createCluster } from 'redis';

export const functions: Array<(...args: never[]) => unknown> = [createGate, requires, authenticate, mockOnlineOrNot, redisCache];
export const redisOptions: RedisCacheOptions = { prefix: 'app:', localTtl: 1000 };
// Each client the README names fits redisCache's parameter as its own package types it.
export const redisTiers: Array<() => RedisCache> = [
  () => redisCache(new Redis(), redisOptions),
  () => redisCache(new Cluster([{ host: '127.0.0.1', port: 7000 }])),
  () => redisCache(createClient({ url: 'redis://127.0.0.1:6379' })),
  () => redisCache(createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:7000' }] })),
];

const gate = createGate({ providers: [stubProvider({ tokens: { t: { subject: 'u1', permissions: ['read'] } } })] });

export const app = express();
app.get('/private', authenticate(gate), (req, res) => {
  const subject: string | undefined = req.auth?.subject;
  res.send(subject);
});
// The middleware inline on a route leaves Express's own types of req.query to the handler.
app.get('/pages', authenticate(gate), expressRequires('read'), (req, res) => {
  const page = req.query.page;
  res.send(typeof page === 'string' ? page : undefined);
});

export const koaApp = new Koa();
koaApp.use(koa.authenticate(gate));
koaApp.use(koa.requires('read'));
koaApp.use((ctx) => {
  const subject: string | undefined = ctx.state.auth?.subject;
  ctx.body = subject;
});

// An app with its own state type adds the one authenticate() fills in.
export const typedKoaApp = new Koa<{ tenant: string } & koa.AuthState>();
typedKoaApp.use(koa.authenticate(gate));
typedKoaApp.use((ctx) => {
  const subject: string | undefined = ctx.state.auth?.subject;
  ctx.body = \`\${ctx.state.tenant} \${subject}\`;
});

export const fastifyApp = fastify();
fastifyApp.addHook('onRequest', fastifyGate.authenticate(gate));
fastifyApp.get('/private', { preHandler: fastifyGate.requiresAny('read', 'admin') }, async (request) => {
  const subject: string | undefined = request.auth?.subject;
  return subject;
});

// An option read from the environment may be undefined, as under exactOptionalPropertyTypes it must be able to be.
export const fromEnvironment = () =>
  createGate({ providers: [onlineOrNot({ baseUrl: process.env.OON_URL })], timeout: Number(process.env.T) || undefined });
// So may the optional members of a provider or a shared tier of the app's own: the gate reads undefined as left out.
const fromEnv = Number(process.env.LIMIT) || undefined;
export const ownProvider: Provider = {
  name: 'own',
  cacheScope: 'own',
  source: process.env.HEADER === undefined ? undefined : \`header:\${process.env.HEADER}\`,
  concurrency: fromEnv,
  extract: () => undefined,
  verify: async () => ({ ok: false, reason: 'unknown' }),
};
export const ownTier: SharedTier = {
  timeout: fromEnv,
  localTtl: fromEnv,
  get: async () => undefined,
  set: async () => {},
  delete: async () => {},
};

// Contexts are made by the gate: the shipped types give AuthContext no public constructor.
// @ts-expect-error AuthContext's constructor is private
export const forged = () => new AuthContext();

export function describe(error: unknown): string | undefined {
  return error instanceof AuthError ? \`\${error.name} \${error.status}: \${error.message}\` : undefined;
}
`;
const esModuleImports = ["import express from 'express';", "import Koa from 'koa';", "import fastify from 'fastify';"];
const cjsImports = [
  "import express = require('express');",
  "import Koa = require('koa');",
  "import fastify = require('fastify');",
];
mkdirSync(path.join(consumer, 'ts-node16'));
mkdirSync(path.join(consumer, 'ts-bundler'));
writeFileSync(path.join(consumer, 'ts-node16', 'esm.mts'), tsSource(...esModuleImports));
writeFileSync(path.join(consumer, 'ts-node16', 'cjs.cts'), tsSource(...cjsImports));
writeFileSync(path.join(consumer, 'ts-bundler', 'index.ts'), tsSource(...esModuleImports));
const baseCompilerOptions = {
  target: 'ES2022',
  lib: ['ES2023', 'DOM'],
  strict: true,
  // The strictest setting a consumer may use: an option given as `undefined` must still fit.
  exactOptionalPropertyTypes: true,
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
    compilerOptions: { ...baseCompilerOptions, module: 'preserve', moduleResolution: 'bundler', esModuleInterop: true },
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
  let failed;
  try {
    output = run(process.execPath, [tsc, '-p', project, '--pretty', 'false'], { cwd: consumer });
  } catch (error) {
    if (!(error instanceof CheckError)) throw error;
    failed = error;
    output = error.output;
  }
  const errors = output.split('\n').filter((line) => /error TS\d+/.test(line));
  const foreign = errors.filter((line) => /^node_modules\//.test(line) && !/^node_modules\/tokengate\//.test(line));
  const ours = errors.filter((line) => !foreign.includes(line));
  if (ours.length) throw new CheckError(`${ours.length} type error(s)`, ours.join('\n'));
  // tsc failed for another reason than type errors (bad tsconfig, crash): report it as is.
  if (failed && errors.length === 0) throw failed;
  return foreign.length
    ? { detail: `ignored ${foreign.length} error(s) in third-party .d.ts`, output: foreign.join('\n') }
    : undefined;
}
check(`tsc --noEmit, moduleResolution node16 (.mts + .cts consumer), TypeScript ${tsVersion}`, () =>
  typecheck('tsconfig.node16.json'),
);
check(`tsc --noEmit, moduleResolution bundler, TypeScript ${tsVersion}`, () => typecheck('tsconfig.bundler.json'));

finish();
