#!/usr/bin/env node
// The `weave` command. It runs the TypeScript source through tsx with the
// `weave-source` export condition, so it works from a checkout with no build.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const tsx = import.meta.resolve('tsx');
const main = fileURLToPath(import.meta.resolve('../src/main.ts'));
const child = spawn(
  process.execPath,
  ['--conditions=weave-source', '--import', tsx, main, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
// `weave dev` stops cleanly on a signal, so this process waits for it rather than dying
// first. Ctrl-C already reaches the child (same process group); SIGTERM is passed on.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
