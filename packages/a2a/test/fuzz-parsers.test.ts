// Property-based fuzzing of the parsers a peer's bytes reach first: the SSE
// parser (same events whatever the chunking; arbitrary bytes end in events or
// a typed error), the wire schemas and converters (arbitrary JSON is accepted
// or refused with an A2AError, never an untyped throw), the REST error-body
// reader, and the gRPC request decoders. Cases per property: FUZZ_RUNS (see
// @weave/test-support/fuzz; `npm run fuzz` runs many more).
import fc from 'fast-check';
import { describe, expect } from 'vitest';
import type { z } from 'zod';
import { A2AClientError, A2AError, a2aErrorFromRest } from '../src/index.js';
import { parseRequest } from '../src/handler.js';
import { parseSse, type SseEvent } from '../src/sse-parse.js';
import { a2aGrpcService } from '../src/grpc/index.js';
import { A2A_GRPC_SERVICE, ProtoConversionError, a2aProtoRoot, wireCodec } from '../src/grpc/proto.js';
import * as v1 from '../src/wire/v1.js';
import * as v03 from '../src/wire/v03.js';
import { itHolds } from '@weave/test-support/fuzz';
import { mutate, mutation, validCalls, wireJson } from './helpers/wire-arbitraries.js';

async function collect(chunks: Iterable<Uint8Array | string>, max: number): Promise<SseEvent[]> {
  async function* body() {
    yield* chunks;
  }
  const out: SseEvent[] = [];
  for await (const e of parseSse(body(), max)) out.push(e);
  return out;
}

/** `bytes` cut at the given offsets (sorted, deduplicated): cuts may fall inside a UTF-8 character or a CRLF. */
function cut(bytes: Uint8Array, at: number[]): Uint8Array[] {
  const points = [...new Set(at.map((n) => n % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of points) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  out.push(bytes.subarray(from));
  return out;
}

// A line's value: no CR/LF (those end lines). Unicode, so cuts split characters.
const lineValue = fc.string({ unit: 'grapheme', maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, ''));
const eol = fc.constantFrom('\n', '\r\n', '\r');

const sseEvent = fc.record({
  event: fc.option(
    lineValue.filter((s) => !s.includes('\0')),
    { nil: undefined },
  ),
  data: fc.array(lineValue, { minLength: 1, maxLength: 3 }),
  id: fc.option(
    lineValue.filter((s) => !s.includes('\0')),
    { nil: undefined },
  ),
  comment: fc.option(lineValue, { nil: undefined }),
  ends: fc.array(eol, { minLength: 8, maxLength: 8 }),
});
type GenEvent = typeof sseEvent extends fc.Arbitrary<infer T> ? T : never;

/** The stream's text, and the events a correct parser reads from it (the last id carries over, as WHATWG says). */
function serialize(events: GenEvent[]): { text: string; expected: SseEvent[] } {
  let text = '';
  let lastId: string | undefined;
  const expected: SseEvent[] = [];
  for (const e of events) {
    const end = (i: number) => e.ends[i % e.ends.length] as string;
    if (e.comment !== undefined) text += `:${e.comment}${end(0)}`;
    if (e.id !== undefined) {
      text += `id: ${e.id}${end(1)}`;
      lastId = e.id;
    }
    if (e.event !== undefined) text += `event: ${e.event}${end(2)}`;
    e.data.forEach((d, i) => (text += `data: ${d}${end(3 + i)}`));
    // A blank line right after a lone CR would read as its LF (one CRLF line end).
    text += text.endsWith('\r') && end(7) === '\n' ? '\r' : end(7);
    const name = e.event || 'message';
    const data = e.data.join('\n');
    expected.push(lastId === undefined ? { event: name, data } : { event: name, data, id: lastId });
  }
  return { text, expected };
}

describe('fuzz: SSE parser', () => {
  itHolds(
    'reads the same events from a valid stream whatever its chunk boundaries',
    'sse-chunking',
    () =>
      fc.asyncProperty(
        fc.array(sseEvent, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        async (events, at) => {
          const { text, expected } = serialize(events);
          const bytes = new TextEncoder().encode(text);
          expect(await collect([bytes], 1 << 20)).toEqual(expected);
          expect(await collect(cut(bytes, at), 1 << 20)).toEqual(expected);
          // Byte by byte: every possible boundary at once.
          expect(await collect(cut(bytes, [...bytes.keys()]), 1 << 20)).toEqual(expected);
        },
      ),
    150,
  );

  itHolds(
    'ends arbitrary bytes with events or SSE_EVENT_TOO_LARGE, nothing else',
    'sse-bytes',
    () =>
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 64 }),
            fc
              .array(
                fc.constantFrom(
                  'data:',
                  'data: x',
                  'id:',
                  'event:',
                  ':',
                  '\r',
                  '\n',
                  '\r\n',
                  '\u0000',
                  '\xff',
                ),
                {
                  maxLength: 16,
                },
              )
              .map((a) => new TextEncoder().encode(a.join(''))),
          ),
          { maxLength: 8 },
        ),
        fc.integer({ min: 1, max: 64 }),
        async (chunks, max) => {
          try {
            for (const e of await collect(chunks, max)) {
              expect(typeof e.event).toBe('string');
              expect(typeof e.data).toBe('string');
              expect(e.data.length).toBeLessThanOrEqual(max);
            }
          } catch (err) {
            expect(err).toBeInstanceOf(A2AClientError);
            expect((err as A2AClientError).code).toBe('SSE_EVENT_TOO_LARGE');
          }
        },
      ),
    500,
  );
});

