// The one load generator of every bench: run as its own process (so the
// caller never shares an event loop or a CPU budget with the server under
// test), it reads one job as JSON on stdin, makes calls of one kind, and
// reports on stdout:
//
//   window start        the measured window begins (after the warm-up)
//   window end          it ends
//   result {...}        one JSON line: LoadgenResult
//
// The parent (load.ts) samples the server's CPU time when it reads the two
// window lines, so both processes' CPU is charged over the same window as the
// unit count it is divided by: CPU per unit = CPU(window) / units completed in
// the window, on both sides. Warm-up, start-up and shutdown are never counted.
//
// Kinds of call (one per job):
//   http     raw POSTs over an undici Pool with the client SVID (bare echo,
//            the official SDK server, the Weave A2A server on JSON-RPC or HTTP+JSON);
//            with `jsonClient`, each request encoded and each answer parsed
//   grpc     SendMessage as bare gRPC frames on one node:http2 session over
//            the client SVID (HTTP/2 multiplexes the calls): the gRPC
//            counterpart of `http`, no client stack of its own to measure
//   least-a2a
//            the least a secure A2A caller does per SendMessage, with nothing
//            of Weave: a policy decision with its audit record, the request
//            encoded with a new message id, the server's SPIFFE ID checked per
//            connection (as `http`), the answer parsed and its task checked
//   agent    a SecureAgent calling `callAgent` (the whole Weave caller path)
//   channel  POSTs over a SecureChannel (Weave's transport alone)
//   new-certs
//            one POST per new connection, each with a client certificate the
//            server has not seen (undici, no session resumption)
//   stream-weave / stream-sdk
//            one SendStreamingMessage whose task emits N events, read to the
//            end by Weave's A2AClient / by the official SDK's client; a unit
//            is one event received
//   fanout-weave / fanout-bare
//            one call to each of many distinct agents at once, cold then
//            warm (see runFanout)
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import type { PeerCertificate } from 'node:tls';
import { pino } from 'pino';
import { Agent, Client, Pool, fetch as undiciFetch } from 'undici';
import { LocalPolicyEnforcer } from '@weave/authz';
import { WorkloadApiIdentityProvider } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { A2AClient, a2aGrpcService } from '@weave/a2a';
import { SecureAgent } from '@weave/agent';
import { startWindowProfiles, writeWindowProfiles } from './window-profile.js';
import { grpcMessageFrame, type LoadgenJob, type LoadgenResult, type PemSvid } from './load.js';

async function readJob(): Promise<LoadgenJob> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as LoadgenJob;
}

/** One call: resolves to the units it completed (1 request, or N events), or to what came back instead. */
type Call = () => Promise<number | string>;

/** Accepts only the server whose URI SAN is `expectPeer` (the bare clients' stand-in for the SPIFFE check). */
const sanCheck = (expectPeer: string) => (_host: string, cert: PeerCertificate) =>
  cert.subjectaltname === `URI:${expectPeer}`
    ? undefined
    : new Error(`unexpected server ${cert.subjectaltname}`);

function undiciTls(svid: PemSvid, expectPeer: string) {
  return {
    ca: svid.ca,
    cert: svid.cert,
    key: svid.key,
    minVersion: 'TLSv1.3' as const,
    checkServerIdentity: sanCheck(expectPeer),
  };
}

let decisions = 0;
const logger = pino({ level: 'warn' });

async function startAgent(job: {
  socket: string;
  policyFile: string;
  peers: Array<{ id: string; url: string }>;
}) {
  const enforcer = await LocalPolicyEnforcer.fromFile(job.policyFile, {
    watch: false,
    logger,
    audit: { record: () => void decisions++ },
  });
  const agent = new SecureAgent({
    config: {
      name: 'loadgen',
      identity: { workloadApi: { socket: job.socket } },
      authz: { policyFile: job.policyFile },
      peers: job.peers,
      logging: { level: 'warn' },
    },
    enforcer,
    logger,
  });
  await agent.start();
  return {
    agent,
    close: async () => {
      await agent.stop({ drainTimeoutMs: 1000 });
      await enforcer.close();
    },
  };
}

