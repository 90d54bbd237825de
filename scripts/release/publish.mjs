#!/usr/bin/env node
// `npm run release`: the one way to publish. Packs every published package
// (prepack builds dist/, so a fresh clone publishes complete packages), lints
// the tarballs (publint, attw), runs the smoke programs from them in an empty
// npm project, and only then runs `changeset publish` through the pinned pnpm
// (which publishes with `workspace:` ranges replaced by real versions).
// Run `pnpm changeset version` and commit before this.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkTarballs } from './check.mjs';
import { packAll } from './pack.mjs';
import { root } from './packages.mjs';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`release: ${cmd} ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(r.status || 1);
  }
}

const out = mkdtempSync(join(tmpdir(), 'weave-release-'));
try {
  const tarballs = packAll(out);
  if (checkTarballs(tarballs.map((t) => t.file)) !== 0) {
    console.error('release: the packed packages have publint/attw findings; nothing was published');
    process.exit(1);
  }
  run('bash', [join(root, 'scripts', 'release', 'smoke', 'run.sh'), out]);
  run(process.execPath, [join(root, 'scripts', 'pnpm.mjs'), 'exec', 'changeset', 'publish']);
} finally {
  rmSync(out, { recursive: true, force: true });
}
