// gRPC load generator for bindings.bench.ts, its own process like loadgen.ts:
// keeps `concurrency` SendMessage calls in flight on one grpc-js channel over
// mTLS (HTTP/2 multiplexes them, as any gRPC client does) for `durationMs`
// after a warm-up, and prints one JSON line with the results. The same client
// and the same request bytes for every server.
import type { PeerCertificate } from 'node:tls';
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from '@grpc/grpc-js';
import { a2aGrpcService, type WireObject } from '../src/grpc/index.js';
import { readJob, runLoad, type LoadJob } from './load-loop.js';

interface Job extends LoadJob {
  target: string;
  request: WireObject;
  ca: string;
  cert: string;
  key: string;
  expectPeer: string;
}

const job = await readJob<Job>();

const Ctor = makeGenericClientConstructor(a2aGrpcService(), 'A2AService');
const client = new Ctor(
  job.target,
  credentials.createSsl(Buffer.from(job.ca), Buffer.from(job.key), Buffer.from(job.cert), {
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      cert.subjectaltname === `URI:${job.expectPeer}`
        ? undefined
        : new Error(`unexpected server ${cert.subjectaltname}`),
  }),
) as unknown as {
  SendMessage(req: WireObject, md: Metadata, cb: (err: ServiceError | null, res?: WireObject) => void): void;
  close(): void;
};

function call(): Promise<WireObject> {
  return new Promise((resolve, reject) => {
    const md = new Metadata();
    md.set('a2a-version', '1.0');
    client.SendMessage(job.request, md, (err, res) => (err ? reject(err) : resolve(res ?? {})));
  });
}

await runLoad(
  job,
  async () => {
    const res = await call();
    const state = (res.task as { status?: { state?: string } } | undefined)?.status?.state;
    return state === 'TASK_STATE_COMPLETED' ? undefined : JSON.stringify(res).slice(0, 200);
  },
  () => client.close(),
);
