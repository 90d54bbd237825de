import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AllowAllEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { type MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AConfigError,
  A2AClient,
  A2AClientError,
  A2AServer,
  DiscoveryClient,
  agentCardUrl,
} from '../src/index.js';
import { baseUrl, createPki, mtlsServer, type Pki } from '@weave/test-support';

let pki: Pki;
const apps: MtlsFastifyInstance[] = [];
const servers: A2AServer[] = [];
const urls: string[] = [];
const cardFetches = new Map<string, number>();
let channel: SecureChannel;

async function agent(name: string, skills: Array<{ id: string; tags: string[] }>): Promise<string> {
  const w = await pki.workload(`/agent/${name}`);
  const a2a = new A2AServer({
    card: { name, description: `${name} agent`, version: '1.0.0' },
    selfId: w.id,
    enforcer: new AllowAllEnforcer({ audit: { record: () => undefined } }),
  });
  for (const s of skills)
    a2a.registerTaskHandler({ id: s.id, name: s.id, description: '', tags: s.tags }, () => 'ok');
  const app = mtlsServer(w);
  app.addHook('onRequest', (req, _reply, done) => {
    if (req.url.includes('.well-known')) cardFetches.set(name, (cardFetches.get(name) ?? 0) + 1);
    done();
  });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  apps.push(app);
  servers.push(a2a);
  return baseUrl(app);
}

beforeAll(async () => {
  pki = await createPki();
  urls.push(await agent('search', [{ id: 'search', tags: ['web', 'text'] }]));
  urls.push(
    await agent('summarize', [
      { id: 'summarize', tags: ['text'] },
      { id: 'translate', tags: ['i18n'] },
    ]),
  );
  // A server of the trust domain that serves something that is not an agent card.
  const w = await pki.workload('/agent/broken');
  const broken = mtlsServer(w);
  broken.get('/.well-known/agent-card.json', async () => ({ name: 42 }));
  await broken.listen({ port: 0, host: '127.0.0.1' });
  apps.push(broken);
  urls.push(baseUrl(broken));
  const client = await pki.workload('/agent/client');
  // One channel for every agent of the trust domain.
  channel = new SecureChannel(client.identity, authorizeMemberOf('test.weave'), { circuitBreaker: false });
});

afterAll(async () => {
  await channel.close();
  for (const s of servers) await s.close();
  for (const a of apps) await a.close();
  await pki.close();
});

describe('DiscoveryClient', () => {
  it('caches cards for the TTL and counts hits and misses', async () => {
    const d = new DiscoveryClient({ dispatcher: channel, ttlMs: 60_000 });
    const before = cardFetches.get('search') ?? 0;
    const [a, b] = await Promise.all([d.discover(urls[0] as string), d.discover(urls[0] as string)]);
    expect(a).toBe(b);
    expect(a.name).toBe('search');
    await d.discover(`${urls[0]}/`);
    expect(cardFetches.get('search')).toBe(before + 1);
    expect(d.stats()).toMatchObject({ misses: 1, hits: 2, entries: 1, errors: 0 });
    await d.discover(urls[0] as string, { force: true });
    expect(cardFetches.get('search')).toBe(before + 2);
  });

  it('refetches once the TTL has passed', async () => {
    const d = new DiscoveryClient({ dispatcher: channel, ttlMs: 0 });
    const before = cardFetches.get('summarize') ?? 0;
    await d.discover(urls[1] as string);
    await d.discover(urls[1] as string);
    expect(cardFetches.get('summarize')).toBe(before + 2);
    expect(d.stats().misses).toBe(2);
  });

  it('discoverMultiple reports each agent, failures included', async () => {
    const d = new DiscoveryClient({ dispatcher: channel });
    const results = await d.discoverMultiple([...urls, 'https://127.0.0.1:1']);
    expect(results.map((r) => r.card?.name ?? null)).toEqual(['search', 'summarize', null, null]);
    expect((results[2]?.error as A2AClientError).code).toBe('AGENT_CARD_INVALID');
    expect((results[3]?.error as A2AClientError).code).toBe('AGENT_CARD_UNREACHABLE');
    expect(d.stats().errors).toBe(2);
  });

  it('findAgentsWithCapability matches skill ids, tags and predicates', async () => {
    const d = new DiscoveryClient({ dispatcher: channel });
    expect((await d.findAgentsWithCapability(urls, 'translate')).map((a) => a.card.name)).toEqual([
      'summarize',
    ]);
    expect((await d.findAgentsWithCapability(urls, 'text')).map((a) => a.card.name)).toEqual([
      'search',
      'summarize',
    ]);
    const mtls = await d.findAgentsWithCapability(
      urls,
      (c) => c.securitySchemes?.mtls !== undefined && c.skills.length === 1,
    );
    expect(mtls.map((a) => a.url)).toEqual([urls[0]]);
  });

  it('evicts the oldest card beyond maxEntries', async () => {
    const d = new DiscoveryClient({ dispatcher: channel, maxEntries: 1 });
    await d.discover(urls[0] as string);
    await d.discover(urls[1] as string);
    expect(d.stats()).toMatchObject({ entries: 1, evictions: 1 });
  });

  it('builds card URLs', () => {
    expect(agentCardUrl('https://a.example')).toBe('https://a.example/.well-known/agent-card.json');
    expect(agentCardUrl('https://a.example/agents/x')).toBe(
      'https://a.example/agents/x/.well-known/agent-card.json',
    );
    expect(agentCardUrl('https://a.example/.well-known/agent.json')).toBe(
      'https://a.example/.well-known/agent.json',
    );
    expect(() => agentCardUrl('not a url')).toThrow(A2AClientError);
  });

  it('requires a dispatcher', () => {
    expect(() => new DiscoveryClient({} as never)).toThrow(A2AConfigError);
  });
});

describe('A2AClient endpoint resolution', () => {
  it('reads the card once per TTL across calls, and again after invalidate or expiry', async () => {
    const c = new A2AClient({ dispatcher: channel, cardTtlMs: 60_000 });
    const before = cardFetches.get('search') ?? 0;
    for (let i = 0; i < 3; i++) {
      const t = await c.sendTask(urls[0] as string, 'search', 'q');
      expect(t.status.state).toBe('TASK_STATE_COMPLETED');
    }
    expect(cardFetches.get('search')).toBe(before + 1);
    expect(c.cacheStats()).toMatchObject({ misses: 1, hits: 2 });
    c.discovery.invalidate(urls[0]);
    await c.sendTask(urls[0] as string, 'search', 'q');
    expect(cardFetches.get('search')).toBe(before + 2);

    const expiring = new A2AClient({ dispatcher: channel, cardTtlMs: 0 });
    await expiring.sendTask(urls[0] as string, 'search', 'q');
    await expiring.sendTask(urls[0] as string, 'search', 'q');
    expect(cardFetches.get('search')).toBe(before + 4);
  });

  it('refuses a base URL that is not a URL, sending nothing', async () => {
    const c = new A2AClient({ dispatcher: channel });
    await expect(c.sendTask('not a url', 'search', 'q')).rejects.toMatchObject({ code: 'INVALID_AGENT_URL' });
    expect(c.cacheStats()).toMatchObject({ hits: 0, misses: 0 });
  });
});
