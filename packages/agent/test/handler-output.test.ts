// What a capability handler hands to Weave, served and offline alike. A
// result no binding can send (a Date, NaN, a Map in a reply) fails a served
// call as CAPABILITY_FAILED, and OfflineTestAgent.invoke fails it the same
// way (it used to pass offline and fail only once served). A handler's error
// with a 10 MB message is logged in a line of a few KB (it was ~20 MB:
// message and stack) that still names the error and where it was thrown.
// Served: two SecureAgents, the dev Workload API, mTLS on loopback.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { AgentError, CallError, OfflineTestAgent, reply, type SecureAgent } from '../src/index.js';
import { ID, memoryLogger, startCalleeAndCaller, startWorld, type World } from './helpers.js';

const TEN_MB = 10 * 1024 * 1024;

/** Capabilities whose result no binding can send, and what the failure names. */
const UNSENDABLE: ReadonlyArray<[capability: string, named: RegExp]> = [
  ['date', /a Date object at parts\.0\.data\.at/],
  ['nan', /a non-finite number \(NaN\) at parts\.0\.data\.x/],
  ['reply-map', /a Map object at parts\.0\.data\.m/],
];

const CAPS = ['date', 'nan', 'reply-map', 'fine', 'nothing', 'huge', 'chunk-date'];

/** What each `chunk-date` handler's publishArtifact threw, served or offline. */
const chunkErrors: unknown[] = [];

function withCapabilities<A extends OfflineTestAgent | SecureAgent>(agent: A): A {
  const any = z.any();
  agent
    .capability('date', { input: any }, () => ({ at: new Date(0) }))
    .capability('nan', { input: any }, () => ({ x: NaN }))
    .capability('reply-map', { input: any }, () =>
      reply.artifacts({ parts: ['fine'] }, { parts: [{ data: { m: new Map([[1, 2]]) } }] }),
    )
    .capability('fine', { input: any }, () => ({ n: 1, at: new Date(0).toISOString() }))
    .capability('nothing', { input: any }, () => undefined)
    .capability('chunk-date', { input: any }, (_input, ctx) => {
      try {
        ctx.publishArtifact({ parts: [{ data: { at: new Date(0) } }] });
      } catch (err) {
        chunkErrors.push(err);
      }
      return 'went on';
    })
    .capability('huge', { input: any }, () => {
      throw new Error(`boom: ${'x'.repeat(TEN_MB)}`);
    });
  return agent;
}

/** The callee's log lines, as written. */
const { logger: calleeLogger, raw: rawLines } = memoryLogger();

/** The callee's `call failed` lines of `capability`, as written. */
const failedLines = (capability: string) =>
  rawLines.filter((l) => {
    const parsed = JSON.parse(l) as { msg?: string; capability?: string };
    return parsed.msg === 'call failed' && parsed.capability === capability;
  });

let world: World;
let callee: SecureAgent;
let caller: SecureAgent;
const offline = withCapabilities(new OfflineTestAgent());

beforeAll(async () => {
  world = await startWorld();
  ({ callee, caller } = await startCalleeAndCaller(
    world,
    { policyId: 'handler-output', capabilities: CAPS, logger: calleeLogger },
    withCapabilities,
  ));
}, 60_000);

afterAll(async () => {
  await caller?.stop();
  await callee?.stop({ drainTimeoutMs: 0 });
  await world?.close();
});

describe.each(UNSENDABLE)('a result no binding can send (%s)', (capability, named) => {
  it('fails a served call as CAPABILITY_FAILED, the callee logging what and where', async () => {
    const logged = failedLines(capability).length;
    const err = await caller.callAgent(ID.search, capability, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CallError);
    expect((err as CallError).remoteCode).toBe('CAPABILITY_FAILED');
    await vi.waitFor(() => expect(failedLines(capability)).toHaveLength(logged + 1));
    const line = JSON.parse(failedLines(capability)[logged] as string) as { err: { message: string } };
    expect(line.err.message).toMatch(named);
  });

  it('fails OfflineTestAgent.invoke the same way: an AgentError CAPABILITY_FAILED naming it', async () => {
    const err = await offline.invoke(capability, {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect(err).toMatchObject({
      code: 'CAPABILITY_FAILED',
      message: expect.stringMatching(named) as string,
    });
    expect((err as AgentError).message).toMatch(
      new RegExp(`^capability "${capability}" returned a result no binding can send: output holds `),
    );
  });
});

describe('a result every binding can send', () => {
  it('is what OfflineTestAgent.invoke returns, as the served call returns it', async () => {
    const want = { n: 1, at: '1970-01-01T00:00:00.000Z' };
    expect(await offline.invoke('fine', {})).toEqual(want);
    expect(await caller.callAgent(ID.search, 'fine', {})).toEqual(want);
    expect(await offline.invoke('nothing', {})).toBeUndefined();
  });
});

describe('a handler error with a 10 MB message', () => {
  it('is logged by the callee in a line of a few KB that names it and where it was thrown', async () => {
    const err = await caller.callAgent(ID.search, 'huge', {}).catch((e: unknown) => e);
    expect((err as CallError).remoteCode).toBe('CAPABILITY_FAILED');
    await vi.waitFor(() => expect(failedLines('huge')).toHaveLength(1));
    const raw = failedLines('huge')[0] as string;
    expect(raw.length).toBeLessThan(8_000);
    const line = JSON.parse(raw) as { code: string; err: Record<string, unknown> };
    expect(line.code).toBe('CAPABILITY_FAILED');
    expect(line.err).toMatchObject({
      type: 'Error',
      message: expect.stringMatching(/^boom: x+… \(10485766 characters\)$/) as string,
      stack: expect.stringMatching(
        /^Error: boom: x+… \(10485766 characters\)\n {4}at .*handler-output\.test\.ts/,
      ),
    });
  });
});

describe('a streamed chunk no binding can send', () => {
  it('is refused into the handler with the same error served and offline', async () => {
    chunkErrors.length = 0;
    await expect(caller.callAgent(ID.search, 'chunk-date', {})).resolves.toBe('went on');
    await expect(offline.invoke('chunk-date', {})).resolves.toBe('went on');
    expect(chunkErrors).toHaveLength(2);
    const [served, local] = chunkErrors as Array<{ code?: unknown; message?: unknown }>;
    expect(served?.code).toBe('INVALID_AGENT_RESPONSE');
    expect(local?.code).toBe(served?.code);
    expect(local?.message).toBe(served?.message);
    expect(String(local?.message)).toMatch(/a Date object at parts\.0\.data\.at/);
  });
});
