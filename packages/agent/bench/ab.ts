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
// CONCURRENCY (calls in flight, default 32), SPLIT=1 (each side's called agent in a child process of
// its own, as in bench/: the caller and the callee then run in parallel on two cores, and how a change
// moves their overlap — req/s at few calls in flight — shows; CPU per call is printed per process).
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
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

const SPLIT = process.env.SPLIT === '1';
const TD = 'ab.weave';
const silent = pino({ level: 'silent' });
const idOf = (side: Side, role: 'c' | 's') => `spiffe://${TD}/${side}/${role}`;

/** `@weave/agent` as built from the checkout of `side`. */
async function agentModule(side: Side): Promise<typeof AgentModule> {
  const root = roots[side];
  if (!root) throw new Error(`set BASE_ROOT to a checkout for side ${side}`);
  return (await import(join(root, 'packages/agent/src/index.ts'))) as typeof AgentModule;
}

/** The called agent of `side`: `echo` answers `echo: <text>`. */
async function startServer(side: Side, socket: string, policyFile: string) {
  const mod = await agentModule(side);
  const server = new mod.SecureAgent({
    config: {
      name: 's',
      identity: { workloadApi: { socket } },
      authz: { policyFile },
      logging: { level: 'warn' },
      server: { maxConcurrentTasks: 1024 },
    },
    logger: pino({ level: 'warn' }),
  }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({ text: `echo: ${text}` }));
  await server.start();
  return { mod, server };
}

/** What the parent asks of a called agent in a child process (SPLIT=1). */
type ToChild = 'cpu' | 'stop';
interface ChildSetUp {
  side: Side;
  socket: string;
  policyFile: string;
}

/** SPLIT=1, in the child: serve, report this process's CPU time when asked, stop when told. */
async function child(setUp: ChildSetUp): Promise<void> {
  const { server } = await startServer(setUp.side, setUp.socket, setUp.policyFile);
  process.on('message', (m: ToChild) => {
    if (m === 'cpu') {
      const c = process.cpuUsage();
      process.send?.(c.user + c.system);
    } else void server.stop().then(() => process.disconnect());
  });
  process.send?.({ url: server.url });
}

interface Pair {
  side: Side;
  call(): Promise<unknown>;
  /** CPU µs of the called agent's process so far (SPLIT=1); undefined when it is this process. */
  serverCpu(): Promise<number | undefined>;
  stop(): Promise<void>;
}

/** Asks `c` one thing and resolves with its answer. */
async function ask(c: ChildProcess, m: ToChild): Promise<unknown> {
  c.send(m);
  const [answer] = (await once(c, 'message')) as [unknown];
  return answer;
}

async function pair(side: Side, socket: (w: string) => string, policyFile: string): Promise<Pair> {
  let url: string;
  let mod: typeof AgentModule;
  let serverCpu: () => Promise<number | undefined> = () => Promise.resolve(undefined);
  let stopServer: () => Promise<unknown>;
  if (SPLIT) {
    const setUp: ChildSetUp = { side, socket: socket(`${side}s`), policyFile };
    const c = fork(fileURLToPath(import.meta.url), {
      env: { ...process.env, AB_CHILD: JSON.stringify(setUp) },
    });
    const [started] = (await once(c, 'message')) as [{ url: string }];
    url = started.url;
    mod = await agentModule(side);
    serverCpu = async () => (await ask(c, 'cpu')) as number;
    stopServer = () => Promise.all([once(c, 'exit'), c.send('stop')]);
  } else {
    const s = await startServer(side, socket(`${side}s`), policyFile);
    url = s.server.url;
    mod = s.mod;
    stopServer = () => s.server.stop();
  }
  const client = new mod.SecureAgent({
    config: {
      name: 'c',
      identity: { workloadApi: { socket: socket(`${side}c`) } },
      authz: { policyFile },
      peers: [{ id: idOf(side, 's'), url }],
      logging: { level: 'warn' },
    },
    logger: pino({ level: 'warn' }),
  });
  await client.start();
  return {
    side,
    call: () => client.callAgent(idOf(side, 's'), 'echo', { text: 'hello' }),
    serverCpu,
    stop: async () => {
      await client.stop();
      await stopServer();
    },
  };
}

interface Block {
  /** CPU µs per successful call: this process (both sides of the call unless SPLIT=1). */
  cli: number;
  /** SPLIT=1: the called agent's process. */
  srv: number | undefined;
  rate: number;
}

/** Keeps CONCURRENCY calls in flight for `ms`. */
async function block(p: Pair, ms: number): Promise<Block> {
  let n = 0;
  const srv0 = await p.serverCpu();
  const t0 = performance.now();
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
  const rate = (n * 1000) / (performance.now() - t0);
  const srv1 = await p.serverCpu();
  return {
    cli: (c.user + c.system) / n,
    srv: srv0 === undefined || srv1 === undefined ? undefined : (srv1 - srv0) / n,
    rate,
  };
}

async function main(): Promise<void> {
  const ids: Record<string, string> = {};
  for (const s of SIDES) for (const r of ['c', 's'] as const) ids[`${s}${r}`] = idOf(s, r);
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
        `    callers: ['${idOf(s, 'c')}']`,
        `    callees: ['${idOf(s, 's')}']`,
        "    actions: ['echo']",
      ]),
      '',
    ].join('\n'),
  );

  const pairs: Pair[] = [];
  for (const s of SIDES) pairs.push(await pair(s, (w) => dev.address(w), policyFile));
  // Warm-up, not reported: two rounds, so that the first measured block of neither side is its first after a pause.
  for (let i = 0; i < 2; i++) for (const p of pairs) await block(p, 1000);
  const res: Record<Side, Block[]> = { base: [], main: [] };
  for (let i = 0; i < ALTS; i++) {
    for (const p of i % 2 ? [...pairs].reverse() : pairs) res[p.side].push(await block(p, BLOCK));
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
  const figures: Array<[string, (b: Block) => number]> = SPLIT
    ? [
        ['cli µs/call', (b) => b.cli],
        ['srv µs/call', (b) => b.srv ?? NaN],
        ['both µs/call', (b) => b.cli + (b.srv ?? NaN)],
        ['req/s', (b) => b.rate],
      ]
    : [
        ['µs/call', (b) => b.cli],
        ['req/s', (b) => b.rate],
      ];
  for (const [name, of] of figures) {
    for (const s of SIDES) {
      const xs = res[s].map(of);
      console.log(`${s} ${name} ${xs.map((x) => x.toFixed(0)).join(' ')} median ${median(xs).toFixed(1)}`);
    }
    if (SIDES.length === 2) {
      console.log(`main/base ${name} ${(median(res.main.map(of)) / median(res.base.map(of))).toFixed(3)}`);
    }
  }
  for (const p of pairs) await p.stop();
  await dev.close();
  await rm(dir, { recursive: true, force: true });
}

if (process.env.AB_CHILD) await child(JSON.parse(process.env.AB_CHILD) as ChildSetUp);
else await main();
