// The dev Workload API server deletes a socket file in its way only when the
// kernel says nobody listens on it (ECONNREFUSED, or ENOENT once it is gone).
// Any other answer to its probe proves nothing, so the start is refused and
// the file stays.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DevWorkloadApiServer, DevWorkloadApiServerError } from '@weave/identity/dev';

const TD = 'probe.test';
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-probe-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** What one connect to the Unix socket `path` gives: `'connected'` (then held open) or the error code. */
function connectOnce(path: string, held: Socket[]): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      held.push(s);
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('DevWorkloadApiServer socket probe', () => {
  // A full backlog answers EAGAIN on Linux (elsewhere it may refuse, or wait).
  it.skipIf(process.platform !== 'linux')(
    'refuses to start on a socket whose listener’s backlog is full (EAGAIN) and leaves the socket file in place',
    async () => {
      const dir = await tempDir();
      const sockets = join(dir, 'sockets');
      await mkdir(sockets, { recursive: true });
      const path = join(sockets, 'a.sock');
      // A listener that never accepts: a process that listens with a backlog of 1, then stops itself.
      const child = spawn(
        process.execPath,
        [
          '-e',
          `require('node:net').createServer().listen({ path: ${JSON.stringify(path)}, backlog: 1 }, () => {
            process.stdout.write('ready');
            process.kill(process.pid, 'SIGSTOP');
          })`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      cleanups.push(() => child.kill('SIGKILL'));
      await new Promise((ready) => child.stdout.once('data', ready));
      const held: Socket[] = [];
      cleanups.push(() => held.forEach((s) => s.destroy()));
      let answer = 'connected';
      for (let i = 0; i < 64 && answer === 'connected'; i++) answer = await connectOnce(path, held);
      expect(answer).toBe('EAGAIN');
      const before = await stat(path);

      const err = await DevWorkloadApiServer.start({
        stateDir: dir,
        trustDomain: TD,
        workloads: { a: `spiffe://${TD}/a` },
      }).then(
        (s) => {
          cleanups.push(() => s.close());
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DevWorkloadApiServerError);
      expect((err as DevWorkloadApiServerError).code).toBe('DEV_WORKLOAD_API_SOCKET_PROBE_FAILED');
      expect((err as Error).message).toMatch(/a\.sock could not be probed .*EAGAIN.*left in place/);
      const after = await stat(path);
      expect(after.isSocket()).toBe(true);
      expect(after.ino).toBe(before.ino);
    },
  );
});
