// `npm run bench`: every scenario against its baseline(s), in one run, one
// summary table, the same figures as JSON in bench/results/<timestamp>.json.
// See bench/README.md.
//
//   --only call,stream     these scenarios only
//   --duration 4000        measured window of each time-boxed load, in ms
//   --smoke                a few seconds per scenario (CI): must run and print numbers
//   --cpu-prof DIR         a CPU profile of every load generator process, and of this one (the
//                          server side) over each measured window
//   --heap-prof DIR        the same with allocation profiles (.heapprofile): bytes allocated per
//                          site over each window, a figure the machine's load does not move
//   --heap-prof-promoted   with --heap-prof: only what outlived a young-generation collection
//                          (promoted, or still live at the window's end), by the site that allocated it
//   --max-tasks N          the task store of the called agent of `call` and `payload` holds at most N tasks
//                          (default: the store's own bound, 10 000): what keeping them costs
//   --rounds N             `call` and `payload` run their loads in turn N times and print each
//                          case's median: ratios that a machine's drift during the run moves less
//   --in-flight N          calls in flight of `call` (default 32, where its targets are set): how the
//                          gaps to the baselines move with the load
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { startEnv } from './lib/env.js';
import { table, type Check, type Ctx, type Row, type Scenario } from './lib/harness.js';
import { loadOptions } from './lib/load.js';
import { artifacts, bindings, stream } from './scenarios/a2a.js';
import { call, payload, pg } from './scenarios/call.js';
import { fanout } from './scenarios/fanout.js';
import { memory } from './scenarios/memory.js';
import { opa } from './scenarios/opa.js';
import { policy } from './scenarios/policy.js';
import { connect, transport, verify } from './scenarios/transport.js';

const SCENARIOS: Scenario[] = [
  call,
  bindings,
  transport,
  connect,
  verify,
  payload,
  stream,
  artifacts,
  fanout,
  memory,
  pg,
  policy,
  opa,
];

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    duration: { type: 'string' },
    smoke: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    'heap-prof': { type: 'string' },
    'heap-prof-promoted': { type: 'boolean', default: false },
    'max-tasks': { type: 'string' },
    'in-flight': { type: 'string' },
    rounds: { type: 'string' },
  },
});
const smoke = values.smoke ?? false;
const durationMs = Number(values.duration ?? (smoke ? 1000 : 4000));
if (!Number.isFinite(durationMs) || durationMs <= 0)
  throw new Error(`--duration: not a positive number of ms`);
const maxTasks = values['max-tasks'] === undefined ? undefined : Number(values['max-tasks']);
if (maxTasks !== undefined && !(Number.isInteger(maxTasks) && maxTasks > 0))
  throw new Error(`--max-tasks: not a positive whole number`);
const inFlight = values['in-flight'] === undefined ? undefined : Number(values['in-flight']);
if (inFlight !== undefined && !(Number.isInteger(inFlight) && inFlight > 0))
  throw new Error(`--in-flight: not a positive whole number`);
const rounds = values.rounds === undefined ? undefined : Number(values.rounds);
if (rounds !== undefined && !(Number.isInteger(rounds) && rounds > 0))
  throw new Error(`--rounds: not a positive whole number`);
const only = values.only?.split(',').map((s) => s.trim());
const unknown = only?.filter((n) => !SCENARIOS.some((s) => s.name === n)) ?? [];
if (unknown.length) {
  throw new Error(
    `unknown scenario ${unknown.join(', ')}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`,
  );
}
const selected = SCENARIOS.filter((s) => !only || only.includes(s.name));
for (const [flag, key] of [
  ['cpu-prof', 'cpuProfDir'],
  ['heap-prof', 'heapProfDir'],
] as const) {
  const dir = values[flag];
  if (!dir) continue;
  await mkdir(dir, { recursive: true });
  loadOptions[key] = dir;
}
if (values['heap-prof-promoted']) {
  if (!loadOptions.heapProfDir) throw new Error('--heap-prof-promoted: needs --heap-prof DIR');
  loadOptions.heapProfPromoted = true;
}

