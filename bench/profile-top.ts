// Where the time goes in a V8 CPU profile (`--cpu-prof`, or `npm run bench --
// --cpu-prof DIR`): the functions (or packages) with the most self time, and
// their share of the profile's busy (non-idle) samples.
//   node bench/profile-top.ts DIR/server-1-agent.cpuprofile [--top 25]
//   node bench/profile-top.ts FILE --by package        # grouped by package (and file, for Weave's own)
//   node bench/profile-top.ts FILE --per 40000         # also µs per unit: the units the window
//                                                       # completed (a row's rate × its window in s)
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

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string' }, by: { type: 'string' }, per: { type: 'string' } },
});
const top = Number(values.top ?? 25);
const by = values.by ?? 'function';
if (by !== 'function' && by !== 'package') throw new Error('--by: function or package');
const per = values.per === undefined ? undefined : Number(values.per);
if (per !== undefined && !(per > 0)) throw new Error('--per: a positive number of units');

/** The group of a frame: its function and line, or its package (Weave's own: package/file). */
function groupOf(name: string, url: string, line: number): string {
  if (by === 'function') {
    const where = url
      ? `${url.replace(/^.*node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?/, '').replace(/^file:\/\/.*\/packages\//, '')}:${line + 1}`
      : '';
    return `${name}  ${where}`;
  }
  if (!url) return name.startsWith('(') ? name : `(native) ${name}`;
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  const dep = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?(@[^/]+\/[^/]+|[^/]+)/.exec(url);
  if (dep) return dep[1]!;
  const own = /packages\/([^/]+)\/(?:dist|src)\/(.*)$/.exec(url);
  return own ? `@weave/${own[1]}/${own[2]}` : url.replace(/^file:\/\//, '');
}

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
    const key = groupOf(name, n.callFrame.url, n.callFrame.lineNumber);
    groups.set(key, (groups.get(key) ?? 0) + us);
    busy += us;
  }
  console.log(
    `${file}: ${(busy / 1000).toFixed(0)} ms busy` +
      (per === undefined ? '' : `, ${(busy / per).toFixed(1)} µs per unit over ${per} units`),
  );
  for (const [key, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    const perUnit = per === undefined ? '' : `${(us / per).toFixed(2).padStart(7)} µs  `;
    console.log(`  ${((us / busy) * 100).toFixed(1).padStart(5)} %  ${perUnit}${key}`);
  }
}
