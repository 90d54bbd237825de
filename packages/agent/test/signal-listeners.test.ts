// Every running handler that reads ctx.signal listens to the agent's stop
// signal until it settles, and every call a handler makes listens to the
// handler's signal while it runs. More than ten at once is no leak, but Node
// warned "MaxListenersExceededWarning: Possible EventTarget memory leak
// detected" for it, which operators read as one.
import { expect, it } from 'vitest';
import { z } from 'zod';
import { ID, worldForAllTests } from './helpers.js';

const w = worldForAllTests();

it('warns of no listener leak with many handlers reading their signal at once', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let waiting = 0;
    const search = w.search().capability('slow', { input: z.object({}) }, async (_input, ctx) => {
      void ctx.signal;
      waiting++;
      await gate;
      return 'ok';
    });
    const orch = await w.startWithOrchestrator(search);
    const calls = Array.from({ length: 16 }, () => orch.callAgent(ID.search, 'slow', {}));
    await expect.poll(() => waiting, { timeout: 10_000 }).toBe(16);
    release();
    await Promise.all(calls);
    // A warning is emitted on the next tick after the listener that passed the bound.
    await new Promise((r) => setImmediate(r));
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
  } finally {
    process.off('warning', onWarning);
  }
});

it('warns of no listener leak when a handler fans out to more than ten calls at once', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    const summarizer = await w.startSummarizer((a) =>
      a.capability('summarize', { input: z.object({ i: z.number() }) }, async ({ i }) => {
        await new Promise((r) => setTimeout(r, 20));
        return `s${i}`;
      }),
    );
    const search = w
      .search({ peers: [{ id: ID.summarizer, url: summarizer.url }] })
      .capability('nested', { input: z.object({}) }, (_input, ctx) =>
        Promise.all(Array.from({ length: 12 }, (_, i) => ctx.callAgent(ID.summarizer, 'summarize', { i }))),
      );
    const orch = await w.startWithOrchestrator(search);
    const out = await orch.callAgent(ID.search, 'nested', {});
    expect(out).toEqual(Array.from({ length: 12 }, (_, i) => `s${i}`));
    await new Promise((r) => setImmediate(r));
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
  } finally {
    process.off('warning', onWarning);
  }
});
