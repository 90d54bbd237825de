import { describe, expect, it } from 'vitest';
import { Metadata } from '@grpc/grpc-js';
import {
  A2A_GRPC_SERVICE,
  MAX_PROTO_DEPTH,
  ProtoConversionError,
  a2aErrorToGrpcStatus,
  a2aGrpcService,
  grpcStatusToA2AError,
  wireCodec,
} from '../src/grpc/index.js';
import { A2AError, a2aErrorFromRest } from '../src/index.js';
import { restErrorToA2AError } from '../src/transports/rest.js';
import { TaskSchema, type Task } from '../src/index.js';
import { A2AErrors, A2A_ERROR_DOMAIN, ERROR_INFO_TYPE } from '../src/errors.js';

const task: Task = {
  id: 'task-1',
  contextId: 'ctx-1',
  status: {
    state: 'TASK_STATE_INPUT_REQUIRED',
    timestamp: '2026-03-01T10:20:30.123Z',
    message: { messageId: 'm0', role: 'ROLE_AGENT', parts: [{ text: 'which city?' }] },
  },
  history: [
    {
      messageId: 'm1',
      role: 'ROLE_USER',
      taskId: 'task-1',
      contextId: 'ctx-1',
      parts: [
        { text: 'hello', metadata: { lang: 'en' } },
        {
          raw: Buffer.from([0, 1, 2, 250]).toString('base64'),
          mediaType: 'application/octet-stream',
          filename: 'b.bin',
        },
        { url: 'https://example.test/x.png', mediaType: 'image/png' },
        { data: { a: [1, 'two', true, null, { b: { c: 3.5 } }], e: {} } },
        { data: null },
        { data: 'just a string' },
      ],
      referenceTaskIds: ['t0'],
      extensions: ['urn:x'],
      metadata: { skill: 'echo', n: 2 },
    },
  ],
  artifacts: [{ artifactId: 'a1', name: 'result', parts: [{ data: [1, 2, 3] }], metadata: { k: 'v' } }],
  metadata: { weave: { capability: 'echo' } },
};

