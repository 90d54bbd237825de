// What each published entry point loads, read from the sources' static
// imports: the dev CA and dev Workload API server are reachable only through
// `@weave/identity/dev` (production code never loads them), and the
// client-only entries (`@weave/identity`, `@weave/transport`) never load a
// server framework. The smoke programs check the installed packages; this
// catches an import that would break either promise before anything is packed.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));

interface Pkg {
  readonly name: string;
  readonly dir: string;
  /** Subpath ('.', './dev', …) → source file, from the `weave-source` condition. */
  readonly entries: ReadonlyMap<string, string>;
}

function publishedPackages(): Pkg[] {
  const out: Pkg[] = [];
  for (const group of ['packages', 'apps']) {
    for (const entry of readdirSync(join(root, group))) {
      const dir = join(root, group, entry);
      const file = join(dir, 'package.json');
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as {
        name: string;
        private?: boolean;
        exports?: Record<string, string | { 'weave-source'?: string }>;
      };
      if (pkg.private) continue;
      const entries = new Map<string, string>();
      for (const [sub, target] of Object.entries(pkg.exports ?? {})) {
        if (typeof target === 'object' && target['weave-source'])
          entries.set(sub, join(dir, target['weave-source']));
      }
      out.push({ name: pkg.name, dir, entries });
    }
  }
  return out;
}

const packages = publishedPackages();

/** A specifier in a source file → the source file it loads, or the bare package name it names. */
function resolveSpecifier(from: string, spec: string): { file: string } | { bare: string } | undefined {
  if (spec.startsWith('node:')) return undefined;
  if (spec.startsWith('.')) {
    const target = resolve(dirname(from), spec.replace(/\.js$/, '.ts'));
    if (existsSync(target)) return { file: target };
    throw new Error(`${relative(root, from)}: cannot resolve ${spec}`);
  }
  const m = /^(@[^/]+\/[^/]+|[^/]+)(\/.*)?$/.exec(spec);
  if (!m) throw new Error(`${relative(root, from)}: odd specifier ${spec}`);
  const own = packages.find((p) => p.name === m[1]);
  if (!own) return { bare: m[1]! };
  const file = own.entries.get(m[2] ? `.${m[2]}` : '.');
  if (!file) throw new Error(`${relative(root, from)}: ${spec} is not an entry of ${own.name}`);
  return { file };
}

// Static imports and re-exports that load a module at run time. `import type` and
// `export type` are erased; `import { type X }` is not (verbatimModuleSyntax keeps
// `import {} from`), so it counts. Dynamic `import()` is on demand and not followed:
// the CLI's `weave dev` loads the dev server that way, only when run.
const STATIC = /^\s*(?:import|export)\s+(?!type\s)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm;

/** Every source file and bare package an entry loads, transitively. */
function graphOf(entry: string): { files: Set<string>; bare: Set<string> } {
  const files = new Set<string>();
  const bare = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(STATIC)) {
      const r = resolveSpecifier(file, m[1]!);
      if (!r) continue;
      if ('bare' in r) bare.add(r.bare);
      else todo.push(r.file);
    }
  }
  return { files, bare };
}

const identitySrc = join(root, 'packages', 'identity', 'src');
const DEV_MODULES = ['dev.ts', 'dev-ca.ts', 'dev-ca-provider.ts', 'workload/dev-server.ts'].map((f) =>
  join(identitySrc, f),
);

const entries = packages.flatMap((p) =>
  [...p.entries].map(([sub, file]) => ({ name: `${p.name}${sub.slice(1)}`, file })),
);
const cli = packages.find((p) => p.name === '@weave/cli');

describe('what the published entry points load', () => {
  it('finds the entries, the dev modules and the CLI', () => {
    expect(entries.map((e) => e.name)).toEqual(
      expect.arrayContaining(['@weave/identity', '@weave/identity/dev', '@weave/transport', '@weave/agent']),
    );
    for (const f of DEV_MODULES) expect(existsSync(f), f).toBe(true);
    expect(cli).toBeDefined();
    // The graph walk sees the dev entry's own imports, so a miss below is not a blind walk.
    const dev = graphOf(join(identitySrc, 'dev.ts')).files;
    for (const f of DEV_MODULES) expect(dev.has(f), f).toBe(true);
  });

  it.each(
    [
      ...entries.filter((e) => e.name !== '@weave/identity/dev'),
      { name: '@weave/cli (bin)', file: join(cli!.dir, 'src', 'main.ts') },
    ].map((e) => [e.name, e.file] as const),
  )('%s never loads the dev CA or the dev Workload API server', (_name, file) => {
    const reached = [...graphOf(file).files].filter((f) => DEV_MODULES.includes(f));
    expect(reached.map((f) => relative(root, f))).toEqual([]);
  });

  it.each(['@weave/identity', '@weave/identity/dev', '@weave/transport'])(
    '%s loads no server framework (fastify is for @weave/transport/server)',
    (name) => {
      const { bare } = graphOf(entries.find((e) => e.name === name)!.file);
      expect([...bare].filter((b) => /^(fastify|@fastify\/|fastify-|express)/.test(b))).toEqual([]);
    },
  );

  it('@weave/transport/server is where fastify comes in', () => {
    expect(graphOf(entries.find((e) => e.name === '@weave/transport/server')!.file).bare).toContain(
      'fastify',
    );
  });
});
