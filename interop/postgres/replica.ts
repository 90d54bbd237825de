/**
 * One replica of an A2A agent on a shared PostgreSQL task store, as its own
 * process, for the multi-replica test behind HAProxy (which `kill -9`s it).
 *
 *   node --import tsx --conditions=weave-source interop/postgres/replica.ts <config.json>
 *
 * Serves JSON-RPC over mTLS (an SVID from PEM files) on the given port and
 * prints `WEAVE_REPLICA_READY` once serving. Every response carries
 * `x-replica: <name>`, so the test knows which replica answered. Skills:
 * `count` (re-runnable) and `count-once` (at most once): each publishes
 * `steps` artifacts `stepMs` apart, then completes.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { A2AServer, type TaskHandler } from '@weave/a2a';
import { PostgresTaskStore } from '@weave/a2a/postgres';
import { StaticMtlsProvider, authorizeMemberOf } from '@weave/identity';
import { createMtlsServer } from '@weave/transport/server';
import { allowOnly } from './stream.js';

const Config = z.strictObject({
  name: z.string(),
  port: z.number().int(),
  dbUrl: z.string(),
  leaseTtlMs: z.number().int().positive(),
  certFile: z.string(),
  keyFile: z.string(),
  bundleFile: z.string(),
  trustDomain: z.string(),
  caller: z.string(),
});
const cfg = Config.parse(JSON.parse(readFileSync(process.argv[2] as string, 'utf8')));

const identity = await StaticMtlsProvider.create({
  certFile: cfg.certFile,
  keyFile: cfg.keyFile,
  bundleFile: cfg.bundleFile,
  watch: false,
});
const a2a = new A2AServer({
  card: { name: 'replicated agent', description: 'one of several replicas', version: '1.0.0' },
  selfId: identity.id,
  enforcer: allowOnly(cfg.caller),
  heartbeatMs: 0,
  taskStore: new PostgresTaskStore({ connectionString: cfg.dbUrl, leaseTtlMs: cfg.leaseTtlMs }),
});

const count: TaskHandler = async (ctx) => {
  const { steps, stepMs } = JSON.parse(ctx.message.parts[0]?.text ?? '{}') as {
    steps: number;
    stepMs: number;
  };
  for (let i = 0; i < steps && !ctx.signal.aborted; i++) {
    ctx.publishArtifact({ artifactId: `step-${i}`, parts: [{ text: `${i} by ${cfg.name}` }] });
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return `done by ${cfg.name}`;
};
const skill = (id: string) => ({ id, name: id, description: id, tags: [] });
a2a.registerTaskHandler(skill('count'), count, { rerunnable: true });
a2a.registerTaskHandler(skill('count-once'), count);
// Asks for a name and greets it: its reply may reach any replica behind the balancer.
a2a.registerTaskHandler(skill('ask'), async (ctx) => {
  const reply = await ctx.requestInput('name?');
  return `hello ${reply.parts[0]?.text ?? ''}, from the handler on ${cfg.name}`;
});

const app = createMtlsServer({ identity, authorize: authorizeMemberOf(cfg.trustDomain) });
app.addHook('onRequest', async (_req, reply) => {
  reply.header('x-replica', cfg.name);
});
await app.register(a2a.plugin);
await app.listen({ port: cfg.port, host: '127.0.0.1' });
console.log('WEAVE_REPLICA_READY');

process.on('SIGTERM', () => {
  void (async () => {
    await a2a.close();
    await app.close();
    process.exit(0);
  })();
});
