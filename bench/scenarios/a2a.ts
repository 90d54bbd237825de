// The A2A layer without the agent layer: the Weave A2A server (fastify +
// mtlsAuth + A2AServer, and A2AGrpcServer on the same handler; a
// LocalPolicyEnforcer decision on every call) against the official
// @a2a-js/sdk server doing the same work, same mTLS, same run.
//   bindings   SendMessage on JSON-RPC, HTTP+JSON and gRPC, 32 in flight
//   stream     one task emitting 10 000 (and 100 000) artifact chunks to a
//              streaming caller: Weave's A2AClient vs the SDK server + client
//   artifacts  the server's CPU per event as one task's artifact grows (first
//              vs last 1 000 events), in-process, vs status events
import type { AddressInfo } from 'node:net';
import { TaskState } from '@a2a-js/sdk';
import type { AgentExecutor, ExecutionEventBus, RequestContext } from '@a2a-js/sdk/server';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { createMtlsServerOptions } from '@weave/transport';
import { createMtlsServer } from '@weave/transport/server';
import { A2AGrpcServer, A2AServer, TaskManager, type Artifact } from '@weave/a2a';
import {
  sdkStatusUpdate,
  sdkSubmittedTask,
  sdkTextArtifact,
  sdkUserText,
  startSdkEchoGrpcServer,
  startSdkEchoServer,
} from '@weave/test-support/a2a-sdk';
import {
  ID,
  TD,
  sendMessageBody,
  silent,
  startBareGrpcEcho,
  startBareH2GrpcEcho,
  type Env,
} from '../lib/env.js';
import { load1, ratioCheck, rowOf, type Check, type Row, type Scenario } from '../lib/harness.js';
import { withServers } from '../lib/servers.js';
import { runLoad, type LoadgenJob } from '../lib/load.js';

/** The SDK's executor yields to the event loop every this many events, so its writer drains while it produces. */
const YIELD_EVERY = 256;
const tick = () => new Promise<void>((r) => setImmediate(r));

