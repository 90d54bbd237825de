/**
 * How tests find and start the real infrastructure that `scripts/infra/setup.sh`
 * installs into the git-ignored `.infra/` folder (or Debian packages for
 * PostgreSQL and HAProxy).
 *
 * - {@link requireComponent} returns the paths of a component, or `undefined`
 *   after a loud warning when it is not installed, so `npm test` stays runnable
 *   on a bare machine. Under `CI=true` a missing component throws: nothing
 *   silently skips in CI.
 * - {@link startPostgres} and {@link startHaproxy} start private instances on
 *   loopback ports chosen by the OS and stop them on teardown.
 * - {@link startService} is the one process runner behind them (and behind the
 *   OPA and SPIRE helpers): log capture, a readiness probe, stop and restart.
 *
 * Node built-ins only, so any package's tests can import this file.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { freePort } from '@weave/test-support/tcp-relay';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file lives in `<root>/interop/`). */
export const repoRoot = fileURLToPath(new URL('../', import.meta.url));
/** The cache `scripts/infra/setup.sh` fills. */
const infraDir = join(repoRoot, '.infra');
const infraBin = join(infraDir, 'bin');

/** Where each component's programs are. */
export interface Components {
  opa: { readonly opa: string };
  spire: { readonly server: string; readonly agent: string };
  postgres: { readonly binDir: string; readonly initdb: string; readonly pgCtl: string };
  haproxy: { readonly haproxy: string };
  /** The go-spiffe interop harness binary (built by scripts/infra/go-harness.sh). */
  'go-harness': { readonly bin: string };
  /** Python with the official A2A SDK installed (scripts/infra/python.sh). */
  'python-a2a': { readonly python: string };
}
export type ComponentName = keyof Components;

const PG_BIN = '/usr/lib/postgresql/15/bin';

function executable(path: string): string | undefined {
  return existsSync(path) ? path : undefined;
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** True when `<venv>/lib/python3.*\/site-packages/a2a` exists (cheaper than starting Python). */
function venvHasA2a(venv: string): boolean {
  const lib = join(venv, 'lib');
  if (!existsSync(lib)) return false;
  return readdirSync(lib).some(
    (d) => d.startsWith('python3') && existsSync(join(lib, d, 'site-packages', 'a2a')),
  );
}

/** Looks a component up without side effects; `undefined` when any part is missing. */
function findComponent<N extends ComponentName>(name: N): Components[N] | undefined {
  const found = ((): Components[ComponentName] | undefined => {
    switch (name) {
      case 'opa': {
        const opa = executable(join(infraBin, 'opa'));
        return opa ? { opa } : undefined;
      }
      case 'spire': {
        const server = executable(join(infraBin, 'spire-server'));
        const agent = executable(join(infraBin, 'spire-agent'));
        return server && agent ? { server, agent } : undefined;
      }
      case 'postgres': {
        const initdb = executable(join(PG_BIN, 'initdb'));
        const pgCtl = executable(join(PG_BIN, 'pg_ctl'));
        return initdb && pgCtl ? { binDir: PG_BIN, initdb, pgCtl } : undefined;
      }
      case 'haproxy': {
        const haproxy = onPath('haproxy') ?? executable('/usr/sbin/haproxy');
        return haproxy ? { haproxy } : undefined;
      }
      case 'go-harness': {
        const bin = executable(join(infraBin, 'go-harness'));
        return bin ? { bin } : undefined;
      }
      case 'python-a2a': {
        const venv = join(infraDir, 'venv');
        const python = executable(join(venv, 'bin', 'python'));
        return python && venvHasA2a(venv) ? { python } : undefined;
      }
    }
    return undefined;
  })();
  return found as Components[N] | undefined;
}

/** Thrown under `CI=true` when a component the tests need is not installed. */
class MissingComponentError extends Error {
  readonly code = 'INFRA_COMPONENT_MISSING';
  constructor(readonly component: ComponentName) {
    super(
      `${component} is not installed, and CI=true forbids skipping: run scripts/infra/setup.sh (it installs into .infra/)`,
    );
    this.name = 'MissingComponentError';
  }
}

const warned = new Set<ComponentName>();

/**
 * The component's paths. When it is missing: under `CI=true` throws
 * {@link MissingComponentError}; otherwise prints a loud banner and returns
 * `undefined`, for `describe.skipIf(!x)`.
 */
export function requireComponent<N extends ComponentName>(name: N): Components[N] | undefined {
  const found = findComponent(name);
  if (found) return found;
  if (process.env.CI === 'true') throw new MissingComponentError(name);
  if (!warned.has(name)) {
    warned.add(name);
    const line = '!'.repeat(78);
    console.warn(
      `\n${line}\n!! SKIPPING tests that need ${name}: not installed.\n!! Run scripts/infra/setup.sh to install it into .infra/ (CI=true makes this an error).\n${line}\n`,
    );
  }
  return undefined;
}

/** A free TCP port on 127.0.0.1, chosen by the OS, for programs that cannot listen on port 0. */
export { freePort };

/** Resolves when something accepts TCP connections on 127.0.0.1:port. */
export function tcpReady(port: number, host = '127.0.0.1'): () => Promise<boolean> {
  return () =>
    new Promise((resolve) => {
      const s = createConnection({ port, host });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
}

/** Polls `check` every `intervalMs` until it returns true; throws with `what` after `timeoutMs`. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  { timeoutMs = 30_000, intervalMs = 50 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A child process started by {@link startService}. */
export interface Service {
  readonly name: string;
  /** The current process (replaced by {@link Service.restart}). */
  readonly proc: ChildProcess;
  /** Everything it printed so far (stdout and stderr interleaved), last 256 KiB. */
  log(): string;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); resolves when it exited. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL, at once: a crash, as seen by clients. */
  kill(): Promise<void>;
  /** Starts the same command again and waits for readiness. */
  restart(): Promise<void>;
}

export interface ServiceOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Run as this user (the tests run as root in CI; some programs refuse root). */
  readonly uid?: number;
  readonly gid?: number;
  /** Readiness probe, given what the program printed so far; the service counts as started when it returns true. */
  readonly ready?: (output: string) => Promise<boolean> | boolean;
  readonly readyTimeoutMs?: number;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test worker that dies must not leave servers behind holding ports and temp dirs.
  process.once('exit', () => {
    for (const p of running) p.kill('SIGKILL');
  });
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => p.once('exit', () => resolve()));
}

