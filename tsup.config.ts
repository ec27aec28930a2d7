import { readFileSync } from 'node:fs';
import { defineConfig, type Options } from 'tsup';

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

type TsupPlugin = NonNullable<Options['plugins']>[number];

/** esbuild's form of a bundled class that refers to itself: `var AuthContext = class _AuthContext {`. */
const SELF_REFERENCING_CLASS = /\bvar ([A-Za-z_$][\w$]*) = class _\1(?: extends [\w$.]+)? \{/g;

/**
 * Classes keep their source names in dist/ (`constructor.name`, `util.inspect`, log
 * serializers). esbuild gives a class that refers to itself an inner binding `_Name`,
 * which becomes its `.name`; this puts the source name back with a static block that
 * runs once, when the class is defined. Functions and closures are left untouched
 * (esbuild's `keepNames` would wrap each closure in a `__name()` call made every time
 * the closure is created).
 */
const classNames: TsupPlugin = {
  name: 'class-names',
  renderChunk(code, info) {
    if (!/\.c?js$/.test(info.path)) return;
    const named = code.replace(
      SELF_REFERENCING_CLASS,
      (head, name: string) =>
        `${head}\n  static {\n    Object.defineProperty(this, "name", { value: ${JSON.stringify(name)} });\n  }`,
    );
    return named === code ? undefined : { code: named };
  },
};

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    express: 'adapters/express.ts',
    fastify: 'adapters/fastify.ts',
    koa: 'adapters/koa.ts',
    testing: 'src/testing/index.ts',
    redis: 'src/redis/index.ts',
  },
  // "type": "module": esm -> .js / .d.ts, cjs -> .cjs / .d.cts, matching package.json "exports".
  format: ['esm', 'cjs'],
  // @internal members (AuthContext's storage fields, the adapters' fast path) stay out of the published types.
  dts: { compilerOptions: { stripInternal: true } },
  // Code shared by several entries (the core, and so the one AuthError class) goes
  // into a chunk per format, so `instanceof AuthError` holds across `tokengate`,
  // `tokengate/express`, `tokengate/koa`, `tokengate/fastify` and `tokengate/testing`. tsup splits esm
  // by default; for cjs it must be asked.
  splitting: true,
  // With splitting, tsup turns the esm-style cjs chunks into CommonJS with sucrase, which
  // also lowers syntax Node 20 runs natively: class fields become `(_class = class ...,
  // _class)` (the class is then named `_class`), `?.` and `??` become helper calls that
  // allocate a closure per evaluation. With treeshake, rollup does that conversion
  // instead and leaves the code as esbuild wrote it (both formats: rollup re-renders esm
  // too, the same code with its imports merged).
  treeshake: true,
  plugins: [classNames],
  sourcemap: false,
  clean: true,
  target: 'node20',
  platform: 'node',
  external,
  outDir: 'dist',
});
