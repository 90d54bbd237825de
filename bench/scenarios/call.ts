// A full `callAgent` round trip — SecureAgent → SecureAgent: outbound policy
// check, pooled SPIFFE-verified channel, A2A v1.0 SendMessage on JSON-RPC,
// server mTLS + inbound policy check, capability with zod validation, task +
// artifact back, typed result — against bare node https mTLS (undici client,
// same certificates) and the official @a2a-js/sdk server (express,
// DefaultRequestHandler, in-memory store) on the same mTLS, driven by the same
// undici load. Three scenarios share this:
//   call     small input, 32 in flight
//   payload  inputs of 100 B, 10 KB, 100 KB and 1 MB, 8 in flight
//   pg       the same call with PostgreSQL task stores (Weave's, the SDK's),
//            and what two bare SQL statements per call cost the database
import { pino } from 'pino';
import { z } from 'zod';
import { LocalPolicyEnforcer } from '@weave/authz';
import { InMemoryTaskStore, type TaskStore } from '@weave/a2a';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { SecureAgent } from '@weave/agent';
import { createMtlsServerOptions } from '@weave/transport';
import { startSdkEchoServer } from '@weave/test-support/a2a-sdk';
import { dbCpuNote, startBenchPostgres } from '../lib/postgres.js';
import { ID, bareTls, sendMessageBody, silent, startBareEcho, startLeastA2A, type Env } from '../lib/env.js';
import {
  find,
  figureRow,
  inRounds,
  ratioCheck,
  rowOf,
  type Check,
  type Ctx,
  type Row,
  type Scenario,
} from '../lib/harness.js';
import { runLoad, type LoadResult, type LoadgenJob } from '../lib/load.js';
import { withServers } from '../lib/servers.js';

/** The called agent: `echo` answers `echo: <text>`; bodies up to 4 MiB (the payload scenario's 1 MB input). */
async function startEchoAgent(env: Env, workload: 'server' | 'serverPg', taskStore?: TaskStore) {
  let decisions = 0;
  const enforcer = await LocalPolicyEnforcer.fromFile(env.policyFile, {
    watch: false,
    logger: silent,
    audit: { record: () => void decisions++ },
  });
  const agent = new SecureAgent({
    config: {
      name: 'server',
      identity: { workloadApi: { socket: env.dev.address(workload) } },
      authz: { policyFile: env.policyFile },
      logging: { level: 'warn' },
      server: { maxConcurrentTasks: 1024, bodyLimit: 4 * 1024 * 1024 },
    },
    enforcer,
    logger: pino({ level: 'warn' }),
    ...(taskStore ? { taskStore } : {}),
  }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text: `echo: ${text}` }));
  await agent.start();
  return {
    url: agent.url,
    decisions: () => decisions,
    close: async () => {
      await agent.stop({ drainTimeoutMs: 1000 });
      await enforcer.close();
    },
  };
}

interface Targets {
  weave?: { url: string; decisions(): number };
  bareUrl?: string;
  /** The least secure A2A server (`startLeastA2A`), called by the least secure A2A caller. */
  least?: { url: string; decisions(): number };
  sdkUrl?: string;
}

/**
 * Runs `job` against `server`, which counts its policy decisions, and fails
 * unless both policy checks of every call ran: the caller's and the callee's
 * audit counts.
 */
async function runAudited(
  server: { decisions(): number },
  job: LoadgenJob,
  label: string,
): Promise<LoadResult> {
  const before = server.decisions();
  const r = await runLoad(job);
  const callee = server.decisions() - before;
  if (r.decisions < r.calls || callee < r.calls) {
    throw new Error(
      `${label}: policy decisions missing: caller ${r.decisions}, callee ${callee}, calls ${r.calls}`,
    );
  }
  return r;
}

/** Runs `callAgent` against `weave` with `text` as input: its row, compared with the rows labelled `vs`. */
async function weaveRow(
  ctx: Ctx,
  scenario: string,
  weave: NonNullable<Targets['weave']>,
  text: string,
  concurrency: number,
  label: string,
  vs: string[],
): Promise<Row> {
  const { env } = ctx;
  const r = await runAudited(
    weave,
    {
      kind: 'agent',
      concurrency,
      warmupMs: ctx.warmupMs,
      durationMs: ctx.durationMs,
      socket: env.dev.address('client'),
      policyFile: env.policyFile,
      target: ID.server,
      targetUrl: weave.url,
      capability: 'echo',
      input: { text },
      expect: 'echo: ',
      expectLength: text.length + 6,
    },
    label,
  );
  return rowOf(scenario, label, 'req/s', r, { vs });
}

