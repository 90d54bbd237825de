// Signed cards on the wire: an A2AServer with a cardSigner serves its card
// signed by its SVID; DiscoveryClient / A2AClient check it against the trust
// bundle and the SPIFFE ID the TLS handshake proved.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
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
import { baseUrl, channel, mtlsServer, type Workload } from '@weave/test-support';

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

describe('card caching: ETag, Last-Modified, conditional GET, Cache-Control', () => {
  async function get(headers: Record<string, string>) {
    const res = await request(`${h.url}/.well-known/agent-card.json`, { dispatcher: h.agent, headers });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  }
  const v1 = { 'a2a-version': '1.0' };

  it('the (signed) card has a stable ETag and a Last-Modified; a matching conditional GET is 304 with no body', async () => {
    const first = await get(v1);
    expect(first.status).toBe(200);
    expect(first.headers['cache-control']).toMatch(/max-age=\d+/);
    expect(first.headers.vary).toContain('A2A-Version');
    const etag = String(first.headers.etag);
    const lastModified = String(first.headers['last-modified']);
    expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    expect(Number.isNaN(Date.parse(lastModified))).toBe(false);
    const again = await get(v1);
    expect(again.headers.etag).toBe(etag);
    expect(again.text).toBe(first.text);
    for (const inm of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const r = await get({ ...v1, 'if-none-match': inm });
      expect(r.status, inm).toBe(304);
      expect(r.text, inm).toBe('');
      expect(r.headers.etag, inm).toBe(etag);
    }
    expect((await get({ ...v1, 'if-none-match': '"other"' })).status).toBe(200);
    expect((await get({ ...v1, 'if-modified-since': lastModified })).status).toBe(304);
    const dayBefore = new Date(Date.parse(lastModified) - 86_400_000).toUTCString();
    expect((await get({ ...v1, 'if-modified-since': dayBefore })).status).toBe(200);
    // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    expect((await get({ ...v1, 'if-none-match': '"other"', 'if-modified-since': lastModified })).status).toBe(
      200,
    );
    // A request without A2A-Version gets the same v1.0 card, so the same validators.
    expect((await get({})).headers.etag).toBe(etag);
    expect((await get({ 'if-none-match': etag })).status).toBe(304);
    // The v0.3 variant is another representation, with its own ETag.
    const v03 = { 'a2a-version': '0.3' };
    const legacy = await get(v03);
    expect(legacy.headers.etag).not.toBe(etag);
    expect((await get({ ...v03, 'if-none-match': etag })).status).toBe(200);
    expect((await get({ ...v03, 'if-none-match': String(legacy.headers.etag) })).status).toBe(304);
  });

  it('a changed card gets a new ETag: the old one no longer matches', async () => {
    const before = await get(v1);
    h.a2a.registerTaskHandler({ id: 'later', name: 'later', description: 'added', tags: [] }, () => 'ok');
    const after = await get({ ...v1, 'if-none-match': String(before.headers.etag) });
    expect(after.status).toBe(200);
    expect(after.headers.etag).not.toBe(before.headers.etag);
    expect(JSON.parse(after.text).skills.map((x: { id: string }) => x.id)).toContain('later');
    expect(Date.parse(String(after.headers['last-modified']))).toBeGreaterThanOrEqual(
      Date.parse(String(before.headers['last-modified'])),
    );
  });
});
