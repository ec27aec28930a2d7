/**
 * The measured processes run plain JavaScript, as users run the published
 * package: bench/, src/ and adapters/ are compiled once per suite run with
 * esbuild (the compiler tsup uses for dist/), file by file, into the same
 * layout under bench/.build/, so that profiles still name tokengate's files.
 * Not under tsx: its loader compiles with esbuild's `keepNames`, which wraps
 * every function created at run time in a naming helper, a per-request cost
 * on closures that dist/ does not have.
 */
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let done = false;

/**
 * Compiles `tree`'s bench/, src/ and adapters/ into `<tree>/bench/.build/` (another checkout of this repository, for
 * a comparison of two commits in one process), and returns that folder.
 */
export function compileTree(tree: string): string {
  const outdir = join(tree, 'bench', '.build');
  // bench/'s own programs (its scenarios run in the orchestrator), and every module of the package.
  const sources = [
    ...readdirSync(join(tree, 'bench')).map((name) => join('bench', name)),
    ...['src', 'adapters'].flatMap((dir) =>
      readdirSync(join(tree, dir), { recursive: true }).map((name) => join(dir, String(name))),
    ),
  ]
    .filter((path) => path.endsWith('.ts'))
    .map((path) => join(tree, path));
  buildSync({
    entryPoints: sources,
    outdir,
    outbase: tree,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  return outdir;
}

/** Path of the compiled `bench/<file>`, compiling everything on first use. */
export function compiled(file: string): string {
  if (!done) {
    compileTree(root);
    done = true;
  }
  return join(root, 'bench', '.build', 'bench', file.replace(/\.ts$/, '.js'));
}
