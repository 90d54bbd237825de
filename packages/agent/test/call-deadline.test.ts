// callAgent's deadline bounds every step of a call: discovering who serves a
// URL, fetching the card, connecting, sending and reading. The callee here is
// a real mTLS server holding a real SVID of the callee (dev Workload API) that
// completes the handshake and then never answers — before the fix such a call
// with a 2 s budget took 31–33 s (a card fetch with its own 10 s timeout, two
// repeats by the channel).
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMtlsServerOptions } from '@weave/transport';
import { CallError, type SecureAgent } from '../src/index.js';
import { ID, startOrchestrator, startWorld, type World } from './helpers.js';

let world: World;
let orchestrator: SecureAgent;
let silent: tls.Server;
let silentUrl: string;
const sockets = new Set<tls.TLSSocket>();

beforeAll(async () => {
  world = await startWorld();
  // The search agent's SVID, on a server that accepts mTLS and says nothing.
  const searchId = await world.provider('search');
  silent = tls.createServer(createMtlsServerOptions(searchId), (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentUrl = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  orchestrator = await startOrchestrator(world, silentUrl);
});

afterAll(async () => {
  await orchestrator?.stop();
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => silent.close(() => resolve()));
  await world?.close();
});

async function timedFailure(p: Promise<unknown>): Promise<{ err: CallError; s: number }> {
  const t0 = performance.now();
  const err = (await p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  )) as CallError;
  return { err, s: (performance.now() - t0) / 1000 };
}

describe('callAgent({timeoutMs: 2000}) against a callee that accepts TLS and never answers', () => {
  it.each([
    ['a configured peer (card fetch inside the call)', () => ID.search, false],
    ['a configured peer, streaming', () => ID.search, true],
    ['an https URL (whose SPIFFE ID is learned from its card)', () => `${silentUrl}/`, false],
  ])('%s ends in ~2 s with DEADLINE_EXCEEDED', async (_name, target, stream) => {
    const { err, s } = await timedFailure(
      orchestrator.callAgent(target(), 'search', { q: 'x' }, { timeoutMs: 2000, stream }),
    );
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('DEADLINE_EXCEEDED');
    expect(s).toBeGreaterThanOrEqual(1.9);
    expect(s).toBeLessThan(4.5);
  });

  it('an AbortSignal.timeout(2000) ends it the same way', async () => {
    const { err, s } = await timedFailure(
      orchestrator.callAgent(ID.search, 'search', {}, { signal: AbortSignal.timeout(2000) }),
    );
    expect(err).toBeInstanceOf(CallError);
    expect(s).toBeLessThan(4.5);
    expect(s).toBeGreaterThanOrEqual(1.9);
  });
});
