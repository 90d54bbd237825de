// Config keys an operator probe found wrong at load: two listeners on one
// port passed (start() then failed with an EADDRINUSE naming no key), a
// peer URL holding a password passed (and `weave validate` printed it),
// `server.drainTimeoutMs: 0` was refused though stop()'s 0 means "cancel at
// once", and there was no `server.shutdownDelayMs`.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentConfigError, applyEnvOverrides, loadAgentConfig, parseAgentConfig } from '../src/index.js';

const minimal = { name: 'search', authz: { policyFile: 'policy.yaml' } };

function refusal(config: object): AgentConfigError {
  try {
    parseAgentConfig({ ...minimal, ...config }, { env: {} });
  } catch (err) {
    expect(err).toBeInstanceOf(AgentConfigError);
    return err as AgentConfigError;
  }
  throw new Error('expected AgentConfigError');
}

const accepted = (config: object) => parseAgentConfig({ ...minimal, ...config }, { env: {} });

describe('listeners on one port', () => {
  it('refuses the ops listener or the gRPC port on server.port, naming both keys', () => {
    const ops = refusal({ server: { port: 18450 }, observability: { ops: { port: 18450 } } });
    expect(ops.code).toBe('AGENT_CONFIG_INVALID');
    expect(ops.issues).toEqual([
      {
        path: 'observability.ops.port',
        message:
          'the same port as server.port (18450 on 127.0.0.1): each listener needs a port of its own (or 0 for any free one)',
      },
    ]);
    const grpc = refusal({ server: { port: 18450, grpc: { port: 18450 } } });
    expect(grpc.issues.map((i) => [i.path, i.message.split(':')[0]])).toEqual([
      ['server.grpc.port', 'the same port as server.port (18450 on 127.0.0.1)'],
    ]);
    // A wildcard takes the other host's address too.
    const wild = refusal({
      server: { host: '0.0.0.0', port: 9000 },
      observability: { ops: { host: '127.0.0.1', port: 9000 } },
    });
    expect(wild.issues[0]?.message).toMatch(
      /^the same port as server\.port \(9000, on 0\.0\.0\.0 and 127\.0\.0\.1\)/,
    );
    expect(
      refusal({
        server: { port: 9000, grpc: { host: '::', port: 9001 } },
        observability: { ops: { port: 9001 } },
      }).issues[0]?.path,
    ).toBe('observability.ops.port');
  });

  it('accepts them when they cannot collide: port 0, distinct addresses, no gRPC binding', () => {
    expect(() =>
      accepted({ server: { port: 0, grpc: { port: 0 } }, observability: { ops: { port: 0 } } }),
    ).not.toThrow();
    expect(() =>
      accepted({
        server: { host: '127.0.0.1', port: 9000 },
        observability: { ops: { host: '127.0.0.2', port: 9000 } },
      }),
    ).not.toThrow();
    // 0.0.0.0 takes no IPv6 address.
    expect(() =>
      accepted({
        server: { host: '0.0.0.0', port: 9000 },
        observability: { ops: { host: '::1', port: 9000 } },
      }),
    ).not.toThrow();
    expect(() =>
      accepted({ server: { port: 9000, bindings: ['JSONRPC'], grpc: { port: 9000 } } }),
    ).not.toThrow();
  });

  it('names the line of a file, and the variable of an override', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-listeners-'));
    const f = join(dir, 'agent.yaml');
    await writeFile(
      f,
      'name: hello\nserver: { port: 18450 }\nobservability:\n  ops:\n    port: 18450\nauthz: { policyFile: p.yaml }\n',
    );
    await expect(loadAgentConfig(f, {})).rejects.toThrow(
      /observability\.ops\.port \(line 5\): the same port as server\.port \(18450 on 127\.0\.0\.1\)/,
    );
    await expect(loadAgentConfig(f, { WEAVE_SERVER__PORT: '18451' })).resolves.toBeDefined();
    await expect(
      loadAgentConfig(f, { WEAVE_OBSERVABILITY__OPS__PORT: '0', WEAVE_SERVER__GRPC__PORT: '18450' }),
    ).rejects.toThrow(
      /server\.grpc\.port \(environment variable WEAVE_SERVER__GRPC__PORT\): the same port as server\.port/,
    );
  });
});

describe('peer URLs', () => {
  it('refuses a user name or password in a peer URL (or server.publicUrl), without quoting it', () => {
    const e = refusal({
      peers: [{ id: 'spiffe://td/agent/x', url: 'https://u:s3cr3t@127.0.0.1:1/a2a?token=abc' }],
    });
    expect(e.code).toBe('AGENT_CONFIG_INVALID');
    expect(e.issues).toEqual([
      { path: 'peers[0].url', message: expect.stringMatching(/^must not hold a user name or password/) },
    ]);
    expect(e.message).not.toContain('s3cr3t');
    expect(refusal({ peers: [{ id: 'spiffe://td/agent/x', url: 'https://token@h/' }] }).issues[0]?.path).toBe(
      'peers[0].url',
    );
    expect(refusal({ server: { publicUrl: 'https://u:p@search.internal/' } }).issues[0]?.path).toBe(
      'server.publicUrl',
    );
    expect(
      accepted({ peers: [{ id: 'spiffe://td/agent/x', url: 'https://h:8443/a2a' }] }).peers,
    ).toHaveLength(1);
  });
});

describe('drain and shutdown delay', () => {
  it('takes server.drainTimeoutMs 0 (cancel at once, as stop({ drainTimeoutMs: 0 }))', () => {
    expect(accepted({ server: { drainTimeoutMs: 0 } }).server.drainTimeoutMs).toBe(0);
    expect(refusal({ server: { drainTimeoutMs: -1 } }).issues[0]?.path).toBe('server.drainTimeoutMs');
  });

  it('server.shutdownDelayMs: 0 by default, a timer bound, and an env override', () => {
    expect(accepted({}).server.shutdownDelayMs).toBe(0);
    expect(accepted({ server: { shutdownDelayMs: 5000 } }).server.shutdownDelayMs).toBe(5000);
    for (const v of [-1, 1.5, 2_147_483_648]) {
      expect(refusal({ server: { shutdownDelayMs: v } }).issues[0]?.path, String(v)).toBe(
        'server.shutdownDelayMs',
      );
    }
    const env = { WEAVE_SERVER__SHUTDOWN_DELAY_MS: '3000' };
    expect(parseAgentConfig(applyEnvOverrides(minimal, env), { env }).server.shutdownDelayMs).toBe(3000);
  });
});
