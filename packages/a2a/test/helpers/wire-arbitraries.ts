// fast-check arbitraries of A2A wire documents for the fuzz suites: JSON
// built from the protocol's own field names (both proto spellings) and
// values, so fuzzed input gets past the first schema check and reaches the
// code behind it, plus valid requests of every method and mutations of them.
import fc from 'fast-check';
import { nastyNumber, nastyString } from '@weave/test-support/fuzz';

/** Field names of A2A v1.0 and v0.3 requests, in JSON and proto spelling, and keys that misbehave on objects. */
const FIELDS = [
  'message',
  'messageId',
  'message_id',
  'role',
  'parts',
  'text',
  'data',
  'raw',
  'url',
  'mediaType',
  'media_type',
  'filename',
  'metadata',
  'taskId',
  'task_id',
  'contextId',
  'context_id',
  'id',
  'historyLength',
  'history_length',
  'configuration',
  'returnImmediately',
  'return_immediately',
  'acceptedOutputModes',
  'accepted_output_modes',
  'taskPushNotificationConfig',
  'task_push_notification_config',
  'pushNotificationConfig',
  'pushNotificationConfigId',
  'authentication',
  'scheme',
  'schemes',
  'credentials',
  'token',
  'tenant',
  'pageSize',
  'page_size',
  'pageToken',
  'page_token',
  'status',
  'state',
  'includeArtifacts',
  'include_artifacts',
  'statusTimestampAfter',
  'status_timestamp_after',
  'kind',
  'file',
  'bytes',
  'uri',
  'mimeType',
  'name',
  'blocking',
  'referenceTaskIds',
  'reference_task_ids',
  'extensions',
  'artifacts',
  'artifactId',
  'history',
  'skill',
  '__proto__',
  'constructor',
  'toString',
] as const;

/** Values the schemas look for (enums, kinds, method names), so unions and refinements get exercised. */
const WORDS = [
  'ROLE_USER',
  'ROLE_AGENT',
  'user',
  'agent',
  'TASK_STATE_WORKING',
  'TASK_STATE_COMPLETED',
  'TASK_STATE_INPUT_REQUIRED',
  'working',
  'text',
  'file',
  'data',
  'message',
  'task',
  'echo',
  'https://127.0.0.1:1/hook',
  'aGVsbG8=',
  '2026-01-01T00:00:00Z',
  'not-a-date',
];

const fieldName: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...FIELDS) },
  { weight: 1, arbitrary: nastyString },
);

const leaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...WORDS),
  nastyString,
  nastyNumber,
  fc.boolean(),
  fc.constant(null),
);

/** JSON documents of A2A-ish shape, up to `maxDepth` levels. */
export function wireJson(maxDepth = 6): fc.Arbitrary<unknown> {
  const { value } = fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', maxDepth, withCrossShrink: true },
      leaf,
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(fieldName, tie('value'), { maxKeys: 6, noNullPrototype: true }),
    ),
  }));
  return value;
}

/** A wire JSON object (what params and bodies must be). */
export const wireObject: fc.Arbitrary<Record<string, unknown>> = fc.dictionary(fieldName, wireJson(5), {
  maxKeys: 8,
  noNullPrototype: true,
});

const userMessage = (id: string, snake: boolean): Record<string, unknown> =>
  snake
    ? { message_id: id, role: 'ROLE_USER', parts: [{ text: 'hi', media_type: 'text/plain' }] }
    : { messageId: id, role: 'ROLE_USER', parts: [{ text: 'hi' }, { data: { k: [1, 'two'] } }] };

/**
 * Valid params of every v1.0 method (JSON names or proto names), then the
 * v0.3 ones. `taskId` names a task that exists on the server under test.
 */
