// NaN and ±Infinity in what a handler produces: JSON cannot write them, so
// JSON-RPC and HTTP+JSON sent `null` in their place while gRPC (a protobuf
// double) sent the number: a caller's answer depended on its binding.
// `unsendable` refuses them as it refuses a Date or a BigInt, naming what and
// where; `exceedsDepth` (which only counts levels of parsed JSON) still lets
// them through. Then seen by a real client on each binding of one server over
// mTLS on loopback.
import { describe, expect, it } from 'vitest';
import { exceedsDepth, unsendable } from '../src/depth.js';
import { harnessForAll, send, serveGoesOn, skillCard, taskOf } from './helpers/agents.js';
import { BINDINGS } from './helpers/raw-bindings.js';

describe('unsendable, on a number JSON cannot write', () => {
  it.each([
    [
      'NaN in an object',
      { parts: [{ data: { x: NaN } }] },
      /^output holds a non-finite number \(NaN\) at parts\.0\.data\.x: /,
    ],
    [
      'Infinity in a list',
      { parts: [{ data: { xs: [1, Infinity] } }] },
      /a non-finite number \(Infinity\) at parts\.0\.data\.xs\.1:/,
    ],
    [
      '-Infinity as the data',
      { parts: [{ data: -Infinity }] },
      /a non-finite number \(-Infinity\) at parts\.0\.data:/,
    ],
    [
      'NaN deep in metadata',
      { metadata: { deep: [[{ n: NaN }]] } },
      /a non-finite number \(NaN\) at metadata\.deep\.0\.0\.n:/,
    ],
  ])('refuses %s, naming it and where it is', (_label, value, named) => {
    expect(unsendable(value)).toMatch(named);
  });

  it('refuses one given alone, with no path to name', () => {
    expect(unsendable(NaN)).toBe(
      'output holds a non-finite number (NaN): only plain objects, arrays, strings, finite numbers, booleans and null can be sent',
    );
  });

  it('takes finite numbers, the largest and smallest included', () => {
    expect(
      unsendable({ a: 0, b: -0, c: 1.5, d: Number.MAX_VALUE, e: -Number.MAX_VALUE, f: Number.MIN_VALUE }),
    ).toBeUndefined();
    expect(unsendable([1, 2, 3])).toBeUndefined();
    expect(unsendable(42)).toBeUndefined();
  });

  it('leaves exceedsDepth as it was: it counts levels only', () => {
    expect(exceedsDepth({ x: NaN, y: [Infinity] })).toBe(false);
  });
});

/** Handlers returning or publishing a number JSON cannot write, and what the failure names. */
const NON_FINITE: ReadonlyArray<[skill: string, data: unknown, named: RegExp]> = [
  ['nan', { x: NaN }, /a non-finite number \(NaN\) at parts\.0\.data\.x/],
  ['infinity', { xs: [1, Infinity] }, /a non-finite number \(Infinity\) at parts\.0\.data\.xs\.1/],
  ['minus-infinity', { y: -Infinity }, /a non-finite number \(-Infinity\) at parts\.0\.data\.y/],
];

/** What `ctx.publishArtifact` threw into the handler, by task. */
const thrownAtHandler = new Map<string, unknown>();

const served = harnessForAll((a2a) => {
  for (const [id, data] of NON_FINITE) {
    a2a.registerTaskHandler(skillCard(id), () => ({ parts: [{ data }] }));
  }
  serveGoesOn(a2a, 'publishes-nan', thrownAtHandler, (ctx) => {
    ctx.publishArtifact({ parts: [{ data: { x: NaN } }] });
  });
});

describe.each(BINDINGS)('a handler producing a non-finite number, seen on %s', (binding) => {
  it.each(NON_FINITE)(
    'returns %s data: FAILED with -32006 naming it, not COMPLETED with null or the number in its place',
    async (skill, _data, named) => {
      await served.withBinding(binding, async (b) => {
        const task = taskOf(await b.call('SendMessage', send(skill)));
        // (It was COMPLETED: null in its place on JSON-RPC and HTTP+JSON, the number itself on gRPC.)
        expect({ state: task.status.state, artifacts: task.artifacts ?? [] }).toEqual({
          state: 'TASK_STATE_FAILED',
          artifacts: [],
        });
        const text = task.status.message?.parts[0]?.text;
        expect(text).toMatch(/^Task failed: Invalid agent response: /);
        expect(text).toMatch(named);
      });
    },
  );

  it('publishes one: publishArtifact throws INVALID_AGENT_RESPONSE into the handler, nothing is published', async () => {
    await served.withBinding(binding, async (b) => {
      const task = taskOf(await b.call('SendMessage', send('publishes-nan')));
      expect(thrownAtHandler.get(task.id)).toMatchObject({
        code: 'INVALID_AGENT_RESPONSE',
        jsonRpcCode: -32006,
        message: expect.stringMatching(/a non-finite number \(NaN\) at parts\.0\.data\.x/),
      });
      expect(task.status.state).toBe('TASK_STATE_COMPLETED');
      expect(task.artifacts?.map((a) => a.parts[0]?.text)).toEqual(['went on']);
    });
  });
});
