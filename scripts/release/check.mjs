#!/usr/bin/env node
// Lints packed tarballs the way a consumer meets them: publint (package.json,
// exports, files), Are The Types Wrong (types per module resolution mode), the
// registry links of each package.json and the files every package ships (LICENSE).
// Any message fails, except the attw rules ignored below, each with its reason.
//   node scripts/release/check.mjs <tarball>…
import { spawnSync } from 'node:child_process';
import { join, relative } from 'node:path';
import { publishedPackages, repositoryBase, root } from './packages.mjs';

const bin = (name) => join(root, 'node_modules', '.bin', name);

// attw, why these settings:
// - profile node16: the packages need Node ≥ 20.19 and are ESM with an exports
//   map; TypeScript's legacy `node10` resolution ignores exports maps, so it
//   cannot see the subpath entries (`@weave/identity/dev`,
//   `@weave/transport/server`). Users resolve with node16/nodenext/bundler.
// - cjs-resolves-to-esm: the packages are ESM only by design; `require()` of
//   them works on Node ≥ 20.19 (require(esm), the engines floor) through the
//   `default` condition, and the smoke test requires each one to prove it.
const ATTW = ['--profile', 'node16', '--ignore-rules', 'cjs-resolves-to-esm', '--format', 'table-flipped'];

/** The package.json inside a tarball. */
function manifestOf(file) {
  const r = spawnSync('tar', ['-xzOf', file, 'package/package.json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot read package.json in ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/**
 * What a registry page links to: `repository` (with the package's folder),
 * `homepage` and `bugs` of every package name the one repository of the root
 * package.json, so no package can point somewhere else. Returns the problems.
 */
export function metadataProblems(pkg) {
  const base = repositoryBase();
  const dir = publishedPackages().find((p) => p.name === pkg.name)?.dir;
  if (!dir) return [`${pkg.name} is not a published package of this repository`];
  const directory = relative(root, dir);
  const want = {
    'repository.url': [pkg.repository?.url, `git+${base}.git`],
    'repository.directory': [pkg.repository?.directory, directory],
    homepage: [pkg.homepage, `${base}/tree/main/${directory}#readme`],
    'bugs.url': [pkg.bugs?.url, `${base}/issues`],
  };
  return Object.entries(want)
    .filter(([, [got, expected]]) => got !== expected)
    .map(([key, [got, expected]]) => `${key} is ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`);
}

/**
 * The files every tarball must carry besides what publint checks: the license
 * text (publint checks the `license` field, not that the file ships).
 */
function contentProblems(file) {
  const r = spawnSync('tar', ['-tzf', file], { encoding: 'utf8' });
  if (r.status !== 0) return [`cannot list ${file}: ${r.stderr}`];
  const entries = new Set(r.stdout.split('\n'));
  return ['package/LICENSE', 'package/README.md', 'package/package.json']
    .filter((f) => !entries.has(f))
    .map((f) => `${f.slice('package/'.length)} is missing`);
}

export function checkTarballs(files) {
  let failed = 0;
  for (const file of files) {
    const pkg = manifestOf(file);
    const problems = [...metadataProblems(pkg), ...contentProblems(file)];
    console.log(
      `${problems.length === 0 ? 'ok  ' : 'FAIL'} metadata ${file}${problems.map((p) => `\n  ${p}`).join('')}`,
    );
    if (problems.length > 0) failed++;
    // A command-only package (the CLI: `bin`, no exports/main/types) has no
    // import to type: attw has nothing to resolve there.
    const importable = pkg.exports !== undefined || pkg.main !== undefined || pkg.types !== undefined;
    for (const [tool, args] of [
      ['publint', ['run', file, '--strict', '--level', 'suggestion']],
      ...(importable ? [['attw', [file, ...ATTW]]] : []),
    ]) {
      const r = spawnSync(bin(tool), args, { encoding: 'utf8' });
      const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
      // publint exits 0 with suggestions printed; "All good!" is its clean verdict.
      const clean = r.status === 0 && (tool !== 'publint' || /All good!/.test(out));
      console.log(`${clean ? 'ok  ' : 'FAIL'} ${tool} ${file}${clean ? '' : `\n${out}`}`);
      if (!clean) failed++;
    }
  }
  return failed;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error('usage: node scripts/release/check.mjs <tarball>…');
    process.exit(2);
  }
  process.exit(checkTarballs(files) === 0 ? 0 : 1);
}
