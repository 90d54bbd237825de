// The `weave` CLI, spawned as users run it, against real things: the dev
// Workload API server over gRPC on Unix sockets, and a real A2A agent on
// @weave/transport's mTLS server with a default-deny policy.
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer as httpServer } from 'node:http';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AServer, AgentCardSigner } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId, WorkloadApiClient, WorkloadApiIdentityProvider, authorizeMemberOf } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { createMtlsServerOptions } from '@weave/transport';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { inproc, spawnWeave, stopWeave, waitForLine, weave } from './helpers.js';

const TD = 'cli.weave';
const ID = {
  client: `spiffe://${TD}/agent/client`,
  search: `spiffe://${TD}/agent/search`,
  stranger: `spiffe://${TD}/agent/stranger`,
};
const silent = pino({ level: 'silent' });

let dir: string;
let devServer: DevWorkloadApiServer;
let socket: Record<'client' | 'search' | 'stranger' | 'nobody', string>;
let agentIdentity: WorkloadApiIdentityProvider;
let app: MtlsFastifyInstance;
let a2a: A2AServer;
let url: string;
let policyFile: string;
/** Requests that reached the agent's HTTP layer, and handler runs per skill. */
const seen = { requests: 0, search: 0, progress: 0 };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-cli-'));
  devServer = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { client: ID.client, search: ID.search, stranger: ID.stranger, nobody: null },
    logger: silent,
  });
  socket = {
    client: devServer.address('client'),
    search: devServer.address('search'),
    stranger: devServer.address('stranger'),
    nobody: devServer.address('nobody'),
  };

  // The agent: its identity from the Workload API, inbound policy lets only the client in.
  agentIdentity = await WorkloadApiIdentityProvider.create({ address: socket.search, logger: silent });
  const inbound = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'search-inbound',
      default: 'deny',
      rules: [
        { id: 'client-may-search', effect: 'allow', callers: [ID.client], actions: ['search', 'progress'] },
      ],
    },
    { audit: { record: () => undefined }, logger: silent },
  );
  a2a = new A2AServer({
    card: { name: 'search', description: 'finds things', version: '1.2.3' },
    selfId: SpiffeId.parse(ID.search),
    enforcer: inbound,
    heartbeatMs: 0,
    // Signed by its SVID, as a SecureAgent's card is.
    cardSigner: new AgentCardSigner(agentIdentity),
  });
  a2a.registerTaskHandler(
    { id: 'search', name: 'search', description: 'search the index', tags: [] },
    (ctx) => {
      seen.search++;
      const input = ctx.message.parts[0]?.data as { query?: string } | undefined;
      return { parts: [{ data: { query: input?.query ?? null, caller: ctx.caller.toString(), hits: 3 } }] };
    },
  );
  a2a.registerTaskHandler(
    { id: 'progress', name: 'progress', description: 'works in steps', tags: [] },
    (ctx) => {
      seen.progress++;
      ctx.publishStatus('TASK_STATE_WORKING', 'step 1 of 2');
      ctx.publishStatus('TASK_STATE_WORKING', 'step 2 of 2');
      return 'all done';
    },
  );
  app = createMtlsServer({ identity: agentIdentity, authorize: authorizeMemberOf(TD) });
  app.addHook('onRequest', (_req, _reply, next) => {
    seen.requests++;
    next();
  });
  await app.register(a2a.plugin);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no address');
  url = `https://127.0.0.1:${addr.port}`;

  // The client's outbound policy: search yes, anything else no (default deny).
  policyFile = join(dir, 'policy.yaml');
  await writeFile(
    policyFile,
    [
      'version: 1',
      'id: client-outbound',
      'default: deny',
      'rules:',
      '  - id: client-may-search',
      '    effect: allow',
      `    callers: ['${ID.client}']`,
      `    callees: ['${ID.search}']`,
      "    actions: ['search', 'progress']",
      '',
    ].join('\n'),
  );
});

