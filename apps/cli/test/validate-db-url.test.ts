// `weave validate` checks the database URL an agent would read at start(),
// when the variable store.postgres.urlEnv names is set: the URL of another
// kind of database is a config error here, not a database that start() cannot reach.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { weave } from './helpers.js';

let file: string;

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'weave-validate-db-'));
  file = join(dir, 'agent.yaml');
  await writeFile(file, 'name: search\nauthz: { allowAll: true }\nstore: { postgres: { urlEnv: DBURL } }\n');
});

describe('weave validate: the database URL', () => {
  it('refuses a URL that is not postgres://, naming the variable and never printing the password', async () => {
    const r = await weave(['validate', file], { DBURL: 'mysql://weave:s3cret-mysql@127.0.0.1/w1' });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^AGENT_CONFIG_INVALID: invalid agent config/);
    expect(r.stderr).toContain(
      'store.postgres.urlEnv (environment variable DBURL): the database URL must be postgres:// or postgresql://, not mysql://',
    );
    expect(r.stderr).not.toContain('s3cret');
  });

  it('takes a postgres:// URL, a Unix-socket one too', async () => {
    for (const url of [
      'postgres://weave:pw@127.0.0.1:5432/w1',
      'postgres://weave:pw@/w1?host=/run/postgresql',
    ]) {
      const r = await weave(['validate', file], { DBURL: url });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/tasks\s+PostgreSQL at \$DBURL \(set here\)/);
    }
  });
});
