// Spawns the weave-identity command from source, reads the socket addresses it
// prints, and fetches an SVID from one of them with the real client.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkloadApiClient } from '@weave/identity';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TSX = join(ROOT, 'node_modules/.bin/tsx');
const CLI = join(ROOT, 'packages/identity/src/workload/cli.ts');

interface Running {
  readonly child: ChildProcessWithoutNullStreams;
  /** What the command wrote to stderr so far. */
  stderr(): string;
  /** Its exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
}

function start(args: string[]): Running {
  const child = spawn(TSX, ['--conditions=weave-source', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // Listened for at once: the command may end before anyone awaits it.
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

/** Runs the command to its end; resolves once its output is closed, so stderr is complete. */
async function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const { child, stderr } = start(args);
  child.stdout.resume();
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  return { code, stderr: stderr() };
}

describe('weave-identity dev', () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('prints one socket address per workload; each serves that workload its SVID; SIGTERM stops it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-cli-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const { child, stderr, exited } = start([
      'dev',
      '--state-dir',
      dir,
      '--trust-domain',
      'cli.test',
      '--workload',
      'orders=spiffe://cli.test/orders',
      '--workload',
      'search=spiffe://cli.test/search',
      '--x509-ttl',
      '600',
    ]);
    cleanups.push(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const addresses = new Map<string, { id: string; address: string }>();
    const lines = createInterface({ input: child.stdout });
    for await (const line of lines) {
      const m = /^workload (\S+) (\S+) (unix:\/\/\S+)$/.exec(line);
      if (m) addresses.set(m[1]!, { id: m[2]!, address: m[3]! });
      if (line.startsWith('ready')) break;
    }
    expect(stderr()).toBe('');
    expect([...addresses.keys()].sort()).toEqual(['orders', 'search']);

    for (const [name, { id, address }] of addresses) {
      expect(address).toBe(`unix://${join(dir, 'sockets', `${name}.sock`)}`);
      const client = new WorkloadApiClient({ address });
      try {
        const svid = await client.fetchX509Svid();
        expect(svid.id.toString()).toBe(id);
        expect(svid.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(600_000);
      } finally {
        client.close();
      }
    }
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('rejects bad usage with exit code 2 and a message', async () => {
    const missing = await run(['dev', '--trust-domain', 'cli.test', '--workload', 'a=spiffe://cli.test/a']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--state-dir is required');

    const bad = await run([
      'dev',
      '--state-dir',
      tmpdir(),
      '--trust-domain',
      'cli.test',
      '--workload',
      'nope',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('must be NAME=SPIFFE_ID');
  });

  it('refuses a workload ID outside the trust domain with exit code 1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'weave-cli-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const { code, stderr } = await run([
      'dev',
      '--state-dir',
      dir,
      '--trust-domain',
      'cli.test',
      '--workload',
      'a=spiffe://other.test/a',
    ]);
    expect(code).toBe(1);
    expect(stderr).toContain('DEV_WORKLOAD_API_INVALID_OPTIONS');
    expect(stderr).toContain('must be a workload ID (with a path) in trust domain cli.test');
  });
});
