// A user who points A2AClient at a Weave agent with a plain undici Agent (trusting
// the CA, but with no client certificate) is told a client certificate is
// required, and nothing reaches the agent's handler.
import { Agent } from 'undici';
import { LocalPolicyEnforcer } from '@weave/authz';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, A2AServer, buildMessage } from '../src/index.js';
import { baseUrl, createPki, mtlsServer, type Pki } from '@weave/test-support';

let pki: Pki;
let close: () => Promise<void>;
let url: string;
let ran = 0;
let requests = 0;

beforeAll(async () => {
  pki = await createPki();
  const server = await pki.workload('/agent/server');
  const a2a = new A2AServer({
    card: { name: 't', description: 't', version: '1' },
    selfId: server.id,
    enforcer: LocalPolicyEnforcer.fromObject(
      {
        version: 1,
        id: 'any',
        default: 'deny',
        rules: [{ id: 'all', effect: 'allow', callers: ['spiffe://test.weave/*'], actions: ['*'] }],
      },
      { logger: pino({ level: 'silent' }), audit: { record: () => undefined } },
    ),
    heartbeatMs: 0,
  });
  a2a.registerTaskHandler('echo', () => {
    ran++;
    return 'echo';
  });
  const app = mtlsServer(server);
  app.addHook('onRequest', async () => void requests++);
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = baseUrl(app);
  close = async () => {
    await a2a.close();
    await app.close();
    await pki.close();
  };
});
afterAll(() => close?.());

describe('A2AClient over a dispatcher without a client certificate', () => {
  async function callWith(dispatcher: Agent): Promise<unknown> {
    try {
      const client = new A2AClient({ dispatcher, preferredBindings: ['JSONRPC'] });
      return await client.sendMessage(url, { message: buildMessage('echo', 'hi') }).then(
        () => undefined,
        (e: unknown) => e,
      );
    } finally {
      await dispatcher.close();
    }
  }

  it('a plain Agent trusting the CA: CLIENT_CERTIFICATE_REQUIRED, naming the server and the fix', async () => {
    // Trusts the dev CA; its host-name check meets the SVID, which names a SPIFFE ID, not a host.
    const err = await callWith(new Agent({ connect: { ca: pki.ca.x509Bundle.toPem() } }));
    expect(err).toBeInstanceOf(A2AClientError);
    expect(err).toMatchObject({ code: 'CLIENT_CERTIFICATE_REQUIRED' });
    expect((err as Error).message).toContain('is a SPIFFE workload (spiffe://test.weave/agent/server)');
    expect((err as Error).message).toContain('requires a client certificate');
    expect((err as Error).message).toContain('new SecureChannel(identity');
    expect(ran).toBe(0);
    expect(requests).toBe(0);
  });
});