/** The Weave A2A echo/stream agent on JSON-RPC + HTTP+JSON (fastify) and gRPC. */
async function startWeaveA2A(env: Env) {
  let decisions = 0;
  const enforcer = await LocalPolicyEnforcer.fromFile(env.policyFile, {
    watch: false,
    logger: silent,
    audit: { record: () => void decisions++ },
  });
  const identity = await env.identity('a2a');
  const a2a = new A2AServer({
    card: { name: 'weave bench', description: 'echo and stream', version: '1.0.0' },
    selfId: identity.getX509Svid().id,
    enforcer,
  });
  a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: 'echo', tags: [] }, (ctx) => {
    return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
  });
  // `stream`: N chunks appended to one artifact (the path that once copied the parts list per chunk).
  // The task waits for its reader (flow control) after each chunk, so no reader is ever cut,
  // however far ahead the task could run: 100 000 chunks are far more than a server holds for one.
  a2a.registerTaskHandler(
    { id: 'stream', name: 'Stream', description: 'N chunks', tags: [] },
    async (ctx) => {
      const n = Number(ctx.message.parts[0]?.text ?? 0);
      ctx.publishStatus('TASK_STATE_WORKING');
      for (let i = 0; i < n; i++) {
        ctx.publishArtifact(
          { artifactId: 'out', parts: [{ text: `chunk ${i}` }] },
          { append: i > 0, lastChunk: i === n - 1 },
        );
        await ctx.drained();
      }
      return undefined;
    },
  );
  const app = createMtlsServer({ identity, authorize: authorizeMemberOf(TD) });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const grpc = new A2AGrpcServer({ handler: a2a.handler, identity, authorize: authorizeMemberOf(TD) });
  const grpcTarget = (await grpc.listen()).url;
  return {
    url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/`,
    grpcTarget,
    decisions: () => decisions,
    async close() {
      await grpc.close(100);
      await a2a.close();
      await app.close();
      await enforcer.close();
    },
  };
}

/** The SDK's `stream` skill: the same N chunks appended to one artifact, with the same yields. */
class SdkStreamExecutor implements AgentExecutor {
  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const n = Number(sdkUserText(rc));
    bus.publish(sdkSubmittedTask(rc));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_WORKING));
    for (let i = 0; i < n; i++) {
      bus.publish(sdkTextArtifact(rc, 'out', `chunk ${i}`, { append: i > 0, lastChunk: i === n - 1 }));
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await tick();
    }
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_COMPLETED));
    bus.finished();
  }
  async cancelTask(): Promise<void> {}
}

const BINDINGS = ['JSON-RPC', 'HTTP+JSON', 'gRPC'] as const;
type Binding = (typeof BINDINGS)[number];
/** The timing part of a load job (time-boxed or a number of calls). */
type Timing = Pick<LoadgenJob, 'concurrency' | 'warmupMs' | 'durationMs' | 'calls' | 'warmupCalls'>;

export const bindings: Scenario = {
  name: 'bindings',
  title: 'SendMessage per binding (JSON-RPC, HTTP+JSON, gRPC): Weave A2A server vs @a2a-js/sdk, 32 in flight',
  async run(ctx) {
    const { env } = ctx;
    const sdkId = await env.identity('sdk');
    const sdkPem = sdkId.getX509Svid().toPem();
    const start = {
      weave: () => startWeaveA2A(env),
      sdkHttp: () => startSdkEchoServer(createMtlsServerOptions(sdkId)),
      sdkGrpc: () =>
        startSdkEchoGrpcServer({ ca: env.clientPem.ca, cert: sdkPem.certChain, key: sdkPem.privateKey }),
      // The floor of any A2A server on grpc-js (see startBareGrpcEcho); it answers as the SDK's identity.
      bareGrpc: () =>
        startBareGrpcEcho({ ca: env.clientPem.ca, cert: sdkPem.certChain, key: sdkPem.privateKey }),
      // The floor of any gRPC server in Node (see startBareH2GrpcEcho), also as the SDK's identity.
      bareH2: () =>
        startBareH2GrpcEcho({ ca: env.clientPem.ca, cert: sdkPem.certChain, key: sdkPem.privateKey }),
    };
    const body = sendMessageBody('hello');
    const params = (JSON.parse(body) as { params: Record<string, unknown> }).params;
    const rows: Row[] = [];
    const checks: Check[] = [];
    return withServers(start, async ({ weave, sdkHttp, sdkGrpc, bareGrpc, bareH2 }) => {
      type Side = 'weave' | 'sdk' | 'bare' | 'bare h2';
      const jobFor = (binding: Binding, side: Side, timing: Timing): LoadgenJob => {
        const expectPeer = side === 'weave' ? ID.a2a : ID.sdk;
        const common = { ...timing, svid: env.clientPem, expectPeer };
        if (binding === 'gRPC') {
          return {
            kind: 'grpc',
            ...common,
            target: {
              weave: weave.grpcTarget,
              sdk: sdkGrpc.target,
              bare: bareGrpc.target,
              'bare h2': bareH2.target,
            }[side],
            request: params,
          };
        }
        if (binding === 'JSON-RPC') {
          const url = side === 'weave' ? weave.url : sdkHttp.url;
          return { kind: 'http', ...common, url, body, expect: ['"result"', 'TASK_STATE_COMPLETED'] };
        }
        const base = side === 'weave' ? weave.url.replace(/\/$/, '') : sdkHttp.restUrl;
        return {
          kind: 'http',
          ...common,
          url: `${base}/message:send`,
          body: JSON.stringify(params),
          expect: ['TASK_STATE_COMPLETED'],
        };
      };
      // Every server serves every binding before anything is measured. They all
      // live in this process, so without this the first row (Weave JSON-RPC)
      // paid the JIT warm-up of the code they share (TLS, node's http, the
      // request handler) inside its window and the rows after it did not: its
      // CPU per call came out above Weave's HTTP+JSON in every run, for no
      // reason of its own.
      const warm = { concurrency: 32, warmupMs: 0, durationMs: 0, calls: ctx.smoke ? 50 : 500 };
      // gRPC has two more rows: bare grpc-js, the floor both servers stand on, and
      // bare gRPC on node:http2, the floor of any gRPC server in Node.
      const sidesOf = (binding: Binding): Side[] =>
        binding === 'gRPC' ? ['weave', 'sdk', 'bare', 'bare h2'] : ['weave', 'sdk'];
      for (const binding of BINDINGS) {
        for (const side of sidesOf(binding)) await runLoad(jobFor(binding, side, warm));
      }
      const timing = { concurrency: 32, warmupMs: ctx.warmupMs, durationMs: ctx.durationMs };
      for (const binding of BINDINGS) {
        for (const side of sidesOf(binding)) {
          const before = weave.decisions();
          const r = await runLoad(jobFor(binding, side, timing));
          if (side === 'weave' && weave.decisions() - before < r.calls)
            throw new Error(`${binding}: policy decisions missing`);
          rows.push(
            rowOf(
              'bindings',
              `${side} ${binding}`,
              'req/s',
              r,
              side === 'weave'
                ? {
                    vs:
                      binding === 'gRPC'
                        ? [`sdk ${binding}`, `bare ${binding}`, `bare h2 ${binding}`]
                        : [`sdk ${binding}`],
                  }
                : side.startsWith('bare')
                  ? { vs: [`sdk ${binding}`] }
                  : {},
            ),
          );
        }
        checks.push(
          ratioCheck(
            'bindings',
            rows,
            `weave ${binding}`,
            `sdk ${binding}`,
            'rate',
            { min: 5 },
            `req/s vs sdk, ${binding}`,
          ),
        );
      }
      return { rows, checks };
    });
  },
};

export const stream: Scenario = {
  name: 'stream',
  title: 'one task streaming N artifact chunks: Weave server + A2AClient vs @a2a-js/sdk server + client',
  async run(ctx) {
    const { env } = ctx;
    const weave = await startWeaveA2A(env);
    const sdk = await startSdkEchoServer(
      createMtlsServerOptions(await env.identity('sdk')),
      undefined,
      new SdkStreamExecutor(),
    );
    const rows: Row[] = [];
    const checks: Check[] = [];
    try {
      // The SDK server's cost per event grows with the task (its store copies the task on every
      // event: 2 000 events took minutes on a loaded machine), so it is measured at 1 000 events;
      // Weave at 1 000, 10 000 and 100 000, and its CPU per event must stay flat in N.
      const sizes = ctx.smoke ? [500] : [1_000, 10_000, 100_000];
      const sdkSize = sizes[0]!;
      const weaveRow = (n: number) => `weave ${n} events`;
      for (const events of sizes) {
        // A warm-up stream of the same size first (JIT), except for the longest, where it is noise.
        const timing = {
          concurrency: 1,
          warmupMs: 0,
          durationMs: 0,
          calls: 1,
          warmupCalls: events > 10_000 ? 0 : 1,
        };
        const w = await runLoad({
          kind: 'stream-weave',
          ...timing,
          socket: env.dev.address('client'),
          url: weave.url,
          events,
          expectPeer: ID.a2a,
        });
        rows.push(rowOf('stream', weaveRow(events), 'events/s', w, { vs: [`sdk ${sdkSize} events`] }));
        if (events !== sdkSize) continue;
        const s = await runLoad({
          kind: 'stream-sdk',
          ...timing,
          url: sdk.url,
          events,
          svid: env.clientPem,
          expectPeer: ID.sdk,
        });
        rows.push(rowOf('stream', `sdk ${events} events`, 'events/s', s));
        checks.push(
          ratioCheck(
            'stream',
            rows,
            weaveRow(events),
            `sdk ${events} events`,
            'rate',
            { min: 5 },
            `events/s vs sdk, ${events}`,
          ),
        );
      }
      if (sizes.length > 1) {
        const small = sizes[1]!;
        const big = sizes.at(-1)!;
        checks.push(
          ratioCheck(
            'stream',
            rows,
            weaveRow(big),
            weaveRow(small),
            'cpu',
            { max: 1.5 },
            `weave CPU per event flat in N (${big} vs ${small})`,
          ),
        );
      }
      return { rows, checks };
    } finally {
      await weave.close();
      await sdk.close();
    }
  },
};

const WINDOW = 1000;
const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

/** Feeds one task N events of `kind`; CPU per event over the first and the last WINDOW events. */
async function feed(
  kind: 'append' | 'new-id' | 'status',
  n: number,
): Promise<{ first: number; last: number; total: number }> {
  const m = new TaskManager();
  const rec = await m.create({
    owner: `spiffe://${TD}/caller`,
    skill: 'stream',
    message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
  });
  const id = rec.task.id;
  let bytes = 0;
  // One subscriber that serialises every event, as the SSE writer does.
  m.subscribe(id, (e) => {
    bytes += JSON.stringify(e.event).length;
  });
  m.setStatus(id, 'TASK_STATE_WORKING');
  let first = 0;
  const start = cpuNow();
  let t0 = start;
  for (let i = 0; i < n; i++) {
    if (i === WINDOW) first = (cpuNow() - t0) / WINDOW;
    if (i === n - WINDOW) t0 = cpuNow();
    if (kind === 'status') {
      m.setStatus(id, 'TASK_STATE_WORKING', {
        messageId: `s${i}`,
        role: 'ROLE_AGENT',
        parts: [{ text: `${i}` }],
      });
    } else {
      const artifact: Artifact = {
        artifactId: kind === 'append' ? 'a' : `a${i}`,
        parts: [{ text: `chunk ${i}` }],
      };
      m.addArtifact(id, artifact, kind === 'append' ? { append: i > 0, lastChunk: i === n - 1 } : {});
    }
  }
  const end = cpuNow();
  const last = (end - t0) / WINDOW;
  m.setStatus(id, 'TASK_STATE_COMPLETED');
  const task = (await m.get(id))!.task;
  const got =
    kind === 'append'
      ? (task.artifacts?.[0]?.parts.length ?? 0)
      : kind === 'new-id'
        ? (task.artifacts?.length ?? 0)
        : n;
  if (got !== n || bytes === 0)
    throw new Error(`${kind} ${n}: the task holds ${got} parts/artifacts, expected ${n}`);
  await m.close();
  return { first, last, total: (end - start) / n };
}

