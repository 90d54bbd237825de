// Smoke test of the published packages: two SecureAgents from @weave/agent on
// loopback with dev-CA identities and a default-deny policy. An allowed call
// is answered with the callee's verified view of the caller; a call the policy
// does not allow fails with CALL_DENIED and the callee's handler never runs.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { CallError, SecureAgent } from '@weave/agent';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';

const require = createRequire(import.meta.url);
for (const name of ['@weave/agent', '@weave/a2a', '@weave/authz', '@weave/transport/server']) {
  assert.equal(typeof require(name), 'object', `require(${name})`);
}

const dir = mkdtempSync(join(tmpdir(), 'weave-smoke-'));
const policyFile = join(dir, 'policy.yaml');
writeFileSync(
  policyFile,
  `version: 1
id: smoke
default: deny
rules:
  - id: alpha-may-greet
    effect: allow
    callers: ['spiffe://smoke.test/agent/alpha']
    callees: ['spiffe://smoke.test/agent/beta']
    actions: ['greet']
`,
);
const ca = await DevCertificateAuthority.create({ trustDomain: 'smoke.test' });
const identity = (name) => DevCaIdentityProvider.create({ ca, id: `spiffe://smoke.test/agent/${name}` });
const config = (name) => ({
  name,
  description: `smoke agent ${name}`,
  version: '1.0.0',
  server: { host: '127.0.0.1', port: 0 },
  authz: { policyFile },
  logging: { level: 'silent' },
});

let secretRuns = 0;
const ids = { alpha: await identity('alpha'), beta: await identity('beta') };
const beta = new SecureAgent({ config: config('beta'), identity: ids.beta })
  .capability('greet', { input: z.object({ name: z.string() }) }, ({ name }, ctx) => ({
    text: `hello ${name}`,
    caller: ctx.caller.toString(),
  }))
  .capability('secret', { input: z.object({}) }, () => {
    secretRuns++;
    return { secret: 42 };
  });
const alpha = new SecureAgent({ config: config('alpha'), identity: ids.alpha });
try {
  const { url } = await beta.start();
  await alpha.start();
  alpha.addPeer('spiffe://smoke.test/agent/beta', url);

  const out = await alpha.callAgent('spiffe://smoke.test/agent/beta', 'greet', { name: 'smoke' });
  assert.deepEqual(out, { text: 'hello smoke', caller: 'spiffe://smoke.test/agent/alpha' });
  console.log(`ok: alpha → beta greet answered ${JSON.stringify(out)}`);

  await assert.rejects(alpha.callAgent('spiffe://smoke.test/agent/beta', 'secret', {}), (err) => {
    assert.ok(err instanceof CallError, `expected CallError, got ${err}`);
    assert.equal(err.code, 'CALL_DENIED');
    return true;
  });
  assert.equal(secretRuns, 0, 'a denied call must not run the handler');
  console.log('ok: alpha → beta secret refused with CALL_DENIED; the handler never ran');
} finally {
  await alpha.stop();
  await beta.stop();
  await Promise.all([ids.alpha.close(), ids.beta.close()]);
  rmSync(dir, { recursive: true, force: true });
}
