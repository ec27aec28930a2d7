import { readFileSync } from 'node:fs';
import { defineConfig } from 'tsup';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
};

/** Never bundle a runtime or peer dependency (nor its subpaths, e.g. `zod/v4`). */
const external = [
  ...Object.keys(pkg.dependencies ?? {}),
  ...Object.keys(pkg.peerDependencies ?? {}),
  'express',
  'koa',
].flatMap((name) => [name, new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}/`)]);

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    express: 'adapters/express.ts',
    koa: 'adapters/koa.ts',
    testing: 'src/testing/index.ts',
  },
  // "type": "module": esm -> .js / .d.ts, cjs -> .cjs / .d.cts, matching package.json "exports".
  format: ['esm', 'cjs'],
  // @internal members (AuthContext's storage fields, the adapters' fast path) stay out of the published types.
  dts: { compilerOptions: { stripInternal: true } },
  // Code shared by several entries (the core, and so the one AuthError class) goes
  // into a chunk per format, so `instanceof AuthError` holds across `tokengate`,
  // `tokengate/express`, `tokengate/koa` and `tokengate/testing`. tsup splits esm
  // by default; for cjs it must be asked.
  splitting: true,
  sourcemap: false,
  clean: true,
  target: 'node20',
  platform: 'node',
  external,
  outDir: 'dist',
});
