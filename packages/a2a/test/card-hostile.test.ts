// A hostile server feeding the client's discovery: cards nested deep enough to
// overflow the stack of whatever walks them, cards carrying hundreds of
// signatures to check, and interface URLs grpc-js would read as something
// other than the host and port the client checked.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  AgentCardSignatureError,
  DiscoveryClient,
  SPIFFE_ID_EXTENSION,
  canonicalizeAgentCard,
  grpcTarget,
  signAgentCard,
  verifyAgentCard,
  type AgentCard,
} from '../src/index.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from '@weave/test-support';

let pki: Pki;
let client: Workload;
let server: Workload;
let app: MtlsFastifyInstance;
let toServer: SecureChannel;
/** The raw text the server answers for its card. */
let served = '';

/** A card of `server` whose one extension's params hold `inner` (JSON text). */
function cardText(inner: string): string {
  const card = {
    name: 'hostile',
    description: 'd',
    version: '1',
    supportedInterfaces: [
      { url: 'https://127.0.0.1:9/rpc', protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    ],
    capabilities: { extensions: [{ uri: 'urn:x', params: { v: 0 } }] },
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [],
  };
  return JSON.stringify(card).replace('{"v":0}', `{"v":${inner}}`);
}

const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

beforeAll(async () => {
  pki = await createPki();
  client = await pki.workload('/agent/client');
  server = await pki.workload('/agent/server');
  app = mtlsServer(server);
  app.get('/.well-known/agent-card.json', async (_req, reply) => reply.type('application/json').send(served));
  await app.listen({ port: 0, host: '127.0.0.1' });
  toServer = channel(client, server.id);
});
afterAll(async () => {
  await toServer?.close();
  await app?.close();
  await pki?.close();
});

describe('a deeply nested card', () => {
  it('is refused by discovery as AGENT_CARD_INVALID, not handed to the caller', async () => {
    // 200 000 levels: 400 kB, well inside the 1 MiB card limit.
    served = cardText(nested(200_000));
    const d = new DiscoveryClient({ dispatcher: toServer });
    const err = await d.discover(baseUrl(app)).then(
      (card) => new Error(`accepted (JSON.stringify: ${String(JSON.stringify(card)?.length)})`),
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'AGENT_CARD_INVALID' });
    expect((err as Error).message).toContain('nested deeper than');
    expect(d.stats()).toMatchObject({ entries: 0 });
  });

  it('is refused before its signature check, as AGENT_CARD_INVALID', async () => {
    served = cardText(nested(200_000)).replace(
      '"skills":[]',
      '"skills":[],"signatures":[{"protected":"e30","signature":"AA"}]',
    );
    const d = new DiscoveryClient({
      dispatcher: toServer,
      signatures: { policy: 'if-present', bundles: client.identity },
    });
    await expect(d.discover(baseUrl(app))).rejects.toMatchObject({ code: 'AGENT_CARD_INVALID' });
  });

  it('still takes a card whose extension params are as deep as a request may be', async () => {
    served = cardText(nested(40));
    const card = await new DiscoveryClient({ dispatcher: toServer }).discover(baseUrl(app));
    expect(card.name).toBe('hostile');
  });

  it('fails verifyAgentCard and canonicalizeAgentCard with CARD_INVALID', async () => {
    const card = JSON.parse(cardText(nested(200_000))) as AgentCard;
    const err = await verifyAgentCard(
      { ...card, signatures: [{ protected: 'e30', signature: 'AA' }] },
      { policy: 'required', bundles: client.identity },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCardSignatureError);
    expect((err as AgentCardSignatureError).code).toBe('CARD_INVALID');
    expect(() => canonicalizeAgentCard(card)).toThrow(/nested deeper than/);
  });
});

describe('a card with many signatures', () => {
  async function signedCard(): Promise<{ card: AgentCard; good: unknown; bad: unknown }> {
    const base = JSON.parse(cardText('0')) as AgentCard;
    base.capabilities = {
      extensions: [{ uri: SPIFFE_ID_EXTENSION, params: { spiffeId: server.id.toString() } }],
    };
    const card = await signAgentCard(base, server.identity.getX509Svid());
    const good = card.signatures?.[0] as { protected: string; signature: string };
    // The same header (with its valid x5c chain) and a signature that does not verify.
    const bad = { protected: good.protected, signature: `${good.signature.slice(0, -4)}AAAA` };
    return { card, good, bad };
  }
  const policy = () => ({ policy: 'required' as const, bundles: client.identity, tlsPeer: server.id });

  it('is refused whole past 16, before any signature is checked', async () => {
    const { card, good, bad } = await signedCard();
    const signatures = [...Array.from({ length: 16 }, () => bad), good];
    const err = await verifyAgentCard({ ...card, signatures }, policy()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCardSignatureError);
    expect((err as AgentCardSignatureError).code).toBe('CARD_SIGNATURE_MALFORMED');
    expect((err as Error).message).toContain('17 signatures, more than 16');
    // Refused up front: no signature's own failure was recorded.
    expect((err as AgentCardSignatureError).failures).toEqual([]);
  });

  it('verifies with 16, the good one last', async () => {
    const { card, good, bad } = await signedCard();
    const signatures = [...Array.from({ length: 15 }, () => bad), good];
    await expect(verifyAgentCard({ ...card, signatures }, policy())).resolves.toMatchObject({
      status: 'verified',
      spiffeId: server.id,
    });
  });
});

describe('a gRPC interface URL', () => {
  it('names a DNS host, never a Unix socket grpc-js would read into it', () => {
    // grpc-js reads `unix:4444` as the socket file ./4444; checked here as host `unix`, port 4444.
    expect(grpcTarget('unix:4444')).toBe('dns:unix:4444');
    expect(grpcTarget('https://unix:4444/')).toBe('dns:unix:4444');
    expect(grpcTarget('dns:4444')).toBe('dns:dns:4444');
    expect(grpcTarget('agent.internal:8443')).toBe('dns:agent.internal:8443');
    expect(grpcTarget('https://[::1]:8443')).toBe('dns:[::1]:8443');
    expect(grpcTarget('https://agent.internal')).toBe('dns:agent.internal:443');
  });
});
