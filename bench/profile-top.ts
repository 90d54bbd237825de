// Where the time goes in a V8 CPU profile (`--cpu-prof`, or `npm run bench --
// --cpu-prof DIR`): the functions (or packages) with the most self time, and
// their share of the profile's busy (non-idle) samples. Given a sampling heap
// profile (`.heapprofile`, `npm run bench -- --heap-prof DIR`): the same for
// bytes allocated (`--per`: bytes per unit).
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
/** A sampling heap profile: a call tree whose nodes carry the bytes allocated there. */
interface HeapNode {
  callFrame: ProfileNode['callFrame'];
  selfSize: number;
  children: HeapNode[];
}
interface HeapProfile {
  head: HeapNode;
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

/** Prints the `top` groups of `weights` (µs or bytes) with their share and, with `--per`, their amount per unit. */
function report(file: string, weights: Iterable<[string, number]>, unit: 'µs' | 'B'): void {
  const groups = new Map<string, number>();
  let total = 0;
  for (const [key, w] of weights) {
    groups.set(key, (groups.get(key) ?? 0) + w);
    total += w;
  }
  const amount =
    unit === 'µs' ? `${(total / 1000).toFixed(0)} ms busy` : `${(total / 1e6).toFixed(1)} MB allocated`;
  const digits = unit === 'µs' ? 2 : 0;
  console.log(
    `${file}: ${amount}` +
      (per === undefined ? '' : `, ${(total / per).toFixed(1)} ${unit} per unit over ${per} units`),
  );
  for (const [key, w] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    const perUnit = per === undefined ? '' : `${(w / per).toFixed(digits).padStart(7)} ${unit}  `;
    console.log(`  ${((w / total) * 100).toFixed(1).padStart(5)} %  ${perUnit}${key}`);
  }
}

function* cpuWeights(p: Profile): Generator<[string, number]> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Self time per node: the time delta that follows each sample.
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? 0)));
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)' || name === '(program)') continue;
    yield [groupOf(name, n.callFrame.url, n.callFrame.lineNumber), us];
  }
}

function* heapWeights(node: HeapNode): Generator<[string, number]> {
  const { functionName, url, lineNumber } = node.callFrame;
  if (node.selfSize > 0) yield [groupOf(functionName || '(anonymous)', url, lineNumber), node.selfSize];
  for (const c of node.children) yield* heapWeights(c);
}

for (const file of positionals) {
  const p = JSON.parse(await readFile(file, 'utf8')) as Profile | HeapProfile;
  if ('head' in p) report(file, heapWeights(p.head), 'B');
  else report(file, cpuWeights(p), 'µs');
}
