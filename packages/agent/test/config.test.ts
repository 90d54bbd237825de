import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { AgentConfigError, applyEnvOverrides, loadAgentConfig, parseAgentConfig } from '../src/index.js';

const minimal = { name: 'search', authz: { policyFile: 'policy.yaml' } };

async function file(text: string, name = 'agent.yaml'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-config-'));
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

function issuesOf(fn: () => unknown): AgentConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AgentConfigError);
    return err as AgentConfigError;
  }
  throw new Error('expected AgentConfigError');
}

describe('agent config', () => {
  it('applies secure defaults', () => {
    const c = parseAgentConfig(minimal, { env: {} });
    expect(c.transport.tlsMinVersion).toBe('TLSv1.3');
    expect(c.transport.verifyPeer).toBe(true);
    expect(c.server.host).toBe('127.0.0.1');
    expect(c.peers).toEqual([]);
  });

  it('requires a policy source (no implicit allow), naming the missing section', () => {
    const e = issuesOf(() => parseAgentConfig({ name: 'x' }, { env: {} }));
    expect(e.issues).toContainEqual({
      path: 'authz',
      message: expect.stringMatching(/^the authz section is missing/),
    });
    // Only a caller that supplies a PolicyEnforcer object may leave it out.
    expect(parseAgentConfig({ name: 'x' }, { env: {}, enforcer: true }).authz).toBeUndefined();
    // A section that is present but wrong is reported as such, not as missing.
    const bad = issuesOf(() => parseAgentConfig({ name: 'x', authz: {} }, { env: {}, enforcer: true }));
    expect(bad.issues.map((i) => i.message).join()).not.toMatch(/missing/);
  });

  it('refuses peer verification off, TLS below 1.2 and default allow', () => {
    for (const [patch, path] of [
      [{ transport: { verifyPeer: false } }, 'transport.verifyPeer'],
      [{ transport: { tlsMinVersion: 'TLSv1.1' } }, 'transport.tlsMinVersion'],
      [{ transport: { tlsMinVersion: 'TLSv1' } }, 'transport.tlsMinVersion'],
      [{ authz: { default: 'allow' } }, 'authz.default'],
    ] as const) {
      const e = issuesOf(() => parseAgentConfig({ ...minimal, ...patch }, { env: {} }));
      expect(e.code).toBe('AGENT_CONFIG_INSECURE');
      expect(e.issues[0]?.path).toBe(path);
    }
  });

  it('store: in memory unless postgres is named; the URL is an environment variable name, leases at least 1 s', () => {
    expect(parseAgentConfig(minimal, { env: {} }).store).toEqual({});
    expect(parseAgentConfig({ ...minimal, store: { postgres: {} } }, { env: {} }).store).toEqual({
      postgres: {
        urlEnv: 'WEAVE_DATABASE_URL',
        leaseTtlMs: 30_000,
        terminalTtlMs: 3_600_000,
        queryTimeoutMs: 10_000,
      },
    });
    for (const [postgres, path] of [
      [{ urlEnv: 'postgres://u:secret@db/x' }, 'store.postgres.urlEnv'],
      [{ leaseTtlMs: 10 }, 'store.postgres.leaseTtlMs'],
      [{ queryTimeoutMs: 0 }, 'store.postgres.queryTimeoutMs'],
      [{ queryTimeoutMs: 600_001 }, 'store.postgres.queryTimeoutMs'],
      [{ url: 'postgres://db/x' }, 'store.postgres'],
    ] as const) {
      const e = issuesOf(() => parseAgentConfig({ ...minimal, store: { postgres } }, { env: {} }));
      expect(e.code).toBe('AGENT_CONFIG_INVALID');
      expect(e.issues[0]?.path).toBe(path);
    }
  });

  it('server.keepaliveMs: 15 000 by default, 0 turns it off, at most 600 000', () => {
    expect(parseAgentConfig(minimal, { env: {} }).server.keepaliveMs).toBe(15_000);
    expect(parseAgentConfig({ ...minimal, server: { keepaliveMs: 0 } }, { env: {} }).server.keepaliveMs).toBe(
      0,
    );
    for (const keepaliveMs of [-1, 1.5, 600_001]) {
      const e = issuesOf(() => parseAgentConfig({ ...minimal, server: { keepaliveMs } }, { env: {} }));
      expect(e.issues[0]?.path).toBe('server.keepaliveMs');
    }
  });

  it('server.maxConnections and maxConnectionsPerPeer: 10 000 and 1000 by default, whole numbers of at least 1', () => {
    const server = parseAgentConfig(minimal, { env: {} }).server;
    expect([server.maxConnections, server.maxConnectionsPerPeer]).toEqual([10_000, 1_000]);
    for (const key of ['maxConnections', 'maxConnectionsPerPeer']) {
      for (const value of [0, -1, 1.5, 'many']) {
        const e = issuesOf(() => parseAgentConfig({ ...minimal, server: { [key]: value } }, { env: {} }));
        expect(e.issues[0]?.path).toBe(`server.${key}`);
      }
    }
  });

  it('transport.streamIdleTimeoutMs: 300 000 by default (the client default), 0 for no limit', () => {
    const idle = (transport?: object) =>
      parseAgentConfig({ ...minimal, ...(transport ? { transport } : {}) }, { env: {} }).transport
        .streamIdleTimeoutMs;
    expect(idle()).toBe(300_000);
    expect(idle({ streamIdleTimeoutMs: 0 })).toBe(0);
    for (const streamIdleTimeoutMs of [-1, 1.5]) {
      const e = issuesOf(() =>
        parseAgentConfig({ ...minimal, transport: { streamIdleTimeoutMs } }, { env: {} }),
      );
      expect(e.issues[0]?.path).toBe('transport.streamIdleTimeoutMs');
    }
  });

  it('bounds every key that feeds a timer at load, naming it (Node fires a longer timer after 1 ms)', async () => {
    const opa = (timeoutMs: number) => ({ opa: { url: 'http://127.0.0.1:8181', timeoutMs } });
    const cases: [string, (v: number) => Record<string, unknown>, number][] = [
      [
        'identity.workloadApi.timeoutMs',
        (v) => ({ identity: { workloadApi: { timeoutMs: v } } }),
        2_147_483_647,
      ],
      ['server.drainTimeoutMs', (v) => ({ server: { drainTimeoutMs: v } }), 2_147_483_647],
      ['store.postgres.leaseTtlMs', (v) => ({ store: { postgres: { leaseTtlMs: v } } }), 2_147_483_647],
      ['authz.opa.timeoutMs', (v) => ({ authz: opa(v) }), 60_000],
      ['transport.connectTimeoutMs', (v) => ({ transport: { connectTimeoutMs: v } }), 600_000],
      ['transport.requestTimeoutMs', (v) => ({ transport: { requestTimeoutMs: v } }), 3_600_000],
      ['transport.streamIdleTimeoutMs', (v) => ({ transport: { streamIdleTimeoutMs: v } }), 2_147_483_647],
      ['transport.channelIdleMs', (v) => ({ transport: { channelIdleMs: v } }), 2_147_483_647],
    ];
    for (const [path, patch, max] of cases) {
      expect(() => parseAgentConfig({ ...minimal, ...patch(max) }, { env: {} }), path).not.toThrow();
      for (const v of [max + 1, 3e9, Number.NaN, Infinity]) {
        const e = issuesOf(() => parseAgentConfig({ ...minimal, ...patch(v) }, { env: {} }));
        expect(e.code, `${path} ${v}`).toBe('AGENT_CONFIG_INVALID');
        // Also inside the identity and authz unions: the key, not "matches no form".
        expect(
          e.issues.map((i) => i.path),
          `${path} ${v}`,
        ).toEqual([path]);
        expect(e.message).toContain(`${path}: `);
      }
    }
    // From a file: refused at load with the key and its line, not at start().
    const f = await file(
      'name: search\nauthz:\n  policyFile: ./p.yaml\nidentity:\n  workloadApi:\n    timeoutMs: 3000000000\n',
    );
    await expect(loadAgentConfig(f, {})).rejects.toThrow(/identity\.workloadApi\.timeoutMs \(line 6\)/);
  });

  it('names the section of a union (identity, authz) whose form it cannot tell, and the key when it can', () => {
    const generic = issuesOf(() => parseAgentConfig({ ...minimal, identity: { socket: 'x' } }, { env: {} }));
    expect(generic.issues).toEqual([
      { path: 'identity', message: 'takes one of "workloadApi", "static"; it has "socket"' },
    ]);
    const notObject = issuesOf(() => parseAgentConfig({ ...minimal, identity: 'x' }, { env: {} }));
    expect(notObject.issues).toEqual([
      { path: 'identity', message: 'does not match any accepted form; see the config reference' },
    ]);
    // Two forms at once: as when an env override meets the file's other form.
    const env = { WEAVE_AUTHZ__OPA__URL: 'http://127.0.0.1:8181' };
    const both = issuesOf(() =>
      parseAgentConfig(applyEnvOverrides({ name: 'search', authz: { policyFile: 'p.yaml' } }, env), { env }),
    );
    expect(both.issues).toEqual([
      {
        path: 'authz',
        message: expect.stringMatching(
          /^takes exactly one of "policyFile", "opa", "allowAll", not "policyFile" and "opa" together \(an environment override adds a key/,
        ),
      },
    ]);
    // The file alone: no word of overrides.
    const file = issuesOf(() =>
      parseAgentConfig(
        { name: 'search', authz: { policyFile: 'p.yaml', opa: { url: 'http://x' } } },
        { env: {} },
      ),
    );
    expect(file.issues).toEqual([
      {
        path: 'authz',
        message: 'takes exactly one of "policyFile", "opa", "allowAll", not "policyFile" and "opa" together',
      },
    ]);
    // A value of the wrong type (NaN is one to zod) inside the one form that fits.
    const nan = issuesOf(() =>
      parseAgentConfig(
        { ...minimal, authz: { opa: { url: 'http://x', timeoutMs: Number.NaN } } },
        { env: {} },
      ),
    );
    expect(nan.issues.map((i) => i.path)).toEqual(['authz.opa.timeoutMs']);
  });

  it('refuses allow-all in production only', () => {
    const cfg = { name: 'x', authz: { allowAll: true } };
    expect(parseAgentConfig(cfg, { env: {} }).authz).toEqual({ allowAll: true });
    expect(issuesOf(() => parseAgentConfig(cfg, { env: { NODE_ENV: 'production' } })).code).toBe(
      'AGENT_CONFIG_INSECURE',
    );
    expect(issuesOf(() => parseAgentConfig(cfg, { env: { WEAVE_ENV: 'production' } })).code).toBe(
      'AGENT_CONFIG_INSECURE',
    );
  });

  it('names the key of an invalid SPIFFE ID and of unknown keys', () => {
    const e = issuesOf(() =>
      parseAgentConfig(
        {
          ...minimal,
          spiffeId: 'spiffe://Bad/x',
          peers: [{ id: 'nope', url: 'https://127.0.0.1:1' }],
          colour: 1,
        },
        { env: {} },
      ),
    );
    const paths = e.issues.map((i) => i.path);
    expect(paths).toContain('spiffeId');
    expect(paths).toContain('peers[0].id');
    expect(e.message).toContain('unknown key(s) "colour"');
    expect(e.message).toContain('trust domain characters are limited');
  });

  it('takes per-caller limits with SPIFFE ID pattern rules, and names a bad pattern', () => {
    const perCaller = {
      maxConcurrentTasks: 4,
      requestsPerSecond: 50,
      rules: [{ match: 'spiffe://demo.weave/batch/*', maxConcurrentTasks: 16 }],
    };
    const c = parseAgentConfig({ ...minimal, server: { perCaller } }, { env: {} });
    expect(c.server.perCaller).toEqual(perCaller);
    const e = issuesOf(() =>
      parseAgentConfig(
        { ...minimal, server: { perCaller: { rules: [{ match: 'https://not-spiffe' }] } } },
        { env: {} },
      ),
    );
    expect(e.issues.map((i) => i.path)).toContain('server.perCaller.rules[0].match');
  });

  it('takes the memory bound of kept tasks in bytes, and refuses a non-positive one', () => {
    const retainedBytes = { total: 64 * 1024 * 1024, perCaller: 8 * 1024 * 1024, perTask: 256 * 1024 };
    const c = parseAgentConfig({ ...minimal, server: { retainedBytes } }, { env: {} });
    expect(c.server.retainedBytes).toEqual(retainedBytes);
    const e = issuesOf(() =>
      parseAgentConfig({ ...minimal, server: { retainedBytes: { perCaller: 0 } } }, { env: {} }),
    );
    expect(e.issues.map((i) => i.path)).toContain('server.retainedBytes.perCaller');
  });

  it('serves the v0.3 card on request by default; takes headerless and off, and names any other value', () => {
    expect(parseAgentConfig(minimal, { env: {} }).server.v03Compat).toBe('on-request');
    for (const mode of ['headerless', 'off'] as const) {
      expect(
        parseAgentConfig({ ...minimal, server: { v03Compat: mode } }, { env: {} }).server.v03Compat,
      ).toBe(mode);
    }
    const e = issuesOf(() => parseAgentConfig({ ...minimal, server: { v03Compat: true } }, { env: {} }));
    expect(e.issues.map((i) => i.path)).toContain('server.v03Compat');
  });

  it('loads YAML with line numbers in errors and resolves paths', async () => {
    const good = await file('name: search\nauthz:\n  policyFile: ./policy.yaml\nserver:\n  port: 9000\n');
    const c = await loadAgentConfig(good, {});
    expect(c.server.port).toBe(9000);
    expect(c.authz).toEqual({ policyFile: join(good, '..', 'policy.yaml') });

    const bad = await file('name: search\nauthz:\n  policyFile: ./p.yaml\nserver:\n  port: "high"\n');
    await expect(loadAgentConfig(bad, {})).rejects.toThrow(/server\.port \(line 5\)/);

    const broken = await file('name: [unclosed\n');
    await expect(loadAgentConfig(broken, {})).rejects.toThrow(AgentConfigError);
    await expect(loadAgentConfig(join(tmpdir(), 'does-not-exist.yaml'), {})).rejects.toThrow(
      /cannot read file/,
    );
  });

  it('refuses a key written twice in a YAML or JSON file, naming its key path and line', async () => {
    const cases = [
      // top level, YAML
      { text: 'name: search\nauthz:\n  allowAll: true\nname: other\n', path: 'name (line 4)', key: 'name' },
      // nested, YAML: the second verifyPeer must not quietly win over the first
      {
        text: 'name: search\nauthz:\n  allowAll: true\ntransport:\n  verifyPeer: true\n  retries: 1\n  verifyPeer: false\n',
        path: 'transport.verifyPeer (line 7)',
        key: 'verifyPeer',
      },
      // nested in a list, JSON
      {
        text: JSON.stringify(
          {
            name: 'search',
            authz: { allowAll: true },
            peers: [{ id: 'spiffe://td/a', url: 'https://a.test' }],
          },
          null,
          2,
        ).replace('"url": "https://a.test"', '"url": "https://a.test",\n      "url": "https://b.test"'),
        path: 'peers[0].url (line 10)',
        key: 'url',
        name: 'agent.json',
      },
    ];
    for (const c of cases) {
      const f = await file(c.text, c.name);
      const err = await loadAgentConfig(f, {}).then(
        () => expect.unreachable(`${c.path} was accepted`),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AgentConfigError);
      const e = err as AgentConfigError;
      expect(e.code).toBe('AGENT_CONFIG_INVALID');
      expect(e.issues).toContainEqual({
        path: c.path,
        message: expect.stringContaining(`duplicate key "${c.key}"`),
      });
      expect(e.message).toContain(f);
    }
    // Without the repeated key the same file loads.
    const good = await file(
      'name: search\nauthz:\n  allowAll: true\ntransport:\n  verifyPeer: true\n  retries: 1\n',
    );
    expect((await loadAgentConfig(good, {})).transport).toMatchObject({ verifyPeer: true, retries: 1 });
  });

  it('refuses JSON in an env override that repeats a key, and changes nothing', () => {
    const raw = structuredClone(minimal);
    const env = {
      WEAVE_SERVER__PORT: '7001',
      WEAVE_PEERS: '[{"id": "spiffe://td/a", "url": "https://a.test",\n  "url": "https://b.test"}]',
    };
    const e = issuesOf(() => applyEnvOverrides(raw, env));
    expect(e.code).toBe('AGENT_CONFIG_INVALID');
    expect(e.issues).toEqual([
      { path: 'peers[0].url (line 2)', message: expect.stringContaining('duplicate key "url"') },
    ]);
    expect(e.message).toContain('WEAVE_PEERS');
    const top = issuesOf(() =>
      applyEnvOverrides(raw, { WEAVE_TRANSPORT: '{"verifyPeer": true, "verifyPeer": false}' }),
    );
    expect(top.issues.map((i) => i.path)).toEqual(['transport.verifyPeer (line 1)']);
    expect(raw).toEqual(minimal);
    // The same value without the repeat is applied.
    const ok = applyEnvOverrides(raw, {
      ...env,
      WEAVE_PEERS: '[{"id": "spiffe://td/a", "url": "https://b.test"}]',
    });
    expect(parseAgentConfig(ok, { env: {} }).peers).toEqual([{ id: 'spiffe://td/a', url: 'https://b.test' }]);
  });

  it('leaves WEAVE_ variables that name no config key alone, and refuses a misspelt section', async () => {
    // Variables of Weave's own that are not config: the database URL named by
    // store.postgres.urlEnv, the push config key, the log level, the environment.
    const others = {
      WEAVE_DATABASE_URL: 'postgres://weave@127.0.0.1:5432/weave',
      WEAVE_PUSH_CONFIG_KEY: 'k'.repeat(44),
      WEAVE_LOG_LEVEL: 'debug',
      WEAVE_ENV: 'dev',
    };
    expect(applyEnvOverrides(minimal, others)).toEqual(minimal);
    const f = await file('name: search\nauthz:\n  allowAll: true\n');
    expect((await loadAgentConfig(f, { ...others, WEAVE_SERVER__PORT: '7002' })).server.port).toBe(7002);
    // A whole top-level key still takes a single-level variable.
    expect(applyEnvOverrides(minimal, { WEAVE_DESCRIPTION: 'from env' }).description).toBe('from env');

    // One underscore where two belong: refused, not dropped (before, an unknown key "serverPort").
    for (const [name, fixed] of [
      ['WEAVE_SERVER_PORT', 'WEAVE_SERVER__PORT'],
      ['WEAVE_AUTHZ_POLICY_FILE', 'WEAVE_AUTHZ__POLICY_FILE'],
      ['WEAVE_TRANSPORT_TLS_MIN_VERSION', 'WEAVE_TRANSPORT__TLS_MIN_VERSION'],
    ] as const) {
      const one = issuesOf(() => applyEnvOverrides(minimal, { [name]: 'x' }));
      expect(one.message).toContain(`environment variable ${name}`);
      expect(one.issues[0]?.message).toContain(`levels are separated by "__" (${fixed})`);
      // Named by the variable, not by a key nobody wrote ("serverPort").
      expect(one.issues.map((i) => i.path)).toEqual([name]);
      expect(one.message).toContain(`\n  - ${name}: not an override: `);
    }
    const e = issuesOf(() => applyEnvOverrides(minimal, { WEAVE_SERVR__PORT: '7001' }));
    expect(e.code).toBe('AGENT_CONFIG_INVALID');
    expect(e.message).toContain('environment variable WEAVE_SERVR__PORT');
    expect(e.issues).toEqual([
      {
        path: 'servr.port',
        message: expect.stringContaining('"servr" is not a top-level config key (name, '),
      },
    ]);
  });

  it("loads the Kubernetes example's config with its agent container's environment", async () => {
    // WEAVE_ENV and WEAVE_DATABASE_URL there are not config keys, and were once taken for overrides.
    const manifest = parseAllDocuments(
      await readFile(new URL('../../../docs/kubernetes/agent.yaml', import.meta.url), 'utf8'),
    ).map((d) => d.toJS() as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
    const configMap = manifest.find((d) => d.kind === 'ConfigMap' && d.data?.['agent.yaml']);
    const deployment = manifest.find((d) => d.kind === 'Deployment');
    const container = (deployment?.spec.template.spec.containers as { name: string; env: unknown[] }[]).find(
      (c) => c.name === 'agent',
    );
    // Its environment as the kubelet sets it: a Secret's value stands in for each secretKeyRef.
    const env: Record<string, string> = {};
    for (const e of container?.env as { name: string; value?: string }[])
      env[e.name] = e.value ?? `secret ${e.name}`;
    expect(Object.keys(env)).toEqual(
      expect.arrayContaining(['SPIFFE_ENDPOINT_SOCKET', 'WEAVE_ENV', 'WEAVE_DATABASE_URL']),
    );
    const c = await loadAgentConfig(await file(configMap?.data['agent.yaml'] as string), env);
    expect(c.server.port).toBe(8443);
    expect(c.identity).toMatchObject({ workloadApi: { socket: env.SPIFFE_ENDPOINT_SOCKET } });
    expect(c.store).toMatchObject({ postgres: { urlEnv: 'WEAVE_DATABASE_URL' } });
  });

  it('applies WEAVE_ env overrides and SPIFFE_ENDPOINT_SOCKET', () => {
    const raw = applyEnvOverrides(minimal, {
      WEAVE_SERVER__PORT: '7001',
      WEAVE_TRANSPORT__TLS_MIN_VERSION: 'TLSv1.2',
      WEAVE_ENV: 'dev',
      SPIFFE_ENDPOINT_SOCKET: 'unix:///tmp/agent.sock',
    });
    const c = parseAgentConfig(raw, { env: {} });
    expect(c.server.port).toBe(7001);
    expect(c.transport.tlsMinVersion).toBe('TLSv1.2');
    expect(c.identity).toEqual({ workloadApi: { socket: 'unix:///tmp/agent.sock', timeoutMs: 10_000 } });
    // an override that weakens security is refused like the file would be
    const bad = applyEnvOverrides(minimal, { WEAVE_TRANSPORT__VERIFY_PEER: 'false' });
    expect(issuesOf(() => parseAgentConfig(bad, { env: {} })).code).toBe('AGENT_CONFIG_INSECURE');
  });
});

describe('the README', () => {
  it('"Configuration": its example loads, and names every key a loaded config has', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const at = readme.indexOf('## Configuration');
    const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at))?.[1];
    expect(block).toBeDefined();
    const config = await loadAgentConfig(await file(block as string), {});
    // Every key, defaults included, down to the sections' own keys: a key the example leaves
    // out is one a reader of the README cannot find.
    const missing: string[] = [];
    const walk = (v: unknown, path: string[]): void => {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || path.length > 2) return;
      for (const [k, child] of Object.entries(v)) {
        if (!new RegExp(`(^|[\\s{,#])${k}:`, 'm').test(block as string)) missing.push([...path, k].join('.'));
        walk(child, [...path, k]);
      }
    };
    walk(config, []);
    expect(missing).toEqual([]);
  });
});
