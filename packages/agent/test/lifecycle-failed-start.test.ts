// A failed start() leaves nothing of its own running and closes nothing it
// was given, so a retry can serve; stop() during start() ends the start at
// once. Real agents on the dev Workload API, real mTLS on loopback.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InMemoryTaskStore } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { IdentityProviderBase, authorizeAny } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { createMtlsServer } from '@weave/transport/server';
import { AgentError } from '../src/index.js';
import {
  AwayStore,
  ID,
  agentsStoppedAfterEach,
  closedWithin,
  startOrchestrator,
  startWorld,
  testLogger,
  unixServer,
  type World,
} from './helpers.js';

/** An identity provider of the user's that has no SVID yet (its source is not up). */
class PendingIdentity extends IdentityProviderBase {
  constructor() {
    super({ logger: testLogger() });
  }
  get isClosed(): boolean {
    return this.closed;
  }
}

/** A loopback TCP server that holds a port, so that a listen on it fails. */
async function holdPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  return {
    port: (holder.address() as AddressInfo).port,
    release: () => new Promise<void>((resolve) => holder.close(() => resolve())),
  };
}

/** Whether something accepts TCP connections on the loopback `port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const policy = (world: World) => LocalPolicyEnforcer.fromFile(world.policyFile, { watch: false });

const agents = agentsStoppedAfterEach();
const agent = agents.search;

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(() => world?.close());

describe('a failed start() closes nothing it was given', () => {
  it('an injected task store, identity and enforcer stay open, and the retry serves a call from that store', async () => {
    // Closed, it refuses every call, as a database-backed store does.
    const store = new AwayStore();
    const identity = await world.provider('search');
    const held = await holdPort();
    const search = agent({
      config: { name: 'search', server: { host: '127.0.0.1', port: held.port } },
      identity,
      enforcer: await policy(world),
      taskStore: store,
    });
    const err = await search.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'AGENT_LISTEN_FAILED' });
    expect(search.state).toBe('new');
    await held.release();

    const { url } = await search.start();
    const orchestrator = await startOrchestrator(world, url);
    agents.track(orchestrator);
    await expect(orchestrator.callAgent(ID.search, 'search', { q: 'again' })).resolves.toEqual({
      hits: ['again'],
    });
    expect(store.closed).toBe(false);
    expect(store.created).toBe(1);
    expect(identity.getX509Svid().id.toString()).toBe(ID.search);
    // stop() still closes it, as it always did.
    await search.stop({ drainTimeoutMs: 0 });
    expect(store.closed).toBe(true);
  });

  it('an injected in-memory store is the one the tasks go to', async () => {
    const store = new InMemoryTaskStore();
    const search = agent({
      config: {
        name: 'search',
        server: { host: '127.0.0.1', port: 0 },
        identity: { workloadApi: { socket: world.dev.address('search') } },
        authz: { policyFile: world.policyFile },
      },
      taskStore: store,
    });
    const orchestrator = await startOrchestrator(world, (await search.start()).url);
    agents.track(orchestrator);
    await expect(orchestrator.callAgent(ID.search, 'search', { q: 'kept' })).resolves.toEqual({
      hits: ['kept'],
    });
    const page = await store.list({ owner: ID.orchestrator, limit: 10 });
    expect(page.records.map((r) => r.task.status.state)).toEqual(['TASK_STATE_COMPLETED']);
  });
});

describe('a failed start() on a fastify instance of the user’s', () => {
  /** The user's instance, with a route and an onClose hook of their own. */
  async function usersServer() {
    const identity = await world.provider('search');
    const app = createMtlsServer({ identity, authorize: authorizeAny(), fastify: { logger: false } });
    const owner = { closed: false };
    app.get('/owner', async () => ({ owner: true }));
    app.addHook('onClose', async () => {
      owner.closed = true;
    });
    return { identity, app, owner };
  }

  it('a listen failure leaves the instance open for its owner, and a retry is refused with AGENT_SERVER_CONSUMED', async () => {
    const { identity, app, owner } = await usersServer();
    const held = await holdPort();
    const search = agent({
      config: { name: 'search', server: { host: '127.0.0.1', port: held.port } },
      identity,
      enforcer: await policy(world),
      server: app,
    });
    expect(await search.start().catch((e: unknown) => e)).toMatchObject({ code: 'AGENT_LISTEN_FAILED' });
    await held.release();

    const retry = await search.start().catch((e: unknown) => e);
    expect(retry).toBeInstanceOf(AgentError);
    expect(retry).toMatchObject({ code: 'AGENT_SERVER_CONSUMED' });
    expect((retry as Error).message).toContain('give a new SecureAgent a new createMtlsServer() instance');
    expect(search.state).toBe('new');
    expect(owner.closed).toBe(false);
    expect(app.server.listening).toBe(false);

    // Still the owner's: it serves their route where they make it listen.
    await app.listen({ host: '127.0.0.1', port: 0 });
    const ch = new SecureChannel(await world.provider('orchestrator'), ID.search);
    try {
      const res = await ch.request({
        origin: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
        path: '/owner',
        method: 'GET',
      });
      expect(res.statusCode).toBe(200);
      expect(await res.body.json()).toEqual({ owner: true });
    } finally {
      await ch.close();
      await app.close();
    }
  });

  it('a failure after it listened (gRPC port held): it stops listening, is not closed, and the retry is refused', async () => {
    const { identity, app, owner } = await usersServer();
    const held = await holdPort();
    try {
      const search = agent({
        config: {
          name: 'search',
          server: { host: '127.0.0.1', port: 0, grpc: { port: held.port } },
        },
        identity,
        enforcer: await policy(world),
        server: app,
      });
      expect(await search.start().catch((e: unknown) => e)).toBeInstanceOf(AgentError);
      expect(app.server.listening).toBe(false);
      expect(owner.closed).toBe(false);
      await expect(search.start()).rejects.toMatchObject({ code: 'AGENT_SERVER_CONSUMED' });
    } finally {
      await held.release();
      await app.close();
    }
    expect(owner.closed).toBe(true); // closed by its owner, once
  });
});