describe('A2A gRPC contract (spec a2a.proto)', () => {
  it('defines every A2AService method under lf.a2a.v1 with the spec streaming shape', () => {
    const svc = a2aGrpcService();
    expect(A2A_GRPC_SERVICE).toBe('lf.a2a.v1.A2AService');
    const methods = Object.keys(svc).sort();
    expect(methods).toEqual(
      [
        'CancelTask',
        'CreateTaskPushNotificationConfig',
        'DeleteTaskPushNotificationConfig',
        'GetExtendedAgentCard',
        'GetTask',
        'GetTaskPushNotificationConfig',
        'ListTaskPushNotificationConfigs',
        'ListTasks',
        'SendMessage',
        'SendStreamingMessage',
        'SubscribeToTask',
      ].sort(),
    );
    for (const m of methods) {
      const def = svc[m as keyof typeof svc]!;
      expect(def.path).toBe(`/lf.a2a.v1.A2AService/${m}`);
      expect(def.requestStream).toBe(false);
      expect(def.responseStream).toBe(m === 'SendStreamingMessage' || m === 'SubscribeToTask');
    }
  });

  it('round-trips a Task with every Part kind, Struct metadata, enums and a timestamp', () => {
    const codec = wireCodec('lf.a2a.v1.Task');
    const bytes = codec.encode(task);
    const back = codec.decode(bytes);
    expect(TaskSchema.parse(back)).toEqual(task);
  });

  it('decodes absent REQUIRED fields to their defaults and omits absent optional ones', () => {
    const codec = wireCodec('lf.a2a.v1.ListTasksResponse');
    expect(codec.decode(codec.encode({ tasks: [] }))).toEqual({
      tasks: [],
      nextPageToken: '',
      pageSize: 0,
      totalSize: 0,
    });
    const req = wireCodec('lf.a2a.v1.GetTaskRequest');
    expect(req.decode(req.encode({ id: 't' }))).toEqual({ id: 't' });
    // proto3 `optional`: an explicit 0 survives (0 = no history, unset = server default).
    expect(req.decode(req.encode({ id: 't', historyLength: 0 }))).toEqual({ id: 't', historyLength: 0 });
  });

  it('writes only enum names the proto defines: an object-prototype name is not one', () => {
    const codec = wireCodec('lf.a2a.v1.TaskStatus');
    const known = codec.decode(codec.encode({ state: 'TASK_STATE_WORKING' }));
    expect(known.state).toBe('TASK_STATE_WORKING');
    const unknown = codec.decode(codec.encode({ state: 'NOT_A_STATE' }));
    expect(unknown.state).toBeUndefined();
    for (const name of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      // Not a TaskState: left out as any unknown name is (it was written as a bogus 0).
      expect(codec.decode(codec.encode({ state: name }))).toEqual(unknown);
    }
  });

  it('keeps the SendMessageResponse and StreamResponse oneofs', () => {
    const res = wireCodec('lf.a2a.v1.SendMessageResponse');
    expect(res.decode(res.encode({ task }))).toEqual({ task });
    const msg = { messageId: 'r', role: 'ROLE_AGENT', parts: [{ text: 'hi' }] };
    expect(res.decode(res.encode({ message: msg }))).toEqual({ message: msg });
    const ev = wireCodec('lf.a2a.v1.StreamResponse');
    const su = {
      statusUpdate: { taskId: 't', contextId: 'c', status: { state: 'TASK_STATE_WORKING' } },
    };
    expect(ev.decode(ev.encode(su))).toEqual(su);
    const au = {
      artifactUpdate: {
        taskId: 't',
        contextId: 'c',
        artifact: { artifactId: 'a', parts: [{ text: 'x' }] },
        append: true,
        lastChunk: true,
      },
    };
    expect(ev.decode(ev.encode(au))).toEqual(au);
  });

  it('refuses nesting deeper than the limit, encoding and decoding, with a typed error', () => {
    let deep: unknown = 'leaf';
    for (let i = 0; i < MAX_PROTO_DEPTH + 5; i++) deep = { d: deep };
    const codec = wireCodec('lf.a2a.v1.Part');
    expect(() => codec.encode({ data: deep })).toThrow(ProtoConversionError);
    // Hand-encoded bytes of Part{data: {d: {d: ... 1000 levels}}}, as a hostile peer would send.
    const len = (n: number): number[] => {
      const out: number[] = [];
      do {
        out.push((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
        n >>>= 7;
      } while (n > 0);
      return out;
    };
    const field = (tag: number, body: Buffer): Buffer =>
      Buffer.concat([Buffer.from([tag, ...len(body.length)]), body]);
    let value = field(0x1a, Buffer.from('leaf')); // Value.string_value = 3
    for (let i = 0; i < 1000; i++) {
      const entry = Buffer.concat([field(0x0a, Buffer.from('d')), field(0x12, value)]); // key = 1, value = 2
      value = field(0x2a, field(0x0a, entry)); // Value.struct_value = 5 { Struct.fields = 1 }
    }
    const bytes = field(0x22, value); // Part.data = 4
    expect(() => codec.decode(bytes)).toThrow(ProtoConversionError);
  });

  it('refuses values of the wrong type with a typed error', () => {
    const codec = wireCodec('lf.a2a.v1.Task');
    expect(() =>
      codec.encode({ id: 't', status: { state: 'TASK_STATE_WORKING', timestamp: 'yesterday' } }),
    ).toThrow(ProtoConversionError);
    expect(() => codec.encode({ id: 't', history: 'not a list' })).toThrow(ProtoConversionError);
    expect(() => codec.decode(Buffer.from([0x0a, 0xff, 0xff]))).toThrow(ProtoConversionError);
  });

  it('carries A2A errors as gRPC status + google.rpc.ErrorInfo and back (spec v1.0.1 §5.4, §10.6)', () => {
    const cases: [A2AError, number][] = [
      [A2AErrors.taskNotFound('t1'), 5],
      [A2AErrors.taskNotCancelable('t1', 'TASK_STATE_COMPLETED'), 9],
      [A2AErrors.pushNotSupported(), 9],
      [A2AErrors.unsupportedOperation('no'), 9],
      [A2AErrors.contentType('text/plain'), 3],
      [A2AErrors.invalidAgentResponse('bad'), 13],
      [A2AErrors.extendedCardNotConfigured(), 9],
      [A2AErrors.extensionRequired('urn:x'), 9],
      [A2AErrors.versionNotSupported('9.9'), 9],
      [A2AErrors.invalidParams('x'), 3],
      [A2AErrors.methodNotFound('X'), 12],
      [A2AErrors.internal(), 13],
      [A2AErrors.permissionDenied('no', 'audit-1'), 7],
      [A2AErrors.tooManyTasks(4), 8],
    ];
    for (const [err, code] of cases) {
      const status = a2aErrorToGrpcStatus(err);
      expect(status.code, err.code).toBe(code);
      expect(status.details).toBe(err.message);
      const back = grpcStatusToA2AError({
        code: status.code,
        details: status.details,
        metadata: status.metadata as Metadata,
      });
      expect(back.jsonRpcCode, err.code).toBe(err.jsonRpcCode);
      expect(back.code).toBe(err.code);
      expect(back.message).toBe(err.message);
      expect(back.data).toEqual(err.data);
    }
  });

  it('takes a peer’s ErrorInfo reason as the code only in its shape (UPPER_SNAKE_CASE, ≤ 63 characters), on every binding; the reason stays in data', () => {
    const infoOf = (reason: string) => ({ '@type': ERROR_INFO_TYPE, reason, domain: A2A_ERROR_DOMAIN });
    const read = (reason: string): A2AError[] => {
      const grpc = a2aErrorToGrpcStatus(new A2AError(-32001, 'gone', { reason }));
      return [
        A2AError.fromJsonRpc({ code: -32001, message: 'gone', data: [infoOf(reason)] }),
        a2aErrorFromRest(
          { error: { code: 404, status: 'NOT_FOUND', message: 'gone', details: [infoOf(reason)] } },
          404,
        ),
        grpcStatusToA2AError({ code: grpc.code, details: grpc.details, metadata: grpc.metadata as Metadata }),
      ];
    };
    for (const reason of [
      'A'.repeat(30_000),
      'task_not_found',
      'TASK NOT FOUND',
      `X${'Y'.repeat(63)}`,
      'EVIL\u001b[2K',
    ]) {
      for (const e of read(reason)) {
        expect([e.code, e.jsonRpcCode], reason.slice(0, 20)).toEqual(['TASK_NOT_FOUND', -32001]);
        expect(JSON.stringify(e.data)).toContain(JSON.stringify(reason).slice(1, 20));
      }
    }
    for (const reason of ['TASK_NOT_FOUND', 'QUOTA_EXCEEDED', `X${'Y'.repeat(62)}`]) {
      for (const e of read(reason)) expect(e.code).toBe(reason);
    }
  });

  it('maps a bare gRPC status (no details) to an A2A error by its code', () => {
    const e = grpcStatusToA2AError({ code: 5, details: 'gone', metadata: new Metadata() });
    expect(e.jsonRpcCode).toBe(-32001);
    const garbage = new Metadata();
    garbage.set('grpc-status-details-bin', Buffer.from([0xff, 0xff, 0xff]));
    expect(grpcStatusToA2AError({ code: 13, details: 'boom', metadata: garbage }).jsonRpcCode).toBe(-32603);
  });

  it('reads a bare PERMISSION_DENIED (no ErrorInfo, as other SDKs’ servers send it) as a refusal, as HTTP+JSON reads a bare 403', () => {
    // grpcio's context.abort(PERMISSION_DENIED, …) sends no details; callAgent tells a denial by this reason.
    const e = grpcStatusToA2AError({ code: 7, details: 'not you', metadata: new Metadata() });
    const rest = restErrorToA2AError({ error: { code: 403, message: 'not you' } }, 403)!;
    expect([e.code, e.jsonRpcCode, e.message]).toEqual(['PERMISSION_DENIED', -32600, 'not you']);
    expect([e.code, e.jsonRpcCode]).toEqual([rest.code, rest.jsonRpcCode]);
    // An ErrorInfo reason still wins over the status code.
    const withInfo = a2aErrorToGrpcStatus(A2AErrors.invalidRequest('bad'));
    expect(
      grpcStatusToA2AError({ code: 7, details: 'bad', metadata: withInfo.metadata as Metadata }).code,
    ).toBe('INVALID_REQUEST');
  });
});
