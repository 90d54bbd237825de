#!/usr/bin/env node
// Runs the pnpm version pinned in package.json's `packageManager`, installing it
// into .tools/ with npm when no matching pnpm is on the PATH. This is what lets
// the README's commands work on a machine that has only Node and npm.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pinned = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager;
const match = /^pnpm@(\d+\.\d+\.\d+)/.exec(pinned ?? '');
if (!match) {
  console.error(`package.json packageManager must be "pnpm@x.y.z", got ${JSON.stringify(pinned)}`);
  process.exit(2);
}
const version = match[1];
const args = process.argv.slice(2);

function run(cmd, cmdArgs) {
  const r = spawnSync(cmd, cmdArgs, { stdio: 'inherit', cwd: process.cwd(), env: process.env });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

function onPath() {
  const r = spawnSync('pnpm', ['--version'], {
    encoding: 'utf8',
    env: { ...process.env, COREPACK_ENABLE_STRICT: '0' },
  });
  return r.status === 0 && r.stdout.trim() === version;
}

if (onPath()) process.exit(run('pnpm', args));

const local = join(root, '.tools', 'node_modules', 'pnpm', 'bin', 'pnpm.cjs');
const localVersion = () => {
  try {
    return JSON.parse(readFileSync(join(root, '.tools', 'node_modules', 'pnpm', 'package.json'), 'utf8'))
      .version;
  } catch {
    return undefined;
  }
};
if (!existsSync(local) || localVersion() !== version) {
  console.error(`[weave] pnpm ${version} not found; installing it into .tools/ with npm`);
  const status = run('npm', [
    'install',
    '--no-save',
    '--no-package-lock',
    '--no-audit',
    '--no-fund',
    '--prefix',
    join(root, '.tools'),
    `pnpm@${version}`,
  ]);
  if (status !== 0 || !existsSync(local)) {
    console.error(`[weave] could not install pnpm@${version} with npm (exit ${status})`);
    process.exit(status || 1);
  }
}
// turbo and nested scripts look for `pnpm` on the PATH: put ours first.
process.env.PATH = `${join(root, '.tools', 'node_modules', '.bin')}${delimiter}${process.env.PATH ?? ''}`;
process.exit(run(process.execPath, [local, ...args]));