/**
 * Starts a long-running program, captures its output and waits until `ready`
 * says yes. Fails with the program's own output when it exits first or the
 * probe times out.
 */
export async function startService(o: ServiceOptions): Promise<Service> {
  installExitHook();
  let out = '';
  // What the current process printed: readiness is judged on it alone, so a
  // restarted service is not taken for ready on its predecessor's output.
  let current = '';
  const append = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    out += text;
    if (out.length > 262_144) out = out.slice(-262_144);
    if (current.length < 262_144) current += text;
  };
  let proc!: ChildProcess;
  const launch = async () => {
    current = '';
    proc = spawn(o.command, o.args, {
      cwd: o.cwd,
      env: { ...process.env, ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(o.uid === undefined ? {} : { uid: o.uid }),
      ...(o.gid === undefined ? {} : { gid: o.gid }),
    });
    running.add(proc);
    const p = proc;
    p.stdout?.on('data', append);
    p.stderr?.on('data', append);
    p.once('exit', () => running.delete(p));
    let spawnError: Error | undefined;
    p.once('error', (e) => (spawnError = e));
    const ready = o.ready ?? (() => true);
    await waitUntil(
      `${o.name} to become ready`,
      async () => {
        if (spawnError) throw new Error(`${o.name}: ${spawnError.message}`);
        if (p.exitCode !== null || p.signalCode !== null) {
          throw new Error(`${o.name} exited (${p.exitCode ?? p.signalCode}) before it was ready:\n${out}`);
        }
        return ready(current);
      },
      { timeoutMs: o.readyTimeoutMs ?? 30_000 },
    ).catch(async (e: unknown) => {
      p.kill('SIGKILL');
      await exited(p);
      throw e instanceof Error && !e.message.includes(out.slice(-200))
        ? new Error(`${e.message}\n${out}`)
        : e;
    });
  };
  await launch();
  const stop = async (graceMs = 5_000) => {
    const p = proc;
    if (p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), graceMs);
    await exited(p);
    clearTimeout(timer);
  };
  return {
    name: o.name,
    get proc() {
      return proc;
    },
    log: () => out,
    stop,
    kill: async () => {
      proc.kill('SIGKILL');
      await exited(proc);
    },
    restart: async () => {
      await stop();
      await launch();
    },
  };
}

