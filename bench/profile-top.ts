// Where the time goes in a V8 CPU profile (`--cpu-prof`, or `npm run bench --
// --cpu-prof DIR`): the functions with the most self time, and their share of
// the profile's busy (non-idle) samples, grouped by function and file.
//   node bench/profile-top.ts DIR/harness-123.cpuprofile [--top 25]
// Node 22.6+ runs TypeScript directly; on Node 20 use `node --import tsx`.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { positionals, values } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' } } });
const top = Number(values.top ?? 25);
for (const file of positionals) {
  const p = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per node: the time delta that follows each sample.
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? 0)));
  const groups = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)' || name === '(program)') continue;
    const where = n.callFrame.url
      ? `${n.callFrame.url.replace(/^.*node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?/, '').replace(/^file:\/\/.*\/packages\//, '')}:${n.callFrame.lineNumber + 1}`
      : '';
    const key = `${name}  ${where}`;
    groups.set(key, (groups.get(key) ?? 0) + us);
    busy += us;
  }
  console.log(`${file}: ${(busy / 1000).toFixed(0)} ms busy`);
  for (const [key, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`  ${((us / busy) * 100).toFixed(1).padStart(5)} %  ${key}`);
  }
}
