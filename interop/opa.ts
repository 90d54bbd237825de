/**
 * Starts a real OPA (`opa run --server`) on a loopback port chosen by the OS,
 * with Weave's Rego and a policy document loaded from files, for tests of
 * `OpaEnforcer` and of `policies/weave.rego` itself.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { freePort, removeDir, startService, type Service } from './infra.js';

/** `packages/authz/policies/weave.rego`. */
export const weaveRego = fileURLToPath(new URL('../packages/authz/policies/weave.rego', import.meta.url));
export const policiesDir = fileURLToPath(new URL('../packages/authz/policies/', import.meta.url));

export interface Opa {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly service: Service;
  /** Stops OPA and removes the temp dir holding the data file. */
  stop(): Promise<void>;
}

export interface StartOpaOptions {
  /** Path of the `opa` binary (from `requireComponent('opa')`). */
  readonly bin: string;
  /** The Weave policy document, loaded as `data.weave.policy`. Omit to load none. */
  readonly policy?: unknown;
  /** Rego files or directories to load; default `[weaveRego]`. */
  readonly paths?: readonly string[];
  /** Extra `opa run` arguments (e.g. `--ignore=.*`, `--watch`). */
  readonly args?: readonly string[];
  /** Decision logs on the console; makes OPA return `decision_id` (default true). */
  readonly decisionLogs?: boolean;
}

/** GET /health answers 200 once OPA has loaded and compiled everything. */
export function opaHealthy(url: string): () => Promise<boolean> {
  return async () => {
    try {
      const res = await request(`${url}/health`);
      await res.body.dump();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  };
}

/** Starts `opa run --server` on 127.0.0.1 and waits for `/health`. */
export async function startOpa(o: StartOpaOptions): Promise<Opa> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-opa-'));
  const files = [...(o.paths ?? [weaveRego])];
  if (o.policy !== undefined) {
    // A data.json at the root of what OPA loads lands at `data`; nest it at weave.policy.
    const dataFile = join(dir, 'data.json');
    await writeFile(dataFile, JSON.stringify({ weave: { policy: o.policy } }));
    files.push(dataFile);
  }
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  try {
    const service = await startService({
      name: 'opa',
      command: o.bin,
      args: [
        'run',
        '--server',
        `--addr=127.0.0.1:${port}`,
        '--log-level=error',
        ...((o.decisionLogs ?? true) ? ['--set=decision_logs.console=true'] : []),
        ...(o.args ?? []),
        ...files,
      ],
      ready: opaHealthy(url),
    });
    return {
      url,
      service,
      stop: async () => {
        await service.stop();
        await removeDir(dir);
      },
    };
  } catch (e) {
    await removeDir(dir);
    throw e;
  }
}

/** Runs the `opa` CLI to completion (check, test, eval …). */
export function opaCli(bin: string, args: readonly string[]): { status: number; out: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}
