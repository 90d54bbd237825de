// Signed cards on the wire: an A2AServer with a cardSigner serves its card
// signed by its SVID; DiscoveryClient / A2AClient check it against the trust
// bundle and the SPIFFE ID the TLS handshake proved.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AClient,
  AgentCardSignatureError,
  AgentCardSigner,
  DiscoveryClient,
  agentCardUrl,
  type AgentCard,
} from '../src/index.js';
import { startHarness, type Harness } from './helpers/agents.js';
import { baseUrl, channel, mtlsServer, type Workload } from './helpers/pki.js';

let h: Harness;
let signer: AgentCardSigner;
let impostor: Workload;
let replay: MtlsFastifyInstance;
let toImpostor: SecureChannel;
const signed = { card: undefined as AgentCard | undefined };

beforeAll(async () => {
  const cardSigner = { sign: (c: AgentCard) => signer.sign(c) };
  h = await startHarness((a2a) => a2a.registerTaskHandler('echo', () => 'ok'), { cardSigner });
  signer = new AgentCardSigner(h.server.identity);
  // Another agent with a valid SVID replays the server's signed card as its own.
  impostor = await h.pki.workload('/agent/impostor');
  replay = mtlsServer(impostor);
  replay.get('/.well-known/agent-card.json', async () => signed.card);
  await replay.listen({ port: 0, host: '127.0.0.1' });
  toImpostor = channel(h.client, impostor.id);
});
afterAll(async () => {
  signer.close();
  await toImpostor.close();
  await replay.close();
  await h.close();
});

const required = () => ({ policy: 'required' as const, bundles: h.client.identity });

describe('discovery of signed cards', () => {
  it('the served card is signed by the server SVID and passes a required policy', async () => {
    const d = new DiscoveryClient({ dispatcher: h.agent, signatures: required() });
    const card = await d.discover(h.url);
    expect(card.signatures).toHaveLength(1);
    signed.card = card;
    // A2AClient passes the same policy to its discovery.
    const client = new A2AClient({ dispatcher: h.agent, cardSignatures: required() });
    await expect(client.discoverAgent(h.url)).resolves.toMatchObject({ name: 'test agent' });
  });

  it('a signed card replayed by another agent is refused (the TLS-proven ID is not the signer)', async () => {
    expect(signed.card).toBeDefined();
    const d = new DiscoveryClient({ dispatcher: toImpostor, signatures: required() });
    const err = await d.discover(baseUrl(replay)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCardSignatureError);
    expect((err as AgentCardSignatureError).code).toBe('CARD_TLS_PEER_MISMATCH');
    expect((err as Error).message).toContain('/agent/impostor');
    expect(d.stats()).toMatchObject({ entries: 0, errors: 1 }); // nothing cached
  });

  it('a card signed before a rotation is signed again by the new SVID', async () => {
    const d = new DiscoveryClient({ dispatcher: h.agent, signatures: required() });
    const before = await d.discover(h.url);
    await (h.server.identity as DevCaIdentityProvider).rotate();
    const after = await d.discover(h.url, { force: true });
    expect(after.signatures?.[0]).not.toEqual(before.signatures?.[0]);
  });

  it('without a signer the card is unsigned: required refuses it, if-present and off take it', async () => {
    const plain = await startHarness((a2a) => a2a.registerTaskHandler('echo', () => 'ok'));
    try {
      const err = await new DiscoveryClient({ dispatcher: plain.agent, signatures: required() })
        .discover(plain.url)
        .catch((e: unknown) => e);
      expect((err as AgentCardSignatureError).code).toBe('CARD_UNSIGNED');
      await expect(
        new DiscoveryClient({
          dispatcher: plain.agent,
          signatures: { policy: 'if-present', bundles: plain.client.identity },
        }).discover(plain.url),
      ).resolves.toBeDefined();
      await expect(
        new DiscoveryClient({ dispatcher: plain.agent }).discover(agentCardUrl(plain.url)),
      ).resolves.toBeDefined();
    } finally {
      await plain.close();
    }
  });
});
