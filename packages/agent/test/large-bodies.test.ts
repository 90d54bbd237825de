// Request bodies of every size, from one TLS record to several megabytes,
// between two real SecureAgents (dev Workload API, mTLS on loopback, local
// policy), with several calls in flight on the same connections. The callee
// runs in its own process, as in a deployment: the next request on a
// connection then arrives while the callee may still be flushing its last
// answer. Not one call may fail. (A large answer followed by a large request
// once left Node's HTTP parser paused mid-read: HPE_PAUSED, connection reset.)
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SecureAgent } from '../src/index.js';
import { ID, POLICY, startWorld, testLogger, type World } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TSX = join(ROOT, 'node_modules/.bin/tsx');
const ECHO_AGENT = fileURLToPath(new URL('./fixtures/echo-agent.ts', import.meta.url));

const KB = 1024;
const MB = 1024 * KB;
/** What the echo agent sends back of each input (see fixtures/echo-agent.ts). */
const ECHO_PREFIX_BYTES = 512 * KB;

/** 1 KB to 4 MB: powers of two, the TLS record size (16 KB) and its neighbours, and the sizes of the report. */
const SIZES = [
  ...[1, 2, 4, 8, 12, 16, 17, 32, 64, 100, 128, 256, 512].map((k) => k * KB),
  16 * KB - 1,
  16 * KB + 1,
  1 * MB,
  2 * MB,
  4 * MB,
].sort((a, b) => a - b);

/** Calls in flight, as in the report. */
const IN_FLIGHT = 16;
/** How many of them also send the bodies above 1 MB (memory of a shared test machine). */
const BIG_WORKERS = 4;
/** Passes of each caller over the size table. */
const ROUNDS = 2;

const EchoOutput = z.object({ length: z.number(), sha256: z.string(), prefix: z.string() });

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

let world: World;
let calleeProcess: ChildProcess | undefined;
let calleeUrl: string;
let caller: SecureAgent;

/**
 * How the caller reaches the callee on each A2A binding the agents speak.
 * Each row runs the whole size table; another binding is one more row.
 */
const BINDINGS: ReadonlyArray<{
  readonly name: string;
  readonly call: (data: string) => Promise<z.infer<typeof EchoOutput>>;
}> = [
  {
    name: 'JSON-RPC',
    call: (data) => caller.callAgent(ID.search, 'echo', { data }, { output: EchoOutput, timeoutMs: 120_000 }),
  },
];

/** Starts the echo agent in a child process; resolves with its URL. */
async function startCallee(): Promise<string> {
  const child = spawn(
    TSX,
    ['--conditions=weave-source', ECHO_AGENT, world.dev.address('search'), world.policyFile],
    {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  calleeProcess = child;
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout! });
  return new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`echo agent exited with ${code}: ${stderr}`)));
    lines.on('line', (line) => {
      const m = /^URL (\S+)$/.exec(line);
      if (m) resolve(m[1]!);
    });
  });
}

beforeAll(async () => {
  world = await startWorld();
  await writeFile(
    world.policyFile,
    `${POLICY}  - id: orchestrator-echoes
    effect: allow
    callers: ['${ID.orchestrator}']
    callees: ['${ID.search}']
    actions: ['echo']
`,
  );
  calleeUrl = await startCallee();
  caller = new SecureAgent({
    config: {
      name: 'orchestrator',
      identity: { workloadApi: { socket: world.dev.address('orchestrator') } },
      authz: { policyFile: world.policyFile },
      peers: [{ id: ID.search, url: calleeUrl }],
    },
    logger: testLogger(),
  });
  await caller.start();
}, 60_000);

afterAll(async () => {
  await caller?.stop();
  if (calleeProcess && calleeProcess.exitCode === null) {
    const exited = new Promise((r) => calleeProcess!.once('exit', r));
    calleeProcess.stdin!.end();
    await exited;
  }
  await world?.close();
});

describe.each(BINDINGS)('request bodies from 1 KB to 4 MB over mTLS ($name)', ({ call }) => {
  it('answers every call of every size, several in flight, with zero failures', async () => {
    const failures: string[] = [];
    let answered = 0;
    let sent = 0;
    // Each caller sends its next body as soon as the last one is answered, so
    // requests follow answers closely on every connection; the callers start
    // at different sizes, so small and large bodies share connections.
    const worker = async (w: number) => {
      for (let round = 0; round < ROUNDS; round++) {
        for (let k = 0; k < SIZES.length; k++) {
          const size = SIZES[(k + w) % SIZES.length]!;
          if (size > 1 * MB && w >= BIG_WORKERS) continue;
          // Each body differs, so an answer cannot pass for another call's.
          const data = `${w}:${round}:`.padEnd(size, String.fromCharCode(97 + ((w + k) % 26)));
          sent++;
          try {
            const out = await call(data);
            if (
              out.length !== size ||
              out.sha256 !== sha256(data) ||
              out.prefix !== data.slice(0, ECHO_PREFIX_BYTES)
            ) {
              throw new Error(`wrong answer (length ${out.length})`);
            }
            answered++;
          } catch (err) {
            failures.push(`${size} B: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}`);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, (_, w) => worker(w)));
    expect(failures).toEqual([]);
    expect(answered).toBe(sent);
    expect(sent).toBe(
      ROUNDS *
        (IN_FLIGHT * SIZES.length - (IN_FLIGHT - BIG_WORKERS) * SIZES.filter((s) => s > 1 * MB).length),
    );
  }, 300_000);
});