describe('stop() during start()', () => {
  it('while no Workload API is there yet: the start fails AGENT_STOPPING, stop() resolves, nothing listens', async () => {
    const port = await holdPort().then(async (h) => {
      await h.release();
      return h.port;
    });
    const a = agent({
      config: {
        name: 'search',
        identity: {
          workloadApi: { socket: `unix://${join(world.dir, 'spire-not-up-yet.sock')}`, timeoutMs: 60_000 },
        },
        authz: { policyFile: world.policyFile },
        server: { host: '127.0.0.1', port },
      },
    });
    const start = a.start().catch((e: unknown) => e);
    expect(a.state).toBe('starting');
    await a.stop({ drainTimeoutMs: 0 });
    expect(await start).toMatchObject({ code: 'AGENT_STOPPING' });
    expect(a.state).toBe('stopped');
    expect(await listening(port)).toBe(false);
    await expect(a.start()).rejects.toMatchObject({ code: 'AGENT_ALREADY_STARTED' });
  });

  it('while the Workload API accepts and never answers (a hung SPIRE agent): the same, and its connection is closed', async () => {
    const path = join(world.dir, 'spire-mute.sock');
    let firstAccepted!: () => void;
    const connected = new Promise<void>((resolve) => (firstAccepted = resolve));
    const mute = await unixServer(path, (s) => {
      s.resume();
      firstAccepted();
    });
    try {
      const a = agent({
        config: {
          name: 'search',
          identity: { workloadApi: { socket: `unix://${path}`, timeoutMs: 60_000 } },
          authz: { policyFile: world.policyFile },
        },
      });
      const start = a.start().catch((e: unknown) => e);
      await connected; // the start is waiting on this connection
      await a.stop({ drainTimeoutMs: 0 });
      expect(await start).toMatchObject({ code: 'AGENT_STOPPING' });
      expect(a.state).toBe('stopped');
      // Left open, it would keep the process from exiting after a SIGTERM.
      for (const s of mute.accepted) expect(await closedWithin(s)).toBe('closed');
    } finally {
      await mute.close();
    }
  });

  it('while an injected identity has no SVID yet: the start fails AGENT_STOPPING and the identity stays open', async () => {
    const identity = new PendingIdentity();
    const a = agent({
      // The wait for the first SVID is the config's timeout.
      config: { name: 'search', identity: { workloadApi: { timeoutMs: 60_000 } } },
      identity,
      enforcer: await policy(world),
    });
    const start = a.start().catch((e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    await a.stop({ drainTimeoutMs: 0 });
    expect(await start).toMatchObject({ code: 'AGENT_STOPPING' });
    expect(a.state).toBe('stopped');
    expect(identity.isClosed).toBe(false);
    await identity.close();
  });
});