export function validCalls(
  taskId: string,
): Array<{ method: string; params: Record<string, unknown>; v03?: boolean }> {
  const calls: Array<{ method: string; params: Record<string, unknown>; v03?: boolean }> = [];
  for (const snake of [false, true]) {
    const hl = snake ? 'history_length' : 'historyLength';
    calls.push(
      { method: 'SendMessage', params: { message: userMessage('m-1', snake) } },
      {
        method: 'SendMessage',
        params: {
          message: userMessage('m-2', snake),
          configuration: snake ? { return_immediately: true } : { returnImmediately: true, [hl]: 2 },
        },
      },
      { method: 'SendStreamingMessage', params: { message: userMessage('m-3', snake) } },
      { method: 'GetTask', params: { id: taskId, [hl]: 1 } },
      {
        method: 'ListTasks',
        params: snake ? { page_size: 2, include_artifacts: true } : { pageSize: 2, includeArtifacts: true },
      },
      { method: 'CancelTask', params: { id: taskId } },
      { method: 'SubscribeToTask', params: { id: taskId } },
      {
        method: 'CreateTaskPushNotificationConfig',
        params: { [snake ? 'task_id' : 'taskId']: taskId, url: 'https://127.0.0.1:1/hook' },
      },
      {
        method: 'GetTaskPushNotificationConfig',
        params: { [snake ? 'task_id' : 'taskId']: taskId, id: 'c' },
      },
      { method: 'ListTaskPushNotificationConfigs', params: { [snake ? 'task_id' : 'taskId']: taskId } },
      {
        method: 'DeleteTaskPushNotificationConfig',
        params: { [snake ? 'task_id' : 'taskId']: taskId, id: 'c' },
      },
      { method: 'GetExtendedAgentCard', params: {} },
    );
  }
  const v03Message = { kind: 'message', messageId: 'v', role: 'user', parts: [{ kind: 'text', text: 'hi' }] };
  calls.push(
    { method: 'message/send', params: { message: v03Message }, v03: true },
    {
      method: 'message/send',
      params: { message: v03Message, configuration: { blocking: false } },
      v03: true,
    },
    { method: 'message/stream', params: { message: v03Message }, v03: true },
    { method: 'tasks/get', params: { id: taskId, historyLength: 1 }, v03: true },
    { method: 'tasks/cancel', params: { id: taskId }, v03: true },
    { method: 'tasks/resubscribe', params: { id: taskId }, v03: true },
    {
      method: 'tasks/pushNotificationConfig/set',
      params: { taskId, pushNotificationConfig: { url: 'https://127.0.0.1:1/hook' } },
      v03: true,
    },
    { method: 'tasks/pushNotificationConfig/get', params: { id: taskId }, v03: true },
    { method: 'tasks/pushNotificationConfig/list', params: { id: taskId }, v03: true },
    {
      method: 'tasks/pushNotificationConfig/delete',
      params: { id: taskId, pushNotificationConfigId: 'c' },
      v03: true,
    },
    { method: 'agent/getAuthenticatedExtendedCard', params: {}, v03: true },
  );
  return calls;
}

/** One structural change to a JSON document, at the `at`-th node (modulo the node count). */
export interface Mutation {
  readonly at: number;
  readonly op: 'replace' | 'delete' | 'add' | 'respell' | 'nest' | 'wrap-array';
  readonly key: string;
  readonly value: unknown;
  readonly depth: number;
}

export const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('replace', 'delete', 'add', 'respell', 'nest', 'wrap-array'),
  key: fieldName,
  value: wireJson(3),
  depth: fc.integer({ min: 1, max: 60 }),
});

type Slot = { parent: Record<string, unknown> | unknown[]; key: string | number };

function slots(v: unknown, out: Slot[]): Slot[] {
  if (Array.isArray(v)) {
    v.forEach((c, i) => {
      out.push({ parent: v, key: i });
      slots(c, out);
    });
  } else if (v !== null && typeof v === 'object') {
    for (const [k, c] of Object.entries(v)) {
      out.push({ parent: v as Record<string, unknown>, key: k });
      slots(c, out);
    }
  }
  return out;
}

const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
const snakeOf = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** `doc` (deep-copied) with the mutations applied in order. */
export function mutate<T>(doc: T, mutations: readonly Mutation[]): T {
  const root = structuredClone(doc);
  for (const m of mutations) {
    const all = slots(root, []);
    if (all.length === 0) continue;
    const { parent, key } = all[m.at % all.length] as Slot;
    const p = parent as Record<string | number, unknown>;
    let nested: unknown = m.value;
    switch (m.op) {
      case 'replace':
        p[key] = m.value;
        break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete p[key];
        break;
      case 'add': {
        const target = p[key];
        if (target !== null && typeof target === 'object' && !Array.isArray(target)) {
          Object.defineProperty(target, m.key, {
            value: m.value,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        } else p[key] = m.value;
        break;
      }
      case 'respell':
        // The same field under its other spelling, and sometimes under both.
        if (typeof key === 'string') {
          const other = key.includes('_') ? camel(key) : snakeOf(key);
          p[other] = p[key];
          if (m.depth % 2 === 0) delete p[key];
        }
        break;
      case 'nest':
        for (let i = 0; i < m.depth; i++) nested = i % 2 === 0 ? [nested] : { [m.key]: nested };
        p[key] = nested;
        break;
      case 'wrap-array':
        p[key] = [p[key]];
        break;
    }
  }
  return root;
}
