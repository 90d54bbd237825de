// Server-side cost of one streaming event as a task grows: a TaskManager (the
// embedded store, one subscriber that serialises every event as the SSE writer
// does) fed N artifact events of one of two kinds:
//   append  one artifact extended chunk by chunk (`append: true`)
//   new-id  every event a new artifact id
// Printed per N: CPU per event over the first and the last 1 000 events of the
// run, and last/first (1.0 = flat in N), against a baseline in the same run:
// the same subscriber fed status updates, which touch no artifact list.
// Usage: node --conditions=weave-source --import tsx bench/artifacts.bench.ts [--sizes 10000,30000,100000]
import { cpus, loadavg } from 'node:os';
import { TaskManager, type Artifact } from '../src/index.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const SIZES = (arg('sizes') ?? '10000,30000,100000').split(',').map(Number);
const WINDOW = 1000;
type Kind = 'append' | 'new-id' | 'status (baseline)';

const load = (): string => {
  const [l1, l5] = loadavg();
  return `load ${l1!.toFixed(2)} / ${l5!.toFixed(2)} (1/5 min) on ${cpus().length} CPUs`;
};
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function run(kind: Kind, n: number): Promise<{ first: number; last: number; bytes: number }> {
  const m = new TaskManager();
  const rec = await m.create({
    owner: 'spiffe://bench.test/caller',
    skill: 'stream',
    message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'go' }] },
  });
  const id = rec.task.id;
  let bytes = 0;
  m.subscribe(id, (e) => {
    bytes += JSON.stringify(e.event).length;
  });
  m.setStatus(id, 'TASK_STATE_WORKING');
  let first = 0;
  let last = 0;
  let t0 = cpuNow();
  for (let i = 0; i < n; i++) {
    if (i === WINDOW) first = (cpuNow() - t0) / WINDOW;
    if (i === n - WINDOW) t0 = cpuNow();
    if (kind === 'status (baseline)') {
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
  last = (cpuNow() - t0) / WINDOW;
  m.setStatus(id, 'TASK_STATE_COMPLETED');
  const task = (await m.get(id))!.task;
  const want = kind === 'append' ? n : kind === 'new-id' ? n : 0;
  const got = kind === 'append' ? (task.artifacts?.[0]?.parts.length ?? 0) : (task.artifacts?.length ?? 0);
  if (got !== want) throw new Error(`${kind} ${n}: the task holds ${got} parts/artifacts, expected ${want}`);
  await m.close();
  return { first, last, bytes };
}

console.log(
  `artifact events on one task: CPU per event (server: TaskManager + one serialising subscriber), first vs last ${WINDOW} events, node ${process.version}`,
);
for (const n of SIZES) {
  for (const kind of ['append', 'new-id', 'status (baseline)'] as const) {
    const r = await run(kind, n);
    console.log(
      `N ${String(n).padStart(6)}  ${kind.padEnd(17)}  first ${r.first.toFixed(2).padStart(8)} µs  ` +
        `last ${r.last.toFixed(2).padStart(8)} µs  last/first ${(r.last / r.first).toFixed(2).padStart(6)}x  ${load()}`,
    );
  }
}
