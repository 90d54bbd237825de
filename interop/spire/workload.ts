/**
 * One Weave agent as its own process, for tests where SPIRE must tell
 * workloads apart: the test starts this under a distinct uid, and the SPIRE
 * agent's unix attestor gives it the SVID registered for that uid.
 *
 *   node --import tsx --conditions=weave-source interop/spire/workload.ts <config.json>
 *
 * Prints one line `WEAVE_WORKLOAD_READY <json>` with its URL and SPIFFE ID once
 * serving. Capabilities: `lookup` (answers itself), `search` (asks the
 * `forwardTo` peer's `summarize`), `summarize`, and `stats` (rotations seen,
 * calls served, the current SVID's serial), all behind the agent's policy file.
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { z } from 'zod';
import { SecureAgent } from '@weave/agent';
import { WorkloadApiIdentityProvider } from '@weave/identity';

const Config = z.strictObject({
  name: z.string(),
  spiffeId: z.string(),
  socket: z.string(),
  policyFile: z.string(),
  peers: z.array(z.strictObject({ id: z.string(), url: z.string() })).default([]),
  forwardTo: z.string().optional(),
});

const cfg = Config.parse(JSON.parse(readFileSync(process.argv[2]!, 'utf8')));
const logger = pino({ level: process.env.WEAVE_TEST_LOG ?? 'silent' });

const identity = await WorkloadApiIdentityProvider.create({
  address: cfg.socket,
  spiffeId: cfg.spiffeId,
  logger,
});
const stats = { svidUpdates: 0, lastSvidUpdateAt: 0, served: { lookup: 0, search: 0, summarize: 0 } };
identity.onUpdate((u) => {
  if (u.reason === 'bundles') return;
  stats.svidUpdates++;
  stats.lastSvidUpdateAt = Date.now();
});

const agent = new SecureAgent({
  config: {
    name: cfg.name,
    spiffeId: cfg.spiffeId,
    authz: { policyFile: cfg.policyFile },
    peers: cfg.peers,
    logging: { level: 'silent' },
  },
  identity,
  logger,
})
  .capability('lookup', { input: z.object({ q: z.string() }) }, ({ q }, ctx) => {
    stats.served.lookup++;
    return { q, by: cfg.spiffeId, caller: ctx.caller.toString() };
  })
  .capability('search', { input: z.object({ q: z.string() }) }, async ({ q }, ctx) => {
    stats.served.search++;
    if (!cfg.forwardTo) return { q };
    const summary = await ctx.callAgent(cfg.forwardTo, 'summarize', { text: q });
    return { q, summary };
  })
  .capability('summarize', { input: z.object({ text: z.string() }) }, ({ text }, ctx) => {
    stats.served.summarize++;
    return { text: text.slice(0, 8), caller: ctx.caller.toString() };
  })
  .capability('stats', { input: z.object({}) }, () => ({
    ...stats,
    uid: process.getuid?.(),
    serial: identity.getX509Svid().certificates[0]!.serialNumber,
  }));

await agent.start();
process.stdout.write(`WEAVE_WORKLOAD_READY ${JSON.stringify({ url: agent.url, id: agent.id.toString() })}\n`);

const shutdown = async () => {
  await agent.stop({ drainTimeoutMs: 2_000 });
  await identity.close();
  process.exit(0);
};
process.once('SIGTERM', () => void shutdown());
process.once('SIGINT', () => void shutdown());