/**
 * Runs weave, bare and sdk (those given) with `text` as input, one after the
 * other, and returns their rows; the weave row is compared with the others.
 * With `--rounds N` the whole sequence runs N times and each case's row is
 * the median of its N (see {@link inRounds}).
 */
function cases(...args: Parameters<typeof oneRound>): Promise<Row[]> {
  return inRounds(args[0], () => oneRound(...args));
}

/** One run of each case of {@link cases}, one after the other. */
async function oneRound(
  ctx: Ctx,
  scenario: string,
  t: Targets,
  text: string,
  concurrency: number,
  labels: {
    weave: string;
    bare: string;
    sdk: string;
    bareJson?: string;
    least?: string;
    /** The least secure A2A caller calling Weave's server: the two servers compared with one caller. */
    leastToWeave?: string;
  },
  sdkMayFail = false,
): Promise<Row[]> {
  const { env } = ctx;
  const timing = { concurrency, warmupMs: ctx.warmupMs, durationMs: ctx.durationMs };
  const body = sendMessageBody(text);
  const rows: Row[] = [];
  if (t.weave) {
    const vs = [
      t.bareUrl ? labels.bare : '',
      t.bareUrl && labels.bareJson ? labels.bareJson : '',
      t.least && labels.least ? labels.least : '',
      t.sdkUrl ? labels.sdk : '',
    ].filter((x) => x);
    rows.push(await weaveRow(ctx, scenario, t.weave, text, concurrency, labels.weave, vs));
  }
  if (t.bareUrl) {
    const bareJob: LoadgenJob = {
      kind: 'http',
      ...timing,
      url: t.bareUrl,
      body,
      expect: ['"echo"'],
      svid: env.clientPem,
      expectPeer: ID.bare,
    };
    rows.push(rowOf(scenario, labels.bare, 'req/s', await runLoad(bareJob)));
    if (labels.bareJson) {
      // The same echo with a client that encodes each request and parses each answer, as
      // Weave's client (and any JSON-RPC client) must; the bare client above does neither.
      const bareJson = await runLoad({ ...bareJob, jsonClient: true });
      rows.push(rowOf(scenario, labels.bareJson, 'req/s', bareJson));
    }
  }
  if (t.least && labels.least) {
    // The least secure A2A caller against `server` (at `url`, whose SPIFFE ID is `peer`).
    const leastCaller = async (server: { decisions(): number }, url: string, peer: string, label: string) =>
      runAudited(
        server,
        { kind: 'least-a2a', ...timing, url, text, svid: env.clientPem, expectPeer: peer },
        label,
      );
    // What any secure A2A call costs at least, over the bare row's transport: the floor
    // between bare (no A2A, no policy) and Weave (see startLeastA2A).
    const least = await leastCaller(t.least, t.least.url, ID.bare, labels.least);
    rows.push(rowOf(scenario, labels.least, 'req/s', least, { vs: [labels.bare] }));
    if (t.weave && labels.leastToWeave) {
      // The same caller against Weave's server: what Weave's server alone costs above the
      // floor's (the srv column), and the rate when only the server differs.
      const cross = await leastCaller(t.weave, t.weave.url, ID.server, labels.leastToWeave);
      rows.push(rowOf(scenario, labels.leastToWeave, 'req/s', cross, { vs: [labels.least] }));
    }
  }
  if (t.sdkUrl) {
    const sdk: LoadResult = await runLoad({
      kind: 'http',
      ...timing,
      url: t.sdkUrl,
      body,
      expect: ['"result"', 'TASK_STATE_COMPLETED'],
      svid: env.clientPem,
      expectPeer: ID.sdk,
    });
    rows.push(rowOf(scenario, labels.sdk, 'req/s', sdk, sdkMayFail ? { mayFail: true } : {}));
  }
  return rows;
}

/**
 * The called agent and both baselines (bare echo, the SDK), as `withServers`
 * starts them; `maxTasks` bounds the agent's in-memory task store.
 */
const echoServers = (env: Env, maxTasks?: number) => ({
  server: () =>
    startEchoAgent(
      env,
      'server',
      maxTasks === undefined ? undefined : new InMemoryTaskStore({ maxTasks, maxTasksPerOwner: maxTasks }),
    ),
  bare: async () => startBareEcho(bareTls(await env.identity('bare'))),
  least: async () =>
    startLeastA2A(bareTls(await env.identity('bare')), {
      allowedCallers: [ID.client],
      ...(maxTasks === undefined ? {} : { maxTasks }),
    }),
  sdk: async () => startSdkEchoServer(createMtlsServerOptions(await env.identity('sdk'))),
});