/** Every request schema a server reads params with, and what it converts them to after. */
const REQUEST_SCHEMAS: Array<[string, z.ZodType, (v: never) => unknown]> = [
  ['SendMessageParams', v1.SendMessageParamsSchema, (v) => v],
  ['GetTaskParams', v1.GetTaskParamsSchema, (v) => v],
  ['ListTasksParams', v1.ListTasksParamsSchema, (v) => v],
  ['CancelTaskParams', v1.CancelTaskParamsSchema, (v) => v],
  ['SubscribeToTaskParams', v1.SubscribeToTaskParamsSchema, (v) => v],
  ['TaskPushConfigRef', v1.TaskPushConfigRefSchema, (v) => v],
  ['ListTaskPushConfigsParams', v1.ListTaskPushConfigsParamsSchema, (v) => v],
  ['TaskPushNotificationConfig', v1.TaskPushNotificationConfigSchema, (v) => v],
  ['GetExtendedAgentCardParams', v1.GetExtendedAgentCardParamsSchema, (v) => v],
  ['v0.3 SendParams', v03.V03SendParamsSchema, (v) => v03.sendParamsToV1(v)],
  ['v0.3 TaskQuery', v03.V03TaskQuerySchema, (v) => v],
  ['v0.3 TaskId', v03.V03TaskIdSchema, (v) => v],
  [
    'v0.3 SetPushConfig',
    v03.V03SetPushConfigSchema,
    (v: z.infer<typeof v03.V03SetPushConfigSchema>) => v03.pushConfigToV1(v.pushNotificationConfig, v.taskId),
  ],
  ['v0.3 GetPushConfig', v03.V03GetPushConfigSchema, (v) => v],
  ['v0.3 DeletePushConfig', v03.V03DeletePushConfigSchema, (v) => v],
];

/** Result schemas a client validates answers with, and the v0.3 shapes a server writes from them. */
const RESULT_SCHEMAS: Array<[string, z.ZodType, (v: never) => unknown]> = [
  ['Task', v1.TaskSchema, (v) => v03.taskToV03(v)],
  ['Message', v1.MessageSchema, (v) => v03.messageToV03(v)],
  ['StreamResponse', v1.StreamResponseSchema, (v) => v03.streamResponseToV03(v)],
  ['SendMessageResult', v1.SendMessageResultSchema, (v) => v03.sendResultToV03(v)],
  ['ListTasksResult', v1.ListTasksResultSchema, (v) => v],
  ['TaskPushNotificationConfig', v1.TaskPushNotificationConfigSchema, (v) => v03.pushConfigToV03(v)],
  ['AgentCard', v1.AgentCardSchema, (v) => v03.agentCardToV03(v)],
];