export const artifacts: Scenario = {
  name: 'artifacts',
  title:
    'server CPU per event as one task grows (TaskManager + a serialising subscriber), first vs last 1 000 events',
  async run(ctx) {
    const rows: Row[] = [];
    const checks: Check[] = [];
    for (const n of ctx.smoke ? [10_000] : [10_000, 100_000]) {
      for (const kind of ['append', 'new-id', 'status'] as const) {
        const r = await feed(kind, n);
        rows.push({
          scenario: 'artifacts',
          case: `${kind} N=${n}`,
          unit: 'events/s',
          rate: 1e6 / r.total,
          serverCpuUs: r.total,
          clientCpuUs: null,
          p50: null,
          p99: null,
          errors: 0,
          load1: load1(),
          note: `CPU/event first ${r.first.toFixed(2)} µs, last ${r.last.toFixed(2)} µs, last/first ${(r.last / r.first).toFixed(2)}x`,
          extra: { firstUs: r.first, lastUs: r.last },
          ...(kind === 'status' ? {} : { vs: [`status N=${n}`] }),
        });
      }
    }
    // Flat in N: the last 1 000 appends of the largest N cost what the first 1 000 did (within 2x: GC and JIT swing).
    const big = rows.filter((r) => r.case.startsWith('append')).at(-1)!;
    const ratio = big.extra!.lastUs! / big.extra!.firstUs!;
    checks.push({
      scenario: 'artifacts',
      target: `append CPU per event flat in N (${big.case})`,
      met: ratio <= 2,
      detail: `last/first ${ratio.toFixed(2)}x (target <= 2)`,
    });
    return { rows, checks };
  },
};
