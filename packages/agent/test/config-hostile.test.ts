// Config values a hostile (or merely unlucky) deployment hands the agent: an
// empty host from a template, env overrides of text keys, a database variable
// of its own naming, a database URL of another kind, peers and advertised
// addresses that are not mutual TLS. Each is refused at load, naming the key
// and the variable that set it, before anything listens.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { checkPostgresUrl } from '../src/config.js';
import {
  AgentConfigError,
  SecureAgent,
  loadAgentConfig,
  parseAgentConfig,
  type AgentConfigInput,
} from '../src/index.js';
import { ID, startWorld, testLogger, type World } from './helpers.js';

async function file(text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-config-hostile-'));
  const p = join(dir, 'agent.yaml');
  await writeFile(p, text);
  return p;
}

async function refusal(p: Promise<unknown>): Promise<AgentConfigError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentConfigError);
  expect((err as AgentConfigError).code).toBe('AGENT_CONFIG_INVALID');
  return err as AgentConfigError;
}

const minimal = { name: 'search', authz: { allowAll: true } } as const;
const BASE = 'name: search\nversion: 1.2.0\nauthz: { allowAll: true }\n';

describe('listen hosts', () => {
  let world: World;
  let config: string;
  beforeAll(async () => {
    world = await startWorld();
    config = await file(
      `name: search\nidentity: { workloadApi: { socket: "${world.dev.address('search')}" } }\n` +
        `authz: { policyFile: "${world.policyFile}" }\nobservability: { ops: { port: 0 } }\n`,
    );
  });
  afterAll(() => world.close());

  it('refuses an empty or blank host on every listener (it would listen on every interface), naming the variable', async () => {
    for (const [name, key] of [
      ['WEAVE_SERVER__HOST', 'server.host'],
      ['WEAVE_SERVER__GRPC__HOST', 'server.grpc.host'],
      ['WEAVE_OBSERVABILITY__OPS__HOST', 'observability.ops.host'],
    ] as const) {
      for (const value of ['', ' ', '\t']) {
        const e = await refusal(
          SecureAgent.fromConfigFile(config, { env: { [name]: value }, logger: testLogger() }),
        );
        expect(e.issues).toEqual([
          {
            path: `${key} (environment variable ${name})`,
            message: expect.stringMatching(/every interface/),
          },
        ]);
      }
    }
    // Written in the file, or given as an object: the same.
    const inFile = await file(`${BASE}server: { grpc: { host: "" } }\n`);
    expect((await refusal(loadAgentConfig(inFile, {}))).issues.map((i) => i.path)).toEqual([
      'server.grpc.host (line 4)',
    ]);
    expect(() => new SecureAgent({ config: { ...minimal, server: { host: '' } }, env: {} })).toThrow(
      /server\.host: must be a host name or IP address/,
    );
  });

  it('listens where a set host says', async () => {
    const agent = await SecureAgent.fromConfigFile(config, {
      env: { WEAVE_SERVER__HOST: '127.0.0.1', WEAVE_SERVER__GRPC__HOST: '127.0.0.1' },
      logger: testLogger(),
    });
    agent.capability('x', { input: z.object({}) }, () => 1);
    const started = await agent.start();
    try {
      expect(started.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(started.grpcUrl).toMatch(/^127\.0\.0\.1:\d+$/);
    } finally {
      await agent.stop({ drainTimeoutMs: 0 });
    }
  });
});

describe('environment overrides', () => {
  it('set a key that takes text to the text, however it looks', async () => {
    const f = await file(BASE);
    for (const [env, want] of [
      [{ WEAVE_VERSION: '2' }, { version: '2' }],
      [{ WEAVE_VERSION: '1.2' }, { version: '1.2' }],
      [{ WEAVE_NAME: '007' }, { name: '007' }],
      [{ WEAVE_DESCRIPTION: 'true' }, { description: 'true' }],
      [{ WEAVE_DESCRIPTION: '12345678901234567890' }, { description: '12345678901234567890' }],
      [{ WEAVE_DESCRIPTION: '{"a":1}' }, { description: '{"a":1}' }],
      [
        { WEAVE_SERVER__GRPC__PUBLIC_ADDRESS: '10.0.0.1:8444' },
        { server: { grpc: { publicAddress: '10.0.0.1:8444' } } },
      ],
    ] as const) {
      expect(await loadAgentConfig(f, env)).toMatchObject(want);
    }
    // Keys of other types are typed as before.
    const c = await loadAgentConfig(f, {
      WEAVE_SERVER__PORT: '7001',
      WEAVE_TRANSPORT__RETRIES: '0',
      WEAVE_OBSERVABILITY__PROCESS_METRICS: 'true',
      WEAVE_SERVER__BINDINGS: '["GRPC"]',
    });
    expect(c.server.port).toBe(7001);
    expect(c.transport.retries).toBe(0);
    expect(c.observability.processMetrics).toBe(true);
    expect(c.server.bindings).toEqual(['GRPC']);
  });

  it('name the variable in the error about a value one set, not a line of the file', async () => {
    const f = await file(`${BASE}server:\n  port: 1\n`);
    for (const [env, path] of [
      [{ WEAVE_SERVER__PORT: 'abc' }, 'server.port (environment variable WEAVE_SERVER__PORT)'],
      [{ WEAVE_NAME: 'Not A Name' }, 'name (environment variable WEAVE_NAME)'],
      [{ WEAVE_SERVER__PROT: '1' }, 'server (environment variable WEAVE_SERVER__PROT)'],
      [{ WEAVE_LOGGING__LEVEL: 'loud' }, 'logging.level (environment variable WEAVE_LOGGING__LEVEL)'],
      [
        {
          WEAVE_PEERS: `[{"id": "${ID.summarizer}", "url": "https://a.test"}, {"id": 1, "url": "https://b.test"}]`,
        },
        'peers[1].id (environment variable WEAVE_PEERS)',
      ],
      [
        { SPIFFE_ENDPOINT_SOCKET: '/run/agent.sock' },
        'identity.workloadApi.socket (environment variable SPIFFE_ENDPOINT_SOCKET)',
      ],
    ] as const) {
      const e = await refusal(loadAgentConfig(f, env));
      expect(e.issues.map((i) => i.path)).toEqual([path]);
    }
    // A value of the file keeps its line.
    const bad = await file(`${BASE}server:\n  port: abc\n`);
    expect((await refusal(loadAgentConfig(bad, {}))).issues.map((i) => i.path)).toEqual([
      'server.port (line 5)',
    ]);
    // An insecure value too.
    const insecure = await loadAgentConfig(f, { WEAVE_TRANSPORT__VERIFY_PEER: 'false' }).catch(
      (e: unknown) => e,
    );
    expect(insecure).toMatchObject({
      code: 'AGENT_CONFIG_INSECURE',
      issues: [{ path: 'transport.verifyPeer (environment variable WEAVE_TRANSPORT__VERIFY_PEER)' }],
    });
  });

  it('leave the variable store.postgres.urlEnv names alone, even one that looks like a misspelt override', async () => {
    const url = 'postgres://weave:pw@127.0.0.1:5432/weave';
    const named = await file(`${BASE}store: { postgres: { urlEnv: WEAVE_STORE_URL } }\n`);
    const c = await loadAgentConfig(named, { WEAVE_STORE_URL: url });
    expect(c.store.postgres?.urlEnv).toBe('WEAVE_STORE_URL');
    expect(c).not.toHaveProperty('storeUrl');
    // Named by an override, and of the `WEAVE_<SECTION>__<KEY>` shape.
    const byEnv = await loadAgentConfig(await file(`${BASE}store: { postgres: {} }\n`), {
      WEAVE_STORE__POSTGRES__URL_ENV: 'WEAVE_STORE__URL',
      WEAVE_STORE__URL: url,
    });
    expect(byEnv.store).toMatchObject({ postgres: { urlEnv: 'WEAVE_STORE__URL' } });
    expect(byEnv.store).not.toHaveProperty('url');
    // Any other misspelt override is refused as before; without store.postgres this one is too.
    for (const [f, env, name] of [
      [named, { WEAVE_STORE_URL: url, WEAVE_SERVER_PORT: '1' }, 'WEAVE_SERVER_PORT'],
      [await file(BASE), { WEAVE_STORE_URL: url }, 'WEAVE_STORE_URL'],
    ] as const) {
      const e = await refusal(loadAgentConfig(f, env));
      expect(e.message).toContain(`environment variable ${name}`);
      expect(e.issues[0]?.message).toMatch(/^not an override/);
    }
  });
});

describe('the database URL', () => {
  it('takes postgres:// and postgresql:// URLs, libpq Unix-socket ones too', () => {
    for (const url of [
      'postgres://weave:pw@127.0.0.1:5432/weave',
      'postgresql://weave@db.internal/weave?sslmode=verify-full',
      'POSTGRES://[::1]:6432/weave',
      'postgres://weave:pw@/weave?host=/run/postgresql',
      'postgres://weave:p w@db/weave',
    ]) {
      expect(() => checkPostgresUrl('DBURL', url)).not.toThrow();
    }
  });

  it('refuses any other URL with AGENT_CONFIG_INVALID naming the variable, never printing the password', () => {
    for (const [url, message] of [
      ['mysql://weave:s3cret@127.0.0.1/w1', 'must be postgres:// or postgresql://, not mysql://'],
      ['weave:s3cret@127.0.0.1/w1', 'is not a URL'],
      ['postgres://weave:s3cret@127.0.0.1:99999/w1', 'the port "99999" is not a number from 1 to 65535'],
      ['postgres://weave:s3cret@127.0.0.1:0/w1', 'port must be from 1 to 65535, got "0"'],
      ['postgres://weave:s3cret@/w1?host=/run/pg&port=x', 'port must be from 1 to 65535, got "x"'],
    ] as const) {
      let err: unknown;
      try {
        checkPostgresUrl('DBURL', url);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AgentConfigError);
      const e = err as AgentConfigError;
      expect(e.code).toBe('AGENT_CONFIG_INVALID');
      expect(e.issues).toEqual([
        {
          path: 'store.postgres.urlEnv (environment variable DBURL)',
          message: expect.stringContaining(message),
        },
      ]);
      expect(e.message).not.toContain('s3cret');
    }
  });

  it('is checked at load when asked (weave validate), with the other problems', async () => {
    const f = await file(`${BASE}store: { postgres: { urlEnv: DBURL } }\n`);
    const env = { DBURL: 'mysql://weave:s3cret@127.0.0.1/w1' };
    const e = await refusal(loadAgentConfig(f, env, { checkDatabaseUrl: true }));
    expect(e.issues).toEqual([
      {
        path: 'store.postgres.urlEnv (environment variable DBURL)',
        message: expect.stringContaining('mysql://'),
      },
    ]);
    expect(e.message).not.toContain('s3cret');
    // Unset or empty: left to start(), which refuses without it.
    for (const unset of [{}, { DBURL: '' }]) {
      expect((await loadAgentConfig(f, unset, { checkDatabaseUrl: true })).store.postgres?.urlEnv).toBe(
        'DBURL',
      );
    }
  });
});

describe('peers and advertised addresses', () => {
  it('refuses a peer listed twice (the second would silently replace the first)', () => {
    const e = (() => {
      try {
        parseAgentConfig(
          {
            ...minimal,
            peers: [
              { id: ID.summarizer, url: 'https://a.test:8443' },
              { id: ID.orchestrator, url: 'https://b.test:8443' },
              { id: ID.summarizer, url: 'https://evil.test:8443' },
            ],
          },
          { env: {} },
        );
      } catch (err) {
        return err as AgentConfigError;
      }
      throw new Error('expected AgentConfigError');
    })();
    expect(e.code).toBe('AGENT_CONFIG_INVALID');
    expect(e.issues).toEqual([
      {
        path: 'peers[2].id',
        message: `${ID.summarizer} is listed twice (also peers[0]): one entry per peer`,
      },
    ]);
  });

  it('refuses a peer URL, publicUrl or gRPC publicAddress that is not mutual TLS at host:port', () => {
    const cases: [Partial<AgentConfigInput>, string][] = [
      [{ peers: [{ id: ID.summarizer, url: 'http://127.0.0.1:8444' }] }, 'peers[0].url'],
      [{ server: { publicUrl: 'http://search.internal' } }, 'server.publicUrl'],
      [{ server: { publicUrl: 'ftp://search.internal' } }, 'server.publicUrl'],
      [{ server: { publicUrl: 'javascript:alert(1)' } }, 'server.publicUrl'],
      [{ server: { grpc: { publicAddress: 'anything at all' } } }, 'server.grpc.publicAddress'],
      [{ server: { grpc: { publicAddress: 'search.internal' } } }, 'server.grpc.publicAddress'],
      [{ server: { grpc: { publicAddress: 'search.internal:0' } } }, 'server.grpc.publicAddress'],
      [{ server: { grpc: { publicAddress: 'search.internal:65536' } } }, 'server.grpc.publicAddress'],
    ];
    for (const [patch, path] of cases) {
      expect(
        () => new SecureAgent({ config: { ...minimal, ...patch }, env: {} }),
        `${JSON.stringify(patch)} must be refused`,
      ).toThrow(
        expect.objectContaining({
          code: 'AGENT_CONFIG_INVALID',
          issues: [expect.objectContaining({ path })],
        }),
      );
    }
    const c = parseAgentConfig(
      {
        ...minimal,
        server: { publicUrl: 'https://search.internal:8443', grpc: { publicAddress: '[fd00::1]:8444' } },
        peers: [{ id: ID.summarizer, url: 'https://summarizer.internal:8443' }],
      },
      { env: {} },
    );
    expect(c.server.grpc.publicAddress).toBe('[fd00::1]:8444');
  });
});
