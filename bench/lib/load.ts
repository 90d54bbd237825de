// The parent side of the load generator (loadgen.ts): the job types, and
// `runLoad`, which runs one job in its own process and charges this process's
// CPU time — the server under test lives here, one loaded at a time — over
// exactly the window the load generator measured.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startWindowProfiles, writeWindowProfiles, type ProfileDirs } from './window-profile.js';

/**
 * One gRPC message on the wire: the 5-byte prefix (not compressed, length)
 * and the message. How the gRPC load writes its requests and the bare
 * node:http2 baseline its answers.
 */
export function grpcMessageFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/** A client SVID and the trust bundle, as PEM. */
export interface PemSvid {
  ca: string;
  cert: string;
  key: string;
}

interface Timing extends ProfileDirs {
  concurrency: number;
  /** Time-boxed window: warm-up then `durationMs` measured... */
  warmupMs: number;
  durationMs: number;
  /** ...or exactly `calls` calls measured after `warmupCalls` (default 1) unmeasured ones. */
  calls?: number;
  warmupCalls?: number;
}

export type LoadgenJob = Timing &
  (
    | {
        kind: 'http';
        url: string;
        body: string;
        contentType?: string;
        /** Every successful answer contains each of these. */
        expect: string[];
        /**
         * Do per call what any JSON client does: encode the request from its
         * object (`body` parsed once, re-encoded on every call) and parse the
         * answer before checking it. Without it the body is sent as given and
         * the answer is only searched as text.
         */
        jsonClient?: boolean;
        svid: PemSvid;
        expectPeer: string;
      }
    | {
        /** SendMessage as bare gRPC frames on one node:http2 session (no gRPC client library). */
        kind: 'grpc';
        target: string;
        request: Record<string, unknown>;
        svid: PemSvid;
        expectPeer: string;
      }
    | {
        kind: 'agent';
        socket: string;
        policyFile: string;
        target: string;
        targetUrl: string;
        capability: string;
        input: unknown;
        /** The answer's `text` starts with this and is `expectLength` long. */
        expect: string;
        expectLength: number;
      }
    | {
        /** The least a secure A2A caller does per SendMessage (see the loadgen's `least-a2a`). */
        kind: 'least-a2a';
        url: string;
        /** The echo's input text; the answer must be `echo: <text>`. */
        text: string;
        svid: PemSvid;
        expectPeer: string;
      }
    | { kind: 'channel'; socket: string; url: string; body: string; expect: string[]; expectPeer: string }
    | {
        /** One POST per new connection, each presenting the next of `certs` (never resumed). */
        kind: 'new-certs';
        url: string;
        body: string;
        expect: string[];
        certs: PemSvid[];
        expectPeer: string;
      }
    | { kind: 'stream-weave'; socket: string; url: string; events: number; expectPeer: string }
    | { kind: 'stream-sdk'; url: string; events: number; svid: PemSvid; expectPeer: string }
    | {
        kind: 'fanout-weave';
        socket: string;
        policyFile: string;
        peers: Array<{ id: string; url: string }>;
      }
    | { kind: 'fanout-bare'; peers: Array<{ id: string; url: string }>; svid: PemSvid; body: string }
  );

/** What the load generator prints. */
export interface LoadgenResult {
  /** Units (requests, events, connections) completed inside the window. */
  units: number;
  /** Calls completed inside the window. */
  calls: number;
  elapsedMs: number;
  /** Units per second over the window. */
  rate: number;
  /** The load generator's CPU (user + system) over the window per unit, in µs. */
  clientCpuUs: number;
  /** Latency of one call in the window, in ms (null: none finished, or not meaningful). */
  p50: number | null;
  p99: number | null;
  errors: number;
  firstError?: string;
  /** Policy decisions audited by a Weave caller (both runs of a SecureAgent load). */
  decisions: number;
  extra?: Record<string, number>;
}

export interface LoadResult extends LoadgenResult {
  /** This process's (the server's) CPU over the same window per unit, in µs. */
  serverCpuUs: number;
}

const LOADGEN = fileURLToPath(new URL('./loadgen.ts', import.meta.url));
const cpuNow = () => {
  const c = process.cpuUsage();
  return c.user + c.system;
};

/**
 * Set by the harness: write a CPU profile (`--cpu-prof`) and/or an allocation
 * profile (`--heap-prof`) of every load generator process, and of this process
 * (the server side) over each measured window, into these folders.
 */
export const loadOptions: ProfileDirs = {};

let profiles = 0;

/** Profiles this process from `window start` to `window end` (with --cpu-prof / --heap-prof). */
async function profileWindow(phase: 'start' | 'end', kind: string): Promise<void> {
  if (phase === 'start') return startWindowProfiles(loadOptions);
  await writeWindowProfiles(loadOptions, `server-${++profiles}-${kind}`);
}

/**
 * Runs `job` in a new load generator process started like this one (same
 * loader, same export conditions) and resolves with its result plus this
 * process's CPU per unit over the measured window. Rejects when the load
 * generator fails or reports no window.
 */
export function runLoad(job: LoadgenJob): Promise<LoadResult> {
  // Every load starts on this process's live heap only: the garbage of the loads before it (a
  // closed SDK server's store, hundreds of MB after its large-payload rows) is collected here,
  // not inside the next row's window, whichever server that row measures.
  collectGarbage();
  return new Promise((resolve, reject) => {
    const { cpuProfDir, heapProfDir, heapProfPromoted } = loadOptions;
    const execArgv = process.execArgv.filter((a) => a !== '--expose-gc');
    const child = spawn(process.execPath, [...execArgv, '--expose-gc', LOADGEN], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let buf = '';
    let cpuStart: number | undefined;
    let serverCpu: number | undefined;
    let result: LoadgenResult | undefined;
    let profiling: Promise<void> = Promise.resolve();
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'window start') {
          cpuStart = cpuNow();
          void profileWindow('start', job.kind);
        } else if (line === 'window end' && cpuStart !== undefined) {
          serverCpu = cpuNow() - cpuStart;
          profiling = profileWindow('end', job.kind);
        } else if (line.startsWith('result ')) result = JSON.parse(line.slice(7)) as LoadgenResult;
        // Anything else (a warning, or V8's own trace when node runs with --trace-gc-nvp) is shown, with whose it is.
        else if (line !== '') process.stderr.write(`[${job.kind}] ${line}\n`);
      }
    });
    child.on('error', reject);
    child.on('exit', async (code) => {
      await profiling;
      if (code !== 0) return reject(new Error(`load generator (${job.kind}) exited with ${code}`));
      if (!result || serverCpu === undefined)
        return reject(new Error(`load generator (${job.kind}) reported no window`));
      resolve({ ...result, serverCpuUs: serverCpu / Math.max(1, result.units) });
    });
    child.stdin.end(JSON.stringify({ ...job, cpuProfDir, heapProfDir, heapProfPromoted }));
  });
}

/**
 * A full garbage collection of this process (the servers under test). The
 * bench runs with `--expose-gc` (`npm run bench` passes it); without it the
 * figures would carry earlier loads' garbage, so that is refused.
 */
function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') {
    throw new Error(
      'the bench needs --expose-gc (npm run bench passes it): node --expose-gc --import tsx bench/run.ts',
    );
  }
  gc();
}