afterAll(async () => {
  await a2a?.close();
  await app?.close();
  await agentIdentity?.close();
  await devServer?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const CLI_VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

describe('usage and help', () => {
  it('prints help for the program and each command, exit 0', async () => {
    const top = await weave(['--help']);
    expect(top.code).toBe(0);
    for (const c of ['dev', 'svid', 'card', 'call', 'authz', 'validate']) expect(top.stdout).toContain(c);
    expect(top.stdout).toContain('Exit codes: 0 ok');
    const version = await weave(['--version']);
    expect({ code: version.code, stdout: version.stdout.trim() }).toEqual({ code: 0, stdout: CLI_VERSION });
    const call = await weave(['call', '--help']);
    expect(call.code).toBe(0);
    expect(call.stdout).toContain('<target> <capability> <json>');
    expect(call.stdout).toContain('--policy <file>');
  });

  it('exits 2 on an unknown command, a missing argument or an unknown option', async () => {
    const unknown = await weave(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");
    const missing = await inproc(['card']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("missing required argument 'url'");
    const option = await inproc(['svid', '--bogus']);
    expect(option.code).toBe(2);
    expect(option.stderr).toContain("unknown option '--bogus'");
  });
});

describe('weave svid', () => {
  it('shows the SVID served on SPIFFE_ENDPOINT_SOCKET', async () => {
    const r = await weave(['svid'], { SPIFFE_ENDPOINT_SOCKET: socket.client });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`SPIFFE ID\\s+${ID.client}`));
    expect(r.stdout).toMatch(/serial\s+[0-9a-f]+/);
    expect(r.stdout).toMatch(/chain length\s+1/);
    expect(r.stdout).toMatch(/bundles\s+cli\.weave/);
  });

  it('--json with --socket gives the same facts as the Workload API', async () => {
    const r = await weave(['svid', '--socket', socket.search, '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as {
      address: string;
      svids: Array<{ spiffeId: string; serialNumber: string; notAfter: string; chainLength: number }>;
      trustDomains: string[];
    };
    expect(out.address).toBe(socket.search);
    expect(out.trustDomains).toEqual([TD]);
    expect(out.svids).toHaveLength(1);
    const served = agentIdentity.getX509Svid();
    expect(out.svids[0]?.spiffeId).toBe(ID.search);
    expect(out.svids[0]?.serialNumber).toBe(served.certificates[0]?.serialNumber);
    expect(Date.parse(out.svids[0]?.notAfter ?? '')).toBe(served.expiresAt.getTime());
  });

  it('exits 2 without a socket, and 1 when the socket serves no identity', async () => {
    const none = await inproc(['svid']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^NO_WORKLOAD_API_SOCKET: /);
    const denied = await inproc(['svid', '--socket', socket.nobody, '--timeout', '5s']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^WORKLOAD_API_PERMISSION_DENIED: /);
    expect(denied.stderr).not.toContain('    at '); // no stack without --debug
    const bad = await inproc(['svid', '--socket', 'http://nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^INVALID_WORKLOAD_API_ADDRESS: /);
  });

  it('--debug adds the stack trace', async () => {
    const r = await inproc(['--debug', 'svid', '--socket', socket.nobody, '--timeout', '5s']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^WORKLOAD_API_PERMISSION_DENIED: /);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});

describe('weave card', () => {
  it("fetches the card over mTLS and prints the server's verified SPIFFE ID", async () => {
    const before = seen.requests;
    const r = await weave(['card', url], { SPIFFE_ENDPOINT_SOCKET: socket.client });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [first, second, ...rest] = r.stdout.split('\n');
    expect(first).toBe(`peer: ${ID.search} (mTLS verified against the bundle of ${TD})`);
    expect(second).toBe(`signature: verified (ES256, X.509-SVID of ${ID.search})`);
    const card = JSON.parse(rest.join('\n')) as {
      name: string;
      version: string;
      skills: Array<{ id: string }>;
    };
    expect(card.name).toBe('search');
    expect(card.version).toBe('1.2.3');
    expect(card.skills.map((s) => s.id).sort()).toEqual(['progress', 'search']);
    expect(seen.requests).toBe(before + 1);
  });

  it('a --socket path where nothing exists fails at once, not after waiting for an identity', async () => {
    const before = seen.requests;
    const missing = join(tmpdir(), `weave-no-socket-${process.pid}.sock`);
    const r = await inproc(['card', url, '--socket', `unix://${missing}`, '--timeout', '2s']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `WORKLOAD_API_UNAVAILABLE: no Workload API socket at ${missing} (nothing exists at that path; check --socket or SPIFFE_ENDPOINT_SOCKET)\n`,
    );
    expect(seen.requests).toBe(before);
  });

  it("--timeout takes up to an hour, the connect part capped at the transport's 10 minutes; more is exit 2", async () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: socket.client };
    const long = await inproc(['card', url, '--timeout', '20m'], env);
    expect(long.stderr).toBe('');
    expect(long.code).toBe(0);
    const before = seen.requests;
    const over = await inproc(['card', url, '--timeout', '2h'], env);
    expect(over.code).toBe(2);
    expect(over.stderr).toMatch(/^USAGE: --timeout must be at most 1h, got "2h"/);
    expect(seen.requests).toBe(before);
  });

  it('--expect refuses a server with another SPIFFE ID before sending the request', async () => {
    const before = seen.requests;
    const r = await inproc(['card', url, '--expect', ID.stranger, '--json'], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    // An identity failure, reported as one: not as the card fetch it stopped ("unreachable").
    expect(r.stderr).toBe(
      `PEER_VERIFICATION_FAILED: cannot fetch agent card ${url}/.well-known/agent-card.json: ` +
        `peer verification failed: expected ${ID.stranger}, got ${ID.search}: SPIFFE ID mismatch\n`,
    );
    expect(seen.requests).toBe(before);
  });

  it('refuses an unsigned card unless --signature says otherwise', async () => {
    const plain = new A2AServer({
      card: { name: 'plain', description: '', version: '1' },
      selfId: SpiffeId.parse(ID.search),
      enforcer: LocalPolicyEnforcer.fromObject({ version: 1, id: 'x', default: 'deny', rules: [] }),
    });
    const plainApp = createMtlsServer({ identity: agentIdentity, authorize: authorizeMemberOf(TD) });
    await plainApp.register(plain.plugin);
    await plainApp.listen({ host: '127.0.0.1', port: 0 });
    try {
      const plainUrl = `https://127.0.0.1:${(plainApp.server.address() as { port: number }).port}`;
      const env = { SPIFFE_ENDPOINT_SOCKET: socket.client };
      const refused = await inproc(['card', plainUrl], env);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toMatch(/^CARD_UNSIGNED: /);
      const taken = await inproc(['card', plainUrl, '--signature', 'if-present', '--json'], env);
      expect(taken.code).toBe(0);
      expect(JSON.parse(taken.stdout)).toMatchObject({
        peer: ID.search,
        signature: 'none (accepted: --signature if-present)',
        card: { name: 'plain' },
      });
      const bad = await inproc(['card', plainUrl, '--signature', 'sometimes'], env);
      expect(bad.code).toBe(2);
    } finally {
      await plain.close();
      await plainApp.close();
    }
  });

  it('refuses plain http with exit 2', async () => {
    const r = await inproc(['card', url.replace('https:', 'http:')], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^INSECURE_URL: /);
  });
});

describe('weave call', () => {
  const peer = () => `${ID.search}=${url}`;

  it('calls by SPIFFE ID after an outbound ALLOW and prints the result JSON', async () => {
    const before = seen.search;
    const r = await weave(
      ['call', ID.search, 'search', '{"query":"mtls"}', '--peer', peer(), '--policy', policyFile],
      {
        SPIFFE_ENDPOINT_SOCKET: socket.client,
      },
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ query: 'mtls', caller: ID.client, hits: 3 });
    expect(r.stderr).toContain('policy: ALLOW by rule client-may-search');
    expect(seen.search).toBe(before + 1);
  });

  it('--timeout 20m works (the connect part capped at 10 minutes), 2h is exit 2 before anything is sent', async () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: socket.client };
    const before = seen.search;
    const ok = await inproc(
      ['call', ID.search, 'search', '{"query":"long"}', '--peer', peer(), '--timeout', '20m'],
      env,
    );
    expect(ok.code).toBe(0);
    expect(seen.search).toBe(before + 1);
    const over = await inproc(['call', ID.search, 'search', '{}', '--peer', peer(), '--timeout', '2h'], env);
    expect(over.code).toBe(2);
    expect(over.stderr).toMatch(/--timeout must be at most 1h, got "2h"/);
    expect(seen.search).toBe(before + 1);
  });

  it('calls by URL, learning the SPIFFE ID from the TLS handshake', async () => {
    // The probe's handshake must end cleanly on the agent's side too: a refused one is logged
    // there as "TLS handshake refused" and counts against that log's rate.
    const refused: string[] = [];
    const onRefused = (err: Error) => refused.push(err.message);
    // Every connection the agent takes during the call (the probe's first), closed or not yet.
    const closed: Promise<void>[] = [];
    const onConnection = (s: Socket) =>
      closed.push(new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r()))));
    app.server.on('tlsClientError', onRefused);
    app.server.on('connection', onConnection);
    try {
      const r = await inproc(['call', url, 'search', '{"query":"by url"}', '--policy', policyFile], {
        SPIFFE_ENDPOINT_SOCKET: socket.client,
      });
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ query: 'by url', caller: ID.client });
      expect(r.stderr).toContain(`${ID.client} → ${ID.search}`);
      // Once the probe's connection has closed on the agent's side, whatever it saw has been told.
      expect(closed.length).toBeGreaterThanOrEqual(1);
      await closed[0];
      expect(refused).toEqual([]);
    } finally {
      app.server.off('tlsClientError', onRefused);
      app.server.off('connection', onConnection);
    }
  });

  it('--stream prints progress on stderr and the result on stdout', async () => {
    const r = await inproc(['call', ID.search, 'progress', '{}', '--peer', peer(), '--stream'], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe('all done');
    expect(r.stderr).toContain('working: step 1 of 2');
    expect(r.stderr).toContain('working: step 2 of 2');
  });

  it('an outbound DENY exits 1 with the reason and sends nothing', async () => {
    const before = { ...seen };
    const r = await weave(
      ['call', ID.search, 'delete', '{"all":true}', '--peer', peer(), '--policy', policyFile],
      {
        SPIFFE_ENDPOINT_SOCKET: socket.client,
      },
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('policy: DENY (no rule matched: default deny');
    expect(r.stderr).toContain(
      `CALL_DENIED: ${ID.client} may not call delete on ${ID.search}: no rule matched: default deny`,
    );
    expect(seen).toEqual(before);
  });

  it("the agent's inbound policy refuses a caller it does not allow: CALL_DENIED by the callee, exit 1; the handler does not run", async () => {
    const before = seen.search;
    const r = await inproc(['call', ID.search, 'search', '{"query":"x"}', '--peer', peer()], {
      SPIFFE_ENDPOINT_SOCKET: socket.stranger,
    });
    // The code SecureAgent.callAgent and WeaveClient use for it: CALL_DENIED, denied by the callee.
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^CALL_DENIED: the callee refused the call \(deniedBy: callee, audit [^)\s]+\): Permission denied: spiffe:\/\/cli\.weave\/agent\/stranger may not invoke search\n {2}caused by PERMISSION_DENIED$/m,
    );
    expect(seen.search).toBe(before);
  });

  it('any other A2A error from the agent is CALL_FAILED with the wire code, as callAgent reports it; exit 1, nothing run', async () => {
    const before = { ...seen };
    const r = await inproc(['call', ID.search, 'nope', '{}', '--peer', peer()], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /^CALL_FAILED: the callee answered -32602: .*unknown skill "nope"\n {2}caused by INVALID_PARAMS$/m,
    );
    expect(seen.search).toBe(before.search);
    expect(seen.progress).toBe(before.progress);
  });

  it('an agent that is down is unreachable, not an impostor; a plain http server is named as one', async () => {
    const closed = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const down = await inproc(['call', `https://127.0.0.1:${closed}`, 'search', '{}'], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(
      /^AGENT_UNREACHABLE: cannot connect to https:\/\/127\.0\.0\.1:\d+\/: connect ECONNREFUSED/,
    );
    const plain = httpServer((_req, res) => res.end('hello'));
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = plain.address() as AddressInfo;
      const r = await inproc(['call', `https://127.0.0.1:${port}`, 'search', '{}'], {
        SPIFFE_ENDPOINT_SOCKET: socket.client,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^PEER_VERIFICATION_FAILED: https:\/\/127\.0\.0\.1:\d+\/ does not speak TLS/);
    } finally {
      await new Promise((resolve) => plain.close(resolve));
    }
  });

  it('refuses a server that does not prove the expected SPIFFE ID, before any request', async () => {
    const before = { ...seen };
    const r = await inproc(['call', ID.stranger, 'search', '{}', '--peer', `${ID.stranger}=${url}`], {
      SPIFFE_ENDPOINT_SOCKET: socket.client,
    });
    expect(r.code).toBe(1);
    // Refused while fetching its card (the call goes by the card's interfaces): an identity failure, not "unreachable".
    expect(r.stderr.split('\n').slice(1)).toEqual([
      `PEER_VERIFICATION_FAILED: cannot fetch agent card ${url}/.well-known/agent-card.json: ` +
        `peer verification failed: expected ${ID.stranger}, got ${ID.search}: SPIFFE ID mismatch`,
      '',
    ]);
    expect(seen).toEqual(before);
  });

  it('--timeout 3s bounds the whole call against a peer that accepts TLS and never answers', async () => {
    // The search agent's own SVID: the handshake (and the SPIFFE ID check) succeeds, then silence.
    const held = new Set<tls.TLSSocket>();
    const mute = tls.createServer(createMtlsServerOptions(agentIdentity), (s) => {
      held.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const muteUrl = `https://127.0.0.1:${(mute.address() as AddressInfo).port}`;
    try {
      for (const target of [[ID.search, '--peer', `${ID.search}=${muteUrl}`], [muteUrl]]) {
        const t0 = performance.now();
        const r = await inproc(['call', ...target, 'search', '{}', '--timeout', '3s'], {
          SPIFFE_ENDPOINT_SOCKET: socket.client,
        });
        const s = (performance.now() - t0) / 1000;
        expect(r.code).toBe(1);
        expect(r.stderr).toContain('DEADLINE_EXCEEDED');
        // Was 31–33 s: a card fetch with its own 10 s timeout, repeated twice by the channel.
        expect(s).toBeGreaterThanOrEqual(2.9);
        expect(s).toBeLessThan(5.5);
      }
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  });

  it('--config calls as that agent: its socket, peers and policy, and its pinned SPIFFE ID', async () => {
    const file = join(dir, 'client-agent.yaml');
    await writeFile(
      file,
      [
        'name: client',
        `spiffeId: ${ID.client}`,
        `identity: { workloadApi: { socket: "${socket.client}" } }`,
        'authz: { policyFile: policy.yaml }',
        `peers: [{ id: "${ID.search}", url: "${url}" }]`,
        '',
      ].join('\n'),
    );
    const ok = await inproc(['call', ID.search, 'search', '{"query":"cfg"}', '--config', file]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ query: 'cfg', caller: ID.client });
    expect(ok.stderr).toContain('policy: ALLOW by rule client-may-search');
    const before = { ...seen };
    const denied = await inproc(['call', ID.search, 'delete', '{}', '--config', file]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('CALL_DENIED: ');
    // Another workload's socket is not this agent: refused before anything is sent.
    const wrong = await inproc([
      'call',
      ID.search,
      'search',
      '{}',
      '--config',
      file,
      '--socket',
      socket.stranger,
    ]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^IDENTITY_MISMATCH: /);
    expect(seen).toEqual(before);
    // A config the agent would refuse exits 1, as `weave validate` of it does (config-exit.test.ts).
    const bad = await inproc(['call', ID.search, 'search', '{}', '--config', join(dir, 'missing.yaml')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^AGENT_CONFIG_INVALID: /);
  });

  it('usage errors exit 2: bad JSON, unknown peer, http URL, invalid policy file', async () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: socket.client };
    const json = await inproc(['call', ID.search, 'search', '{nope', '--peer', peer()], env);
    expect(json.code).toBe(2);
    expect(json.stderr).toMatch(/^INVALID_JSON: /);
    // A key written twice is refused before anything is sent, not resolved to the last one.
    const sent = seen.requests;
    for (const [text, path] of [
      ['{"query": "a", "query": "b"}', 'query (line 1, column 16)'],
      ['{"query": "a", "filter": {"lang": "en",\n "lang": "fr"}}', 'filter.lang (line 2, column 2)'],
    ] as const) {
      const dup = await inproc(['call', ID.search, 'search', text, '--peer', peer()], env);
      expect(dup.code).toBe(2);
      expect(dup.stderr).toMatch(/^INVALID_JSON: <json> has the key "(query|lang)" twice in one object/);
      expect(dup.stderr).toContain(`at ${path}`);
    }
    expect(seen.requests).toBe(sent);
    const unknown = await inproc(['call', ID.search, 'search', '{}'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(`PEER_UNKNOWN: no URL known for ${ID.search}`);
    const http = await inproc(['call', url.replace('https:', 'http:'), 'search', '{}'], env);
    expect(http.code).toBe(2);
    expect(http.stderr).toMatch(/^INSECURE_URL: /);
    const badPolicy = join(dir, 'bad-policy.yaml');
    await writeFile(badPolicy, 'version: 1\nid: x\ndefault: allow\nrules: []\n');
    const before = seen.requests;
    const policy = await inproc(
      ['call', ID.search, 'search', '{}', '--peer', peer(), '--policy', badPolicy],
      env,
    );
    expect(policy.code).toBe(2);
    expect(policy.stderr).toMatch(/^POLICY_INVALID: /);
    expect(policy.stderr).toContain('default must be "deny"');
    expect(seen.requests).toBe(before);
  });
});

describe('weave authz check', () => {
  it('ALLOW exits 0 and names the rule', async () => {
    const r = await weave(['authz', 'check', policyFile, ID.client, ID.search, 'search']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`ALLOW  ${ID.client} → ${ID.search}  search`);
    expect(r.stdout).toMatch(/rule:\s+client-may-search/);
    expect(r.stdout).toContain('reason:  allowed by rule "client-may-search"');
  });

  it('DENY exits 1 with the reason; --json carries the decision', async () => {
    const r = await inproc(['authz', 'check', policyFile, ID.stranger, ID.search, 'search', '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      decision: 'deny',
      ruleId: null,
      reason: 'no rule matched: default deny',
      policyId: 'client-outbound',
      caller: ID.stranger,
    });
  });

  it('a bad policy file or SPIFFE ID exits 2 with the problem', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(
      bad,
      "version: 1\nid: bad\ndefault: deny\nrules:\n  - id: r\n    effect: allow\n    callers: ['spiffe://Bad.Domain/x']\n    actions: ['*']\n",
    );
    const r = await inproc(['authz', 'check', bad, ID.client, ID.search, 'search']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^POLICY_INVALID: invalid policy .*bad\.yaml: 1 problem/);
    expect(r.stderr).toContain('line 7, rules[0].callers[0]');
    const id = await inproc(['authz', 'check', policyFile, 'not-an-id', ID.search, 'search']);
    expect(id.code).toBe(2);
    expect(id.stderr).toMatch(/^INVALID_SPIFFE_ID: /);
    const missing = await inproc([
      'authz',
      'check',
      join(dir, 'missing.yaml'),
      ID.client,
      ID.search,
      'search',
    ]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^POLICY_UNREADABLE: /);
  });
});

describe('weave validate', () => {
  it('prints OK and a summary of a valid config', async () => {
    const file = join(dir, 'agent.yaml');
    await writeFile(
      file,
      [
        'name: search',
        'description: finds things',
        `spiffeId: ${ID.search}`,
        'server: { port: 8443 }',
        'identity: { workloadApi: { socket: "unix:///run/spire/agent.sock" } }',
        'authz: { policyFile: policy.yaml }',
        `peers: [{ id: "${ID.client}", url: "https://127.0.0.1:9443" }]`,
        '',
      ].join('\n'),
    );
    const r = await weave(['validate', file]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`OK ${file}`);
    expect(r.stdout).toMatch(/agent\s+search 0\.1\.0 — finds things/);
    expect(r.stdout).toMatch(/listens\s+127\.0\.0\.1:8443/);
    expect(r.stdout).toContain('Workload API at unix:///run/spire/agent.sock');
    expect(r.stdout).toContain(`policy file ${policyFile} (policy client-outbound, 1 rule)`);
    expect(r.stdout).toContain(`${ID.client} at https://127.0.0.1:9443`);
    expect(r.stdout).toMatch(/tasks\s+in memory/);
    expect(r.stdout).toMatch(/ops\s+\(none\)/);
  });

  it('says where tasks are kept (and whether the database URL is set) and where the ops listener is', async () => {
    const file = join(dir, 'pg-agent.yaml');
    await writeFile(
      file,
      [
        'name: search',
        'authz: { policyFile: policy.yaml }',
        'store: { postgres: { urlEnv: SEARCH_DB_URL } }',
        'observability: { ops: { port: 9090 } }',
        '',
      ].join('\n'),
    );
    const unset = await weave(['validate', file], { SEARCH_DB_URL: '' });
    expect(unset.code).toBe(0);
    expect(unset.stdout).toMatch(
      /tasks\s+PostgreSQL at \$SEARCH_DB_URL \(NOT set here: start\(\) refuses without it\)/,
    );
    expect(unset.stdout).toMatch(/ops\s+\/health, \/ready, \/metrics on http:\/\/127\.0\.0\.1:9090/);
    const set = await weave(['validate', file], { SEARCH_DB_URL: 'postgres://weave@127.0.0.1/weave' });
    expect(set.stdout).toMatch(/tasks\s+PostgreSQL at \$SEARCH_DB_URL \(set here\)/);
  });

  it('lists every problem and exits 1', async () => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, 'name: Search Agent\nauthz: { policyFile: policy.yaml }\nextra: 1\n');
    const r = await inproc(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^AGENT_CONFIG_INVALID: invalid agent config/);
    expect(r.stderr).toContain('name');
    expect(r.stderr).toContain('"extra"');
  });

  it('refuses a setting written twice (the second would otherwise win) with its key path and line', async () => {
    const file = join(dir, 'twice.json');
    await writeFile(
      file,
      '{\n  "name": "a",\n  "authz": { "policyFile": "policy.yaml" },\n' +
        '  "transport": { "verifyPeer": true, "retries": 1,\n    "verifyPeer": false }\n}\n',
    );
    const r = await inproc(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^AGENT_CONFIG_INVALID: invalid agent config/);
    expect(r.stderr).toContain('transport.verifyPeer (line 5): duplicate key "verifyPeer"');
  });

  it('refuses insecure settings and a broken policy file', async () => {
    const insecure = join(dir, 'insecure.yaml');
    await writeFile(
      insecure,
      'name: a\nauthz: { policyFile: policy.yaml }\ntransport: { verifyPeer: false }\n',
    );
    const r = await inproc(['validate', insecure]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^AGENT_CONFIG_INSECURE: /);
    expect(r.stderr).toContain('peer verification cannot be turned off');
    await writeFile(join(dir, 'broken-policy.yaml'), 'version: 2\n');
    const withBad = join(dir, 'with-bad-policy.yaml');
    await writeFile(withBad, 'name: a\nauthz: { policyFile: broken-policy.yaml }\n');
    const p = await inproc(['validate', withBad]);
    expect(p.code).toBe(2); // a bad policy file is a usage error, as the README says
    expect(p.stderr).toMatch(/^POLICY_INVALID: .*authz\.policyFile/);
  });
});