/**
 * Arguments for `node` to run a TypeScript file of this repository as its
 * own process, importing the workspace packages from source.
 */
export function tsxArgs(script: string, ...args: string[]): string[] {
  return ['--import', 'tsx', '--conditions=weave-source', join(repoRoot, script), ...args];
}

/** Removes a temp directory; never throws (teardown must not mask a test failure). */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
}

function passwdEntry(user: string): { uid: number; gid: number } | undefined {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  const f = line?.split(':');
  return f && f.length > 3 ? { uid: Number(f[2]), gid: Number(f[3]) } : undefined;
}

/** A private PostgreSQL cluster (or the one at `WEAVE_TEST_PG_URL`). */
export interface Postgres {
  /** `postgres://weave:<password>@127.0.0.1:<port>/postgres` */
  readonly url: string;
  /** Stops the cluster and removes its directory (a no-op for `WEAVE_TEST_PG_URL`). */
  stop(): Promise<void>;
  /** Immediate shutdown then start again on the same port: a database crash and recovery. */
  restart?(): Promise<void>;
}

/**
 * Starts a throwaway PostgreSQL 15 cluster in a temp dir: `initdb` + `postgres`
 * on a loopback port chosen by the OS (and a unix socket in the temp dir), user
 * `weave` with a random password (scram-sha-256). When `WEAVE_TEST_PG_URL` is
 * set, that server is used instead and nothing is started.
 *
 * Returns `undefined` (after a loud warning) when PostgreSQL is not installed
 * and `CI` is not `true`; see {@link requireComponent}.
 */
export async function startPostgres(): Promise<Postgres | undefined> {
  const external = process.env.WEAVE_TEST_PG_URL;
  if (external) return { url: external, stop: async () => undefined };
  const pg = requireComponent('postgres');
  if (!pg) return undefined;
  // initdb and postgres refuse to run as root: run them as the `postgres` user.
  const asUser = process.getuid?.() === 0 ? passwdEntry('postgres') : undefined;
  if (process.getuid?.() === 0 && !asUser) throw new Error('running as root but there is no postgres user');
  const dir = await mkdtemp(join(tmpdir(), 'weave-pg-'));
  const data = join(dir, 'data');
  const password = randomBytes(12).toString('hex');
  await writeFile(join(dir, 'pwfile'), `${password}\n`, { mode: 0o600 });
  if (asUser) {
    await chown(dir, asUser.uid, asUser.gid);
    await chown(join(dir, 'pwfile'), asUser.uid, asUser.gid);
  }
  const ids = asUser ? { uid: asUser.uid, gid: asUser.gid } : {};
  const init = spawnSync(
    pg.initdb,
    [
      '-D',
      data,
      '-U',
      'weave',
      '--auth=scram-sha-256',
      `--pwfile=${join(dir, 'pwfile')}`,
      '-E',
      'UTF8',
      '--no-sync',
    ],
    { encoding: 'utf8', ...ids },
  );
  if (init.status !== 0) {
    await removeDir(dir);
    throw new Error(`initdb failed (${init.status}): ${init.stderr}${init.stdout}`);
  }
  const port = await freePort();
  const svc = await startService({
    name: 'postgres',
    command: join(pg.binDir, 'postgres'),
    args: [
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      // Durability is not under test here, speed on 2 shared cores is.
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
    ],
    ...ids,
    ready: () => {
      const r = spawnSync(join(pg.binDir, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port)], {
        encoding: 'utf8',
      });
      return r.status === 0;
    },
  });
  let stopped = false;
  return {
    url: `postgres://weave:${password}@127.0.0.1:${port}/postgres`,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      // SIGINT = PostgreSQL's "fast" shutdown.
      svc.proc.kill('SIGINT');
      await svc.stop(10_000);
      await removeDir(dir);
    },
    restart: async () => {
      // SIGQUIT = "immediate" shutdown: no checkpoint, crash recovery on start.
      svc.proc.kill('SIGQUIT');
      await svc.restart();
    },
  };
}

