#!/usr/bin/env node
// `npm run test:packages`: what a user installs, checked before anyone does.
// Packs every published package (prepack builds it), lints the tarballs
// (publint, attw) and runs the smoke programs from them in empty npm projects
// (their dependencies come from the npm registry, like `pnpm install`).
//   node scripts/release/verify.mjs [<keep-dir>]   (tarballs kept there when given)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkTarballs } from './check.mjs';
import { packAll } from './pack.mjs';
import { root } from './packages.mjs';

/** Packs, lints and smoke-tests into `out`; returns the tarballs, or exits non-zero. */
export function verifyPackages(out) {
  const tarballs = packAll(out);
  if (checkTarballs(tarballs.map((t) => t.file)) !== 0) {
    console.error('packages: publint/attw findings in the packed packages');
    process.exit(1);
  }
  const r = spawnSync('bash', [join(root, 'scripts', 'release', 'smoke', 'run.sh'), out], {
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.error(`packages: smoke programs failed (exit ${r.status})`);
    process.exit(r.status || 1);
  }
  return tarballs;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const keep = process.argv[2];
  const out = keep ? resolve(keep) : mkdtempSync(join(tmpdir(), 'weave-packages-'));
  try {
    verifyPackages(out);
  } finally {
    if (!keep) rmSync(out, { recursive: true, force: true });
  }
}
