// Runs the real `weave` bin (node → tsx → src/main.ts) as a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/weave.mjs', import.meta.url));

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of the parent minus anything that would change what the CLI does. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'SPIFFE_ENDPOINT_SOCKET' || k.startsWith('WEAVE_') || k.startsWith('VITEST')) continue;
    env[k] = v;
  }
  return { ...env, NODE_ENV: 'development', ...extra };
}

export function spawnWeave(args: readonly string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Stops a `weave` started with {@link spawnWeave}: SIGTERM, which the bin
 * passes on to the program it runs, then SIGKILL if it has not exited in 10 s.
 * A bare SIGKILL would kill only the bin and leave its child (a `weave dev`
 * server) running after the test.
 */
export async function stopWeave(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Collects what `child` prints: `output()` is everything so far (stdout then
 * stderr), `done` resolves with both and the exit code once the child closed.
 */
export function collectOutput(child: ChildProcess): { done: Promise<RunResult>; output: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<RunResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { done, output: () => stdout + stderr };
}

/** Runs the real `weave` bin to its end (see {@link spawnWeave} for its environment). */
export function weave(args: readonly string[], env: Record<string, string> = {}): Promise<RunResult> {
  return collectOutput(spawnWeave(args, env)).done;
}

/** Resolves with everything printed on stdout once a line matching `pattern` appeared. */
export function waitForLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  let seen = '';
  let errs = '';
  return new Promise((resolve, reject) => {
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (errs += d));
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      seen += d;
      if (pattern.test(seen)) resolve(seen);
    });
    child.once('exit', (code) =>
      reject(new Error(`weave exited (${code}) before ${pattern}: ${seen}${errs}`)),
    );
  });
}

/** Runs the CLI in this process (same code, no process start-up): for the many error paths. */
export async function inproc(
  args: readonly string[],
  env: { SPIFFE_ENDPOINT_SOCKET?: string } = {},
): Promise<RunResult> {
  const { run } = await import('../src/cli.js');
  let stdout = '';
  let stderr = '';
  const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
  if (env.SPIFFE_ENDPOINT_SOCKET === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
  else process.env.SPIFFE_ENDPOINT_SOCKET = env.SPIFFE_ENDPOINT_SOCKET;
  try {
    const code = await run(args, {
      io: { out: (t) => void (stdout += `${t}\n`), err: (t) => void (stderr += `${t}\n`) },
    });
    return { code, stdout, stderr };
  } finally {
    if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
    else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
  }
}
