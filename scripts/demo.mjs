#!/usr/bin/env node
// `npm run demo`: runs the demo (apps/demo/src/main.ts) in a child process and
// stops it with this one, whichever way this one is told to stop.
//
// npm runs a script under `sh -c`, and that shell dies of a SIGTERM without
// passing it on: `kill <npm's pid>` used to leave the demo's agents and its
// dev Workload API server running, orphaned. So besides passing on the signals
// it gets, this process watches for its parent to change (the shell gone) and
// then stops the demo. The demo runs under `node --import tsx`, not the tsx
// command, whose signal relay killed the demo with SIGKILL when it took more
// than a few tens of milliseconds to answer a Ctrl-C, in the middle of its
// clean-up (its state directory, with the dev CA's key, was left behind).
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { clearInterval, setInterval } from 'node:timers';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const child = spawn(
  process.execPath,
  ['--conditions=weave-source', '--import', 'tsx', 'src/main.ts', ...process.argv.slice(2)],
  { cwd: join(root, 'apps', 'demo'), stdio: 'inherit' },
);

// Passed on as they come. A Ctrl-C reaches the demo from the terminal too
// (one process group): it takes a second signal while stopping as the first.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => child.kill(signal));
}

const parent = process.ppid;
let orphaned = false;
const watch = setInterval(() => {
  if (orphaned || process.ppid === parent) return;
  orphaned = true;
  child.kill('SIGTERM');
}, 250);

child.on('error', (err) => {
  clearInterval(watch);
  console.error(`[weave] could not start the demo: ${err.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  clearInterval(watch);
  process.exit(code ?? 128 + (constants.signals[signal] ?? 0));
});
