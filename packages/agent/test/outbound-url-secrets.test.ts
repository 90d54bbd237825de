// A URL given to callAgent or addPeer may hold credentials (user:password@, a
// token in the query). The failed call's error (message and details) and its
// "call failed" log line quoted the URL as given, and addPeer accepted user
// info that config.peers refuses at load. Real agent (dev Workload API); the
// URL's port is closed, so a card fetch fails.
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CallError, SecureAgent } from '../src/index.js';
import { ID, memoryLogger, sample, startWorld, type MemoryLogger, type World } from './helpers.js';

let world: World;
let agent: SecureAgent;
let log: MemoryLogger;

beforeAll(async () => {
  world = await startWorld();
  log = memoryLogger();
  agent = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
    },
    logger: log.logger,
    env: {},
  });
  await agent.start();
});

afterAll(async () => {
  await agent?.stop();
  await world?.close();
});

/** What of a CallError is shown: its message and details as serialized, and as console.error prints it (with its cause). */
function shown(err: CallError): string {
  return `${err.message}\n${JSON.stringify(err)}\n${inspect(err)}`;
}

describe('credentials in a URL given to callAgent or addPeer', () => {
  // With user info the call is refused before anything is sent; with a token
  // in the query only, the card fetch fails (nothing listens on port 1).
  it.each([
    ['https://user:s3cr3t@127.0.0.1:1/?access_token=abc', 'PEER_UNKNOWN'],
    ['https://127.0.0.1:1/a2a?access_token=abc&k=s3cr3t', 'CALL_FAILED'],
  ])('a failed callAgent(%s) shows them neither in its error nor in its log line', async (url, code) => {
    log.raw.length = 0;
    const err: unknown = await agent.callAgent(url, 'search', {}, { timeoutMs: 2_000 }).then(
      () => new Error('expected the call to fail'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe(code);
    const text = shown(err as CallError);
    // The call is still told apart: by the host it was sent to.
    expect(text).toContain('127.0.0.1:1');
    expect(text).not.toContain('s3cr3t');
    expect(text).not.toContain('abc');
    const failed = log.raw.filter((l) => l.includes('call failed'));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain('127.0.0.1:1');
    expect(log.raw.join('\n')).not.toContain('s3cr3t');
    expect(log.raw.join('\n')).not.toContain('abc');
  });

  // A URL no parser accepts (a typo'd port) or one that parses without a host
  // (scheme `user:`) was quoted as given, or through redactUrl as `user://s3cr3t@…`.
  it.each([
    ['https://user:s3cr3t@host:99999', 'https://host:99999'],
    ['https://host:99999/a2a?access_token=s3cr3t#x', 'https://host:99999/a2a?…'],
    ['https://user:s3/cr3t@host:99999/', 'https://host:99999/'],
    ['user:s3cr3t@host:99999', 'user:host:99999'],
  ])('a callAgent(%s) refused as no URL shows it as %s', async (url, target) => {
    log.raw.length = 0;
    const err: unknown = await agent.callAgent(url, 'search', {}, { timeoutMs: 2_000 }).then(
      () => new Error('expected the call to fail'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('PEER_UNKNOWN');
    expect((err as CallError).target).toBe(target);
    const text = shown(err as CallError);
    expect(text).not.toMatch(/s3\/?cr3t/);
    const failed = log.raw.filter((l) => l.includes('call failed'));
    expect(failed).toHaveLength(1);
    expect(JSON.parse(failed[0]!)).toMatchObject({ callee: target });
    expect(log.raw.join('\n')).not.toMatch(/s3\/?cr3t/);
  });

  it('a failed call to a URL target is counted under its redacted label, looked up once', async () => {
    const url = 'https://127.0.0.1:1/label-once?access_token=abc';
    // peerLabel is consulted only for a peer the metrics have no cells for yet.
    const peerLabel = vi.spyOn(agent.metrics, 'peerLabel');
    try {
      for (let i = 0; i < 3; i++) {
        await expect(agent.callAgent(url, 'search', {}, { timeoutMs: 2_000 })).rejects.toThrow(CallError);
      }
      expect(peerLabel).toHaveBeenCalledTimes(1);
    } finally {
      peerLabel.mockRestore();
    }
    expect(await sample(agent.metrics.calls, { peer: 'https://127.0.0.1:1/label-once?…' })).toBe(3);
  });

  it.each([
    ['https://user:s3cr3t@host:99999', '"https://host:99999"'],
    ['user:s3cr3t@host:99999', 'user:host:99999'],
  ])('addPeer refuses %s without quoting its secret', (url, quoted) => {
    let err: unknown;
    try {
      agent.addPeer(ID.search, url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('PEER_UNKNOWN');
    expect((err as CallError).message).toContain(quoted);
    expect(shown(err as CallError)).not.toContain('s3cr3t');
  });

  it('addPeer refuses a URL with user info, typed, without quoting it', () => {
    let err: unknown;
    try {
      agent.addPeer(ID.search, 'https://user:s3cr3t@127.0.0.1:1/');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('PEER_UNKNOWN');
    expect((err as CallError).message).toMatch(/must not hold a user name or password/);
    expect(shown(err as CallError)).not.toContain('s3cr3t');
  });

  it('callAgent on an agent not started yet names the target without its user info or query', async () => {
    const idle = new SecureAgent({
      config: {
        name: 'idle',
        identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
        authz: { policyFile: world.policyFile },
      },
      logger: log.logger,
      env: {},
    });
    const err = await idle.callAgent('https://user:s3cr3t@127.0.0.1:1/?access_token=abc', 'echo', {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).code).toBe('AGENT_NOT_STARTED');
    expect((err as CallError).target).toBe('https://127.0.0.1:1/?…');
    expect(shown(err as CallError)).not.toMatch(/s3cr3t|abc/);
  });
});
