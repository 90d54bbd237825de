// Every step of a call — card discovery, connect, send, read — is bounded by
// the caller's time budget and AbortSignal (issue: against a peer that accepts
// TLS and never answers, a 2 s budget took 31–33 s: discovery had its own 10 s
// timeout without the caller's signal, and SecureChannel repeated the GET).
// The peers here are real mTLS servers with dev-CA SVIDs that complete the
// handshake and then say nothing (or answer only the card).
import https from 'node:https';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecureChannel } from '@weave/transport';
import { A2AClient, DiscoveryClient, buildMessage } from '../src/index.js';
import { channel, createPki, httpsOptions, type Pki } from '@weave/test-support';

let pki: Pki;
let silentUrl: string;
let cardOnlyUrl: string;
let slowCardUrl: string;
let toSilent: SecureChannel;
let toCardOnly: SecureChannel;
let toSlowCard: SecureChannel;
const sockets = new Set<tls.TLSSocket>();
let silent: tls.Server;
let cardOnly: https.Server;
let slowCard: https.Server;
/** Requests the silent peer's connections carried (bytes after the handshake). */
let silentBytes = 0;
let handshakes = 0;
let cardFetches = 0;
const slowCardRequests: Array<{ closed: boolean }> = [];

function card(url: string) {
  return {
    name: 'mute',
    description: 'answers the card, nothing else',
    version: '1',
    supportedInterfaces: [{ url, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }],
    capabilities: { streaming: true },
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [],
  };
}

async function listen(server: tls.Server | https.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  pki = await createPki();
  const peer = await pki.workload('/agent/mute');
  const me = await pki.workload('/agent/client');
  // Accepts mTLS and never answers.
  silent = tls.createServer(httpsOptions(peer), (socket) => {
    handshakes++;
    sockets.add(socket);
    socket.on('data', (b: Buffer) => (silentBytes += b.length));
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  silentUrl = await listen(silent);
  // Serves its card, then never answers a call.
  cardOnly = https.createServer(httpsOptions(peer), (req, res) => {
    if (req.method === 'GET' && req.url === '/.well-known/agent-card.json') {
      cardFetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(card(`${cardOnlyUrl}/`)));
    }
  });
  cardOnlyUrl = await listen(cardOnly);
  // Serves its card after 600 ms (and notes whether the client gave up on the request).
  slowCard = https.createServer(httpsOptions(peer), (req, res) => {
    const seen = { closed: false };
    slowCardRequests.push(seen);
    res.on('close', () => (seen.closed = !res.writableFinished));
    setTimeout(() => {
      if (res.destroyed) return;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(card(`${slowCardUrl}/`)));
    }, 600);
  });
  slowCardUrl = await listen(slowCard);
  toSilent = channel(me, peer.id);
  toCardOnly = channel(me, peer.id);
  toSlowCard = channel(me, peer.id);
});

afterAll(async () => {
  await Promise.all([toSilent, toCardOnly, toSlowCard].map((c) => c.destroy()));
  for (const s of sockets) s.destroy();
  cardOnly.closeAllConnections();
  slowCard.closeAllConnections();
  await Promise.all(
    [silent, cardOnly, slowCard].map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
  );
  await pki.close();
});

/** Runs `fn`, expecting a rejection; returns the error and the seconds it took. */
async function timed(fn: () => Promise<unknown>): Promise<{ err: unknown; s: number }> {
  const t0 = performance.now();
  try {
    await fn();
  } catch (err) {
    return { err, s: (performance.now() - t0) / 1000 };
  }
  throw new Error('expected a rejection');
}

// ~2 s budgets: they must end near 2 s, far from the 10–33 s of the unbounded steps.
const NEAR_BUDGET = { min: 1.9, max: 4.5 };

