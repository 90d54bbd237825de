// A user who points A2AClient at a Weave agent with a plain undici Agent (trusting
// the CA, but with no client certificate) is told a client certificate is
// required, and nothing reaches the agent's handler.
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AClient, A2AClientError, buildMessage } from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';

let h: Harness;
let ran = 0;
let requests = 0;

beforeAll(async () => {
  h = await startHarness(
    (a2a) =>
      a2a.registerTaskHandler('echo', () => {
        ran++;
        return 'echo';
      }),
    {},
    { beforeListen: (app) => app.addHook('onRequest', async () => void requests++) },
  );
});
afterAll(() => h?.close());

describe('A2AClient over a dispatcher without a client certificate', () => {
  async function callWith(dispatcher: Agent): Promise<unknown> {
    try {
      const client = new A2AClient({ dispatcher, preferredBindings: ['JSONRPC'] });
      return await client.sendMessage(h.url, { message: buildMessage('echo', 'hi') }).then(
        () => undefined,
        (e: unknown) => e,
      );
    } finally {
      await dispatcher.close();
    }
  }

  it('a plain Agent trusting the CA: CLIENT_CERTIFICATE_REQUIRED, naming the server and the fix', async () => {
    // Trusts the dev CA; its host-name check meets the SVID, which names a SPIFFE ID, not a host.
    const err = await callWith(new Agent({ connect: { ca: h.pki.ca.x509Bundle.toPem() } }));
    expect(err).toBeInstanceOf(A2AClientError);
    expect(err).toMatchObject({ code: 'CLIENT_CERTIFICATE_REQUIRED' });
    expect((err as Error).message).toContain('is a SPIFFE workload (spiffe://test.weave/agent/server)');
    expect((err as Error).message).toContain('requires a client certificate');
    expect((err as Error).message).toContain('new SecureChannel(identity');
    expect(ran).toBe(0);
    expect(requests).toBe(0);
  });
});
