#!/usr/bin/env node
// `npm run fuzz`: the property-based fuzz suites (packages/*/test/fuzz-*.test.ts)
// with many more cases than `npm test` runs, a fresh seed, and a time bound per
// property, then one summary: cases, seed and duration of each property.
//   FUZZ_RUNS     cases per property (default 20000)
//   FUZZ_SEED     seed (default: a new one, printed; pass it back to replay a failure)
//   FUZZ_TIME_MS  time bound per property in ms (default 60000): a property that
//                 reaches it stops there and reports the cases it ran
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const env = {
  ...process.env,
  FUZZ_RUNS: process.env.FUZZ_RUNS ?? '20000',
  FUZZ_SEED: process.env.FUZZ_SEED ?? String(Math.floor(Math.random() * 2 ** 31)),
  FUZZ_TIME_MS: process.env.FUZZ_TIME_MS ?? '60000',
};
const dir = mkdtempSync(join(tmpdir(), 'weave-fuzz-'));
env.FUZZ_SUMMARY = join(dir, 'summary.jsonl');

console.log(
  `fuzz: ${env.FUZZ_RUNS} cases per property, seed ${env.FUZZ_SEED}, at most ${env.FUZZ_TIME_MS} ms each`,
);
const started = Date.now();
// One worker: the suites start real mTLS servers, and the machine is shared.
const r = spawnSync(
  process.execPath,
  [join(root, 'scripts/pnpm.mjs'), 'exec', 'vitest', 'run', '--maxWorkers=1', 'test/fuzz-'],
  { stdio: 'inherit', cwd: root, env },
);
const seconds = ((Date.now() - started) / 1000).toFixed(1);

let rows = [];
try {
  rows = readFileSync(env.FUZZ_SUMMARY, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
} catch {
  // No property ran (the run failed before): the vitest output above says why.
}
rmSync(dir, { recursive: true, force: true });

console.log('\nfuzz summary');
for (const x of rows) {
  const note = x.failed ? ' FAILED' : x.interrupted ? ' (time bound)' : '';
  console.log(
    `  ${x.property.padEnd(22)} ${String(x.cases).padStart(7)} cases  ${String(x.ms).padStart(7)} ms${note}`,
  );
}
const total = rows.reduce((n, x) => n + x.cases, 0);
console.log(
  `  total: ${total} cases in ${rows.length} properties, seed ${env.FUZZ_SEED}, ${seconds} s, load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
process.exit(r.status ?? 1);
