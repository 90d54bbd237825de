/**
 * STAND-IN FOR OPA, for the OPA client's failure paths a real OPA does not
 * produce on demand (tests against the real one: golden.test.ts and
 * interop/opa/). This small HTTP server implements OPA's published REST Data
 * API contract:
 *   POST /v1/data/<path> {input}  → 200 {"result": …}, or 200 {} when the rule is undefined
 *   malformed request body        → 400 {"code": "invalid_parameter", "message": …}
 *   GET /health                   → 200 {}
 * It is not a Rego engine: each test supplies `decide`, which returns the
 * value of the requested document, or undefined for "undefined".
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

interface StandinRequest {
  readonly path: string;
  readonly body: unknown;
}

export interface OpaStandin {
  readonly url: string;
  readonly requests: StandinRequest[];
  /** Path (after /v1/data/) and the posted input → the document's value, or undefined. */
  decide: (path: string, input: unknown) => unknown; // may return a promise
  /** Override the whole reply (status and body) for decision requests. */
  reply: ((req: StandinRequest) => { status: number; body: unknown } | 'hang') | undefined;
  healthStatus: number;
  close(): Promise<void>;
}

export async function startOpaStandin(
  decide: (path: string, input: unknown) => unknown,
): Promise<OpaStandin> {
  const hanging = new Set<ServerResponse>();
  const state: OpaStandin = {
    url: '',
    requests: [],
    decide,
    reply: undefined,
    healthStatus: 200,
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const url = new URL(req.url ?? '/', 'http://standin');
      if (req.method === 'GET' && url.pathname === '/health') {
        send(
          res,
          state.healthStatus,
          state.healthStatus === 200 ? {} : { code: 'internal_error', message: 'not ready' },
        );
        return;
      }
      if (req.method !== 'POST' || !url.pathname.startsWith('/v1/data/')) {
        send(res, 404, { code: 'resource_not_found', message: 'not found' });
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        send(res, 400, { code: 'invalid_parameter', message: 'body contains malformed input document' });
        return;
      }
      const request = { path: url.pathname.slice('/v1/data/'.length), body };
      state.requests.push(request);
      if (state.reply) {
        const r = state.reply(request);
        if (r === 'hang') {
          hanging.add(res);
          return;
        }
        send(res, r.status, r.body);
        return;
      }
      const input = (body as { input?: unknown } | null)?.input;
      let result: unknown;
      try {
        result = await state.decide(request.path, input);
      } catch (err) {
        send(res, 500, { code: 'internal_error', message: (err as Error).message });
        return;
      }
      send(res, 200, result === undefined ? {} : { result });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  (state as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