/** The bare clients' undici Pool to `job.url`: one connection per call in flight, the client SVID. */
function barePool(job: { url: string; concurrency: number; svid: PemSvid; expectPeer: string }) {
  const target = new URL(job.url);
  const pool = new Pool(target.origin, {
    connections: job.concurrency,
    pipelining: 1,
    connect: undiciTls(job.svid, job.expectPeer),
  });
  return { target, pool };
}

/** Builds the call of `job` and what closes it. */
async function setUp(job: LoadgenJob): Promise<{ call: Call; close: () => Promise<unknown> }> {
  switch (job.kind) {
    case 'http': {
      const { target, pool } = barePool(job);
      const headers = {
        'content-type': job.contentType ?? 'application/json',
        accept: 'application/json',
        'a2a-version': '1.0',
      };
      const request = job.jsonClient ? (JSON.parse(job.body) as unknown) : undefined;
      return {
        call: async () => {
          const body = request === undefined ? job.body : JSON.stringify(request);
          const res = await pool.request({ path: target.pathname, method: 'POST', headers, body });
          const text = await res.body.text();
          if (request !== undefined) {
            // Parsed as any JSON client must (a body that is not JSON fails the call), then checked as text.
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            if (typeof parsed !== 'object' || parsed === null) {
              return `${res.statusCode} not a JSON object: ${text.slice(0, 200)}`;
            }
          }
          // Count only real successes: HTTP 200 and every expected piece of the answer.
          if (res.statusCode !== 200 || !job.expect.every((e) => text.includes(e))) {
            return `${res.statusCode} ${text.slice(0, 200)}`;
          }
          return 1;
        },
        close: () => pool.close(),
      };
    }
    case 'least-a2a': {
      const { target, pool } = barePool(job);
      const headers = {
        'content-type': 'application/json',
        accept: 'application/json',
        'a2a-version': '1.0',
      };
      const allowedCallees = new Set([job.expectPeer]);
      const audit: unknown[] = [];
      const expectLength = job.text.length + 6;
      let id = 0;
      return {
        call: async () => {
          // One policy decision, audited, before anything is sent.
          const allow = allowedCallees.has(job.expectPeer);
          decisions++;
          audit[0] = {
            auditId: randomUUID(),
            decidedAt: new Date().toISOString(),
            direction: 'outbound',
            callee: job.expectPeer,
            action: 'echo',
            decision: allow ? 'allow' : 'deny',
          };
          if (!allow) return 'denied';
          const body = JSON.stringify({
            jsonrpc: '2.0',
            id: ++id,
            method: 'SendMessage',
            params: {
              message: {
                messageId: randomUUID(),
                role: 'ROLE_USER',
                parts: [{ data: { text: job.text } }],
                metadata: { skill: 'echo' },
              },
              configuration: { historyLength: 0 },
            },
          });
          const res = await pool.request({ path: target.pathname, method: 'POST', headers, body });
          const text = await res.body.text();
          let task: {
            status?: { state?: unknown };
            artifacts?: Array<{ parts?: Array<{ data?: { text?: unknown } }> }>;
          };
          try {
            task = (JSON.parse(text) as { result?: { task?: typeof task } }).result?.task ?? {};
          } catch {
            return `${res.statusCode} not JSON: ${text.slice(0, 200)}`;
          }
          const out = task.artifacts?.[0]?.parts?.[0]?.data?.text;
          return res.statusCode === 200 &&
            task.status?.state === 'TASK_STATE_COMPLETED' &&
            typeof out === 'string' &&
            out.startsWith('echo: ') &&
            out.length === expectLength
            ? 1
            : `${res.statusCode} ${text.slice(0, 200)}`;
        },
        close: () => pool.close(),
      };
    }
    case 'grpc': {
      // The gRPC counterpart of the `http` kind: the request encoded once, each call one
      // HTTP/2 stream carrying one length-prefixed message, the answer decoded and checked.
      const method = a2aGrpcService().SendMessage;
      const frame = grpcMessageFrame(method.requestSerialize(job.request));
      const session = http2.connect(`https://${job.target}`, undiciTls(job.svid, job.expectPeer));
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve());
        session.once('error', reject);
      });
      // A session error after the connect fails the calls on it, which count it.
      session.on('error', () => undefined);
      const headers = {
        ':method': 'POST',
        ':path': method.path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'a2a-version': '1.0',
      };
      return {
        call: () =>
          new Promise<number | string>((resolve) => {
            const stream = session.request(headers);
            const chunks: Buffer[] = [];
            let status: unknown;
            stream.on('response', (h) => (status = h['grpc-status']));
            stream.on('trailers', (t) => (status = t['grpc-status']));
            stream.on('data', (c: Buffer) => chunks.push(c));
            stream.on('error', (err) => resolve(String(err)));
            stream.on('end', () => {
              const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
              if (
                status !== '0' ||
                body.length < 5 ||
                body[0] !== 0 ||
                body.readUInt32BE(1) !== body.length - 5
              ) {
                return resolve(`grpc-status ${String(status)}, ${body.length} bytes`);
              }
              const res = method.responseDeserialize(body.subarray(5));
              const state = (res.task as { status?: { state?: string } } | undefined)?.status?.state;
              resolve(state === 'TASK_STATE_COMPLETED' ? 1 : JSON.stringify(res).slice(0, 200));
            });
            stream.end(frame);
          }),
        close: async () => void session.close(),
      };
    }
    case 'agent': {
      const { agent, close } = await startAgent({ ...job, peers: [{ id: job.target, url: job.targetUrl }] });
      return {
        call: async () => {
          const r = (await agent.callAgent(job.target, job.capability, job.input)) as { text?: unknown };
          // The echo's answer: the prefix and the whole length (a large answer is not copied to check it).
          return typeof r.text === 'string' &&
            r.text.startsWith(job.expect) &&
            r.text.length === job.expectLength
            ? 1
            : `unexpected answer ${JSON.stringify(r).slice(0, 200)}`;
        },
        close,
      };
    }
    case 'channel': {
      const id = await WorkloadApiIdentityProvider.create({ address: job.socket, logger });
      const ch = new SecureChannel(id, job.expectPeer);
      const target = new URL(job.url);
      const headers = { 'content-type': 'application/json' };
      return {
        call: async () => {
          const res = await ch.request({
            origin: target.origin,
            path: target.pathname,
            method: 'POST',
            body: job.body,
            headers,
          });
          const text = await res.body.text();
          return res.statusCode === 200 && job.expect.every((e) => text.includes(e))
            ? 1
            : `${res.statusCode} ${text.slice(0, 200)}`;
        },
        close: async () => {
          await ch.close();
          await id.close();
        },
      };
    }
    case 'new-certs': {
      const target = new URL(job.url);
      let next = 0;
      return {
        call: async () => {
          const svid = job.certs[next++ % job.certs.length]!;
          const client = new Client(target.origin, {
            connect: { ...undiciTls(svid, job.expectPeer), maxCachedSessions: 0 },
          });
          try {
            const res = await client.request({
              path: target.pathname,
              method: 'POST',
              body: job.body,
              headers: { 'content-type': 'application/json' },
            });
            const text = await res.body.text();
            return res.statusCode === 200 && job.expect.every((e) => text.includes(e))
              ? 1
              : `${res.statusCode} ${text.slice(0, 200)}`;
          } finally {
            await client.close();
          }
        },
        close: async () => undefined,
      };
    }
    case 'stream-weave': {
      const id = await WorkloadApiIdentityProvider.create({ address: job.socket, logger });
      const ch = new SecureChannel(id, job.expectPeer);
      const client = new A2AClient({ dispatcher: ch, preferredBindings: ['JSONRPC'] });
      return {
        call: async () => {
          let n = 0;
          let last = '';
          const message = {
            messageId: `m${Math.random()}`,
            role: 'ROLE_USER' as const,
            parts: [{ text: String(job.events) }],
            metadata: { skill: 'stream' },
          };
          // streamTaskUpdates resumes (Last-Event-ID) when the server cuts a reader that fell
          // more than its bound behind, as a producer that outpaces the network makes it do.
          for await (const ev of client.streamTaskUpdates(job.url, { message }, { resumeBackoffMs: 10 })) {
            if ('artifactUpdate' in ev) n++;
            else if ('statusUpdate' in ev) last = ev.statusUpdate.status.state;
          }
          // Every artifact event received, and the task's end.
          return n === job.events && last === 'TASK_STATE_COMPLETED'
            ? n
            : `received ${n} of ${job.events} artifact events, last state ${last}`;
        },
        close: async () => {
          await ch.close();
          await id.close();
        },
      };
    }
    case 'stream-sdk': {
      const { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory } =
        await import('@a2a-js/sdk/client');
      const dispatcher = new Agent({ connect: undiciTls(job.svid, job.expectPeer) });
      const fetchImpl = ((input: string | URL, init?: RequestInit) =>
        undiciFetch(
          input as string,
          { ...(init as object), dispatcher } as never,
        )) as unknown as typeof fetch;
      const factory = new ClientFactory(
        ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
          transports: [new JsonRpcTransportFactory({ fetchImpl })],
          cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
        }),
      );
      const client = await factory.createFromUrl(job.url);
      return {
        call: async () => {
          let n = 0;
          const stream = client.sendMessageStream({
            tenant: '',
            message: {
              messageId: `m${Math.random()}`,
              contextId: '',
              taskId: '',
              role: 1,
              parts: [
                {
                  content: { $case: 'text', value: String(job.events) },
                  metadata: undefined,
                  filename: '',
                  mediaType: '',
                },
              ],
              metadata: { skill: 'stream' },
              extensions: [],
              referenceTaskIds: [],
            },
            configuration: undefined,
            metadata: undefined,
          } as never);
          let last = '';
          for await (const ev of stream) {
            const p = (ev as { payload?: { $case?: string; value?: { status?: { state?: unknown } } } })
              .payload;
            if (p?.$case === 'artifactUpdate') n++;
            else if (p?.$case === 'statusUpdate') last = String(p.value?.status?.state);
          }
          // Every artifact event received, and the task's end (TaskState.TASK_STATE_COMPLETED is 3).
          return n === job.events && (last === '3' || last === 'TASK_STATE_COMPLETED')
            ? n
            : `received ${n} of ${job.events} artifact events, last state ${last}`;
        },
        close: () => dispatcher.close(),
      };
    }
    default:
      throw new Error(`unknown job kind ${(job as { kind: string }).kind}`);
  }
}

