// `npm run demo` stops whole, however it is stopped: npm runs it under `sh -c`,
// which dies of a SIGTERM without passing it on, and a Ctrl-C reaches every
// process of the terminal's process group at once. These tests start
// scripts/demo.mjs as npm does (under `sh -c`, in a process group of its own,
// with a private TMPDIR for the demo's state) and check that after the signal
// nothing of the demo runs and its state directory (the dev CA's key) is gone.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The demo's processes: every one in the process group `pgid` still alive. */
function alive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function startKeptRunning(): Promise<{
  sh: ChildProcess;
  tmp: string;
  output: () => string;
  /** Resolves once every process holding the output pipes has closed them: all output is read. */
  ended: Promise<unknown>;
}> {
  const tmp = await mkdtemp(join(tmpdir(), 'weave-demo-signals-'));
  let output = '';
  const sh = spawn('sh', ['-c', 'node scripts/demo.mjs --keep-running'], {
    cwd: ROOT,
    env: { ...process.env, TMPDIR: tmp },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(async () => {
    if (alive(sh.pid as number)) process.kill(-(sh.pid as number), 'SIGKILL');
    await rm(tmp, { recursive: true, force: true });
  });
  sh.stdout?.on('data', (b: Buffer) => (output += b.toString()));
  sh.stderr?.on('data', (b: Buffer) => (output += b.toString()));
  // The shell may exit first (a Ctrl-C kills it); the demo writes on to the same pipes.
  const ended = Promise.all([once(sh.stdout!, 'end'), once(sh.stderr!, 'end')]);
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (output.includes('Policy decisions as they happen')) resolve();
    };
    sh.stdout?.on('data', check);
    sh.once('exit', () => reject(new Error(`the demo ended before it was ready:\n${output}`)));
  });
  expect(await demoDirs(tmp)).toHaveLength(1); // the demo's state directory
  return { sh, tmp, output: () => output, ended };
}

/** The demo's state directories in `tmp` (the TypeScript loader keeps its cache there too). */
async function demoDirs(tmp: string): Promise<string[]> {
  return (await readdir(tmp)).filter((n) => n.startsWith('weave-demo-'));
}

/** Waits until no process of the group is left, at most `ms`. */
async function gone(pgid: number, ms = 30_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (alive(pgid)) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

describe('npm run demo -- --keep-running', () => {
  it('stops whole when the shell npm started it under is sent SIGTERM (the shell passes nothing on)', async () => {
    const { sh, tmp, output, ended } = await startKeptRunning();
    process.kill(sh.pid as number, 'SIGTERM'); // the shell alone, as npm does
    expect(await gone(sh.pid as number)).toBe(true);
    await ended;
    expect(output()).toContain('agents stopped, dev Workload API server closed.');
    expect(await demoDirs(tmp)).toEqual([]);
  });

  it('stops whole on a Ctrl-C (SIGINT to the whole process group)', async () => {
    const { sh, tmp, output, ended } = await startKeptRunning();
    process.kill(-(sh.pid as number), 'SIGINT');
    expect(await gone(sh.pid as number)).toBe(true);
    await ended;
    expect(output()).toContain('agents stopped, dev Workload API server closed.');
    expect(await demoDirs(tmp)).toEqual([]);
  });
});
