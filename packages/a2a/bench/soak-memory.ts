// Soak of issue 19 item 1, run by hand and bounded in time: one allowed
// caller sends ~1 MB SendMessage bodies in a loop (several in flight) while a
// legitimate caller sends small messages and reads its older tasks back.
// Before the byte bound this took an agent from 0.33 to 4.3 GB RSS and a
// crash after 4 236 requests. Prints RSS, the store's kept bytes and both
// callers' outcomes every few seconds, then a verdict.
//
//   ../../node_modules/.bin/tsx --conditions=weave-source bench/soak-memory.ts   (from packages/a2a)
// Environment: SOAK_DURATION_MS (default 60000), SOAK_INFLIGHT (default 4),
//              SOAK_TOTAL_MIB (store bound, default 64), SOAK_PER_CALLER_MIB (default 16)
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId, authorizeMemberOf } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { SecureChannel } from '@weave/transport';
import { createMtlsServer } from '@weave/transport/server';
import { A2AClient, A2AError, A2AServer, type InMemoryTaskStore } from '../src/index.js';

const DURATION = Number(process.env.SOAK_DURATION_MS ?? 60_000);
const INFLIGHT = Number(process.env.SOAK_INFLIGHT ?? 4);
const MiB = 1024 * 1024;
const TOTAL = Number(process.env.SOAK_TOTAL_MIB ?? 64) * MiB;
const PER_CALLER = Number(process.env.SOAK_PER_CALLER_MIB ?? 16) * MiB;
const TD = 'soak.weave';
const silent = pino({ level: 'silent' });

const ca = await DevCertificateAuthority.create({ trustDomain: TD });
const workload = (path: string) =>
  DevCaIdentityProvider.create({ ca, id: SpiffeId.parse(`spiffe://${TD}${path}`), logger: silent });
const [agentId, attackerId, legitId] = await Promise.all([
  workload('/agent'),
  workload('/attacker'),
  workload('/legit'),
]);

// Both callers are allowed: the attack comes from an authorized identity.
const policy = {
  version: 1,
  id: 'soak',
  default: 'deny',
  rules: [{ id: 'members', effect: 'allow', callers: [`spiffe://${TD}`], actions: ['*'] }],
};
const enforcer = LocalPolicyEnforcer.fromObject(policy, {
  audit: { record: () => undefined },
  logger: silent,
});
const a2a = new A2AServer({
  card: { name: 'soak', description: 'memory soak', version: '1' },
  selfId: agentId.id,
  enforcer,
  heartbeatMs: 0,
  limits: { maxBodyBytes: 2 * MiB, retainedBytes: { total: TOTAL, perCaller: PER_CALLER } },
});
a2a.registerTaskHandler('echo', async (ctx) => `got ${ctx.message.parts.length} part(s)`);
const app = createMtlsServer({ identity: agentId, authorize: authorizeMemberOf(TD), config: {} });
await app.register(a2a.plugin);
await app.listen({ port: 0, host: '127.0.0.1' });
const addr = app.server.address();
if (!addr || typeof addr !== 'object') throw new Error('not listening');
const url = `https://127.0.0.1:${addr.port}`;
const store = a2a.manager.store as InMemoryTaskStore;

const channels = [attackerId, legitId].map(
  (w) => new SecureChannel(w, agentId.id, { circuitBreaker: false, retry: { retries: 0 } }),
);
const [attacker, legit] = channels.map((dispatcher) => new A2AClient({ dispatcher })) as [
  A2AClient,
  A2AClient,
];

const big = 'x'.repeat(1_000_000);
const stats = { attackOk: 0, attackRefused: 0, attackOther: 0, legitOk: 0, legitFail: 0, legitReadBack: 0 };
const message = (text: string) => ({
  message: { messageId: randomUUID(), role: 'ROLE_USER' as const, parts: [{ text }] },
});
const deadline = Date.now() + DURATION;

async function attackLoop(): Promise<void> {
  while (Date.now() < deadline) {
    try {
      await attacker.sendMessage(url, message(big));
      stats.attackOk++;
    } catch (err) {
      if (err instanceof A2AError && err.code === 'RESOURCE_EXHAUSTED') stats.attackRefused++;
      else stats.attackOther++;
    }
  }
}

async function legitLoop(): Promise<void> {
  const mine: string[] = [];
  while (Date.now() < deadline) {
    try {
      const r = await legit.sendMessage(url, message('hello'));
      if ('task' in r) mine.push(r.task.id);
      // Its first task, from the start of the run, is still readable.
      const first = mine[0];
      if (first !== undefined) {
        await legit.getTask(url, first);
        stats.legitReadBack++;
      }
      stats.legitOk++;
    } catch {
      stats.legitFail++;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const mib = (n: number) => (n / MiB).toFixed(1);
const rssStart = process.memoryUsage().rss;
let rssMax = rssStart;
const started = Date.now();
console.log(
  `soak: ${DURATION / 1000} s, ${INFLIGHT} × 1 MB SendMessage in flight from ${attackerId.id.toString()}, ` +
    `store bound ${mib(TOTAL)} MiB, per caller ${mib(PER_CALLER)} MiB; RSS at start ${mib(rssStart)} MiB`,
);
const report = () => {
  const m = process.memoryUsage();
  rssMax = Math.max(rssMax, m.rss);
  console.log(
    `t=${String(Math.round((Date.now() - started) / 1000)).padStart(3)} s  RSS ${mib(m.rss).padStart(7)} MiB  ` +
      `heap ${mib(m.heapUsed).padStart(7)} MiB  kept ${mib(store.bytes()).padStart(6)} MiB ` +
      `(attacker ${mib(store.bytes(attackerId.id.toString()))}, legit ${mib(store.bytes(legitId.id.toString()))}) ` +
      `tasks ${store.size}  attacker ok ${stats.attackOk} refused ${stats.attackRefused} other ${stats.attackOther}  ` +
      `legit ok ${stats.legitOk} failed ${stats.legitFail} first-task reads ${stats.legitReadBack}`,
  );
};
const ticker = setInterval(report, 5000);
await Promise.all([...Array.from({ length: INFLIGHT }, attackLoop), legitLoop()]);
clearInterval(ticker);
report();
const keptOk = store.bytes() <= TOTAL && store.bytes(attackerId.id.toString()) <= PER_CALLER;
console.log(
  `max RSS ${mib(rssMax)} MiB (start ${mib(rssStart)} MiB, +${mib(rssMax - rssStart)} MiB; store bound ${mib(TOTAL)} MiB); ` +
    `kept bytes within bounds: ${keptOk}; attacker sent ${stats.attackOk + stats.attackRefused + stats.attackOther} × 1 MB; ` +
    `legit callers: ${stats.legitOk} ok, ${stats.legitFail} failed`,
);
await a2a.close();
await Promise.all(channels.map((c) => c.close()));
await app.close();
await Promise.all([agentId, attackerId, legitId].map((p) => p.close()));
process.exitCode = keptOk && stats.legitFail === 0 ? 0 : 1;
