// A2AServer.advertiseUrl: the card's URL once known (after listening), in
// place of the per-request default taken from the Host header, which the
// caller chooses.
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { A2AConfigError, A2AServer, type AgentCard } from '../src/index.js';

const selfId = SpiffeId.parse('spiffe://weave.test/agent/card-url');
const enforcer = LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] });
const closers: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** A server (with `cardUrl` as `card.url`, if given) mounted on a fastify instance. */
async function mounted(cardUrl?: string) {
  const a2a = new A2AServer({
    card: { name: 'card-url', description: 'd', version: '1', ...(cardUrl ? { url: cardUrl } : {}) },
    selfId,
    enforcer,
    bindings: ['JSONRPC', 'HTTP+JSON'],
  });
  const app = Fastify();
  closers.push(
    () => a2a.close(),
    () => app.close(),
  );
  await app.register(a2a.plugin);
  /** The interface URLs of the card served to a request with `Host: host`. */
  const urlsFor = async (host: string) => {
    const res = await app.inject({ method: 'GET', url: '/.well-known/agent-card.json', headers: { host } });
    return (res.json() as AgentCard).supportedInterfaces.map((i) => i.url);
  };
  return { a2a, urlsFor };
}

describe('A2AServer.advertiseUrl', () => {
  it('replaces the URL taken from the Host header, cached card included', async () => {
    const { a2a, urlsFor } = await mounted();
    // The default: what the caller sent.
    expect(await urlsFor('evil.example')).toEqual([
      'http://evil.example/',
      'http://evil.example/',
      'http://evil.example',
    ]);
    a2a.advertiseUrl('https://agent.test:8443/a2a');
    expect(await urlsFor('evil.example')).toEqual([
      'https://agent.test:8443/a2a',
      'https://agent.test:8443/a2a',
      'https://agent.test:8443/a2a',
    ]);
  });

  it('takes precedence over card.url', async () => {
    const { a2a, urlsFor } = await mounted('https://configured.test/');
    a2a.advertiseUrl('http://127.0.0.1:8080');
    expect(await urlsFor('evil.example')).toEqual(Array(3).fill('http://127.0.0.1:8080'));
  });

  it('refuses what is not an http(s) URL with A2AConfigError, keeping the URL it had', async () => {
    const { a2a, urlsFor } = await mounted();
    a2a.advertiseUrl('https://agent.test');
    for (const bad of ['', 'agent.test:443', 'ftp://agent.test', 'javascript:alert(1)', 'https://']) {
      expect(() => a2a.advertiseUrl(bad)).toThrowError(A2AConfigError);
    }
    expect(await urlsFor('evil.example')).toEqual(Array(3).fill('https://agent.test'));
  });
});
