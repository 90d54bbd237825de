// In-process A/B of two versions of the callAgent path: a SecureAgent pair
// built from this checkout (`main`) and one built from another checkout of the
// repository (`base`, e.g. an older commit), in one process, measured in
// alternating blocks. Prints the process CPU time per call (both sides of the
// call run here) of every block and the median per side.
//
// On a shared machine a whole-run median swings more than a few per cent;
// alternating short blocks in one process exposes both sides to the same load.
//
// Set-up of `base` (by hand): `git archive <commit> | tar -x -C /tmp/base`,
// link `/tmp/base/node_modules` to this checkout's, and copy each package's
// `node_modules` (its relative links then point into /tmp/base).
//
//   BASE_ROOT=/tmp/base node_modules/.bin/tsx --conditions=weave-source packages/agent/bench/ab.ts
//
// Environment: BASE_ROOT (required unless SIDES=main), SIDES (default "base,main"; one side per
// process to compare variants that change process-wide state), ALTS (default 8), BLOCK_MS (default 1000),
// CONCURRENCY (calls in flight, default 32).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { z } from 'zod';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import type * as AgentModule from '../src/index.js';

type Side = 'base' | 'main';
const SIDES = (process.env.SIDES ?? 'base,main').split(',') as Side[];
const ALTS = Number(process.env.ALTS ?? 8);
const BLOCK = Number(process.env.BLOCK_MS ?? 1000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 32);
const MAIN_ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const roots: Record<Side, string | undefined> = { main: MAIN_ROOT, base: process.env.BASE_ROOT };

const TD = 'ab.weave';
const silent = pino({ level: 'silent' });
const ids: Record<string, string> = {};
for (const s of SIDES) for (const r of ['c', 's']) ids[`${s}${r}`] = `spiffe://${TD}/${s}/${r}`;
const dir = await mkdtemp(join(tmpdir(), 'weave-ab-'));
const dev = await DevWorkloadApiServer.start({
  stateDir: dir,
  trustDomain: TD,
  workloads: ids,
  logger: silent,
});
const policyFile = join(dir, 'policy.yaml');
await writeFile(
  policyFile,
  [
    'version: 1',
    'id: ab',
    'default: deny',
    'rules:',
    ...SIDES.flatMap((s) => [
      `  - id: ${s}`,
      '    effect: allow',
      `    callers: ['${ids[`${s}c`]}']`,
      `    callees: ['${ids[`${s}s`]}']`,
      "    actions: ['echo']",
    ]),
    '',
  ].join('\n'),
);

interface Pair {
  side: Side;
  call(): Promise<unknown>;
  stop(): Promise<void>;
}

async function pair(side: Side): Promise<Pair> {
  const root = roots[side];
  if (!root) throw new Error(`set BASE_ROOT to a checkout for side ${side}`);
  const mod = (await import(join(root, 'packages/agent/src/index.ts'))) as typeof AgentModule;
  const server = new mod.SecureAgent({
    config: {
      name: 's',
      identity: { workloadApi: { socket: dev.address(`${side}s`) } },
      authz: { policyFile },
      logging: { level: 'warn' },
      server: { maxConcurrentTasks: 1024 },
    },
    logger: pino({ level: 'warn' }),
  }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text: `echo: ${text}` }));
  await server.start();
  const client = new mod.SecureAgent({
    config: {
      name: 'c',
      identity: { workloadApi: { socket: dev.address(`${side}c`) } },
      authz: { policyFile },
      peers: [{ id: ids[`${side}s`] as string, url: server.url }],
      logging: { level: 'warn' },
    },
    logger: pino({ level: 'warn' }),
  });
  await client.start();
  return {
    side,
    call: () => client.callAgent(ids[`${side}s`] as string, 'echo', { text: 'hello' }),
    stop: async () => {
      await client.stop();
      await server.stop();
    },
  };
}

/** Keeps CONCURRENCY calls in flight for `ms`; CPU µs of this process per successful call. */
async function block(p: Pair, ms: number): Promise<number> {
  let n = 0;
  const until = Date.now() + ms;
  const cpu0 = process.cpuUsage();
  const worker = async () => {
    while (Date.now() < until) {
      const r = (await p.call()) as { text?: unknown };
      if (r.text !== 'echo: hello') throw new Error(`unexpected answer ${JSON.stringify(r)}`);
      n++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const c = process.cpuUsage(cpu0);
  return (c.user + c.system) / n;
}

const pairs: Pair[] = [];
for (const s of SIDES) pairs.push(await pair(s));
for (const p of pairs) await block(p, 1500); // warm-up, not reported
const res: Record<Side, number[]> = { base: [], main: [] };
for (let i = 0; i < ALTS; i++) {
  for (const p of i % 2 ? [...pairs].reverse() : pairs) res[p.side].push(await block(p, BLOCK));
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
for (const s of SIDES) {
  console.log(
    `${s} µs/call ${res[s].map((x) => x.toFixed(0)).join(' ')} median ${median(res[s]).toFixed(1)}`,
  );
}
if (SIDES.length === 2) console.log(`main/base ${(median(res.main) / median(res.base)).toFixed(3)}`);
for (const p of pairs) await p.stop();
await dev.close();
await rm(dir, { recursive: true, force: true });
