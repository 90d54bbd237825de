#!/usr/bin/env node
// The `weave` command. Installed from npm it runs the compiled dist/main.js.
// In a checkout (src/ present, no build needed) it runs the TypeScript source
// through tsx with the `weave-source` export condition.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { URL, fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../src/main.ts', import.meta.url));
if (!existsSync(source)) {
  await import('../dist/main.js');
} else {
  const tsx = import.meta.resolve('tsx');
  const child = spawn(
    process.execPath,
    ['--conditions=weave-source', '--import', tsx, source, ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  // `weave dev` stops cleanly on a signal, so this process waits for it rather than dying
  // first, and passes each signal on: a SIGINT sent to this process alone (`kill -INT`)
  // reached nothing. A Ctrl-C reaches the child twice then (from the terminal too), which
  // it takes as once.
  process.on('SIGINT', () => child.kill('SIGINT'));
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  // A child killed by a signal exits 128 + its number (130 for SIGINT, 143 for SIGTERM), as a
  // shell reports it: a Ctrl-C is not a failed call.
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + constants.signals[signal] : 1)));
}
