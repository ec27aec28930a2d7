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
 * A consumer project in a temp dir: `"type": "module"`, `node_modules/tokengate`
 * holding this repository's package.json and a fresh tsup build (ESM output;
 * the build's own config, so declarations are bundled and stripped of
 * `@internal` as published), and links to what a user installs beside it.
 */
async function createConsumerProject(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tokengate-readme-'));
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
  return dir;
}

/** What a user's strict tsconfig says (the repository's own settings, plus the types a user installs). */
function compilerOptions(dir: string): ts.CompilerOptions {
  const { options, errors } = ts.convertCompilerOptionsFromJson(
    {
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
    },
    dir,
  );
  if (errors.length > 0) throw new Error(ts.formatDiagnostics(errors, formatHost(dir)));
  return options;
}

function formatHost(dir: string): ts.FormatDiagnosticsHost {
  return {
    getCanonicalFileName: (fileName) => fileName,
    getCurrentDirectory: () => dir,
    getNewLine: () => '\n',
  };
}

/** `README.md:42:7 TS2304: Cannot find name 'gate'.`, located in the markdown file. */
function describeDiagnostic(snippet: Snippet, diagnostic: ts.Diagnostic): string {
  const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n  ');
  if (diagnostic.file === undefined || diagnostic.start === undefined) return `TS${diagnostic.code}: ${message}`;
  const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
  return `${snippet.markdownFile}:${snippet.fenceLine + 1 + line}:${character + 1} TS${diagnostic.code}: ${message}`;
}

let projectDir: string | undefined;
let diagnosticsByFile: Map<string, ts.Diagnostic[]>;

beforeAll(async () => {
  projectDir = await createConsumerProject();
  const dir = projectDir;
  for (const snippet of checked) writeFileSync(path.join(dir, fileNameOf(snippet)), snippet.code);
  const program = ts.createProgram(
    checked.map((snippet) => path.join(dir, fileNameOf(snippet))),
    compilerOptions(dir),
  );
  const global = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  if (global.length > 0) throw new Error(ts.formatDiagnostics(global, formatHost(dir)));
  diagnosticsByFile = new Map();
  const snippetFiles = new Set(checked.map(fileNameOf));
  const elsewhere: ts.Diagnostic[] = [];
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const fileName =
      diagnostic.file && path.dirname(diagnostic.file.fileName) === dir && path.basename(diagnostic.file.fileName);
    if (!fileName || !snippetFiles.has(fileName)) elsewhere.push(diagnostic);
    else diagnosticsByFile.set(fileName, [...(diagnosticsByFile.get(fileName) ?? []), diagnostic]);
  }
  // Errors outside the snippets (the built declarations, the project's setup) would otherwise go unseen.
  if (elsewhere.length > 0) throw new Error(ts.formatDiagnostics(elsewhere, formatHost(dir)));
  // Generous: at low priority the build waits for every other test on a busy machine.
}, 180_000);

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
    const errors = (diagnosticsByFile.get(fileNameOf(snippet)) ?? []).map((d) => describeDiagnostic(snippet, d));
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