/** A running HAProxy. */
export interface Haproxy {
  readonly service: Service;
  readonly configPath: string;
  stop(): Promise<void>;
}

/**
 * Starts HAProxy in the foreground with the given configuration text (checked
 * with `haproxy -c` first, so a bad config fails with HAProxy's message).
 * `waitForPorts` are loopback ports from the config's `bind` lines that must
 * accept connections before this resolves. Returns `undefined` when HAProxy is
 * missing outside CI (see {@link requireComponent}).
 */
export async function startHaproxy(
  config: string,
  { waitForPorts = [] }: { waitForPorts?: readonly number[] } = {},
): Promise<Haproxy | undefined> {
  const h = requireComponent('haproxy');
  if (!h) return undefined;
  const dir = await mkdtemp(join(tmpdir(), 'weave-haproxy-'));
  const configPath = join(dir, 'haproxy.cfg');
  await writeFile(configPath, config);
  const check = spawnSync(h.haproxy, ['-c', '-q', '-f', configPath], { encoding: 'utf8' });
  if (check.status !== 0) {
    await removeDir(dir);
    throw new Error(`haproxy rejected the config (${check.status}):\n${check.stdout}${check.stderr}`);
  }
  const service = await startService({
    name: 'haproxy',
    command: h.haproxy,
    args: ['-db', '-f', configPath],
    ready: async () => {
      for (const p of waitForPorts) if (!(await tcpReady(p)())) return false;
      return true;
    },
  });
  return {
    service,
    configPath,
    stop: async () => {
      await service.stop();
      await removeDir(dir);
    },
  };
}

/** What {@link tcpBalancerConfig} puts in front of which servers, and how. */
export interface TcpBalancer {
  /** The loopback port callers connect to. */
  readonly front: number;
  /** Each server's name and loopback port, in the order `balance first` tries them. */
  readonly servers: ReadonlyArray<readonly [name: string, port: number]>;
  readonly balance: 'roundrobin' | 'first';
  /** The health check of each server (HAProxy's `check` parameters), e.g. `inter 500 fall 2 rise 1`. */
  readonly check: string;
  /** A bound on each health check (HAProxy's `timeout check`), e.g. `2s`. */
  readonly checkTimeout?: string;
  /** Connections and server state changes logged to HAProxy's stdout ({@link Haproxy.service}'s log). */
  readonly log?: boolean;
}

/**
 * The config of an HAProxy in TCP mode in front of agent replicas (for
 * {@link startHaproxy}): mTLS stays end to end, so the caller verifies the
 * replicas' SPIFFE ID through it; a connection a stopped or dead replica
 * refuses is tried again on another one (`retries`, `option redispatch`).
 */
export function tcpBalancerConfig(b: TcpBalancer): string {
  return [
    ...(b.log ? ['global', '  log stdout format raw local0'] : []),
    'defaults',
    ...(b.log ? ['  log global', '  option tcplog'] : []),
    '  mode tcp',
    '  timeout connect 1s',
    '  timeout client 60s',
    '  timeout server 60s',
    // A connection to a dead or stopped replica is refused: try another one.
    '  retries 3',
    '  option redispatch',
    'frontend a2a',
    `  bind 127.0.0.1:${b.front}`,
    '  default_backend replicas',
    'backend replicas',
    `  balance ${b.balance}`,
    ...(b.checkTimeout ? [`  timeout check ${b.checkTimeout}`] : []),
    ...b.servers.map(([name, port]) => `  server ${name} 127.0.0.1:${port} check ${b.check}`),
    '',
  ].join('\n');
}

/** A fresh temp directory readable by `uid` (for a process started under another user). */
export async function tempDirFor(prefix: string, owner?: { uid: number; gid: number }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (owner) await chown(dir, owner.uid, owner.gid);
  await chmod(dir, 0o755);
  return dir;
}
