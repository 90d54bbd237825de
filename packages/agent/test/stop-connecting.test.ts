// stop() closes the outbound channels after the drain. A channel with a
// connect still pending to a peer that accepts TCP and never answers the TLS
// handshake used to hold stop() until transport.connectTimeoutMs (here 120 s,
// far past the test's own timeout): a graceful close waits for the connect.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallError } from '../src/index.js';
import { ID, startMutePeer, startOrchestrator, startWorld, type MutePeer, type World } from './helpers.js';

let world: World;
let mute: MutePeer;

beforeAll(async () => {
  world = await startWorld();
  mute = await startMutePeer();
});

afterAll(async () => {
  await mute?.close();
  await world?.close();
});

describe('stop() with a call to a peer that never answers the TLS handshake', () => {
  it('ends without waiting for the pending connect, and the half-open socket is closed', async () => {
    const orchestrator = await startOrchestrator(world, mute.url, { connectTimeoutMs: 120_000 });
    const err: unknown = await orchestrator.callAgent(ID.search, 'search', {}, { timeoutMs: 300 }).then(
      () => new Error('expected the call to fail'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('DEADLINE_EXCEEDED');
    expect(mute.accepted.length).toBeGreaterThan(0);
    await orchestrator.stop({ drainTimeoutMs: 0 });
    expect(orchestrator.state).toBe('stopped');
    for (const s of mute.accepted) if (!s.closed) await new Promise((resolve) => s.once('close', resolve));
  }, 15_000);
});
