// Memory: an idle started SecureAgent vs an idle bare node https mTLS server
// (each alone in a fresh process, RSS and heap after a full GC), and what
// finished tasks cost: RSS and heap per 10 000 retained finished tasks (a
// store that keeps them all), then a soak on the default store (bounded at
// 10 000 tasks), whose growth per round must fall to about zero.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { figureRow, type Check, type Row, type Scenario } from '../lib/harness.js';

const PROBE = fileURLToPath(new URL('../lib/memory-probe.ts', import.meta.url));

function probe<T>(job: object): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, '--expose-gc', PROBE], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split('\n').at(-1)!) as T)
        : reject(new Error(`memory probe exited with ${code}`)),
    );
    child.stdin.end(JSON.stringify(job));
  });
}

interface Idle {
  rssMb: number;
  heapMb: number;
}
interface Tasks {
  rounds: Array<{ rssMb: number; heapMb: number; kept: number }>;
}

const row = (name: string, mb: number, note: string, vs?: string[]): Row =>
  figureRow('memory', name, 'MB', mb, { note, ...(vs ? { vs } : {}) });

export const memory: Scenario = {
  name: 'memory',
  title: 'idle SecureAgent RSS vs idle bare mTLS server; RSS per 10 000 retained finished tasks, and a soak',
  async run(ctx) {
    const { env } = ctx;
    const agent = await probe<Idle>({
      mode: 'agent',
      socket: env.dev.address('server'),
      policyFile: env.policyFile,
    });
    const bare = await probe<Idle>({ mode: 'bare', ...env.clientPem });
    const per = 10_000;
    const rounds = ctx.smoke ? 2 : 3;
    const kept = await probe<Tasks>({ mode: 'tasks', rounds, perRound: per, maxTasks: rounds * per });
    const soak = await probe<Tasks>({ mode: 'tasks', rounds: ctx.smoke ? 2 : 4, perRound: per });
    const fmt = (t: Tasks) => t.rounds.map((r) => `${r.rssMb.toFixed(1)}/${r.heapMb.toFixed(1)}`).join(' ');
    // In the rate column: MB. The rate ratio of the agent row vs bare is the RSS ratio.
    const rows: Row[] = [
      row('idle SecureAgent RSS', agent.rssMb, `heap ${agent.heapMb.toFixed(1)} MB`, ['idle bare https RSS']),
      row('idle bare https RSS', bare.rssMb, `heap ${bare.heapMb.toFixed(1)} MB`),
      row(
        'RSS per 10k retained tasks',
        kept.rounds.reduce((a, r) => a + r.rssMb, 0) / kept.rounds.length,
        `RSS/heap MB per round ${fmt(kept)}; kept ${kept.rounds.at(-1)!.kept}`,
      ),
      row(
        'soak, default store',
        soak.rounds.at(-1)!.rssMb,
        `RSS/heap MB per round ${fmt(soak)}; kept ${soak.rounds.at(-1)!.kept}`,
      ),
    ];
    const ratio = agent.rssMb / bare.rssMb;
    const checks: Check[] = [
      {
        scenario: 'memory',
        target: 'idle SecureAgent RSS vs bare',
        met: ratio <= 1.5,
        detail: `${ratio.toFixed(2)}x (target <= 1.5)`,
      },
    ];
    return { rows, checks };
  },
};
