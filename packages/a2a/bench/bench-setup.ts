// What the a2a benches share: one dev CA with the SVIDs of the Weave server,
// the SDK server and the load generator; the Weave echo agent (fastify +
// mtlsAuth + A2AServer, a LocalPolicyEnforcer decision, audited, on every
// call); and running a load generator in its own process, charging this
// process's CPU time to the one server under load.
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { LocalPolicyEnforcer } from '@weave/authz';
import { authorizeMemberOf } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { createMtlsServer } from '@weave/transport/server';
import { A2AServer } from '@weave/a2a';

export const silent = pino({ level: 'silent' });

/** One load generator run, as printed by load-loop.ts, plus the server's CPU per request. */
export interface LoadResult {
  requests: number;
  totalRequests: number;
  /** Server CPU (user + system) per request, in µs, over warm-up and measurement. */
  cpuUs: number;
  clientCpuUs: number;
  errors: number;
  firstError?: string;
  rps: number;
  p50: number;
  p99: number;
  max: number;
}

/** Starts the identities and the Weave echo agent on 127.0.0.1 (random port). */
export async function startBenchAgents() {
  const ca = await DevCertificateAuthority.create({ trustDomain: 'bench.weave' });
  const weaveId = await DevCaIdentityProvider.create({
    ca,
    id: 'spiffe://bench.weave/agent/weave',
    logger: silent,
  });
  const sdkId = await DevCaIdentityProvider.create({
    ca,
    id: 'spiffe://bench.weave/agent/sdk',
    logger: silent,
  });
  const clientSvid = (await ca.issueX509Svid('spiffe://bench.weave/agent/loadgen')).toPem();
  let decisions = 0;
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'bench',
      default: 'deny',
      rules: [
        {
          id: 'loadgen',
          effect: 'allow',
          callers: ['spiffe://bench.weave/agent/loadgen'],
          actions: ['echo'],
        },
      ],
    },
    { audit: { record: () => void decisions++ }, logger: silent },
  );
  const a2a = new A2AServer({
    card: { name: 'weave bench', description: 'echo', version: '1.0.0' },
    selfId: weaveId.getX509Svid().id,
    enforcer,
  });
  a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: 'echo', tags: [] }, (ctx) => {
    return `echo: ${ctx.message.parts[0]?.text ?? ''}`;
  });
  const weaveApp = createMtlsServer({ identity: weaveId, authorize: authorizeMemberOf('bench.weave') });
  await weaveApp.register(a2a.plugin);
  await weaveApp.listen({ port: 0, host: '127.0.0.1' });
  return {
    ca,
    caPem: ca.x509Bundle.toPem(),
    clientSvid,
    weaveId,
    sdkId,
    a2a,
    weaveUrl: `https://127.0.0.1:${(weaveApp.server.address() as AddressInfo).port}/`,
    /** Policy decisions audited so far. */
    decisions: () => decisions,
    async close(): Promise<void> {
      await a2a.close();
      await weaveApp.close();
      await weaveId.close();
      await sdkId.close();
      await enforcer.close?.();
    },
  };
}

/**
 * Runs `script` (a load generator beside this file) with `job` on its stdin.
 * Every server lives in this process and only one is loaded at a time, so
 * this process's CPU time is the loaded server's: a figure that machine noise
 * (other processes) does not distort the way it distorts req/s.
 */
export function runLoadgen(script: 'loadgen.ts' | 'loadgen-grpc.ts', job: object): Promise<LoadResult> {
  const tsx = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
  const file = fileURLToPath(new URL(`./${script}`, import.meta.url));
  return new Promise((resolve, reject) => {
    const cpu0 = process.cpuUsage();
    const child = spawn(tsx, ['--conditions=weave-source', file], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} exited with ${code}`));
      const cpu = process.cpuUsage(cpu0);
      const r = JSON.parse(out) as LoadResult;
      r.cpuUs = (cpu.user + cpu.system) / Math.max(1, r.totalRequests);
      resolve(r);
    });
    child.stdin.end(JSON.stringify(job));
  });
}
