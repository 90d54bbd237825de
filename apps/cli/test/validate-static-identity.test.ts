// `weave validate` of a config on static identity files reads them as start()
// does: a bundle file an agent would refuse (a partner's CA appended to ours,
// how federation was configured before identity.static.federated) fails here
// with the error start() gives, and a good one prints the SPIFFE ID the SVID
// file holds, not "whatever the Workload API serves".
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentError, SecureAgent } from '@weave/agent';
import { DevCertificateAuthority } from '@weave/identity/dev';
import { pino } from 'pino';
import { inproc } from './helpers.js';

const ID = 'spiffe://own.weave/agent/search';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-validate-static-'));
  const [own, partner] = await Promise.all([
    DevCertificateAuthority.create({ trustDomain: 'own.weave' }),
    DevCertificateAuthority.create({ trustDomain: 'partner.weave' }),
  ]);
  const svid = (await own.issueX509Svid(ID, { ttlSeconds: 600 })).toPem();
  await Promise.all([
    writeFile(join(dir, 'svid.pem'), svid.certChain),
    writeFile(join(dir, 'svid_key.pem'), svid.privateKey),
    writeFile(join(dir, 'bundle.pem'), own.x509Bundle.toPem()),
    writeFile(join(dir, 'partner.pem'), partner.x509Bundle.toPem()),
    writeFile(join(dir, 'both.pem'), own.x509Bundle.toPem() + partner.x509Bundle.toPem()),
    writeFile(join(dir, 'policy.yaml'), 'version: 1\nid: search\ndefault: deny\nrules: []\n'),
  ]);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function configFile(name: string, staticIdentity: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(
    file,
    [
      'name: search',
      'identity:',
      `  static: ${staticIdentity}`,
      'authz: { policyFile: policy.yaml }',
      '',
    ].join('\n'),
  );
  return file;
}

describe('weave validate: identity.static', () => {
  it("refuses a partner's CA in bundleFile with the error start() gives, naming the key, the file and federated", async () => {
    const file = await configFile(
      'concat.yaml',
      '{ certFile: svid.pem, keyFile: svid_key.pem, bundleFile: both.pem }',
    );
    const r = await inproc(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const first = r.stderr.split('\n')[0];
    expect(first).toMatch(
      new RegExp(
        `^AGENT_NO_IDENTITY: ${file}: identity\\.static\\.bundleFile \\(${join(dir, 'both.pem')}\\): `,
      ),
    );
    expect(first).toContain('is a CA of trust domain "partner.weave", not of own.weave');
    expect(first).toContain('identity.static.federated');
    expect(first).not.toContain('no X.509-SVID');

    // The agent's own start() of the same file: the same message.
    const agent = await SecureAgent.fromConfigFile(file, { logger: pino({ level: 'silent' }), env: {} });
    const err = await agent.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgentError);
    expect(first).toBe(`AGENT_NO_IDENTITY: ${file}: ${(err as AgentError).message}`);
  });

  it('prints the SPIFFE ID the SVID file holds, and the federated bundles', async () => {
    const file = await configFile(
      'good.yaml',
      '{ certFile: svid.pem, keyFile: svid_key.pem, bundleFile: bundle.pem, federated: { partner.weave: partner.pem } }',
    );
    const r = await inproc(['validate', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`spiffe id  ${ID} (from the SVID in ${join(dir, 'svid.pem')})`);
    expect(r.stdout).not.toContain('Workload API');
    expect(r.stdout).toContain(`federated partner.weave ${join(dir, 'partner.pem')}`);
  });

  it('a file not there yet (written at run time) is not checked, and said so: still OK', async () => {
    const file = await configFile(
      'later.yaml',
      '{ certFile: written-later.pem, keyFile: svid_key.pem, bundleFile: bundle.pem }',
    );
    const r = await inproc(['validate', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      `WARNING    ${join(dir, 'written-later.pem')} does not exist here: the identity files are not checked`,
    );
  });

  it('refuses an SVID file that is not spiffeId', async () => {
    const file = join(dir, 'other-id.yaml');
    await writeFile(
      file,
      [
        'name: search',
        'spiffeId: spiffe://own.weave/agent/other',
        'identity: { static: { certFile: svid.pem, keyFile: svid_key.pem, bundleFile: bundle.pem } }',
        'authz: { policyFile: policy.yaml }',
        '',
      ].join('\n'),
    );
    const r = await inproc(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `AGENT_NO_IDENTITY: ${file}: identity.static.certFile (${join(dir, 'svid.pem')}) holds ${ID}, but config.spiffeId requires spiffe://own.weave/agent/other`,
    );
  });
});
