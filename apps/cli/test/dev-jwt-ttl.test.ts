// `weave dev --jwt-ttl` is bounded as the dev Workload API server bounds it
// (30 days): `--jwt-ttl 10000000000h` served tokens whose exp no JS Date
// holds, which every validator refused and JwtSource fetched again on every call.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { collectOutput, spawnWeave, stopWeave } from './helpers.js';

/** Runs `weave dev` until it exits or says "ready" (then it is stopped): which came first, and what it printed. */
async function devUntilReadyOrExit(
  args: readonly string[],
): Promise<{ ready: boolean; code: number | null; stderr: string }> {
  const state = await mkdtemp(join(tmpdir(), 'weave-dev-ttl-'));
  const child = spawnWeave(['dev', '--state-dir', state, '--workload', 'a=spiffe://dev.weave/a', ...args]);
  const out = collectOutput(child);
  try {
    const ready = await new Promise<boolean>((resolve) => {
      child.stdout?.on('data', () => {
        if (/^ready /m.test(out.output())) resolve(true);
      });
      child.once('exit', () => resolve(false));
    });
    if (ready) await stopWeave(child);
    const r = await out.done;
    return { ready, code: r.code, stderr: r.stderr };
  } finally {
    await stopWeave(child);
    await rm(state, { recursive: true, force: true });
  }
}

describe('weave dev --jwt-ttl', () => {
  it('refuses a lifetime over 720h with exit 2 and the bound, before serving', async () => {
    for (const ttl of ['10000000000h', '721h', '2592001s']) {
      const r = await devUntilReadyOrExit(['--jwt-ttl', ttl]);
      expect(r.ready, `--jwt-ttl ${ttl}`).toBe(false);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--jwt-ttl must be at most 720h, got "${ttl}"`);
    }
  });

  it('serves with the longest lifetime taken, 720h', async () => {
    const r = await devUntilReadyOrExit(['--jwt-ttl', '720h']);
    expect(r.ready).toBe(true);
  });
});
