// Memory probe, run as its own process (`--expose-gc`) so that nothing else
// lives in its heap. Reads a job as JSON on stdin, prints one JSON line:
//   agent  an idle started SecureAgent (one capability, identity from the dev
//          Workload API, local policy): RSS and heap after a full GC
//   bare   an idle node https server with mTLS from PEM: the same figures
//   tasks  a TaskManager on the in-memory store (what an agent keeps; its
//          bound `maxTasks`, default 10 000): `rounds` rounds of `perRound`
//          tasks created, given a text artifact and completed; RSS and heap
//          growth per round after GC, and how many tasks the store kept
import https from 'node:https';
import { pino } from 'pino';
import { z } from 'zod';
import { InMemoryTaskStore, TaskManager } from '@weave/a2a';
import { SecureAgent } from '@weave/agent';

type Job =
  | { mode: 'agent'; socket: string; policyFile: string }
  | { mode: 'bare'; ca: string; cert: string; key: string }
  | { mode: 'tasks'; rounds: number; perRound: number; maxTasks?: number };

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const job = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Job;

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = process.memoryUsage();
  return { rssMb: m.rss / 2 ** 20, heapMb: m.heapUsed / 2 ** 20 };
};

let out: Record<string, unknown>;
if (job.mode === 'agent') {
  const agent = new SecureAgent({
    config: {
      name: 'idle',
      identity: { workloadApi: { socket: job.socket } },
      authz: { policyFile: job.policyFile },
      logging: { level: 'warn' },
    },
    logger: pino({ level: 'warn' }),
  }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text: `echo: ${text}` }));
  await agent.start();
  out = await settle();
  await agent.stop();
} else if (job.mode === 'bare') {
  const server = https.createServer(
    {
      ca: job.ca,
      cert: job.cert,
      key: job.key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (_req, res) => res.end('ok'),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  out = await settle();
  server.close();
} else {
  const m = new TaskManager(
    // One owner keeps them all: its share of the count is the whole store.
    job.maxTasks === undefined
      ? {}
      : { store: new InMemoryTaskStore({ maxTasks: job.maxTasks, maxTasksPerOwner: job.maxTasks }) },
  );
  const base = await settle();
  const rounds: Array<{ rssMb: number; heapMb: number; kept: number }> = [];
  let prev = base;
  for (let r = 0; r < job.rounds; r++) {
    for (let i = 0; i < job.perRound; i++) {
      const rec = await m.create({
        owner: 'spiffe://bench.weave/agent/client',
        skill: 'echo',
        message: { messageId: `m${r}-${i}`, role: 'ROLE_USER', parts: [{ text: 'hello' }] },
      });
      m.addArtifact(rec.task.id, { artifactId: 'result', parts: [{ text: 'echo: hello' }] });
      m.setStatus(rec.task.id, 'TASK_STATE_COMPLETED');
    }
    const now = await settle();
    const kept = (await m.list({ owner: 'spiffe://bench.weave/agent/client', limit: 1 })).total;
    rounds.push({ rssMb: now.rssMb - prev.rssMb, heapMb: now.heapMb - prev.heapMb, kept });
    prev = now;
  }
  out = { base, rounds, total: { rssMb: prev.rssMb - base.rssMb, heapMb: prev.heapMb - base.heapMb } };
  await m.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
