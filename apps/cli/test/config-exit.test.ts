// Every command that reads an agent config answers a file the agent would
// refuse the same way: exit 1 and the same `CODE: message` listing every
// problem. `weave call --config` once exited 2 (a usage error) for the very
// file `weave validate` exits 1 for.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inproc, weave, type RunResult } from './helpers.js';

const CALLEE = 'spiffe://demo.weave/agent/search';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-config-exit-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `weave call` with everything on its command line valid: only the config can be wrong. */
const callWith = (file: string): string[] => ['call', CALLEE, 'search', '{"query":"q"}', '--config', file];

/** Both ran to the same refusal of `file`: exit 1, nothing on stdout, the same error on stderr. */
function expectSameRefusal(validate: RunResult, call: RunResult, code: string): void {
  expect(validate.code).toBe(1);
  expect(validate.stdout).toBe('');
  expect(validate.stderr).toMatch(new RegExp(`^${code}: `));
  expect({ code: call.code, stdout: call.stdout, stderr: call.stderr }).toEqual({
    code: validate.code,
    stdout: '',
    stderr: validate.stderr,
  });
}

describe('a config file the agent refuses', () => {
  it('an invalid one exits 1 with every problem from `weave validate` and `weave call --config` alike', async () => {
    const file = join(dir, 'invalid.yaml');
    await writeFile(file, 'name: Search Agent\nauthz: { allowAll: true }\nextra: 1\n');
    const [validate, call] = await Promise.all([weave(['validate', file]), weave(callWith(file))]);
    expectSameRefusal(validate, call, 'AGENT_CONFIG_INVALID');
    expect(call.stderr).toContain(`invalid agent config (${file})`);
    expect(call.stderr).toContain('"extra"');
  });

  it('an insecure one exits 1 (AGENT_CONFIG_INSECURE) from both', async () => {
    const file = join(dir, 'insecure.yaml');
    await writeFile(file, 'name: a\nauthz: { allowAll: true }\ntransport: { verifyPeer: false }\n');
    expectSameRefusal(
      await inproc(['validate', file]),
      await inproc(callWith(file)),
      'AGENT_CONFIG_INSECURE',
    );
  });

  it('one that cannot be read exits 1 (AGENT_CONFIG_INVALID) from both', async () => {
    const file = join(dir, 'missing.yaml');
    const validate = await inproc(['validate', file]);
    expectSameRefusal(validate, await inproc(callWith(file)), 'AGENT_CONFIG_INVALID');
    expect(validate.stderr).toContain('cannot read file');
  });
});