export const call: Scenario = {
  name: 'call',
  title: 'callAgent (JSON-RPC, 32 in flight unless --in-flight, small input) vs bare mTLS vs @a2a-js/sdk',
  async run(ctx) {
    const inFlight = ctx.inFlight ?? 32;
    return withServers(echoServers(ctx.env, ctx.maxTasks), async ({ server, bare, least, sdk }) => {
      const labels = {
        weave: 'weave callAgent',
        bare: 'bare',
        least: 'least A2A',
        leastToWeave: 'least A2A caller, weave server',
        sdk: 'sdk',
      };
      const rows = await cases(
        ctx,
        'call',
        { weave: server, bareUrl: bare.url, least, sdkUrl: sdk.url },
        'hello',
        inFlight,
        labels,
      );
      // The targets are set at 32 in flight; at another load they are printed for comparison, marked so.
      const at = inFlight === 32 ? '' : ` (at ${inFlight} in flight; the target is set at 32)`;
      const checks: Check[] = [
        ratioCheck('call', rows, 'weave callAgent', 'bare', 'rate', { min: 0.75 }, `req/s vs bare${at}`),
        ratioCheck('call', rows, 'weave callAgent', 'bare', 'cpu', { max: 1.4 }, `CPU per call vs bare${at}`),
        ratioCheck('call', rows, 'weave callAgent', 'bare', 'p99', { max: 1.5 }, `p99 vs bare${at}`),
        ratioCheck('call', rows, 'weave callAgent', 'sdk', 'rate', { min: 5 }, `req/s vs sdk${at}`),
      ];
      return { rows, checks };
    });
  },
};

export const payload: Scenario = {
  name: 'payload',
  title:
    'callAgent with inputs of 100 B, 10 KB, 100 KB, 1 MB vs bare mTLS JSON echo vs @a2a-js/sdk, 8 in flight',
  async run(ctx) {
    const { sdk: startSdk, ...others } = echoServers(ctx.env, ctx.maxTasks);
    return withServers(others, async ({ server, bare, least }) => {
      const rows: Row[] = [];
      const checks: Check[] = [];
      const sizes = ctx.smoke ? [100, 102_400] : [100, 10_240, 102_400, 1_048_576];
      for (const size of sizes) {
        const name = size >= 1_048_576 ? '1 MB' : size >= 1024 ? `${size / 1024} KB` : `${size} B`;
        const labels = {
          weave: `weave ${name}`,
          bare: `bare ${name}`,
          sdk: `sdk ${name}`,
          least: `least A2A ${name}`,
          // Where the CPU target applies, also the bare echo with a JSON client: the floor of the
          // client's share (encoding the request, parsing the answer) that the bare client skips.
          ...(size >= 102_400 ? { bareJson: `bare ${name}, JSON client` } : {}),
        };
        // The SDK's express body parser has its own limit: a refusal there is a finding, not a harness failure.
        // A new SDK server per size and round: its store keeps every task it ever ran, in this
        // process, and hundreds of megabytes of them would burden the garbage collection of every
        // row after it.
        rows.push(
          ...(await inRounds(ctx, () =>
            withServers({ sdk: startSdk }, ({ sdk }) =>
              oneRound(
                ctx,
                'payload',
                { weave: server, bareUrl: bare.url, least, sdkUrl: sdk.url },
                'x'.repeat(size),
                8,
                labels,
                true,
              ),
            ),
          )),
        );
        if (size >= 102_400) {
          checks.push(
            ratioCheck(
              'payload',
              rows,
              labels.weave,
              labels.bare,
              'cpu',
              { max: 1.5 },
              `CPU per call vs bare, ${name}`,
            ),
          );
        }
        const s = find(rows, labels.sdk);
        checks.push(
          s.rate === null
            ? {
                scenario: 'payload',
                target: `req/s vs sdk, ${name}`,
                met: false,
                detail: `the SDK answered none (${s.firstError ?? 'no answer'})`,
              }
            : ratioCheck(
                'payload',
                rows,
                labels.weave,
                labels.sdk,
                'rate',
                { min: 5 },
                `req/s vs sdk, ${name}`,
              ),
        );
      }
      return { rows, checks };
    });
  },
};

