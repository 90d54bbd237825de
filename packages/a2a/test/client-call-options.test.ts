// Per-call options of A2AClient (headers, signal, timeout), added for
// @weave/agent's callAgent: trace context and deadlines travel as headers of
// one call, not of the whole client.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { pino } from 'pino';
import { A2AClient, A2AServer, buildMessage } from '../src/index.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki } from '@weave/test-support';

let pki: Pki;
let close: () => Promise<void>;
let client: A2AClient;
let small: A2AClient;
let url: string;
const seen: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  pki = await createPki();
  const server = await pki.workload('/agent/server');
  const caller = await pki.workload('/agent/client');
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'call-options',
      default: 'deny',
      rules: [{ id: 'all', effect: 'allow', callers: [caller.id.toString()], actions: ['*'] }],
    },
    { logger: pino({ level: 'silent' }), audit: { record: () => undefined } },
  );
  const a2a = new A2AServer({
    card: { name: 't', description: 't', version: '1' },
    selfId: server.id,
    enforcer,
    heartbeatMs: 0,
  });
  a2a.registerTaskHandler('slow', async (ctx) => {
    await new Promise((r) => setTimeout(r, Number(ctx.message.parts[0]?.text ?? 0)));
    return 'done';
  });
  a2a.registerTaskHandler('big', () => 'x'.repeat(4000));
  const app = mtlsServer(server);
  app.addHook('onRequest', async (req) => {
    if (req.method === 'POST') seen.push({ ...req.headers });
  });
  await app.register(a2a.plugin);
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = baseUrl(app);
  const ch = channel(caller, server.id);
  client = new A2AClient({ dispatcher: ch, headers: { 'x-client-wide': 'yes' } });
  small = new A2AClient({ dispatcher: ch, maxResponseBytes: 1000 });
  close = async () => {
    await a2a.close();
    await ch.close();
    await app.close();
    await pki.close();
  };
});
afterAll(() => close());

describe('A2AClient per-call options', () => {
  it('sends per-call headers next to the client-wide ones, on that call only', async () => {
    seen.length = 0;
    await client.sendMessage(url, { message: buildMessage('slow', '0') }, { headers: { 'x-call': 'one' } });
    await client.sendMessage(url, { message: buildMessage('slow', '0') });
    const stream = client.sendStreamingMessage(
      url,
      { message: buildMessage('slow', '0') },
      { headers: { 'x-call': 'three' } },
    );
    for await (const _ of stream) void _;
    // A per-call header of the same name wins on that call; the client-wide value is intact after it.
    await client.sendMessage(
      url,
      { message: buildMessage('slow', '0') },
      { headers: { 'x-client-wide': 'this call' } },
    );
    await client.sendMessage(url, { message: buildMessage('slow', '0') }, { headers: { 'x-call': 'five' } });
    expect(seen.map((h) => [h['x-call'], h['x-client-wide']])).toEqual([
      ['one', 'yes'],
      [undefined, 'yes'],
      ['three', 'yes'],
      [undefined, 'this call'],
      ['five', 'yes'],
    ]);
  });

  it('aborts a call with its signal and honours a per-call timeout', async () => {
    const ac = new AbortController();
    const p = client.sendMessage(url, { message: buildMessage('slow', '2000') }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ code: 'ABORTED' });
    await expect(
      client.sendMessage(url, { message: buildMessage('slow', '2000') }, { timeoutMs: 100 }),
    ).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  });

  it('refuses an answer larger than maxResponseBytes, however its length is declared', async () => {
    await expect(small.sendTask(url, 'big', '')).rejects.toMatchObject({ code: 'RESPONSE_TOO_LARGE' });
    // The same client still reads answers within the cap.
    const t = await small.sendTask(url, 'slow', '0');
    expect(t.artifacts?.[0]?.parts[0]).toEqual({ text: 'done' });
    const big = await client.sendTask(url, 'big', '');
    expect(big.artifacts?.[0]?.parts[0]).toEqual({ text: 'x'.repeat(4000) });
  });
});
