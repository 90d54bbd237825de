// Load generator for sendmessage.bench.ts, run as its own process so it does
// not share an event loop with the server under test. Reads its job as JSON on
// stdin, keeps `concurrency` JSON-RPC SendMessage calls in flight over mTLS
// (an undici Pool, one keep-alive connection per in-flight request) for
// `durationMs` after a warm-up, and prints one JSON line with the results.
import type { PeerCertificate } from 'node:tls';
import { Pool } from 'undici';
import { readJob, runLoad, type LoadJob } from './load-loop.js';

interface Job extends LoadJob {
  url: string;
  body: string;
  ca: string;
  cert: string;
  key: string;
  expectPeer: string;
  /** Content type of the body (default application/json). */
  contentType?: string;
  /** JSON-RPC answers carry `"result"`; HTTP+JSON answers do not (default true). */
  jsonRpc?: boolean;
}

const job = await readJob<Job>();
// A Pool for the one origin: the same client for both servers, as lean as undici gets.
const target = new URL(job.url);
const agent = new Pool(target.origin, {
  connections: job.concurrency,
  pipelining: 1,
  connect: {
    ca: job.ca,
    cert: job.cert,
    key: job.key,
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      cert.subjectaltname === `URI:${job.expectPeer}`
        ? undefined
        : new Error(`unexpected server ${cert.subjectaltname}`),
  },
});

const headers = {
  'content-type': job.contentType ?? 'application/json',
  accept: 'application/json',
  'a2a-version': '1.0',
};
const needsResult = job.jsonRpc !== false;

await runLoad(
  job,
  async () => {
    const res = await agent.request({ path: target.pathname, method: 'POST', headers, body: job.body });
    const text = await res.body.text();
    // Count only real successes: HTTP 200 with (a JSON-RPC result holding) a completed task.
    if (
      res.statusCode !== 200 ||
      (needsResult && !text.includes('"result"')) ||
      !text.includes('TASK_STATE_COMPLETED')
    ) {
      return `${res.statusCode} ${text.slice(0, 200)}`;
    }
    return undefined;
  },
  () => agent.close(),
);
