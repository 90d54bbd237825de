import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { SpiffeId } from '@weave/identity';
import { AgentError, OfflineTestAgent, capability, type CapabilityContext } from '../src/index.js';

class Calculator extends OfflineTestAgent {
  calls = 0;

  @capability('add', { input: z.object({ a: z.number(), b: z.number() }), description: 'adds two numbers' })
  add(input: { a: number; b: number }, ctx: CapabilityContext) {
    this.calls++;
    return { sum: input.a + input.b, caller: ctx.caller.toString() };
  }

  @capability('fail', { input: z.object({}) })
  fail(): never {
    throw new Error('kaput');
  }
}

describe('capabilities', () => {
  it('registers decorated methods per instance with this bound', async () => {
    const a = new Calculator();
    const b = new Calculator();
    expect(a.capabilities.list().map((c) => c.name)).toEqual(['add', 'fail']);
    const caller = SpiffeId.parse('spiffe://example.org/tester');
    await expect(a.invoke('add', { a: 1, b: 2 }, { caller })).resolves.toEqual({
      sum: 3,
      caller: caller.toString(),
    });
    expect(a.calls).toBe(1);
    expect(b.calls).toBe(0);
  });

  it('publishes the input schema as JSON Schema', () => {
    const def = new Calculator().capabilities.get('add')!;
    expect(def.inputJsonSchema).toMatchObject({
      type: 'object',
      properties: { a: { type: 'number' }, b: { type: 'number' } },
      required: ['a', 'b'],
    });
    expect(def.options.description).toBe('adds two numbers');
  });

  it('rejects invalid input before the handler runs', async () => {
    const agent = new Calculator();
    const err = await agent.invoke('add', { a: 'one', b: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe('CAPABILITY_INPUT_INVALID');
    expect(agent.calls).toBe(0);
  });

  it('wraps handler failures and reports unknown capabilities', async () => {
    const agent = new Calculator();
    await expect(agent.invoke('fail', {})).rejects.toMatchObject({ code: 'CAPABILITY_FAILED' });
    await expect(agent.invoke('nope', {})).rejects.toMatchObject({ code: 'CAPABILITY_NOT_FOUND' });
  });

  it('offers an equivalent function API and validates names and duplicates', async () => {
    const handler = vi.fn(({ text }: { text: string }) => text.toUpperCase());
    const agent = new OfflineTestAgent().capability(
      'shout',
      { input: z.object({ text: z.string() }) },
      handler,
    );
    await expect(agent.invoke('shout', { text: 'hi' })).resolves.toBe('HI');
    expect(() => agent.capability('shout', { input: z.object({}) }, () => 1)).toThrow(/registered twice/);
    expect(() => agent.capability('bad name!', { input: z.object({}) }, () => 1)).toThrow(AgentError);
    expect(() => agent.capability('x', { input: 'nope' as unknown as z.ZodType }, () => 1)).toThrow(
      /zod schema/,
    );
    expect(() => agent.capability('y', { input: z.object({}) }, 'nope' as never)).toThrow(
      new AgentError('CAPABILITY_INVALID', 'capability "y" needs a handler function'),
    );
    await expect(agent.invoke('y', {})).rejects.toMatchObject({ code: 'CAPABILITY_NOT_FOUND' });
  });

  it('validates the output when an output schema is given', async () => {
    const agent = new OfflineTestAgent().capability(
      'typed',
      { input: z.object({}), output: z.object({ n: z.number() }) },
      () => ({ n: 'not a number' }),
    );
    await expect(agent.invoke('typed', {})).rejects.toThrow(/invalid result/);
  });

  it("routes a handler's ctx.callAgent to the test's stand-in, checked against output", async () => {
    const agent = new OfflineTestAgent().capability(
      'plan',
      { input: z.object({ q: z.string() }) },
      async ({ q }, ctx) => {
        const hits = await ctx.callAgent(
          'spiffe://demo.weave/agent/search',
          'search',
          { query: q },
          {
            output: z.object({ hits: z.array(z.string()) }),
          },
        );
        return { first: hits.hits[0] };
      },
    );
    // No stand-in: a OfflineTestAgent has no network.
    await expect(agent.invoke('plan', { q: 'x' })).rejects.toMatchObject({ code: 'AGENT_NOT_STARTED' });
    const callAgent = vi.fn(async () => ({ hits: ['a', 'b'] }));
    await expect(agent.invoke('plan', { q: 'x' }, { callAgent })).resolves.toEqual({ first: 'a' });
    expect(callAgent).toHaveBeenCalledWith(
      'spiffe://demo.weave/agent/search',
      'search',
      { query: 'x' },
      {
        output: expect.anything(),
      },
    );
    // A stand-in answer that does not match `output` fails like a real result would.
    await expect(
      agent.invoke('plan', { q: 'x' }, { callAgent: async () => ({ hits: 'nope' }) }),
    ).rejects.toMatchObject({ code: 'CALL_FAILED' });
  });

  it('OfflineTestAgent can never start a server', () => {
    expect(() => new Calculator().start()).toThrow(
      expect.objectContaining({ code: 'BASE_AGENT_NOT_SERVABLE' }),
    );
  });
});
