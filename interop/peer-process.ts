/**
 * Runs the foreign peers of the interop suite: the go-spiffe harness
 * (`interop/go`, built into `.infra/bin/go-harness` by scripts/infra/go-harness.sh)
 * and the a2a-sdk peer (`interop/python/a2a_peer.py`, run by .infra/venv's
 * Python). Both print one JSON object a line on stdout; these helpers collect them.
 */
import { spawn } from 'node:child_process';
import { waitUntil } from './infra.js';

/** One line the peer printed. `type` says which kind (x509, jwt, response, request, listening, verdicts, error…). */
export interface HarnessLine {
  readonly type: string;
  readonly [field: string]: unknown;
}

/** A finished harness run. */
export interface HarnessRun {
  readonly code: number | null;
  readonly lines: HarnessLine[];
  readonly stderr: string;
}

function parseLines(text: string): HarnessLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as HarnessLine);
}

/** Runs one subcommand to its end, writing `stdin` (if any) first; killed after `timeoutMs`. */
export function runHarness(
  bin: string,
  args: readonly string[],
  { stdin, timeoutMs = 60_000 }: { stdin?: string; timeoutMs?: number } = {},
): Promise<HarnessRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    p.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('error', reject);
    p.once('close', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, lines: parseLines(out), stderr: err });
      } catch (e) {
        reject(new Error(`harness printed a line that is not JSON: ${(e as Error).message}\n${out}\n${err}`));
      }
    });
    p.stdin.end(stdin ?? '');
  });
}

/** A harness subcommand that keeps running (the `serve` server). */
export interface RunningHarness {
  /** Lines printed so far. */
  lines(): HarnessLine[];
  stderr(): string;
  /** Waits for the first line matching `pred`. */
  waitFor(pred: (l: HarnessLine) => boolean, what: string): Promise<HarnessLine>;
  /** Closes its stdin (the harness then exits) and waits for the exit; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

export function startHarness(bin: string, args: readonly string[]): RunningHarness {
  const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
  p.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const closed = new Promise<void>((resolve) => p.once('close', () => resolve()));
  // Only complete lines: the last one may still be arriving.
  const lines = () => parseLines(out.slice(0, out.lastIndexOf('\n') + 1));
  return {
    lines,
    stderr: () => err,
    async waitFor(pred, what) {
      await waitUntil(what, () => {
        if (p.exitCode !== null)
          throw new Error(`harness exited (${p.exitCode}) before ${what}:\n${out}\n${err}`);
        return lines().some(pred);
      });
      return lines().find(pred)!;
    },
    async stop() {
      p.stdin.end();
      const timer = setTimeout(() => p.kill('SIGKILL'), 5_000);
      await closed;
      clearTimeout(timer);
    },
  };
}
