/**
 * Weave agents on real SPIRE (v1.13.3, built by scripts/infra/spire.sh):
 * two servers on loopback with federated trust domains (bundle endpoints,
 * https_spiffe profile), one agent each (join-token node attestation, unix
 * workload attestor). Workloads are told apart by uid: `search` and
 * `summarizer` run as their own processes under uids 10001 and 10002, the
 * test process (uid 0) is `orchestrator` in weave.test and is entitled to two
 * SVIDs in partner.test (`auditor`, `intruder`), each agent picking the one
 * it is configured as. X.509-SVIDs live 20 s, so they rotate during the test.
 *
 * The registration entries created here are the ones docs/production.md shows.
 */
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallError, SecureAgent } from '@weave/agent';
import { JwtSource, WorkloadApiClient, WorkloadApiError, WorkloadApiIdentityProvider } from '@weave/identity';
import {
  freePort,
  removeDir,
  repoRoot,
  requireComponent,
  startService,
  tempDirFor,
  tsxArgs,
  waitUntil,
  type Service,
} from '../infra.js';
import {
  exchangeBundles,
  startSpireAgent,
  startSpireServer,
  type SpireAgent,
  type SpireServer,
} from '../spire.js';

const spire = requireComponent('spire');

const TD = 'weave.test';
const PTD = 'partner.test';
const ID = {
  orchestrator: `spiffe://${TD}/agent/orchestrator`,
  search: `spiffe://${TD}/agent/search`,
  summarizer: `spiffe://${TD}/agent/summarizer`,
  auditor: `spiffe://${PTD}/agent/auditor`,
  intruder: `spiffe://${PTD}/agent/intruder`,
};
const UID = { search: 10001, summarizer: 10002 };
const SVID_TTL_S = 20;

const POLICY = `
version: 1
id: spire-interop
default: deny
rules:
  - id: orchestrator-uses-search
    effect: allow
    callers: ['${ID.orchestrator}']
    callees: ['${ID.search}', '${ID.summarizer}']
    actions: ['search', 'stats']
  - id: search-uses-summarizer
    effect: allow
    callers: ['${ID.search}']
    callees: ['${ID.summarizer}']
    actions: ['summarize']
  - id: partner-auditor-looks-up
    effect: allow
    callers: ['${ID.auditor}']
    callees: ['${ID.search}']
    actions: ['lookup']
`;
// The partner side's own policy lets both of its agents try: a refusal of the
// intruder must come from the callee.
const PARTNER_POLICY = `
version: 1
id: partner-side
default: deny
rules:
  - id: partners-may-try
    effect: allow
    callers: ['spiffe://${PTD}']
    callees: ['${ID.search}']
    actions: ['lookup']
`;

const Stats = z.object({
  svidUpdates: z.number(),
  lastSvidUpdateAt: z.number(),
  served: z.object({ lookup: z.number(), search: z.number(), summarize: z.number() }),
  uid: z.number(),
  serial: z.string(),
});

