// What a MessageHandler (a skill answered by a message, no task) is given:
// the request's message, skill, conversation, caller, tenant and headers, and
// a signal. Without one from the binding (a unary call), the signal is the
// handler's own, made when first read; one the binding carries is passed on
// as it is. The same handler over real mTLS is in bindings.test.ts.
import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { A2AServer, type CallContext, type MessageContext } from '../src/index.js';
import { harnessForAll, send, skillCard } from './helpers/agents.js';
import { BINDINGS } from './helpers/raw-bindings.js';

const CALLER = SpiffeId.parse('spiffe://test.weave/agent/client');

function setup(onCall: (ctx: MessageContext) => void) {
  const decisions: string[] = [];
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'message-handler',
      default: 'deny',
      rules: [{ id: 'all', effect: 'allow', callers: ['spiffe://test.weave'], actions: ['*'] }],
    },
    { audit: { record: (r) => void decisions.push(`${r.action}:${r.decision}`) } },
  );
  const a2a = new A2AServer({
    card: { name: 'm', description: 'message handler', version: '1' },
    selfId: SpiffeId.parse('spiffe://test.weave/agent/server'),
    enforcer,
  });
  a2a.registerMessageHandler({ id: 'hello', name: 'hello', description: 'no task', tags: [] }, (ctx) => {
    onCall(ctx);
    return `hello, ${ctx.message.parts[0]?.text ?? ''}`;
  });
  const send = (params: Record<string, unknown>, extra: Partial<CallContext> = {}) =>
    a2a.handler.sendMessage(
      { caller: CALLER, headers: { 'x-trace': 't1' }, binding: 'JSONRPC', ...extra },
      params,
    );
  /** A call whose signal, like the gRPC binding's, is made when first read; `reads()` counts the reads. */
  const sendWithLazySignal = (params: Record<string, unknown>, signal: AbortSignal) => {
    let reads = 0;
    const call: CallContext = {
      caller: CALLER,
      headers: {},
      binding: 'GRPC',
      get signal() {
        reads++;
        return signal;
      },
    };
    return { done: a2a.handler.sendMessage(call, params), reads: () => reads };
  };
  return { send, sendWithLazySignal, decisions, close: () => a2a.close() };
}

const message = (text: string, more: Record<string, unknown> = {}) => ({
  message: {
    messageId: `m-${text}`,
    role: 'ROLE_USER',
    parts: [{ text }],
    metadata: { skill: 'hello' },
    ...more,
  },
});

describe('MessageHandler context', () => {
  it('carries the message, skill, conversation, caller, tenant and headers of the request', async () => {
    const seen: MessageContext[] = [];
    const { send, decisions, close } = setup((ctx) => seen.push(ctx));
    const r1 = await send(message('a', { contextId: 'ctx-1' }));
    const r2 = await send({ ...message('b'), tenant: 'acme' });
    await close();

    // The policy decided each call before its handler ran.
    expect(decisions).toEqual(['hello:allow', 'hello:allow']);
    expect(r1).toMatchObject({
      message: { role: 'ROLE_AGENT', contextId: 'ctx-1', parts: [{ text: 'hello, a' }] },
    });
    const [a, b] = seen as [MessageContext, MessageContext];
    expect(a.message.parts).toEqual([{ text: 'a' }]);
    expect(a.skill).toBe('hello');
    expect(a.contextId).toBe('ctx-1');
    expect(a.caller.toString()).toBe(CALLER.toString());
    expect(a.headers['x-trace']).toBe('t1');
    expect('tenant' in a).toBe(false);
    // A conversation the message did not name is minted, and the reply carries it.
    expect(b.contextId).toMatch(/^[0-9a-f-]{36}$/);
    expect(r2).toMatchObject({ message: { contextId: b.contextId } });
    expect(b.tenant).toBe('acme');
  });

  it('gives each call its own signal when the binding carries none, the same one on every read', async () => {
    const seen: MessageContext[] = [];
    const { send, close } = setup((ctx) => seen.push(ctx));
    await send(message('a'));
    await send(message('b'));
    await close();

    const [a, b] = seen as [MessageContext, MessageContext];
    expect(a.signal).toBeInstanceOf(AbortSignal);
    expect(a.signal.aborted).toBe(false);
    expect(a.signal).toBe(a.signal);
    expect(a.signal).not.toBe(b.signal);
  });

  it('passes on the signal the binding carries: the handler sees the caller go away', async () => {
    const caller = new AbortController();
    let signal: AbortSignal | undefined;
    const { send, close } = setup((ctx) => {
      signal = ctx.signal;
    });
    await send(message('a'), { signal: caller.signal });
    await close();

    expect(signal).toBe(caller.signal);
    caller.abort(new Error('gone'));
    expect(signal?.aborted).toBe(true);
  });

  it("reads the call's signal only when the handler reads its own", async () => {
    const caller = new AbortController();
    let read = false;
    const seen: MessageContext[] = [];
    const { sendWithLazySignal, close } = setup((ctx) => {
      seen.push(ctx);
      if (read) void ctx.signal;
    });
    const quiet = sendWithLazySignal(message('a'), caller.signal);
    await quiet.done;
    read = true;
    const reading = sendWithLazySignal(message('b'), caller.signal);
    await reading.done;
    await close();

    expect(quiet.reads()).toBe(0);
    expect(reading.reads()).toBe(1);
    expect(seen[1]?.signal).toBe(caller.signal);
    expect(reading.reads()).toBe(1);
  });
});

describe('a message handler’s signal, served on each binding', () => {
  // Passes its signal to twelve waits of its own at once, as a handler fanning out to twelve calls does.
  const served = harnessForAll((a2a) => {
    a2a.registerMessageHandler(skillCard('fanout'), async (ctx) => {
      await Promise.all(Array.from({ length: 12 }, () => delay(20, undefined, { signal: ctx.signal })));
      return 'fanned out';
    });
  });

  it.each(BINDINGS)('takes more than ten listeners without a leak warning (%s)', async (binding) => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      await served.withBinding(binding, async (b) => {
        const r = await b.call('SendMessage', send('fanout'));
        expect(r.ok && JSON.stringify(r.result)).toContain('fanned out');
      });
      // A warning is emitted on the next tick after the listener that passed the bound.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});
