// The packages a release publishes: every workspace package that is not private.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `{ name, version, dir }` of each published package, in dependency order (as listed). */
export function publishedPackages() {
  const out = [];
  for (const group of ['packages', 'apps']) {
    for (const entry of readdirSync(join(root, group))) {
      const dir = join(root, group, entry);
      const file = join(dir, 'package.json');
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, 'utf8'));
      if (!pkg.private) out.push({ name: pkg.name, version: pkg.version, dir });
    }
  }
  return out;
}

/**
 * The repository every package points at (`repository`, `homepage`, `bugs`):
 * the root package.json's `repository.url` is the one place it is written.
 */
export function repositoryBase() {
  const url = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).repository?.url ?? '';
  const m = /^git\+(https:\/\/github\.com\/[\w.-]+\/[\w.-]+?)\.git$/.exec(url);
  if (!m)
    throw new Error(
      `root package.json: repository.url ${JSON.stringify(url)} is not git+https://github.com/<org>/<repo>.git`,
    );
  return m[1];
}

/** The file name `pnpm pack` gives a package's tarball. */
export function tarballName({ name, version }) {
  return `${name.replace(/^@/, '').replace('/', '-')}-${version}.tgz`;
}
