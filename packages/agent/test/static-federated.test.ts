// An agent on static identity files federated with a partner trust domain:
// the partner's CAs come from `identity.static.federated` as that domain's own
// bundle, so they vouch for the partner's IDs and never for ours. Real dev
// CAs on disk, a leaf forged with openssl, real mTLS on loopback.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { BundleError, BundleSet, X509Svid } from '@weave/identity';
import {
  SetProvider,
  craftCert,
  makeTd,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';
import {
  AgentConfigError,
  AgentError,
  SecureAgent,
  WeaveClient,
  loadAgentConfig,
  parseAgentConfig,
  type AgentConfigInput,
} from '../src/index.js';
import { testLogger, writeStaticIdentityFiles, type StaticIdentityFiles } from './helpers.js';

const OWN = 'a.test';
const PARTNER = 'b.test';
const SVC = `spiffe://${OWN}/agent/svc`;
const PARTNER_ID = `spiffe://${PARTNER}/agent/partner`;

let own: TestTd;
let partner: TestTd;
/** The agent's own SVID and bundle files, and the partner's bundle file. */
let files: StaticIdentityFiles;

beforeAll(async () => {
  [own, partner] = await Promise.all([makeTd(OWN), makeTd(PARTNER)]);
  // mixedFile: what a user concatenating the two domains' bundles for federation writes.
  files = await writeStaticIdentityFiles(own, partner, SVC, 'weave-static-federated-');
});
afterAll(() => removeTempDirs());

const stops: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

// Our own domain may call anything (an "internal" rule), the partner's one agent `secret` only.
const policy = () =>
  LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'svc',
      default: 'deny',
      rules: [
        { id: 'internal', effect: 'allow', callers: [`spiffe://${OWN}`], actions: ['*'] },
        { id: 'partner', effect: 'allow', callers: [PARTNER_ID], actions: ['secret'] },
      ],
    },
    { logger: testLogger() },
  );

async function startSvc(identity: NonNullable<AgentConfigInput['identity']>) {
  const served: string[] = [];
  const agent = new SecureAgent({
    config: { name: 'svc', spiffeId: SVC, identity },
    enforcer: policy(),
    logger: testLogger(),
    env: {},
  }).capability('secret', { input: z.object({}) }, (_input, ctx) => {
    served.push(ctx.caller.toString());
    return { secret: 42 };
  });
  stops.push(() => agent.stop({ drainTimeoutMs: 0 }));
  const { url } = await agent.start();
  return { url, served };
}

/** A client presenting `svid`, trusting our own domain's CA for the agent it calls. */
function caller(svid: X509Svid, url: string): WeaveClient {
  const identity = new SetProvider();
  identity.set(svid, BundleSet.of(own.ca.x509Bundle));
  const client = new WeaveClient({
    identity,
    enforcer: LocalPolicyEnforcer.fromObject(
      {
        version: 1,
        id: 'caller',
        default: 'deny',
        rules: [{ id: 'any', effect: 'allow', callers: ['*'], actions: ['*'] }],
      },
      { logger: testLogger() },
    ),
    peers: [{ id: SVC, url }],
    transport: { retries: 0 },
    logger: testLogger(),
  });
  stops.push(async () => {
    await client.close();
    await identity.close();
  });
  return client;
}

