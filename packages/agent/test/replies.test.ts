// What a capability may answer besides one JSON value — text, a file (bytes
// or URL, with media type and name), several artifacts, streamed chunks — and
// how callAgent reads each back. Two real SecureAgents (dev Workload API,
// mTLS on loopback, a local policy file); the chunks are also checked on the
// wire, as the callee's A2A stream of artifact updates.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { A2AClient, type StreamEvent } from '@weave/a2a';
import { SpiffeId } from '@weave/identity';
import { SecureChannel } from '@weave/transport';
import { reply, type FileResult, type SecureAgent } from '../src/index.js';
import { ID, startCalleeAndCaller, startWorld, type World } from './helpers.js';

const CAPS = ['text', 'bytes', 'link', 'several', 'chunks', 'plain', 'flood'];
/** Chunks the flood capability streams, awaiting ctx.drained() after each. */
const FLOOD = 40_000;
let floodPublished = 0;
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 255]);

let world: World;
let callee: SecureAgent;
let caller: SecureAgent;

beforeAll(async () => {
  world = await startWorld();
  const text = z.string();
  const serve = (agent: SecureAgent) =>
    agent
      .capability('text', { input: text }, (q) => reply.text(`hello ${q}`))
      .capability('bytes', { input: text }, () =>
        reply.file({ bytes: PNG, mediaType: 'image/png', filename: 'dot.png' }),
      )
      .capability('link', { input: text }, () =>
        reply.file({
          url: 'https://files.example/report.pdf',
          mediaType: 'application/pdf',
          filename: 'report.pdf',
        }),
      )
      .capability('several', { input: text }, () =>
        reply.artifacts(
          { name: 'summary', parts: ['two things'] },
          { name: 'numbers', parts: [{ data: { n: 2 } }] },
          { name: 'raw', parts: [{ bytes: PNG, mediaType: 'image/png' }] },
        ),
      )
      .capability('chunks', { input: text }, (_q, ctx) => {
        const id = ctx.publishArtifact({ name: 'story', parts: ['once '] });
        ctx.publishArtifact({ artifactId: id, parts: ['upon '] }, { append: true });
        ctx.publishArtifact({ artifactId: id, parts: ['a time'] }, { append: true, lastChunk: true });
        return undefined;
      })
      .capability('plain', { input: text, output: z.object({ n: z.number() }) }, () => ({ n: 7 }))
      .capability('flood', { input: text }, async (_q, ctx) => {
        floodPublished = 0;
        const id = ctx.publishArtifact({ name: 'flood', parts: ['0'] });
        floodPublished++;
        await ctx.drained();
        for (let i = 1; i < FLOOD; i++) {
          ctx.publishArtifact(
            { artifactId: id, parts: [String(i)] },
            { append: true, lastChunk: i === FLOOD - 1 },
          );
          floodPublished++;
          await ctx.drained();
        }
        return undefined;
      });
  ({ callee, caller } = await startCalleeAndCaller(
    world,
    { policyId: 'replies', capabilities: CAPS },
    serve,
  ));
});

afterAll(async () => {
  await caller?.stop();
  await callee?.stop();
  await world?.close();
});

describe('capability replies and what callAgent reads back', () => {
  it.each([false, true])('text, a file as bytes, a file as URL (streaming: %s)', async (stream) => {
    expect(await caller.callAgent(ID.search, 'text', 'Ada', { stream })).toBe('hello Ada');
    const file = (await caller.callAgent(ID.search, 'bytes', 'x', { stream })) as FileResult;
    expect(file.mediaType).toBe('image/png');
    expect(file.filename).toBe('dot.png');
    expect(Buffer.compare(file.bytes as Buffer, PNG)).toBe(0);
    expect(await caller.callAgent(ID.search, 'link', 'x', { stream })).toEqual({
      url: 'https://files.example/report.pdf',
      mediaType: 'application/pdf',
      filename: 'report.pdf',
    });
  });

  it.each([false, true])('several artifacts come back in order (streaming: %s)', async (stream) => {
    const out = (await caller.callAgent(ID.search, 'several', 'x', { stream })) as unknown[];
    expect(out).toHaveLength(3);
    expect(out[0]).toBe('two things');
    expect(out[1]).toEqual({ n: 2 });
    expect(Buffer.compare((out[2] as FileResult).bytes as Buffer, PNG)).toBe(0);
  });

  it('streamed chunks reach the caller as artifact updates (append, lastChunk) and read back whole', async () => {
    expect(await caller.callAgent(ID.search, 'chunks', 'x', { stream: true })).toBe('once upon a time');
    expect(await caller.callAgent(ID.search, 'chunks', 'x')).toBe('once upon a time');
    // On the wire: one artifact, three updates, the last two appended, the last one closing it.
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search), {
      circuitBreaker: false,
    });
    try {
      const client = new A2AClient({ dispatcher: channel });
      const events: StreamEvent[] = [];
      for await (const e of client.streamTaskUpdates(callee.url, 'chunks', 'x')) events.push(e);
      const updates = events.flatMap((e) => ('artifactUpdate' in e ? [e.artifactUpdate] : []));
      expect(updates.map((u) => u.artifact.parts[0]?.text)).toEqual(['once ', 'upon ', 'a time']);
      expect(updates.map((u) => u.append ?? false)).toEqual([false, true, true]);
      expect(updates[2]?.lastChunk).toBe(true);
      expect(new Set(updates.map((u) => u.artifact.artifactId)).size).toBe(1);
      expect(updates[0]?.artifact.name).toBe('story');
    } finally {
      await channel.close();
    }
  });

  it('a capability that awaits ctx.drained() is held while its reader lags, and every chunk arrives in order', async () => {
    const channel = new SecureChannel(await world.provider('orchestrator'), SpiffeId.parse(ID.search), {
      circuitBreaker: false,
    });
    try {
      const client = new A2AClient({ dispatcher: channel });
      const chunks: string[] = [];
      let heldAt = -1;
      for await (const e of client.streamTaskUpdates(callee.url, 'flood', 'x')) {
        if (heldAt < 0) {
          // Read nothing for a second: the capability must wait for this reader.
          await new Promise((r) => setTimeout(r, 1000));
          heldAt = floodPublished;
        }
        if ('artifactUpdate' in e) chunks.push(e.artifactUpdate.artifact.parts[0]?.text ?? '');
      }
      expect(heldAt).toBeGreaterThan(0);
      expect(heldAt).toBeLessThan(FLOOD / 2); // without drained() all of them, within the second
      expect(chunks).toHaveLength(FLOOD);
      for (let i = 0; i < FLOOD; i++) if (chunks[i] !== String(i)) expect(chunks[i]).toBe(String(i));
    } finally {
      await channel.close();
    }
  }, 60_000);

  it('a plain value is still one JSON result, checked against the output schema', async () => {
    expect(await caller.callAgent(ID.search, 'plain', 'x', { output: z.object({ n: z.number() }) })).toEqual({
      n: 7,
    });
  });
});
