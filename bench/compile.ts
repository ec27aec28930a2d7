/**
 * The measured processes run plain JavaScript, as users run the published
 * package: each is bundled once per suite run with esbuild (the compiler tsup
 * uses for dist/), tokengate's sources included and node_modules left
 * external, into bench/.build/. Not under tsx: its loader compiles with
 * esbuild's `keepNames`, which wraps every function created at run time in a
 * naming helper, a per-request cost on closures that dist/ does not have.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const built = new Map<string, string>();

/** Path of the compiled `bench/<file>`, compiling it on first use. */
export function compiled(file: string): string {
  const known = built.get(file);
  if (known !== undefined) return known;
  const outfile = join(here, '.build', file.replace(/\.ts$/, '.mjs'));
  buildSync({
    entryPoints: [join(here, file)],
    outfile,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  built.set(file, outfile);
  return outfile;
}