/** Arbitrary JSON: A2A-shaped documents, and valid requests structurally mutated. */
const anyRequestJson = fc.oneof(
  wireJson(7),
  fc.jsonValue({ maxDepth: 6 }),
  fc
    .tuple(fc.constantFrom(...validCalls('t-1')), fc.array(mutation, { maxLength: 4 }))
    .map(([call, ms]) => mutate(call.params, ms)),
);

describe('fuzz: wire parsers', () => {
  itHolds(
    'refuse arbitrary params with an A2AError, and convert whatever they accept without throwing',
    'wire-requests',
    () =>
      fc.property(anyRequestJson, (value) => {
        for (const [name, schema, convert] of REQUEST_SCHEMAS) {
          let parsed: unknown;
          try {
            parsed = parseRequest(schema, value);
          } catch (err) {
            if (!(err instanceof A2AError))
              throw new Error(`${name}: untyped ${String(err)}`, { cause: err });
            expect(err.code).toBe('INVALID_PARAMS');
            continue;
          }
          JSON.stringify(convert(parsed as never));
        }
      }),
    300,
  );

  itHolds(
    'validate arbitrary results without throwing, and convert whatever they accept to v0.3',
    'wire-results',
    () =>
      fc.property(wireJson(8), (value) => {
        for (const [, schema, convert] of RESULT_SCHEMAS) {
          const r = schema.safeParse(value);
          if (r.success) JSON.stringify(convert(r.data as never));
        }
      }),
    1000,
  );

  itHolds(
    'read any HTTP+JSON error body as an A2AError',
    'rest-error-body',
    () =>
      fc.property(
        fc.oneof(
          wireJson(5),
          fc.record({ error: wireJson(4) }),
          fc.record({ error: fc.record({ details: fc.array(wireJson(3)) }) }),
        ),
        fc.integer({ min: 100, max: 599 }),
        (body, status) => {
          const err = a2aErrorFromRest(body, status);
          expect(err).toBeInstanceOf(A2AError);
          expect(Number.isInteger(err.jsonRpcCode)).toBe(true);
        },
      ),
    1000,
  );
});

describe('fuzz: gRPC decoders', () => {
  const methods = Object.values(a2aGrpcService());

  itHolds(
    'decode arbitrary bytes of every request and response type, or refuse them with ProtoConversionError',
    'grpc-decode',
    () =>
      fc.property(fc.constantFrom(...methods), fc.uint8Array({ maxLength: 256 }), (method, bytes) => {
        for (const decode of [method.requestDeserialize, method.responseDeserialize]) {
          try {
            JSON.stringify(decode(Buffer.from(bytes)));
          } catch (err) {
            if (!(err instanceof ProtoConversionError))
              throw new Error(`untyped ${String(err)}`, { cause: err });
          }
        }
      }),
    2000,
  );

  itHolds(
    'encode arbitrary wire objects or refuse them with ProtoConversionError, and decode what they encode',
    'grpc-encode',
    () => {
      // Every request type of the service (methods are resolved by a2aGrpcService above).
      const types = a2aProtoRoot()
        .lookupService(A2A_GRPC_SERVICE)
        .methodsArray.map((m) =>
          wireCodec((m.resolvedRequestType as { fullName: string }).fullName.slice(1)),
        );
      return fc.property(fc.constantFrom(...types), anyRequestJson, (codec, value) => {
        let bytes: Buffer;
        try {
          bytes = codec.encode(value);
        } catch (err) {
          if (!(err instanceof ProtoConversionError))
            throw new Error(`untyped ${String(err)}`, { cause: err });
          return;
        }
        JSON.stringify(codec.decode(bytes));
      });
    },
    1000,
  );
});
