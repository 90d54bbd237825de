// The URL a SecureAgent's signed card lists. Unset, A2AServer derives it from
// each request's Host header, which the caller chooses: any caller with an
// SVID of the trust domain (one the policy admits for nothing included) would
// get a card signed by the agent that sends clients elsewhere. So the agent
// lists server.publicUrl, else the address it is bound to; on a wildcard
// address, which no peer can reach by that name, the signed card lists the
// local address each caller reached, and the agent warns at start.
// Real dev Workload API, mTLS on loopback, a local policy file.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Logger } from 'pino';
import { A2AClient, verifyAgentCard, type AgentCard } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { freePort } from '@weave/test-support/tcp-relay';
import { request } from 'undici';
import { SecureAgent, type AgentConfigInput } from '../src/index.js';
import { ID, memoryLogger, startWorld, testLogger, type MemoryLogger, type World } from './helpers.js';

// The orchestrator may read the extended card; the intruder is admitted for nothing.
const POLICY = JSON.stringify({
  version: 1,
  id: 'card-url',
  default: 'deny',
  rules: [
    { id: 'extended', effect: 'allow', callers: [ID.orchestrator], actions: ['a2a:GetExtendedAgentCard'] },
  ],
});
const EVIL = 'evil.example:443';

let world: World;
let policyFile: string;
const agents: SecureAgent[] = [];

beforeAll(async () => {
  world = await startWorld();
  policyFile = join(world.dir, 'card-url-policy.json');
  await writeFile(policyFile, POLICY);
});

afterAll(async () => {
  for (const a of agents.splice(0).reverse()) await a.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

/** The search agent, with an extended capability, started with `server` settings. */
async function startSearch(server: AgentConfigInput['server'], logger: Logger = testLogger()) {
  const agent = new SecureAgent({
    config: {
      name: 'search',
      spiffeId: ID.search,
      identity: { workloadApi: { socket: world.dev.address('search') } },
      authz: { policyFile },
      server,
    },
    logger,
    env: {},
  })
    .capability('lookup', { input: z.object({ id: z.string() }) }, ({ id }) => ({ id }))
    .capability('audit', { input: z.object({}), extended: true }, () => ({}));
  agents.push(agent);
  await agent.start();
  return agent;
}

/** The public card the agent at `base` serves `who` asking with `Host: host`, and `who`'s identity. */
async function cardAskedAs(who: 'intruder' | 'orchestrator', base: string, host: string) {
  const identity = await world.provider(who);
  const channel = new SecureChannel(identity, SpiffeId.parse(ID.search));
  try {
    const res = await request(`${base}/.well-known/agent-card.json`, {
      dispatcher: channel,
      headers: { host },
    });
    expect(res.statusCode).toBe(200);
    return { card: (await res.body.json()) as AgentCard, identity };
  } finally {
    await channel.close();
  }
}

const urls = (card: AgentCard) => card.supportedInterfaces.map((i) => `${i.protocolBinding} ${i.url}`);

/** Warnings of `log` that name server.publicUrl. */
const publicUrlWarnings = (log: MemoryLogger) =>
  log.lines.filter((l) => l.level === 40 && String(l.msg).includes('server.publicUrl'));

describe('the URL on a SecureAgent’s card', () => {
  it('is the bound https://127.0.0.1:<port> whatever Host the caller sends, and signed as such', async () => {
    const log = memoryLogger();
    const agent = await startSearch({}, log.logger);
    expect(agent.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const { card, identity } = await cardAskedAs('intruder', agent.url, EVIL);
    expect(urls(card)).toEqual([
      `JSONRPC ${agent.url}`,
      `JSONRPC ${agent.url}`,
      `HTTP+JSON ${agent.url}`,
      `GRPC ${agent.grpcUrl}`,
    ]);
    expect(JSON.stringify(card)).not.toContain('evil.example');
    const v = await verifyAgentCard(card, { policy: 'required', bundles: identity });
    expect(v).toMatchObject({ status: 'verified', via: 'x5c' });
    expect(v.status === 'verified' && v.spiffeId?.toString()).toBe(ID.search);
    expect(urls(agent.agentCard())).toEqual(urls(card));
    // A specific address is a URL to list: nothing to warn about.
    expect(publicUrlWarnings(log)).toEqual([]);
  });

  it('is the same on the extended card', async () => {
    const agent = await startSearch({});
    const { card } = await cardAskedAs('intruder', agent.url, EVIL);
    const identity = await world.provider('orchestrator');
    const channel = new SecureChannel(identity, SpiffeId.parse(ID.search));
    try {
      const ext = await new A2AClient({ dispatcher: channel }).getExtendedAgentCard(agent.url);
      expect(ext.skills.map((s) => s.id)).toContain('audit');
      expect(urls(ext)).toEqual(urls(card));
    } finally {
      await channel.close();
    }
  });

  it('is server.publicUrl when set, not the bound address nor the Host header', async () => {
    const port = await freePort();
    const agent = await startSearch({ port, publicUrl: 'https://search.internal:8443' });
    expect(agent.url).toBe('https://search.internal:8443');
    const { card } = await cardAskedAs('intruder', `https://127.0.0.1:${port}`, EVIL);
    expect(urls(card).filter((u) => !u.startsWith('GRPC'))).toEqual([
      'JSONRPC https://search.internal:8443',
      'JSONRPC https://search.internal:8443',
      'HTTP+JSON https://search.internal:8443',
    ]);
  });

  it('on a wildcard address without server.publicUrl, is the local address the caller reached, warned about once', async () => {
    const log = memoryLogger();
    const agent = await startSearch({ host: '0.0.0.0' }, log.logger);
    const local = agent.url.replace('0.0.0.0', '127.0.0.1');
    for (const host of [EVIL, 'other.example']) {
      const { card, identity } = await cardAskedAs('intruder', local, host);
      expect(urls(card).filter((u) => !u.startsWith('GRPC'))).toEqual([
        `JSONRPC ${local}/`,
        `JSONRPC ${local}/`,
        `HTTP+JSON ${local}`,
      ]);
      expect(JSON.stringify(card)).not.toContain('.example');
      const v = await verifyAgentCard(card, { policy: 'required', bundles: identity });
      expect(v).toMatchObject({ status: 'verified', via: 'x5c' });
    }
    const warned = publicUrlWarnings(log);
    expect(warned).toHaveLength(1);
    expect(warned[0]?.msg).toContain('local address each caller reached');
  });
});
