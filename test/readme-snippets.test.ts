/**
 * Every ```ts block of README.md and examples/README.md typechecks as its own
 * module, as a user would paste it into a strict ESM project that installed
 * `tokengate` (as built by tsup from this repository), express, koa and their
 * types. A failure names the README line of each error.
 *
 * The line before a block may mark it:
 * - `<!-- snippet: runs -->`: it also runs to the end under node in that
 *   project (exit 0, nothing on stderr). Only for blocks that talk to
 *   127.0.0.1 alone and close what they open.
 * - `<!-- snippet: fragment -->`: deliberately not a complete module; not
 *   checked, listed as skipped.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MARKDOWN_FILES = ['README.md', 'examples/README.md'];
const FRAGMENT_MARKER = '<!-- snippet: fragment -->';
const RUNS_MARKER = '<!-- snippet: runs -->';

/** One fenced ```ts block. */
interface Snippet {
  /** Markdown file, relative to the repository root. */
  readonly markdownFile: string;
  /** 1-based line of the opening fence. */
  readonly fenceLine: number;
  readonly code: string;
  /** Marked with {@link FRAGMENT_MARKER}: not typechecked. */
  readonly fragment: boolean;
  /** Marked with {@link RUNS_MARKER}: run as well. */
  readonly runs: boolean;
}

/**
 * The ```ts (or ```typescript) blocks of `markdownFile`. Fences of any other
 * language are skipped whole, so a ts fence shown inside them is not taken.
 */
