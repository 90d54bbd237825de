// The measuring loop of the a2a load generators (loadgen.ts over undici for the
// HTTP bindings, loadgen-grpc.ts over grpc-js): `concurrency` workers keep one
// call each in flight, a warm-up, then `durationMs` measured, and one JSON line
// on stdout. Each generator only says how to make one call.

/** What every load job carries. */
export interface LoadJob {
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

/**
 * One call. Resolves to `undefined` when the answer is a real success, or to a
 * short description of what came back instead; throws when the call failed.
 */
export type LoadCall = () => Promise<string | undefined>;

/** The job JSON the bench writes to the generator's stdin. */
export async function readJob<J extends LoadJob>(): Promise<J> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as J;
}

/**
 * Runs the load and prints `{requests, totalRequests, clientCpuUs, errors,
 * firstError, rps, p50, p99, max}`: latencies and req/s of the measured
 * window; errors counted from its start; this process's CPU per successful
 * call over warm-up and measurement.
 */
export async function runLoad(job: LoadJob, call: LoadCall, close: () => unknown): Promise<void> {
  let phase: 'warmup' | 'measure' | 'done' = 'warmup';
  const latencies: number[] = [];
  let errors = 0;
  let total = 0;
  let firstError: string | undefined;

  async function worker(): Promise<void> {
    while (phase !== 'done') {
      const t0 = process.hrtime.bigint();
      try {
        const wrong = await call();
        if (wrong !== undefined) {
          errors++;
          firstError ??= wrong;
          continue;
        }
      } catch (err) {
        errors++;
        firstError ??= String(err);
        continue;
      }
      total++;
      if (phase === 'measure') latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }

  const cpuStart = process.cpuUsage();
  const workers = Array.from({ length: job.concurrency }, () => worker());
  await new Promise((r) => setTimeout(r, job.warmupMs));
  phase = 'measure';
  errors = 0;
  const start = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, job.durationMs));
  phase = 'done';
  const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
  await Promise.all(workers);
  await close();
  const cpu = process.cpuUsage(cpuStart);

  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  process.stdout.write(
    JSON.stringify({
      requests: latencies.length,
      totalRequests: total,
      /** The load generator's own CPU per request, in µs. */
      clientCpuUs: (cpu.user + cpu.system) / Math.max(1, total),
      errors,
      firstError,
      rps: (latencies.length / elapsedMs) * 1000,
      p50: q(0.5),
      p99: q(0.99),
      max: latencies[latencies.length - 1] ?? NaN,
    }) + '\n',
  );
}
