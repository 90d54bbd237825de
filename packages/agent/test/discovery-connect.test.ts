// callAgent by URL learns who serves the URL over a throwaway channel. Against
// a peer that accepts TCP and never answers the TLS handshake, the card fetch
// gives up at the call's deadline, but releasing that channel used to wait for
// the pending connect: the call ended only at transport.connectTimeoutMs
// (20.5 s for a 2 s budget with a 20 s connect timeout). Here the connect
// timeout is 120 s, far past the test's own timeout: the call must end at its
// deadline, and the half-open socket must be gone without waiting for it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallError, type SecureAgent } from '../src/index.js';
import { startMutePeer, startOrchestrator, startWorld, type MutePeer, type World } from './helpers.js';

let world: World;
let orchestrator: SecureAgent;
let mute: MutePeer;

beforeAll(async () => {
  world = await startWorld();
  mute = await startMutePeer();
  orchestrator = await startOrchestrator(world, 'https://127.0.0.1:1', { connectTimeoutMs: 120_000 });
});

afterAll(async () => {
  await orchestrator?.stop();
  await mute?.close();
  await world?.close();
});

describe('callAgent(url) to a peer that never answers the TLS handshake', () => {
  it('ends at its deadline, not at connectTimeoutMs, and closes the half-open socket', async () => {
    const socket = mute.nextAccepted();
    const err: unknown = await orchestrator.callAgent(`${mute.url}/`, 'search', {}, { timeoutMs: 500 }).then(
      () => new Error('expected the call to fail'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('DEADLINE_EXCEEDED');
    // The client's end of the connection is gone (the server sees it close),
    // well before the connect timeout would have ended it.
    const s = await socket;
    if (!s.closed) await new Promise((resolve) => s.once('close', resolve));
    expect(s.closed).toBe(true);
  }, 15_000);
});
