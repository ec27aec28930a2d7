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
const outdir = join(root, 'bench', '.build');
let done = false;

/** Path of the compiled `bench/<file>`, compiling everything on first use. */
export function compiled(file: string): string {
  if (!done) {
    // bench/'s own programs (its scenarios run in the orchestrator), and every module of the package.
    const sources = [
      ...readdirSync(join(root, 'bench')).map((name) => join('bench', name)),
      ...['src', 'adapters'].flatMap((dir) =>
        readdirSync(join(root, dir), { recursive: true }).map((name) => join(dir, String(name))),
      ),
    ]
      .filter((path) => path.endsWith('.ts'))
      .map((path) => join(root, path));
    buildSync({
      entryPoints: sources,
      outdir,
      outbase: root,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      logLevel: 'warning',
    });
    done = true;
  }
  return join(outdir, 'bench', file.replace(/\.ts$/, '.js'));
}
