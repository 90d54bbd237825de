// Giving up on a Workload API that does not answer: close() ends every
// connection, also one a hung server (a SPIRE agent that accepts and never
// answers) holds open, and create()'s wait for the first SVID (or, for a
// JwtSource, the first JWT bundles) can be aborted.
// A raw Unix-socket server plays the hung agent; the dev server the live one.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  IdentityConfigError,
  JwtSource,
  WorkloadApiClient,
  WorkloadApiIdentityProvider,
} from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { quietLogger } from './helpers/log.js';

const TD = 'abort.test';
const ID = `spiffe://${TD}/agent`;
const FAST = { initialMs: 50, maxMs: 200 };
// Dropped streams are logged as warnings by design.
const logger = quietLogger();

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-wla-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A Unix-socket server that accepts connections, reads them and never answers. */
interface HungServer {
  readonly address: string;
  readonly accepted: readonly net.Socket[];
  /** Resolves with the next socket accepted. */
  nextAccepted(): Promise<net.Socket>;
}

async function hungServer(): Promise<HungServer> {
  const path = join(await tempDir(), 'hung.sock');
  const accepted: net.Socket[] = [];
  const waiters: Array<(s: net.Socket) => void> = [];
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    // Read and drop: a paused socket would never see the client's FIN.
    s.resume();
    accepted.push(s);
    waiters.shift()?.(s);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(async () => {
    for (const s of accepted) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    address: `unix://${path}`,
    accepted,
    nextAccepted: () => new Promise((resolve) => waiters.push(resolve)),
  };
}

/** 'closed' once the server side of `socket` has closed, 'open' if it still is after `ms`. */
function closedWithin(socket: net.Socket, ms = 2_000): Promise<'closed' | 'open'> {
  if (socket.closed) return Promise.resolve('closed');
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('open'), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
  });
}

describe('against a Workload API that accepts and never answers', () => {
  it('WorkloadApiClient.close() fails the pending fetch, ends the watch and closes the connection', async () => {
    const hung = await hungServer();
    const client = new WorkloadApiClient({ address: hung.address, backoff: FAST, logger });
    cleanups.push(() => client.close());
    const accepted = hung.nextAccepted();
    const fetch = client.fetchX509Context().catch((e: unknown) => e);
    const watch = client.watchX509Context({ onUpdate: () => undefined });
    const socket = await accepted;

    client.close();

    expect(await fetch).toMatchObject({ code: 'WORKLOAD_API_CLOSED' });
    expect(await watch.done).toBeUndefined();
    expect(await closedWithin(socket)).toBe('closed');
    for (const s of hung.accepted) expect(await closedWithin(s)).toBe('closed');
  });

  it('create() that times out closes its connection', async () => {
    const hung = await hungServer();
    const accepted = hung.nextAccepted();
    const err = await WorkloadApiIdentityProvider.create({
      address: hung.address,
      readyTimeoutMs: 300,
      backoff: FAST,
      logger,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'IDENTITY_NOT_READY' });
    expect((err as Error).message).toMatch(
      /^no X\.509-SVID from the Workload API at unix:\/\/.* within 300 ms/,
    );
    expect(await closedWithin(await accepted)).toBe('closed');
    for (const s of hung.accepted) expect(await closedWithin(s)).toBe('closed');
  });
});

/** What each create() with a `signal` waits for: the first X.509-SVID, or the first JWT bundles. */
const creators = [
  [
    'WorkloadApiIdentityProvider.create',
    WorkloadApiIdentityProvider.create.bind(WorkloadApiIdentityProvider),
  ],
  ['JwtSource.create', JwtSource.create.bind(JwtSource)],
] as const;

describe.each(creators)('%s({ signal })', (_name, create) => {
  it('an abort while it waits rejects at once with the reason and closes the connection', async () => {
    const hung = await hungServer();
    const accepted = hung.nextAccepted();
    const abort = new AbortController();
    const created = create({
      address: hung.address,
      readyTimeoutMs: 60_000,
      backoff: FAST,
      logger,
      signal: abort.signal,
    }).then(
      (p) => {
        cleanups.push(() => p.close());
        return p;
      },
      (e: unknown) => ({ rejected: e, at: Date.now() }),
    );
    const socket = await accepted;
    const reason = new Error('shutting down');
    const abortedAt = Date.now();
    abort.abort(reason);

    const outcome = await created;
    expect(outcome).toMatchObject({ rejected: reason });
    expect((outcome as { at: number }).at - abortedAt).toBeLessThan(1_000);
    expect(await closedWithin(socket)).toBe('closed');
    for (const s of hung.accepted) expect(await closedWithin(s)).toBe('closed');
  });

  it('a signal already aborted rejects with its reason and connects nowhere', async () => {
    const hung = await hungServer();
    const reason = new Error('already stopping');
    await expect(create({ address: hung.address, logger, signal: AbortSignal.abort(reason) })).rejects.toBe(
      reason,
    );
    await new Promise((r) => setTimeout(r, 200));
    expect(hung.accepted).toHaveLength(0);
  });

  it('a signal that is not an AbortSignal is refused with IdentityConfigError naming it', async () => {
    await expect(
      create({
        address: 'unix:///nonexistent/weave-abort.sock',
        logger,
        signal: { aborted: false } as unknown as AbortSignal,
      }),
    ).rejects.toSatisfy((e) => e instanceof IdentityConfigError && /signal/.test((e as Error).message));
  });
});

describe('create({ signal }) against the dev server', () => {
  it('an abort after create() resolved leaves the provider running: it takes the next rotation', async () => {
    const server = await DevWorkloadApiServer.start({
      stateDir: await tempDir(),
      trustDomain: TD,
      workloads: { agent: ID },
    });
    cleanups.push(() => server.close());
    const abort = new AbortController();
    const provider = await WorkloadApiIdentityProvider.create({
      address: server.address('agent'),
      backoff: FAST,
      logger,
      signal: abort.signal,
    });
    cleanups.push(() => provider.close());
    const first = provider.getX509Svid();

    abort.abort(new Error('too late'));
    const rotated = (await server.rotateX509Svid('agent')).certificates[0]!.serialNumber;
    const serial = (): string => provider.getX509Svid().certificates[0]!.serialNumber;
    const took = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5_000);
      const check = (): void => {
        if (serial() !== rotated) return;
        clearTimeout(timer);
        off();
        resolve(true);
      };
      const off = provider.onUpdate(check);
      check();
    });

    expect(took).toBe(true);
    expect(serial()).not.toBe(first.certificates[0]!.serialNumber);
  });
});
