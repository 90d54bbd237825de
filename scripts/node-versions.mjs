#!/usr/bin/env node
// Installs the Node.js versions CI also tests on (besides the floor, Node 20)
// from the npm registry's official binary packages (`node-<os>-<arch>`), into
// the git-ignored .tools/node/<version>/. Idempotent: a version already there
// is not fetched again. Prints one `<version> <bin dir>` line per version.
//   node scripts/node-versions.mjs            install all, print the lines
//   node scripts/node-versions.mjs --bin 22   print only the bin dir of Node 22
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The versions CI runs besides the one it starts with; bump them here. */
export const NODE_VERSIONS = ['22.23.5', '24.22.3'];

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = `node-${process.platform}-${process.arch}`;

function binDir(version) {
  return join(root, '.tools', 'node', version, 'node_modules', pkg, 'bin');
}

function installed(version) {
  const node = join(binDir(version), 'node');
  if (!existsSync(node)) return false;
  const r = spawnSync(node, ['--version'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() === `v${version}`;
}

export function ensureNode(version) {
  if (!installed(version)) {
    console.error(`[weave] installing Node ${version} (${pkg}) into .tools/node/${version}`);
    const r = spawnSync(
      'npm',
      [
        'install',
        '--no-save',
        '--no-package-lock',
        '--no-audit',
        '--no-fund',
        '--prefix',
        join(root, '.tools', 'node', version),
        `${pkg}@${version}`,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    if (r.status !== 0 || !installed(version)) {
      throw new Error(`could not install ${pkg}@${version} with npm (exit ${r.status})`);
    }
  }
  return binDir(version);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [flag, major] = process.argv.slice(2);
  const wanted = flag === '--bin' ? NODE_VERSIONS.filter((v) => v.split('.')[0] === major) : NODE_VERSIONS;
  if (flag === '--bin' && wanted.length !== 1) {
    console.error(
      `usage: node scripts/node-versions.mjs [--bin <major>]; majors: ${NODE_VERSIONS.join(', ')}`,
    );
    process.exit(2);
  }
  for (const v of wanted) {
    const dir = ensureNode(v);
    console.log(flag === '--bin' ? dir : `${v} ${dir}`);
  }
}
