// A static identity whose files the agent cannot take: a bundle file holding
// another trust domain's CA (how federation was configured before
// `identity.static.federated`) is reported as the bundle file it is, with its
// config key and path, not as "no X.509-SVID"; and SecureAgent.checkStaticIdentity
// (what `weave validate` runs) refuses it with the same error start() gives.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { makeTd, removeTempDirs, type TestTd } from '@weave/test-support/tls-fixtures';
import { AgentError, SecureAgent, parseAgentConfig, type AgentConfigInput } from '../src/index.js';
import { testLogger, writeStaticIdentityFiles, type StaticIdentityFiles } from './helpers.js';

const OWN = 'a.test';
const PARTNER = 'b.test';
const SVC = `spiffe://${OWN}/agent/svc`;

let own: TestTd;
let partner: TestTd;
let files: StaticIdentityFiles;

beforeAll(async () => {
  [own, partner] = await Promise.all([makeTd(OWN), makeTd(PARTNER)]);
  // mixedFile: federation as configs of older versions wrote it: the partner's CA appended to ours.
  files = await writeStaticIdentityFiles(own, partner, SVC, 'weave-static-errors-');
});
afterAll(() => removeTempDirs());

const stops: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

function config(
  identity: AgentConfigInput['identity'],
  spiffeId: string | undefined = SVC,
): AgentConfigInput {
  return { name: 'svc', ...(spiffeId === undefined ? {} : { spiffeId }), identity };
}

async function startError(input: AgentConfigInput): Promise<AgentError> {
  const agent = new SecureAgent({
    config: input,
    enforcer: LocalPolicyEnforcer.fromObject(
      { version: 1, id: 'svc', default: 'deny', rules: [] },
      { logger: testLogger() },
    ),
    logger: testLogger(),
    env: {},
  });
  stops.push(() => agent.stop({ drainTimeoutMs: 0 }));
  const err = await agent.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  return err as AgentError;
}

async function checkError(input: AgentConfigInput): Promise<AgentError> {
  const err = await SecureAgent.checkStaticIdentity(parseAgentConfig(input, { enforcer: true })).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  return err as AgentError;
}

describe('a static identity the agent cannot take', () => {
  it("a partner's CA in identity.static.bundleFile: the bundle file named by key and path, the way to federate said", async () => {
    const input = config({
      static: { certFile: files.certFile, keyFile: files.keyFile, bundleFile: files.mixedFile },
    });
    const err = await startError(input);
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).not.toContain('no X.509-SVID');
    expect(err.message).toMatch(
      new RegExp(
        `^identity\\.static\\.bundleFile \\(${files.mixedFile.replaceAll('.', '\\.')}\\): X\\.509 bundle of ${OWN}: authority .* is a CA of trust domain "${PARTNER}", not of ${OWN}: `,
      ),
    );
    expect(err.message).toContain(
      "move another domain's CA to a file of its own under identity.static.federated",
    );
    // What `weave validate` runs: the same error.
    const checked = await checkError(input);
    expect({ code: checked.code, message: checked.message }).toEqual({
      code: err.code,
      message: err.message,
    });
  });

  it('a federated bundle file holding our own CA: named by its key (identity.static.federated.<domain>) and path', async () => {
    // Without spiffeId the config cannot tell the own trust domain: the files do.
    const input = config(
      {
        static: {
          certFile: files.certFile,
          keyFile: files.keyFile,
          bundleFile: files.bundleFile,
          federated: { [PARTNER]: files.mixedFile },
        },
      },
      undefined,
    );
    const err = await startError(input);
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).toMatch(
      new RegExp(
        `^identity\\.static\\.federated\\.${PARTNER.replace('.', '\\.')} \\(${files.mixedFile.replaceAll('.', '\\.')}\\): X\\.509 bundle of ${PARTNER}: authority .* is a CA of trust domain "${OWN}"`,
      ),
    );
    expect((await checkError(input)).message).toBe(err.message);
  });

  it('a missing SVID file is still no X.509-SVID, from start() and the check alike', async () => {
    const input = config({
      static: { certFile: `${files.certFile}.missing`, keyFile: files.keyFile, bundleFile: files.bundleFile },
    });
    const err = await startError(input);
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).toMatch(/^no X\.509-SVID: cannot load identity files: ENOENT/);
    expect((await checkError(input)).message).toBe(err.message);
  });

  it('an SVID other than spiffeId: says it is the file that holds it, not a Workload API', async () => {
    const input = config(
      { static: { certFile: files.certFile, keyFile: files.keyFile, bundleFile: files.bundleFile } },
      `spiffe://${OWN}/agent/other`,
    );
    const err = await startError(input);
    expect(err.code).toBe('AGENT_NO_IDENTITY');
    expect(err.message).toBe(
      `identity.static.certFile (${files.certFile}) holds ${SVC}, but config.spiffeId requires spiffe://${OWN}/agent/other`,
    );
    expect((await checkError(input)).message).toBe(err.message);
  });
});

describe('SecureAgent.checkStaticIdentity', () => {
  it('gives the SPIFFE ID of the SVID in the files (federated bundles read too), and undefined for the Workload API', async () => {
    const id = await SecureAgent.checkStaticIdentity(
      parseAgentConfig(
        config(
          {
            static: {
              certFile: files.certFile,
              keyFile: files.keyFile,
              bundleFile: files.bundleFile,
              federated: { [PARTNER]: files.partnerFile },
            },
          },
          undefined,
        ),
        { enforcer: true },
      ),
    );
    expect(id?.toString()).toBe(SVC);
    expect(
      await SecureAgent.checkStaticIdentity(
        parseAgentConfig(config({ workloadApi: { socket: 'unix:///nowhere.sock' } }), { enforcer: true }),
      ),
    ).toBeUndefined();
  });
});
