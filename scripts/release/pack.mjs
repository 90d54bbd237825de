#!/usr/bin/env node
// Packs every published package into one folder, as `pnpm publish` would
// publish it: `prepack` builds dist/ first (so a fresh clone packs complete
// packages) and `workspace:` ranges become real versions.
//   node scripts/release/pack.mjs <out-dir>
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { publishedPackages, root, tarballName } from './packages.mjs';

export function packAll(outDir) {
  mkdirSync(outDir, { recursive: true });
  const tarballs = [];
  for (const pkg of publishedPackages()) {
    const file = join(outDir, tarballName(pkg));
    rmSync(file, { force: true });
    const r = spawnSync(
      process.execPath,
      [join(root, 'scripts', 'pnpm.mjs'), 'pack', '--pack-destination', outDir],
      { cwd: pkg.dir, stdio: ['ignore', 'ignore', 'inherit'] },
    );
    if (r.status !== 0 || !existsSync(file)) throw new Error(`packing ${pkg.name} failed (exit ${r.status})`);
    console.log(`packed ${pkg.name}@${pkg.version} → ${file}`);
    tarballs.push({ ...pkg, file });
  }
  return tarballs;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node scripts/release/pack.mjs <out-dir>');
    process.exit(2);
  }
  packAll(resolve(out));
}