describe('the caller’s deadline bounds card discovery (peer accepts TLS, never answers)', () => {
  it('A2AClient{timeoutMs: 2000}: a call on an undiscovered agent ends in ~2 s with DEADLINE_EXCEEDED', async () => {
    const client = new A2AClient({ dispatcher: toSilent, timeoutMs: 2000 });
    const before = handshakes;
    const { err, s } = await timed(() => client.sendTask(silentUrl, 'echo', 'hi'));
    expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(s).toBeGreaterThanOrEqual(NEAR_BUDGET.min);
    expect(s).toBeLessThan(NEAR_BUDGET.max);
    // One card GET on one connection: the channel did not repeat it after the abort.
    expect(handshakes - before).toBe(1);
  });

  it('AbortSignal.timeout(2000) on a client with a long timeoutMs: ~2 s, DEADLINE_EXCEEDED', async () => {
    const client = new A2AClient({ dispatcher: toSilent, timeoutMs: 60_000 });
    const { err, s } = await timed(() =>
      client.sendMessage(silentUrl, buildMessage('echo', 'hi'), { signal: AbortSignal.timeout(2000) }),
    );
    expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(s).toBeGreaterThanOrEqual(NEAR_BUDGET.min);
    expect(s).toBeLessThan(NEAR_BUDGET.max);
  });

  it('a plain abort ends discovery at once with ABORTED', async () => {
    const client = new A2AClient({ dispatcher: toSilent });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const { err, s } = await timed(() => client.getTask(silentUrl, 't1', undefined, { signal: ac.signal }));
    expect(err).toMatchObject({ code: 'ABORTED' });
    expect(s).toBeLessThan(1.5);
  });

  it('streams: opening one is bounded by the budget, discovery included', async () => {
    const client = new A2AClient({ dispatcher: toSilent, timeoutMs: 2000 });
    const { err, s } = await timed(async () => {
      for await (const _ of client.sendStreamingMessage(silentUrl, buildMessage('echo', 'hi'))) void _;
    });
    expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(s).toBeLessThan(NEAR_BUDGET.max);
  });

  it('discoverAgent itself takes the client budget and a signal', async () => {
    const client = new A2AClient({ dispatcher: toSilent, timeoutMs: 1000 });
    const a = await timed(() => client.discoverAgent(silentUrl));
    expect(a.err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(a.s).toBeLessThan(3);
    const b = await timed(() =>
      client.discoverAgent(silentUrl, { timeoutMs: 60_000, signal: AbortSignal.timeout(300) }),
    );
    expect(b.err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(b.s).toBeLessThan(2);
    // Nothing but the card GETs reached the silent peer.
    expect(silentBytes).toBeGreaterThan(0);
  });
});

describe('the budget covers send and read too (the card is served, calls are not)', () => {
  it('a unary call: discovery plus the call end within one 2 s budget', async () => {
    const client = new A2AClient({ dispatcher: toCardOnly, timeoutMs: 2000 });
    const { err, s } = await timed(() => client.sendTask(cardOnlyUrl, 'echo', 'hi'));
    expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(s).toBeGreaterThanOrEqual(NEAR_BUDGET.min);
    expect(s).toBeLessThan(NEAR_BUDGET.max);
    expect(cardFetches).toBe(1);
    // Card cached now: a per-call budget and a signal each bound the call alone.
    const short = await timed(() => client.getTask(cardOnlyUrl, 't', undefined, { timeoutMs: 300 }));
    expect(short.err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(short.s).toBeLessThan(1.5);
    const aborted = await timed(() =>
      client.cancelTask(cardOnlyUrl, 't', { signal: AbortSignal.timeout(300) }),
    );
    expect(aborted.err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(aborted.s).toBeLessThan(1.5);
    expect(cardFetches).toBe(1);
  });

  it('a stream that never opens ends at its budget; a signal ends it at any time', async () => {
    const client = new A2AClient({ dispatcher: toCardOnly, timeoutMs: 60_000 });
    const a = await timed(async () => {
      for await (const _ of client.subscribeToTask(cardOnlyUrl, 't', { timeoutMs: 500 })) void _;
    });
    expect(a.err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect(a.s).toBeLessThan(2);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('changed my mind')), 300);
    const b = await timed(async () => {
      for await (const _ of client.subscribeToTask(cardOnlyUrl, 't', { signal: ac.signal })) void _;
    });
    expect(b.err).toMatchObject({ code: 'ABORTED' });
    expect(b.s).toBeLessThan(2);
  });
});

describe('concurrent callers share one card fetch', () => {
  it('one giving up does not fail the others; the fetch stops once nobody waits', async () => {
    const discovery = new DiscoveryClient({ dispatcher: toSlowCard });
    const impatient = discovery.discover(slowCardUrl, { timeoutMs: 100 });
    const patient = discovery.discover(slowCardUrl);
    await expect(impatient).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    expect((await patient).name).toBe('mute');
    expect(slowCardRequests).toHaveLength(1);
    expect(slowCardRequests[0]?.closed).toBe(false);

    const again = new DiscoveryClient({ dispatcher: toSlowCard });
    const one = again.discover(slowCardUrl, { timeoutMs: 100 });
    const two = again.discover(slowCardUrl, { signal: AbortSignal.timeout(150) });
    await expect(one).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await expect(two).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await new Promise((r) => setTimeout(r, 300));
    // Both gone before the answer: the request was abandoned, not left running.
    expect(slowCardRequests).toHaveLength(2);
    expect(slowCardRequests[1]?.closed).toBe(true);
    expect(again.stats()).toMatchObject({ misses: 1, errors: 1, entries: 0 });
  });
});
