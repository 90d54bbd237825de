// `authz.opa.maxResponseBytes`: bounded when the config is loaded, and handed
// to the OPA enforcer the agent builds, which denies a longer answer.
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeId } from '@weave/identity';
import type { PolicyEnforcer } from '@weave/authz';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentConfigError, enforcerFromConfig, loadAgentConfig, parseAgentConfig } from '../src/index.js';
import { ID, testLogger } from './helpers.js';

const MIB = 1024 * 1024;
const opa = (extra: Record<string, unknown> = {}) => ({
  name: 'search',
  authz: { opa: { url: 'http://127.0.0.1:8181', ...extra } },
});

describe('authz.opa.maxResponseBytes', () => {
  it('is 1 MiB by default and takes a whole number of bytes from 1 to 64 MiB', () => {
    const bound = (extra?: Record<string, unknown>) => {
      const authz = parseAgentConfig(opa(extra), { env: {} }).authz;
      return authz && 'opa' in authz ? authz.opa.maxResponseBytes : undefined;
    };
    expect(bound()).toBe(MIB);
    expect(bound({ maxResponseBytes: 1 })).toBe(1);
    expect(bound({ maxResponseBytes: 64 * MIB })).toBe(64 * MIB);
    for (const maxResponseBytes of [0, -1, 1.5, 64 * MIB + 1, Number.NaN, '1024']) {
      let err: unknown;
      try {
        parseAgentConfig(opa({ maxResponseBytes }), { env: {} });
      } catch (e) {
        err = e;
      }
      expect(err, String(maxResponseBytes)).toBeInstanceOf(AgentConfigError);
      expect(err).toMatchObject({ code: 'AGENT_CONFIG_INVALID' });
      // The key itself, not "authz matches no form".
      expect((err as AgentConfigError).issues.map((i) => i.path)).toEqual(['authz.opa.maxResponseBytes']);
    }
  });

  it('is refused from a file with its line, and from an env override', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-config-'));
    try {
      const file = join(dir, 'agent.yaml');
      await writeFile(
        file,
        'name: search\nauthz:\n  opa:\n    url: http://127.0.0.1:8181\n    maxResponseBytes: 0\n',
      );
      await expect(loadAgentConfig(file, {})).rejects.toThrow(/authz\.opa\.maxResponseBytes \(line 5\): /);
      await writeFile(file, 'name: search\nauthz:\n  opa:\n    url: http://127.0.0.1:8181\n');
      await expect(
        loadAgentConfig(file, { WEAVE_AUTHZ__OPA__MAX_RESPONSE_BYTES: String(64 * MIB + 1) }),
      ).rejects.toMatchObject({
        code: 'AGENT_CONFIG_INVALID',
        issues: [{ path: expect.stringMatching(/^authz\.opa\.maxResponseBytes/) }],
      });
      const fromEnv = await loadAgentConfig(file, { WEAVE_AUTHZ__OPA__MAX_RESPONSE_BYTES: '4096' });
      expect(fromEnv.authz).toMatchObject({ opa: { maxResponseBytes: 4096 } });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe('reaches the OPA enforcer', () => {
    // Stands in for OPA's Data API: every decision is an allow padded to 2 KiB, which an
    // enforcer reading it in full would take.
    const ANSWER = JSON.stringify({ result: true, pad: 'x'.repeat(2048) });
    let server: Server;
    let url: string;
    let asked = 0;
    const caller = SpiffeId.parse(ID.orchestrator);
    beforeAll(async () => {
      server = createServer((req, res) => {
        req.resume();
        req.on('end', () => {
          asked++;
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(ANSWER);
        });
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    });

    async function enforcerFor(extra: Record<string, unknown>): Promise<PolicyEnforcer> {
      const config = parseAgentConfig(
        { name: 'search', authz: { opa: { url, timeoutMs: 10_000, ...extra } } },
        { env: {} },
      );
      return enforcerFromConfig(config.authz!, { logger: testLogger() });
    }

    it('denies an answer longer than the configured bound', async () => {
      const e = await enforcerFor({ maxResponseBytes: 1024 });
      try {
        const before = asked;
        expect(await e.checkInbound({ caller, action: 'search' })).toMatchObject({
          allowed: false,
          reason: 'opa: answer over 1024 bytes',
        });
        expect(asked).toBe(before + 1);
      } finally {
        await e.close?.();
      }
    });

    it('takes the same answer under a larger bound and under the default', async () => {
      for (const extra of [{ maxResponseBytes: ANSWER.length }, {}]) {
        const e = await enforcerFor(extra);
        try {
          expect((await e.checkInbound({ caller, action: 'search' })).allowed, JSON.stringify(extra)).toBe(
            true,
          );
        } finally {
          await e.close?.();
        }
      }
      // The config's largest value is one the enforcer takes.
      const largest = await enforcerFor({ maxResponseBytes: 64 * MIB });
      await largest.close?.();
    });
  });
});