describe('weave dev', () => {
  it('serves one socket per workload until SIGTERM, then exits 0', async () => {
    const state = await mkdtemp(join(tmpdir(), 'weave-dev-'));
    const child = spawnWeave([
      'dev',
      '--state-dir',
      state,
      '--workload',
      'alpha=spiffe://dev.weave/svc/alpha',
      '--workload',
      'beta=spiffe://dev.weave/svc/beta',
      '--svid-ttl',
      '10m',
    ]);
    try {
      const out = await waitForLine(child, /^ready /m);
      const alpha = /^workload alpha spiffe:\/\/dev\.weave\/svc\/alpha (unix:\/\/\S+)$/m.exec(out)?.[1];
      expect(alpha).toBe(`unix://${join(state, 'sockets', 'alpha.sock')}`);
      expect(out).toMatch(/^workload beta spiffe:\/\/dev\.weave\/svc\/beta unix:\/\/\S+beta\.sock$/m);
      expect(out).toContain(`ready trust-domain=dev.weave state-dir=${state}`);
      const svid = await weave(['svid', '--socket', alpha as string, '--json']);
      expect(svid.code).toBe(0);
      const s = JSON.parse(svid.stdout) as {
        svids: Array<{ spiffeId: string; notBefore: string; notAfter: string }>;
      };
      expect(s.svids[0]?.spiffeId).toBe('spiffe://dev.weave/svc/alpha');
      const ttl = Date.parse(s.svids[0]?.notAfter ?? '') - Date.parse(s.svids[0]?.notBefore ?? '');
      // notBefore is backdated 10 s, as SPIRE does.
      expect(ttl).toBe(10 * 60_000 + 10_000);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      await stopWeave(child);
      await rm(state, { recursive: true, force: true });
    }
  });

  it('a state directory that cannot be made is one clear line (the code once)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-dev-'));
    try {
      const file = join(dir, 'a-file');
      await writeFile(file, 'x');
      const r = await inproc(['dev', '--state-dir', join(file, 'x'), '--workload', 'a=spiffe://dev.weave/a']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^ENOTDIR: not a directory, mkdir /);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stops on a SIGINT sent to the weave process alone (kill -INT), removing its sockets, and exits 0', async () => {
    const state = await mkdtemp(join(tmpdir(), 'weave-dev-'));
    const child = spawnWeave([
      'dev',
      '--state-dir',
      state,
      '--workload',
      'alpha=spiffe://dev.weave/svc/alpha',
    ]);
    try {
      await waitForLine(child, /^ready /m);
      expect(await readdir(join(state, 'sockets'))).toEqual(['alpha.sock']);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(await readdir(join(state, 'sockets'))).toEqual([]);
    } finally {
      await stopWeave(child);
      await rm(state, { recursive: true, force: true });
    }
  });

  // What the identity package's separate `weave-identity dev` offered, now here: an explicit
  // trust domain, a socket directory of its own and the JWT-SVID lifetime.
  it('takes --trust-domain, --socket-dir and --jwt-ttl; each socket serves its workload', async () => {
    const state = await mkdtemp(join(tmpdir(), 'weave-dev-'));
    const sockets = join(state, 'elsewhere');
    const child = spawnWeave([
      'dev',
      '--state-dir',
      state,
      '--trust-domain',
      'dev.weave',
      '--socket-dir',
      sockets,
      '--workload',
      'alpha=spiffe://dev.weave/svc/alpha',
      '--jwt-ttl',
      '90',
    ]);
    try {
      const out = await waitForLine(child, /^ready /m);
      const address = /^workload alpha spiffe:\/\/dev\.weave\/svc\/alpha (unix:\/\/\S+)$/m.exec(out)?.[1];
      expect(address).toBe(`unix://${join(sockets, 'alpha.sock')}`);
      const client = new WorkloadApiClient({ address: address as string });
      try {
        const x509 = await client.fetchX509Svid();
        expect(x509.id.toString()).toBe('spiffe://dev.weave/svc/alpha');
        const jwt = await client.fetchJwtSvid({ audience: 'tests' });
        expect(jwt.id.toString()).toBe('spiffe://dev.weave/svc/alpha');
        const left = jwt.expiresAt.getTime() - Date.now();
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThanOrEqual(91_000);
      } finally {
        client.close();
      }
    } finally {
      await stopWeave(child);
      await rm(state, { recursive: true, force: true });
    }
  });

  it('exits 2 on a bad workload, naming the problem', async () => {
    const state = await mkdtemp(join(tmpdir(), 'weave-dev-'));
    try {
      const noEq = await inproc(['dev', '--state-dir', state, '--workload', 'alpha']);
      expect(noEq.code).toBe(2);
      expect(noEq.stderr).toContain('must be NAME=SPIFFE_ID');
      const mixed = await inproc([
        'dev',
        '--state-dir',
        state,
        '--trust-domain',
        'dev.weave',
        '--workload',
        'a=spiffe://other.weave/a',
      ]);
      expect(mixed.code).toBe(2);
      expect(mixed.stderr).toMatch(/^DEV_WORKLOAD_API_INVALID_OPTIONS: /);
      const missing = await inproc(['dev', '--state-dir', state]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("required option '-w, --workload <name=spiffe-id>' not specified");
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});

describe('weave db', () => {
  // Migrating a real database is tested in interop/postgres-store.test.ts; here, the refusals.
  it('exits 2 without a database URL or with one that is not postgres://', async () => {
    const none = await inproc(['db', 'migrate']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^DATABASE_URL_INVALID: no database: pass --url or set \$WEAVE_DATABASE_URL/);
    const http = await inproc(['db', 'migrate', '--url', 'http://127.0.0.1:5432/x']);
    expect(http.code).toBe(2);
    expect(http.stderr).toContain('must be postgres:// or postgresql://');
    const junk = await inproc(['db', 'status', '--url', 'not a url']);
    expect(junk.code).toBe(2);
    expect(junk.stderr).toMatch(/^DATABASE_URL_INVALID: /);
  });

  it('bounds --timeout as weave call and weave card do (the transport request limit, 1h): 2h is exit 2', async () => {
    for (const sub of ['migrate', 'status']) {
      const over = await inproc([
        'db',
        sub,
        '--url',
        'postgres://weave@127.0.0.1:1/weave',
        '--timeout',
        '2h',
      ]);
      expect(over.code).toBe(2);
      expect(over.stderr).toMatch(/^USAGE: --timeout must be at most 1h, got "2h"/);
    }
    // 1h itself is taken: the command goes on to connect (nothing listens on port 1).
    const limit = await inproc([
      'db',
      'status',
      '--url',
      'postgres://weave@127.0.0.1:1/weave',
      '--timeout',
      '1h',
    ]);
    expect(limit.code).toBe(1);
    expect(limit.stderr).toMatch(/^TASK_STORE_UNAVAILABLE: .*ECONNREFUSED/);
  });

  it("takes libpq's Unix-socket URL (no host before the path), which is no WHATWG URL", async () => {
    // No server listens in `dir`: the command gets as far as connecting, and says the database is away.
    const r = await inproc(['db', 'status', '--url', `postgres://weave:pw@/weave?host=${dir}&port=5432`]);
    expect(r.stderr).not.toContain('DATABASE_URL_INVALID');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^TASK_STORE_UNAVAILABLE: .*ENOENT/);
  });
});

describe('the command tables of the READMEs', () => {
  /** The `weave …` commands `--help` lists, and their subcommands (`authz check`, `db migrate` …). */
  async function commands(path: readonly string[] = []): Promise<string[]> {
    const help = (await inproc([...path, '--help'])).stdout;
    const listed = help.split(/^Commands:$/m)[1] ?? '';
    const names = [...listed.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
    const out: string[] = [];
    for (const n of names) {
      const subs = await commands([...path, n]);
      out.push(...(subs.length > 0 ? subs : [[...path, n].join(' ')]));
    }
    return out;
  }

  it.each(['../../../README.md', '../README.md'])('%s has a row for every command', async (readme) => {
    const text = readFileSync(new URL(readme, import.meta.url), 'utf8');
    const rows = text.split('\n').filter((l) => l.startsWith('| `weave '));
    const all = await commands();
    expect(all).toEqual(expect.arrayContaining(['dev', 'call', 'authz check', 'db migrate', 'db status']));
    for (const c of all) {
      const [top, sub] = c.split(' ');
      // `weave db migrate|status` in one row counts for both.
      const row = rows.find((r) =>
        sub === undefined
          ? r.startsWith(`| \`weave ${top} `) || r.startsWith(`| \`weave ${top}\``)
          : new RegExp(`^\\| \`weave ${top} ([\\w-]+\\\\\\|)*${sub}[ \`\\\\]`).test(r),
      );
      expect(row, `weave ${c} in ${readme}`).toBeDefined();
    }
  });
});