const started = new Date();
const env = await startEnv();
const ctx: Ctx = {
  env,
  durationMs,
  warmupMs: smoke ? 300 : 1000,
  smoke,
  ...(maxTasks === undefined ? {} : { maxTasks }),
  ...(inFlight === undefined ? {} : { inFlight }),
  ...(rounds === undefined ? {} : { rounds }),
  log: (l) => console.log(l),
};
console.log(
  `Weave bench — ${selected.map((s) => s.name).join(', ')}; ${smoke ? 'smoke, ' : ''}${durationMs} ms per load, ` +
    `TLS 1.3, ECDSA P-256 SVIDs from the dev CA, node ${process.version}, ${cpus().length} CPUs, ` +
    (maxTasks === undefined ? '' : `the called agent's task store holds at most ${maxTasks} tasks, `) +
    (inFlight === undefined ? '' : `${inFlight} calls in flight in call, `) +
    (rounds === undefined ? '' : `${rounds} rounds of call and payload (medians), `) +
    `load average at start ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
);

const rows: Row[] = [];
const checks: Check[] = [];
const failures: string[] = [];
for (const s of selected) {
  console.log(`… ${s.name}: ${s.title}`);
  const t0 = Date.now();
  try {
    const out = await s.run(ctx);
    rows.push(...out.rows);
    checks.push(...(out.checks ?? []));
    // A row without a figure fails the run; errors beside a figure are printed (a loaded machine times out connects).
    for (const r of out.rows) {
      if (r.rate === null && !r.mayFail) {
        failures.push(`${s.name} / ${r.case}: no figure (${r.firstError ?? 'no error'})`);
      }
    }
  } catch (err) {
    failures.push(`${s.name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
  console.log(`  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
await env.close();

console.log('');
console.log(table(rows));
const failed = rows.filter((r) => r.errors > 0);
if (failed.length) {
  console.log('');
  console.log('errors (the first of each row):');
  for (const r of failed) console.log(`  ${r.scenario} / ${r.case}: ${r.errors} — ${r.firstError ?? ''}`);
}
console.log('');
console.log(`targets (issue 18), from this run (node ${process.version}):`);
for (const c of checks)
  console.log(`  ${c.met ? 'met    ' : 'NOT met'}  ${c.scenario}: ${c.target} — ${c.detail}`);
// The official SDK's server costs far less per call on Node 24 than on 20 or 22
// (bench/README.md, "On Node 24"), while Weave's does not move: a "vs sdk" ratio
// measured on an older Node reads high. Said here, where the verdicts are.
if (checks.some((c) => /\bsdk\b/.test(c.target)) && Number(process.versions.node.split('.')[0]) < 24) {
  console.log(
    `  (node ${process.version}: the SDK baseline runs much slower on this Node than on Node 24, the active LTS; judge the "vs sdk" targets on Node 24 too — bench/README.md, "On Node 24")`,
  );
}
const [l1, l5, l15] = loadavg();
console.log(
  `load average at the end: ${l1!.toFixed(2)} ${l5!.toFixed(2)} ${l15!.toFixed(2)} (1/5/15 min) on ${cpus().length} CPUs`,
);

const file = new URL(`./results/${started.toISOString().replace(/[:.]/g, '-')}.json`, import.meta.url);
await mkdir(new URL('./results/', import.meta.url), { recursive: true });
await writeFile(
  file,
  JSON.stringify(
    {
      started: started.toISOString(),
      node: process.version,
      cpus: cpus().length,
      smoke,
      durationMs,
      rows,
      checks,
      failures,
      loadavg: loadavg(),
    },
    null,
    2,
  ),
);
console.log(`figures written to ${file.pathname}`);
if (failures.length) {
  console.error(`\nFAILED:\n${failures.map((f) => `  ${f}`).join('\n')}`);
  process.exit(1);
}