export const pg: Scenario = {
  name: 'pg',
  title:
    'callAgent with PostgresTaskStore vs the same on the in-memory store vs @a2a-js/sdk DatabaseTaskStore',
  async run(all) {
    // One round: the database's CPU per call is read around each load (--rounds is for call and payload).
    const ctx = { ...all, rounds: 1 };
    const db = await startBenchPostgres();
    if (!db) {
      // interop/infra.ts has already said so loudly (and thrown under CI=true).
      ctx.log('pg: SKIPPED — PostgreSQL is not installed here (scripts/infra/setup.sh installs it)');
      return { rows: [] };
    }
    const server = await startEchoAgent(ctx.env, 'server');
    const serverPg = await startEchoAgent(
      ctx.env,
      'serverPg',
      new PostgresTaskStore({ pool: db.pool('weave') }),
    );
    const serverLeast = await startEchoAgent(ctx.env, 'serverPg', await db.leastStore());
    const sdkPg = await startSdkEchoServer(
      createMtlsServerOptions(await ctx.env.identity('sdk')),
      db.sdkStore,
    );
    try {
      const labels = { weave: 'weave callAgent, PostgreSQL', bare: '', sdk: 'sdk DatabaseTaskStore' };
      // A database in service has been analyzed: autovacuum's first ANALYZE of a new table comes
      // a minute or more after it fills (autovacuum_naptime), longer than this scenario runs, and
      // until then the plans every connection caches for the stores' prepared statements are
      // those of an empty table (a sequential scan of the task rows on every write, for both
      // stores). Every store takes a short load first, then both databases are analyzed.
      const warm = { ...ctx, warmupMs: 0, durationMs: ctx.smoke ? 200 : 1500 };
      await cases(warm, 'pg', { weave: serverPg, sdkUrl: sdkPg.url }, 'hello', 32, labels);
      await cases(warm, 'pg', { weave: serverLeast }, 'hello', 32, labels);
      await db.analyze();
      const before = { weave: await db.usage('weave'), sdk: await db.usage('sdk') };
      const rows = await cases(ctx, 'pg', { weave: serverPg, sdkUrl: sdkPg.url }, 'hello', 32, labels);
      // The database's own CPU per call (warm-up included; each call stores one task), beside
      // the server's: where the PostgreSQL rows' time goes.
      for (const [row, which] of [
        [rows[0], 'weave'],
        [rows[1], 'sdk'],
      ] as const) {
        const note = dbCpuNote(before[which], await db.usage(which));
        if (row && note) row.note = note;
      }
      const mem = await cases(ctx, 'pg', { weave: server }, 'hello', 32, {
        ...labels,
        weave: 'weave callAgent, in memory',
      });
      // The ceiling of a durable store here: the same call on the in-memory store plus only the
      // two writes no durable store can skip (see LeastDurableStore), batched as Weave's are.
      const least = 'weave callAgent, in memory + least durable writes';
      const leastBefore = await db.usage('least');
      const [leastRow] = await cases(ctx, 'pg', { weave: serverLeast }, 'hello', 32, {
        ...labels,
        weave: least,
      });
      const leastNote = dbCpuNote(leastBefore, await db.usage('least'));
      rows[0]!.vs = ['weave callAgent, in memory', least, 'sdk DatabaseTaskStore'];
      if (leastRow) {
        leastRow.vs = ['weave callAgent, in memory'];
        if (leastNote) leastRow.note = leastNote;
        rows.push(leastRow);
      }
      rows.push(...mem);
      // The floor: what two bare statements per call (a task row written before it runs and
      // again before the answer, ~700 bytes of JSON each) cost this database, beside what a
      // whole in-memory call costs Weave's two processes. On a machine where the database
      // shares the cores, no store that writes a task twice per call can beat this.
      const floor = await db.floor(ctx.smoke ? 500 : 5000, 32, 700);
      if (floor) {
        rows.push(
          figureRow('pg', 'bare SQL: INSERT + UPDATE per call', 'req/s', floor.rate, {
            note: `db CPU/call ${floor.dbCpuUs.toFixed(0)} us`,
          }),
        );
      }
      return {
        rows,
        checks: [
          ratioCheck(
            'pg',
            rows,
            'weave callAgent, PostgreSQL',
            'weave callAgent, in memory',
            'rate',
            { min: 0.5 },
            'req/s vs in memory',
          ),
          ratioCheck(
            'pg',
            rows,
            'weave callAgent, PostgreSQL',
            'sdk DatabaseTaskStore',
            'rate',
            { min: 3 },
            'req/s vs sdk on PostgreSQL',
          ),
        ],
      };
    } finally {
      await server.close();
      await serverPg.close();
      await serverLeast.close();
      await sdkPg.close();
      await db.stop();
    }
  },
};
