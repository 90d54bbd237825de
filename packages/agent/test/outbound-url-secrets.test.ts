// A URL given to callAgent or addPeer may hold credentials (user:password@, a
// token in the query). The failed call's error (message and details) and its
// "call failed" log line quoted the URL as given, and addPeer accepted user
// info that config.peers refuses at load. Real agent (dev Workload API); the
// URL's port is closed, so a card fetch fails.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallError, SecureAgent } from '../src/index.js';
import { ID, memoryLogger, startWorld, type MemoryLogger, type World } from './helpers.js';

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

/** What of a CallError is shown: its message and details as serialized. */
function shown(err: CallError): string {
  return `${err.message}\n${JSON.stringify(err)}`;
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
});
