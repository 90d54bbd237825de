#!/usr/bin/env node
// `npm run release`: the one way to publish. Verifies the packed packages
// (scripts/release/verify.mjs: prepack builds dist/, so a fresh clone publishes
// complete packages; publint, attw, smoke programs from the tarballs), then
// runs `changeset publish` through the pinned pnpm, which publishes with
// `workspace:` ranges replaced by real versions.
// Run `node scripts/pnpm.mjs changeset version` and commit before this.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { root } from './packages.mjs';
import { verifyPackages } from './verify.mjs';

const out = mkdtempSync(join(tmpdir(), 'weave-release-'));
try {
  verifyPackages(out);
} finally {
  rmSync(out, { recursive: true, force: true });
}
const r = spawnSync(process.execPath, [join(root, 'scripts', 'pnpm.mjs'), 'exec', 'changeset', 'publish'], {
  cwd: root,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