function extractSnippets(markdownFile: string): Snippet[] {
  const lines = readFileSync(path.join(ROOT, markdownFile), 'utf8').split('\n');
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i] ?? '');
    if (open === null) continue;
    const [, fence = '', language = ''] = open;
    const close = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}\\s*$`);
    let end = i + 1;
    while (end < lines.length && !close.test(lines[end] ?? '')) end++;
    if (end === lines.length) throw new Error(`${markdownFile}:${i + 1}: code fence never closed`);
    if (language === 'ts' || language === 'typescript') {
      let previous = i - 1;
      while (previous >= 0 && (lines[previous] ?? '').trim() === '') previous--;
      const marker = (lines[previous] ?? '').trim();
      snippets.push({
        markdownFile,
        fenceLine: i + 1,
        code: `${lines.slice(i + 1, end).join('\n')}\n`,
        fragment: marker === FRAGMENT_MARKER,
        runs: marker === RUNS_MARKER,
      });
    }
    i = end;
  }
  return snippets;
}

const snippets = MARKDOWN_FILES.flatMap(extractSnippets);
const checked = snippets.filter((snippet) => !snippet.fragment);

/** Where a snippet starts, as an editor jumps to it: `README.md:21`. */
const locationOf = (snippet: Snippet) => `${snippet.markdownFile}:${snippet.fenceLine}`;
/** The snippet's module in the consumer project. */
const fileNameOf = (snippet: Snippet) =>
  `${snippet.markdownFile.replace(/[^A-Za-z0-9]+/g, '-')}-line-${snippet.fenceLine}.ts`;

/**
 * Runs `node args` in `cwd` to its end (killed after `timeoutMs`); resolves with how it ended and what it printed.
 * `lowPriority`: the child yields the CPU to everything else, so that a build running beside the rest of the
 * suite does not starve the tests that hold short deadlines.
 */
function runNode(
  args: readonly string[],
  cwd: string,
  timeoutMs: number,
  { lowPriority = false } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    if (lowPriority && child.pid !== undefined) os.setPriority(child.pid, os.constants.priority.PRIORITY_LOW);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Lays out a consumer project in `dir`: `"type": "module"`, `node_modules/tokengate`
 * holding this repository's package.json and a fresh tsup build (ESM output;
 * the build's own config, so declarations are bundled and stripped of
 * `@internal` as published), and links to what a user installs beside it.
 */
async function createConsumerProject(dir: string): Promise<void> {
  const nodeModules = path.join(dir, 'node_modules');
  const packageDir = path.join(nodeModules, 'tokengate');
  mkdirSync(path.join(nodeModules, '@types'), { recursive: true });
  mkdirSync(packageDir);
  writeFileSync(path.join(dir, 'package.json'), '{ "name": "readme-snippets", "private": true, "type": "module" }\n');

  const manifest = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
  };
  writeFileSync(path.join(packageDir, 'package.json'), JSON.stringify(manifest));
  const installed = [
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}),
    '@types/node',
    '@types/express',
    '@types/koa',
  ];
  const requireFromRoot = createRequire(path.join(ROOT, 'package.json'));
  for (const name of installed) {
    // The real directory: this repository's node_modules may itself be a link.
    symlinkSync(realpathSync(path.join(ROOT, 'node_modules', name)), path.join(nodeModules, name), 'dir');
  }

  const tsupPackage = requireFromRoot.resolve('tsup/package.json');
  const tsupBin = (JSON.parse(readFileSync(tsupPackage, 'utf8')) as { bin: { tsup: string } }).bin.tsup;
  const build = await runNode(
    [path.join(path.dirname(tsupPackage), tsupBin), '--format', 'esm', '--out-dir', path.join(packageDir, 'dist')],
    ROOT,
    170_000,
    { lowPriority: true },
  );
  if (build.code !== 0) throw new Error(`tsup failed (${build.code}):\n${build.stdout}\n${build.stderr}`);
}

/** What a user's strict tsconfig says: the repository's own settings, plus the types a user installs. */
const COMPILER_OPTIONS = {
  target: 'ES2022',
  lib: ['ES2023'],
  module: 'NodeNext',
  moduleResolution: 'NodeNext',
  moduleDetection: 'force',
  types: ['node', 'express', 'koa'],
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  noImplicitOverride: true,
  noFallthroughCasesInSwitch: true,
  isolatedModules: true,
  verbatimModuleSyntax: true,
  esModuleInterop: true,
  skipLibCheck: true,
  noEmit: true,
};

/** One error as `tsc --pretty false` prints it: `file(line,column): error TS2304: message`. */
interface CompilerError {
  /** Absolute path, or undefined for an error about the configuration. */
  readonly file: string | undefined;
  readonly line: number;
  readonly column: number;
  /** `TS2304: Cannot find name 'gate'.`, continuation lines included. */
  text: string;
}

const COMPILER_ERROR = /^(?:(?<file>.+?)\((?<line>\d+),(?<column>\d+)\): )?error (?<text>TS\d+: .*)$/;

/**
 * Typechecks the project in `dir` as its `tsconfig.json` says, with the TypeScript compiler in a
 * low-priority child process, and returns the errors it printed.
 */
async function typecheck(dir: string): Promise<CompilerError[]> {
  const typescriptPackage = createRequire(path.join(ROOT, 'package.json')).resolve('typescript/package.json');
  const tscBin = (JSON.parse(readFileSync(typescriptPackage, 'utf8')) as { bin: { tsc: string } }).bin.tsc;
  const tsc = path.join(path.dirname(typescriptPackage), tscBin);
  const { code, stdout, stderr } = await runNode([tsc, '-p', dir, '--pretty', 'false'], dir, 170_000, {
    lowPriority: true,
  });
  // 0: no errors; 1 and 2: errors found.
  if (code === null || code > 2 || stderr !== '') throw new Error(`tsc ended with ${code}:\n${stdout}\n${stderr}`);
  const errors: CompilerError[] = [];
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') continue;
    const match = COMPILER_ERROR.exec(line);
    const last = errors.at(-1);
    if (match?.groups !== undefined) {
      const { file, line: row = '0', column = '0', text = '' } = match.groups;
      const absolute = file === undefined ? undefined : path.resolve(dir, file);
      errors.push({ file: absolute, line: Number(row), column: Number(column), text });
    } else if (last !== undefined && /^\s/.test(line)) {
      last.text += `\n${line}`;
    } else {
      throw new Error(`unexpected tsc output line ${JSON.stringify(line)}:\n${stdout}`);
    }
  }
  if (code !== 0 && errors.length === 0) throw new Error(`tsc ended with ${code} but printed no error:\n${stdout}`);
  return errors;
}

/** `README.md:42:7 TS2304: Cannot find name 'gate'.`, located in the markdown file. */
function describeError(snippet: Snippet, error: CompilerError): string {
  return `${snippet.markdownFile}:${snippet.fenceLine + error.line}:${error.column} ${error.text}`;
}

let projectDir: string | undefined;
let errorsByFile: Map<string, CompilerError[]>;

beforeAll(async () => {
  // Real path: tsc names files relative to it.
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'tokengate-readme-')));
  projectDir = dir;
  await createConsumerProject(dir);
  for (const snippet of checked) writeFileSync(path.join(dir, fileNameOf(snippet)), snippet.code);
  const tsconfig = { compilerOptions: COMPILER_OPTIONS, files: checked.map(fileNameOf) };
  writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  errorsByFile = new Map(checked.map((snippet) => [path.join(dir, fileNameOf(snippet)), []]));
  const elsewhere: CompilerError[] = [];
  for (const error of await typecheck(dir)) {
    const inSnippet = error.file === undefined ? undefined : errorsByFile.get(error.file);
    if (inSnippet === undefined) elsewhere.push(error);
    else inSnippet.push(error);
  }
  // Errors outside the snippets (the built declarations, the configuration) would otherwise go unseen.
  if (elsewhere.length > 0) {
    throw new Error(elsewhere.map((e) => `${e.file ?? 'tsconfig'}(${e.line},${e.column}): ${e.text}`).join('\n'));
  }
  // Generous: at low priority, the build and the compiler wait for every other test on a busy machine.
}, 360_000);

afterAll(() => {
  if (projectDir !== undefined) rmSync(projectDir, { recursive: true, force: true });
});

it('README.md has ts blocks to check', () => {
  expect(checked.filter((snippet) => snippet.markdownFile === 'README.md').length).toBeGreaterThan(0);
});

for (const snippet of snippets) {
  const title = `ts block at ${locationOf(snippet)} typechecks as its own module`;
  if (snippet.fragment) {
    it.skip(`${title} (marked as a fragment)`, () => {});
    continue;
  }
  it(title, () => {
    const errors = (errorsByFile.get(path.join(projectDir as string, fileNameOf(snippet))) ?? []).map((error) =>
      describeError(snippet, error),
    );
    expect(errors, `${locationOf(snippet)}\n${snippet.code}`).toEqual([]);
  });
  if (snippet.runs) {
    it(`ts block at ${locationOf(snippet)} runs to the end under node`, { timeout: 30_000 }, async () => {
      const dir = projectDir as string;
      const { outputText } = ts.transpileModule(snippet.code, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
      });
      const file = fileNameOf(snippet).replace(/\.ts$/, '.mjs');
      writeFileSync(path.join(dir, file), outputText);
      // Exit code 0 within the time limit: it ran through and left nothing open.
      const { code, stderr } = await runNode([file], dir, 20_000);
      expect(stderr, locationOf(snippet)).toBe('');
      expect(code, locationOf(snippet)).toBe(0);
    });
  }
}