describe.skipIf(!spire)('Weave agents on real SPIRE', () => {
  const logger = pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });
  let dir: string;
  let serverA: SpireServer;
  let serverB: SpireServer;
  let agentA: SpireAgent;
  let agentB: SpireAgent;
  const children: Record<string, Service> = {};
  const urls: Record<string, string> = {};
  let orchProvider: WorkloadApiIdentityProvider;
  let orchestrator: SecureAgent;
  const partners: SecureAgent[] = [];
  const orchUpdates: number[] = [];

  async function startWorkload(name: 'search' | 'summarizer', extra: Record<string, unknown>): Promise<void> {
    const cfgFile = join(dir, `${name}.json`);
    await writeFile(
      cfgFile,
      JSON.stringify({
        name,
        spiffeId: ID[name],
        socket: agentA.address,
        policyFile: join(dir, 'policy.yaml'),
        ...extra,
      }),
    );
    await chmod(cfgFile, 0o644);
    const svc = await startService({
      name,
      command: process.execPath,
      args: tsxArgs('interop/spire/workload.ts', cfgFile),
      cwd: repoRoot,
      uid: UID[name],
      gid: UID[name],
      env: { HOME: dir },
      ready: (out) => out.includes('WEAVE_WORKLOAD_READY'),
      readyTimeoutMs: 90_000,
    });
    children[name] = svc;
    const line = svc
      .log()
      .split('\n')
      .find((l) => l.startsWith('WEAVE_WORKLOAD_READY '))!;
    const ready = z
      .object({ url: z.string(), id: z.string() })
      .parse(JSON.parse(line.slice('WEAVE_WORKLOAD_READY '.length)));
    expect(ready.id).toBe(ID[name]);
    urls[name] = ready.url;
  }

  const stats = async (name: 'search' | 'summarizer') =>
    Stats.parse(await orchestrator.callAgent(ID[name], 'stats', {}, { timeoutMs: 20_000 }));

  beforeAll(async () => {
    dir = await tempDirFor('weave-spire-test-');
    await chmod(dir, 0o755);
    const [pA, bA, pB, bB] = [await freePort(), await freePort(), await freePort(), await freePort()];
    [serverA, serverB] = await Promise.all([
      startSpireServer({
        bins: spire!,
        trustDomain: TD,
        port: pA,
        bundleEndpointPort: bA,
        federatesWith: [{ trustDomain: PTD, bundleEndpointPort: bB }],
      }),
      startSpireServer({
        bins: spire!,
        trustDomain: PTD,
        port: pB,
        bundleEndpointPort: bB,
        federatesWith: [{ trustDomain: TD, bundleEndpointPort: bA }],
      }),
    ]);
    exchangeBundles(serverA, serverB);
    [agentA, agentB] = await Promise.all([
      startSpireAgent(spire!, serverA),
      startSpireAgent(spire!, serverB),
    ]);
    const entry = (
      server: SpireServer,
      agent: SpireAgent,
      spiffeId: string,
      uid: number,
      federatesWith: string,
    ) =>
      server.createEntry({
        parentId: agent.agentId,
        spiffeId,
        selectors: [`unix:uid:${uid}`],
        x509SvidTtlSeconds: SVID_TTL_S,
        jwtSvidTtlSeconds: 300,
        federatesWith: [federatesWith],
      });
    entry(serverA, agentA, ID.orchestrator, 0, `spiffe://${PTD}`);
    entry(serverA, agentA, ID.search, UID.search, `spiffe://${PTD}`);
    entry(serverA, agentA, ID.summarizer, UID.summarizer, `spiffe://${PTD}`);
    entry(serverB, agentB, ID.auditor, 0, `spiffe://${TD}`);
    entry(serverB, agentB, ID.intruder, 0, `spiffe://${TD}`);
    await writeFile(join(dir, 'policy.yaml'), POLICY, { mode: 0o644 });
    await writeFile(join(dir, 'partner-policy.yaml'), PARTNER_POLICY, { mode: 0o644 });

    await startWorkload('summarizer', {});
    await startWorkload('search', {
      peers: [{ id: ID.summarizer, url: urls.summarizer }],
      forwardTo: ID.summarizer,
    });

    orchProvider = await WorkloadApiIdentityProvider.create({
      address: agentA.address,
      spiffeId: ID.orchestrator,
      logger,
      readyTimeoutMs: 60_000,
    });
    orchProvider.onUpdate((u) => {
      if (u.reason !== 'bundles') orchUpdates.push(Date.now());
    });
    orchestrator = new SecureAgent({
      config: {
        name: 'orchestrator',
        spiffeId: ID.orchestrator,
        authz: { policyFile: join(dir, 'policy.yaml') },
        peers: [
          { id: ID.search, url: urls.search! },
          { id: ID.summarizer, url: urls.summarizer! },
        ],
      },
      identity: orchProvider,
      logger,
    });
    await orchestrator.start();
  }, 240_000);

  afterAll(async () => {
    for (const p of partners) await p.stop().catch(() => undefined);
    await orchestrator?.stop().catch(() => undefined);
    await orchProvider?.close();
    for (const c of Object.values(children)) await c.stop();
    await agentA?.stop();
    await agentB?.stop();
    await serverA?.stop();
    await serverB?.stop();
    if (dir) await removeDir(dir);
  });

  it('gives each workload process its own SVID, and the agents call each other with them', async () => {
    expect(orchestrator.id.toString()).toBe(ID.orchestrator);
    const out = z
      .object({ q: z.string(), summary: z.object({ text: z.string(), caller: z.string() }) })
      .parse(await orchestrator.callAgent(ID.search, 'search', { q: 'hello spire' }, { timeoutMs: 20_000 }));
    // search (uid 10001) called summarizer (uid 10002) with its own SVID.
    expect(out.summary).toEqual({ text: 'hello sp', caller: ID.search });
    const [s, m] = [await stats('search'), await stats('summarizer')];
    expect(s.uid).toBe(UID.search);
    expect(m.uid).toBe(UID.summarizer);
    // And the SVIDs are SPIRE's: 20 s long (SPIRE backdates notBefore by 10 s against clock skew).
    const svid = orchProvider.getX509Svid();
    expect((svid.expiresAt.getTime() - svid.notBefore.getTime()) / 1000).toBeLessThanOrEqual(
      SVID_TTL_S + 10 + 1,
    );
    expect((svid.expiresAt.getTime() - Date.now()) / 1000).toBeLessThanOrEqual(SVID_TTL_S + 1);
    expect(orchProvider.getX509Bundle(svid.id.trustDomain)).toBeTruthy();
  });

  it('lets a workload entitled to two SVIDs run one agent per SVID, each picking its configured spiffeId', async () => {
    const client = new WorkloadApiClient({ address: agentB.address, logger });
    try {
      await waitUntil(
        'both partner SVIDs',
        async () => {
          try {
            return (await client.fetchX509Context()).svids.length === 2;
          } catch (err) {
            // Until the agent has synced the partner entries, SPIRE answers "no identity issued".
            if (err instanceof WorkloadApiError && err.code === 'WORKLOAD_API_PERMISSION_DENIED')
              return false;
            throw err;
          }
        },
        { timeoutMs: 30_000, intervalMs: 500 },
      );
      const ctx = await client.fetchX509Context();
      expect(ctx.svids.map((s) => s.id.toString()).sort()).toEqual([ID.auditor, ID.intruder]);
    } finally {
      client.close();
    }
    for (const [name, id] of [
      ['auditor', ID.auditor],
      ['intruder', ID.intruder],
    ] as const) {
      const a = new SecureAgent({
        config: {
          name,
          spiffeId: id,
          identity: { workloadApi: { socket: agentB.address } },
          authz: { policyFile: join(dir, 'partner-policy.yaml') },
          peers: [{ id: ID.search, url: urls.search! }],
        },
        logger,
      });
      await a.start();
      partners.push(a);
      expect(a.id.toString()).toBe(id);
    }
  });

  it('allows a federated caller the policy names, and refuses one it does not: the handler does not run', async () => {
    const [auditor, intruder] = partners;
    const before = (await stats('search')).served.lookup;
    const ok = z
      .object({ by: z.string(), caller: z.string() })
      .parse(await auditor!.callAgent(ID.search, 'lookup', { q: 'x' }, { timeoutMs: 20_000 }));
    expect(ok).toEqual({ by: ID.search, caller: ID.auditor });
    const err = (await intruder!
      .callAgent(ID.search, 'lookup', { q: 'y' }, { timeoutMs: 20_000 })
      .catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('CALL_DENIED');
    expect(err.deniedBy).toBe('callee');
    expect((await stats('search')).served.lookup).toBe(before + 1);
  });

  it('fetches a JWT-SVID from SPIRE and validates it against SPIRE’s JWT bundle (and SPIRE agrees)', async () => {
    const source = await JwtSource.create({ address: agentA.address, logger });
    const client = new WorkloadApiClient({ address: agentA.address, logger });
    try {
      const svid = await source.fetchJwtSvid({ audience: 'weave-interop', subject: ID.orchestrator });
      expect(svid.id.toString()).toBe(ID.orchestrator);
      expect(svid.audience).toEqual(['weave-interop']);
      const mine = await source.validateJwtSvid(svid.token, 'weave-interop');
      expect(mine.id.toString()).toBe(ID.orchestrator);
      const theirs = await client.validateJwtSvid(svid.token, 'weave-interop');
      expect(theirs.id.toString()).toBe(ID.orchestrator);
      await expect(source.validateJwtSvid(svid.token, 'someone-else')).rejects.toMatchObject({
        code: expect.stringMatching(/AUDIENCE/),
      });
      const [h, p, sig] = svid.token.split('.');
      const forged = `${h}.${p}.${sig!.slice(0, -4)}${sig!.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
      await expect(source.validateJwtSvid(forged, 'weave-interop')).rejects.toBeTruthy();
      await expect(client.validateJwtSvid(forged, 'weave-interop')).rejects.toMatchObject({
        code: 'WORKLOAD_API_INVALID_ARGUMENT',
      });
    } finally {
      client.close();
      await source.close();
    }
  });

  it('keeps every call succeeding under steady load across SVID rotations and a SPIRE agent restart', async () => {
    const s0 = await stats('search');
    const m0 = await stats('summarizer');
    const orch0 = orchUpdates.length;
    let ok = 0;
    const failures: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          await orchestrator.callAgent(ID.search, 'search', { q: 'load' }, { timeoutMs: 20_000 });
          ok++;
        } catch (e) {
          failures.push(`${(e as CallError).code}: ${(e as Error).message}`);
        }
      }
    };
    const workers = Array.from({ length: 4 }, () => worker());
    // Long enough for every SVID (20 s) to rotate at least twice.
    await new Promise((r) => setTimeout(r, 2.2 * SVID_TTL_S * 1000));

    // The SPIRE agent goes away and comes back while the load goes on.
    const restartAt = Date.now();
    await agentA.service.restart();
    const agentBackMs = Date.now() - restartAt;
    await waitUntil(
      'every workload to get an SVID from the restarted SPIRE agent',
      async () =>
        orchUpdates.some((t) => t > restartAt) &&
        (await stats('search')).lastSvidUpdateAt > restartAt &&
        (await stats('summarizer')).lastSvidUpdateAt > restartAt,
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const recoveredMs = Date.now() - restartAt;
    stop = true;
    await Promise.all(workers);

    const s1 = await stats('search');
    const m1 = await stats('summarizer');
    const rotations = {
      orchestrator: orchUpdates.length - orch0,
      search: s1.svidUpdates - s0.svidUpdates,
      summarizer: m1.svidUpdates - m0.svidUpdates,
    };
    console.log(
      `[spire] calls ok=${ok} failed=${failures.length}; SVID rotations seen: orchestrator=${rotations.orchestrator} search=${rotations.search} summarizer=${rotations.summarizer}; ` +
        `SPIRE agent restart: serving again after ${agentBackMs} ms, every workload had a fresh SVID ${recoveredMs} ms after the restart began`,
    );
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(20);
    expect(rotations.orchestrator).toBeGreaterThanOrEqual(2);
    expect(rotations.search).toBeGreaterThanOrEqual(2);
    expect(rotations.summarizer).toBeGreaterThanOrEqual(2);
    expect(s1.serial).not.toBe(s0.serial);
  });
});
