// A peer that answers what the test scripts, over real mTLS (dev CA): its card
// at the well-known path, and each JSON-RPC request answered by a function of
// the request (a JSON result, or an SSE body as text). For clients facing
// servers that misbehave on purpose.
import { baseUrl, channel, createPki, mtlsServer, type Pki } from '@weave/test-support';
import type { SecureChannel } from '@weave/transport';

/** What the peer answers to one JSON-RPC request: a result, a whole JSON-RPC response as text, or an SSE body. */
export type Answer = { readonly result: unknown } | { readonly json: string } | { readonly sse: string };

export interface ScriptedRequest {
  readonly id: unknown;
  readonly method: string;
  readonly params: Record<string, unknown>;
}

export interface ScriptedPeer {
  /** The agent's base URL (its card is there). */
  readonly url: string;
  /** A channel from a caller of the same trust domain, verifying this peer. */
  readonly channel: SecureChannel;
  /** Every JSON-RPC request received, in order. */
  readonly requests: ScriptedRequest[];
  close(): Promise<void>;
}

/** One SSE event carrying a JSON-RPC result (with an SSE `id:` when `eventId` is given). */
export function sseEvent(rpcId: unknown, result: unknown, eventId?: string): string {
  const data = JSON.stringify({ jsonrpc: '2.0', id: rpcId, result });
  return `${eventId === undefined ? '' : `id: ${eventId}\n`}data: ${data}\n\n`;
}

/**
 * Starts the peer. `interfaceUrl` is what its card names as the JSON-RPC
 * endpoint (default: its own base URL).
 */
export async function startScriptedPeer(
  answer: (req: ScriptedRequest) => Answer,
  options: { interfaceUrl?: string } = {},
): Promise<ScriptedPeer> {
  const pki: Pki = await createPki();
  const server = await pki.workload('/scripted');
  const caller = await pki.workload('/caller');
  const app = mtlsServer(server);
  const requests: ScriptedRequest[] = [];
  let url = '';
  app.get('/.well-known/agent-card.json', async () => ({
    name: 'scripted',
    description: 'answers what the test says',
    version: '1.0.0',
    supportedInterfaces: [
      { url: options.interfaceUrl ?? `${url}/`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    ],
    capabilities: { streaming: true },
    defaultInputModes: ['application/json'],
    defaultOutputModes: ['application/json'],
    skills: [{ id: 'echo', name: 'echo', description: 'echo', tags: [] }],
  }));
  app.post('/', async (req, reply) => {
    const body = req.body as { id: unknown; method: string; params: Record<string, unknown> };
    const r: ScriptedRequest = { id: body.id, method: body.method, params: body.params };
    requests.push(r);
    const a = answer(r);
    if ('sse' in a) return reply.header('content-type', 'text/event-stream').send(a.sse);
    if ('json' in a) return reply.header('content-type', 'application/json').send(a.json);
    return { jsonrpc: '2.0', id: body.id, result: a.result };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = baseUrl(app);
  const ch = channel(caller, server.id);
  return {
    url,
    channel: ch,
    requests,
    async close() {
      await ch.close();
      await app.close();
      await pki.close();
    },
  };
}