describe('identity.static.federated', () => {
  it("admits a partner's agent the policy allows, and refuses a partner-CA-signed leaf claiming one of our IDs", async () => {
    const { url, served } = await startSvc({
      static: {
        certFile: files.certFile,
        keyFile: files.keyFile,
        bundleFile: files.bundleFile,
        federated: { [PARTNER]: files.partnerFile },
      },
    });

    const partnerSvid = await partner.ca.issueX509Svid(PARTNER_ID, { ttlSeconds: 300 });
    await expect(caller(partnerSvid, url).callAgent(SVC, 'secret', {})).resolves.toEqual({ secret: 42 });
    expect(served).toEqual([PARTNER_ID]);

    // The partner's CA mints an ID of our domain, which the "internal" rule would allow.
    const forged = craftCert({ uri: `spiffe://${OWN}/agent/admin`, signer: partner });
    const err = await caller(X509Svid.parse(forged.cert, forged.key), url)
      .callAgent(SVC, 'secret', {})
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    // Its SVID does not verify against our own domain's CA: refused before any handler runs.
    expect(err).toBeInstanceOf(AgentError);
    expect(err).toMatchObject({
      code: 'CALL_FAILED',
      message: expect.stringContaining('HTTP 403') as string,
    });
    expect(served).toEqual([PARTNER_ID]);
  });

  it("refuses at start a bundleFile that holds the partner's CA too, with BUNDLE_FOREIGN_AUTHORITY", async () => {
    const err = await startSvc({
      static: { certFile: files.certFile, keyFile: files.keyFile, bundleFile: files.mixedFile },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgentError);
    // AgentError ← IdentityConfigError (the files) ← BundleError (the bundle file's CA of b.test).
    let cause: unknown = err;
    while (cause instanceof Error && !(cause instanceof BundleError)) cause = cause.cause;
    expect(cause).toBeInstanceOf(BundleError);
    expect((cause as BundleError).code).toBe('BUNDLE_FOREIGN_AUTHORITY');
    expect((err as Error).message).toContain(`is a CA of trust domain "${PARTNER}", not of ${OWN}`);
  });

  it('is read from a config file: paths resolved against its folder, trust domains checked', async () => {
    const yaml = join(files.dir, 'agent.yaml');
    await writeFile(
      yaml,
      [
        'name: svc',
        `spiffeId: ${SVC}`,
        'identity:',
        `  static: { certFile: svid.pem, keyFile: svid_key.pem, bundleFile: svid_bundle.pem, federated: { ${PARTNER}: b.pem } }`,
        'authz: { allowAll: true }',
        '',
      ].join('\n'),
    );
    const config = await loadAgentConfig(yaml, {});
    expect(config.identity).toEqual({
      static: {
        certFile: files.certFile,
        keyFile: files.keyFile,
        bundleFile: files.bundleFile,
        federated: { [PARTNER]: files.partnerFile },
      },
    });

    const issues = (federated: Record<string, string>) => {
      try {
        parseAgentConfig(
          {
            name: 'svc',
            spiffeId: SVC,
            authz: { allowAll: true },
            identity: { static: { certFile: 'c', keyFile: 'k', bundleFile: 'b', federated } },
          },
          { env: {} },
        );
      } catch (e) {
        expect(e).toBeInstanceOf(AgentConfigError);
        return (e as AgentConfigError).issues;
      }
      return [];
    };
    expect(issues({ 'B.test': 'b.pem' })).toEqual([
      {
        path: 'identity.static.federated.B.test',
        message: expect.stringContaining(
          'trust domain characters are limited to lowercase letters',
        ) as string,
      },
    ]);
    expect(issues({ [`spiffe://${PARTNER}/agent`]: 'b.pem' })[0]?.message).toBe(
      `must name a trust domain (${PARTNER} or spiffe://${PARTNER}), not a SPIFFE ID with a path`,
    );
    expect(issues({ [PARTNER]: 'b.pem', [`spiffe://${PARTNER}`]: 'b2.pem' })[0]).toEqual({
      path: `identity.static.federated.spiffe://${PARTNER}`,
      message: `names trust domain ${PARTNER}, as "${PARTNER}" does: one entry per trust domain`,
    });
    expect(issues({ [`spiffe://${OWN}`]: 'a.pem' })).toEqual([
      {
        path: `identity.static.federated.spiffe://${OWN}`,
        message: `${OWN} is this agent's own trust domain (spiffeId): its CAs go in identity.static.bundleFile, not federated`,
      },
    ]);
    expect(issues({ [PARTNER]: '' })[0]?.path).toBe(`identity.static.federated.${PARTNER}`);
  });

  it('refuses at start a federated file that cannot be read, as it refuses a missing bundleFile', async () => {
    const err = await startSvc({
      static: {
        certFile: files.certFile,
        keyFile: files.keyFile,
        bundleFile: files.bundleFile,
        federated: { [PARTNER]: join(files.dir, 'missing.pem') },
      },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AgentError);
    expect((err as Error).message).toContain('missing.pem');
  });
});