/** With `cpuProfDir` / `heapProfDir`: this process's profiles over the window only (start-up and warm-up left out). */
async function profile(phase: 'start' | 'end', job: LoadgenJob): Promise<void> {
  if (phase === 'start') return startWindowProfiles(job);
  await writeWindowProfiles(job, `client-${process.pid}-${job.kind}`);
}

const write = (line: string) => new Promise<void>((r) => process.stdout.write(`${line}\n`, () => r()));
const cpuNow = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};

/**
 * The measuring loop: `concurrency` workers keep one call each in flight; a
 * warm-up (at least `warmupMs` and one call per worker, or `warmupCalls`
 * calls), then the window — at least `durationMs` long and one call per
 * worker, or exactly `calls` calls — then the result.
 */
async function measure(job: LoadgenJob, call: Call): Promise<LoadgenResult> {
  let phase: 'warmup' | 'measure' | 'done' = 'warmup';
  const latencies: number[] = [];
  let units = 0;
  let errors = 0;
  let firstError: string | undefined;
  let budget = Infinity;

  const once = async (): Promise<void> => {
    const t0 = process.hrtime.bigint();
    let got: number | string;
    try {
      got = await call();
    } catch (err) {
      got = String(err);
    }
    if (typeof got === 'string') {
      errors++;
      firstError ??= got.replace(/\s+/g, ' ').slice(0, 160);
      return;
    }
    if (phase === 'measure') {
      units += got;
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  };

  let cpu0 = 0;
  let t0 = 0n;
  const open = async () => {
    await profile('start', job);
    await write('window start');
    phase = 'measure';
    // Errors are counted in the window, like everything else (a warm-up on a loaded machine may time out a connect).
    errors = 0;
    firstError = undefined;
    cpu0 = cpuNow();
    t0 = process.hrtime.bigint();
  };

  if (job.calls !== undefined) {
    // A fixed number of calls (long calls, e.g. a stream of 100 000 events).
    for (let i = 0; i < (job.warmupCalls ?? 1); i++) await once();
    await open();
    budget = job.calls;
    await Promise.all(
      Array.from({ length: job.concurrency }, async () => {
        while (budget-- > 0) await once();
      }),
    );
  } else {
    // Each worker's first call ends its warm-up (new connections, discovery, JIT);
    // the window opens when every worker has warmed up and `warmupMs` has passed.
    let warmed = 0;
    const workers = Array.from({ length: job.concurrency }, async () => {
      await once();
      warmed++;
      while (phase !== 'done') await once();
    });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await sleep(job.warmupMs);
    while (warmed < job.concurrency) await sleep(20);
    await open();
    await sleep(job.durationMs);
    // On a machine too loaded to finish a call per worker in the window, the window waits for them.
    while (latencies.length + errors < job.concurrency) await sleep(20);
    // Calls still in flight finish after the window and are not counted.
    const measured = units;
    const cpu = cpuNow() - cpu0;
    const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
    phase = 'done';
    await write('window end');
    await profile('end', job);
    await Promise.all(workers);
    return result(measured, cpu, elapsedMs);
  }
  const cpu = cpuNow() - cpu0;
  const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  phase = 'done';
  await write('window end');
  await profile('end', job);
  return result(units, cpu, elapsedMs);

  function result(n: number, cpuUs: number, elapsedMs: number): LoadgenResult {
    latencies.sort((a, b) => a - b);
    const q = (p: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? null;
    return {
      units: n,
      calls: latencies.length,
      elapsedMs,
      rate: (n / elapsedMs) * 1000,
      clientCpuUs: cpuUs / Math.max(1, n),
      p50: q(0.5),
      p99: q(0.99),
      errors,
      ...(firstError === undefined ? {} : { firstError }),
      decisions,
    };
  }
}

/**
 * Fan-out: one call to each of `peers` at once. `cold` is the first round
 * (discovery for Weave, a new TLS connection per peer for both), `warm` a
 * second round on the kept connections; the window (server CPU) is the cold
 * round. RSS is sampled after a full GC before and after the cold round.
 */
async function runFanout(
  job: Extract<LoadgenJob, { kind: 'fanout-weave' | 'fanout-bare' }>,
): Promise<LoadgenResult> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const rss = () => {
    gc?.();
    return process.memoryUsage().rss;
  };
  let callOne: (i: number) => Promise<boolean>;
  let close: () => Promise<unknown>;
  if (job.kind === 'fanout-weave') {
    const a = await startAgent(job);
    callOne = async (i) => {
      const r = (await a.agent.callAgent(job.peers[i]!.id, 'echo', { text: 'hello' })) as { text?: string };
      return r.text === 'echo: hello';
    };
    close = a.close;
  } else {
    // Bare: one undici Agent with the same certificates, a new connection per origin.
    const agents = job.peers.map((p) => new Agent({ connect: undiciTls(job.svid, p.id) }));
    callOne = async (i) => {
      const res = await agents[i]!.request({
        origin: new URL(job.peers[i]!.url).origin,
        path: '/',
        method: 'POST',
        body: job.body,
        headers: { 'content-type': 'application/json' },
      });
      const text = await res.body.text();
      return res.statusCode === 200 && text.includes('"echo"');
    };
    close = () => Promise.all(agents.map((a) => a.close()));
  }
  const rss0 = rss();
  let errors = 0;
  let firstError: string | undefined;
  const round = async () => {
    const t = process.hrtime.bigint();
    const ok = await Promise.all(
      job.peers.map((_p, i) =>
        callOne(i).catch((err: unknown) => {
          firstError ??= String(err).slice(0, 160);
          return false;
        }),
      ),
    );
    errors += ok.filter((x) => !x).length;
    return Number(process.hrtime.bigint() - t) / 1e6;
  };
  await write('window start');
  const cpu0 = cpuNow();
  const coldMs = await round();
  const cpu = cpuNow() - cpu0;
  await write('window end');
  const rss1 = rss();
  const warm: number[] = [];
  for (let i = 0; i < 5; i++) warm.push(await round());
  warm.sort((x, y) => x - y);
  await close();
  const n = job.peers.length;
  return {
    units: n,
    calls: n,
    elapsedMs: coldMs,
    rate: (n / coldMs) * 1000,
    clientCpuUs: cpu / n,
    p50: null,
    p99: null,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    decisions,
    extra: { coldMs, warmMs: warm[Math.floor(warm.length / 2)]!, rssPerPeerKb: (rss1 - rss0) / 1024 / n },
  };
}

const job = await readJob();
let res: LoadgenResult;
if (job.kind === 'fanout-weave' || job.kind === 'fanout-bare') {
  res = await runFanout(job);
} else {
  const { call, close } = await setUp(job);
  res = await measure(job, call);
  await close();
}
await write(`result ${JSON.stringify(res)}`);
