// A2AServer.advertiseUrl: the card's URL once known (after listening), in
// place of the per-request default taken from the Host header, which the
// caller chooses. Without one, a signed card lists the local address the
// caller's connection reached instead: nothing the caller chooses gets signed.
import { networkInterfaces } from 'node:os';
import Fastify from 'fastify';
import { request } from 'undici';
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

/** Whether this host has IPv6 loopback (some CI containers have none). */
const hasIPv6 = Object.values(networkInterfaces()).some((l) => l?.some((i) => i.address === '::1'));

/**
 * A server whose card is signed by a stub signer (it records the URLs it was
 * asked to sign), or unsigned when `signed` is false, mounted at `prefix` on a
 * plain HTTP fastify listening on `host`, port 0.
 */
async function listening(host: string, prefix = '', signed = true) {
  const signedUrls: string[] = [];
  const cardSigner = {
    sign: async (card: AgentCard): Promise<AgentCard> => {
      signedUrls.push(card.supportedInterfaces[0]!.url);
      return { ...card, signatures: [{ protected: 'p', signature: 's' }] };
    },
  };
  const a2a = new A2AServer({
    card: { name: 'card-url', description: 'd', version: '1' },
    selfId,
    enforcer,
    bindings: ['JSONRPC', 'HTTP+JSON'],
    ...(signed ? { cardSigner } : {}),
  });
  const app = Fastify();
  closers.push(
    () => a2a.close(),
    () => app.close(),
  );
  await app.register(a2a.plugin, { prefix });
  await app.listen({ host, port: 0 });
  const { port } = app.server.address() as { port: number };
  /** The card served over a connection to `via` (an address of the listener) with `Host: hostHeader`. */
  const cardVia = async (via: string, hostHeader: string) => {
    const res = await request(`http://${via}:${port}${prefix}/.well-known/agent-card.json`, {
      headers: { host: hostHeader },
    });
    expect(res.statusCode).toBe(200);
    const card = (await res.body.json()) as AgentCard;
    return { urls: card.supportedInterfaces.map((i) => i.url), signed: card.signatures !== undefined };
  };
  return { a2a, app, port, cardVia, signedUrls };
}

describe('the URL on a signed card without card.url or advertiseUrl', () => {
  it('is the local address the connection reached, whatever Host the caller sends', async () => {
    const { port, cardVia, signedUrls } = await listening('127.0.0.1');
    for (const host of ['evil.example', 'evil.example:443', 'other.example', '127.0.0.1:1']) {
      expect(await cardVia('127.0.0.1', host)).toEqual({
        urls: [`http://127.0.0.1:${port}/`, `http://127.0.0.1:${port}/`, `http://127.0.0.1:${port}`],
        signed: true,
      });
    }
    // Four Host values, one URL: nothing of the caller's choosing was signed.
    expect(new Set(signedUrls)).toEqual(new Set([`http://127.0.0.1:${port}/`]));
  });

  it('keeps the mount prefix', async () => {
    const { port, cardVia } = await listening('127.0.0.1', '/a2a');
    expect((await cardVia('127.0.0.1', 'evil.example')).urls).toEqual([
      `http://127.0.0.1:${port}/a2a`,
      `http://127.0.0.1:${port}/a2a`,
      `http://127.0.0.1:${port}/a2a`,
    ]);
  });

  it.skipIf(!hasIPv6)(
    'on a dual-stack wildcard bind: IPv6 in brackets, an IPv4-mapped address as IPv4',
    async () => {
      const { port, cardVia, signedUrls } = await listening('::');
      expect((await cardVia('127.0.0.1', 'evil.example')).urls[0]).toBe(`http://127.0.0.1:${port}/`);
      expect((await cardVia('[::1]', 'evil.example')).urls[0]).toBe(`http://[::1]:${port}/`);
      expect(new Set(signedUrls)).toEqual(new Set([`http://127.0.0.1:${port}/`, `http://[::1]:${port}/`]));
    },
  );

  it('gives way to advertiseUrl', async () => {
    const { a2a, cardVia } = await listening('127.0.0.1');
    a2a.advertiseUrl('https://agent.test:8443');
    expect((await cardVia('127.0.0.1', 'evil.example')).urls).toEqual(
      Array(3).fill('https://agent.test:8443'),
    );
  });

  it('is not made up for a request with no connection (inject): 500, nothing signed', async () => {
    const { app, signedUrls } = await listening('127.0.0.1');
    const res = await app.inject({
      method: 'GET',
      url: '/.well-known/agent-card.json',
      headers: { host: 'evil.example' },
    });
    expect(res.statusCode).toBe(500);
    expect(res.body).toContain('set card.url or advertiseUrl');
    expect(signedUrls).toEqual([]);
  });

  it('does not apply to an unsigned card, which follows the Host header (nothing vouches for it)', async () => {
    const { cardVia } = await listening('127.0.0.1', '', false);
    expect(await cardVia('127.0.0.1', 'agent.example:8080')).toEqual({
      urls: ['http://agent.example:8080/', 'http://agent.example:8080/', 'http://agent.example:8080'],
      signed: false,
    });
  });
});
