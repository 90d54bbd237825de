// The README's five-minute tutorial from this checkout's sources: its files
// (policy.yaml, hello.yaml, hello.ts) are taken from the README's code blocks,
// the dev Workload API server gives identities, the agent runs as its own
// process, and the weave CLI calls it as the tutorial does. The whole tutorial,
// commands included, runs from the packed packages in `npm run test:packages`
// (scripts/release/smoke/tutorial.mjs).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { collectOutput, weave } from '../../cli/test/helpers.js';

const TSX = fileURLToPath(new URL('../../../node_modules/.bin/tsx', import.meta.url));
const README = fileURLToPath(new URL('../../../README.md', import.meta.url));
/** Inside apps/demo, so that `@weave/agent` and `zod` resolve as in the reader's folder. */
const DEMO = fileURLToPath(new URL('..', import.meta.url));

/** The tutorial's files: the README's ```lang file=NAME blocks. */
function tutorialFiles(): Map<string, string> {
  const readme = readFileSync(README, 'utf8');
  const start = readme.indexOf('## Build an agent in five minutes');
  // Up to the next section: later sections have file blocks of their own.
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const files = new Map<string, string>();
  for (const m of section.matchAll(/^```\S+ file=(\S+)\n([\s\S]*?)^```$/gm)) files.set(m[1]!, m[2]!);
  return files;
}

let dir: string;
let project: string;
let dev: DevWorkloadApiServer;
let agent: ChildProcess;
let url: string;

/** The tutorial's agent, run as the reader runs it: in its folder, with the environment it was given. */
function runAgent(socket: string, cwd: string) {
  const env = { ...process.env, SPIFFE_ENDPOINT_SOCKET: socket };
  const child = spawn(TSX, ['--conditions=weave-source', 'hello.ts'], {
    env,
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { child, ...collectOutput(child) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-tutorial-'));
  project = await mkdtemp(join(DEMO, '.tutorial-'));
  const files = tutorialFiles();
  expect([...files.keys()].sort()).toEqual(['hello.ts', 'hello.yaml', 'policy.yaml']);
  for (const [name, body] of files) await writeFile(join(project, name), body);
  dev = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: 'demo.weave',
    workloads: { hello: 'spiffe://demo.weave/agent/hello', me: 'spiffe://demo.weave/user/me' },
    logger: pino({ level: 'silent' }),
  });
  // WEAVE_SERVER__PORT=0 overrides the tutorial's port 8443 so the test never collides.
  process.env.WEAVE_SERVER__PORT = '0';
  const a = runAgent(dev.address('hello'), project);
  delete process.env.WEAVE_SERVER__PORT;
  agent = a.child;
  url = await new Promise<string>((resolve, reject) => {
    const poll = setInterval(() => {
      const m = /serving A2A over mTLS on (https:\/\/\S+)/.exec(a.output());
      if (m) {
        clearInterval(poll);
        resolve(m[1] as string);
      }
    }, 50);
    void a.done.then((r) => {
      clearInterval(poll);
      reject(new Error(`the tutorial agent exited (${r.code}): ${r.stdout}${r.stderr}`));
    });
  });
});

afterAll(async () => {
  agent?.kill('SIGKILL');
  await dev?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  if (project) await rm(project, { recursive: true, force: true });
});

describe('the README tutorial', () => {
  it('the agent announces its SPIFFE ID and URL', () => {
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('weave call greet as spiffe://demo.weave/user/me returns the greeting with the verified caller', async () => {
    const r = await weave(['call', url, 'greet', '{"name":"Ada"}'], {
      SPIFFE_ENDPOINT_SOCKET: dev.address('me'),
    });
    expect(r.stderr).toContain('spiffe://demo.weave/user/me → spiffe://demo.weave/agent/hello');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      greeting: 'Hello, Ada!',
      yourSpiffeId: 'spiffe://demo.weave/user/me',
    });
  });

  it('forget is refused by the agent (default deny), exit 1', async () => {
    const r = await weave(['call', url, 'forget', '{}'], { SPIFFE_ENDPOINT_SOCKET: dev.address('me') });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^CALL_DENIED: the callee refused the call \(deniedBy: callee, audit \S+\): Permission denied: spiffe:\/\/demo\.weave\/user\/me may not invoke forget$/m,
    );
  });

  it('stops cleanly on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => agent.once('exit', (code) => resolve(code)));
    agent.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
