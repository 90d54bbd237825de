// A push config given with a SendMessage (a new task, or a reply to one
// waiting for input) registers a webhook as CreateTaskPushNotificationConfig
// does, so it is authorized as that method too: a policy that tells methods
// apart by context.method cannot be passed by the other way in. And a config
// the store refuses for the caller's share of task memory refuses the whole
// request: no task is left behind, its handler never runs. Real mTLS with
// dev-CA SVIDs, over JSON-RPC, HTTP+JSON and gRPC.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuthzDecision, InboundCheck, PolicyEnforcer } from '@weave/authz';
import {
  InMemoryTaskStore,
  type A2AGrpcServer,
  type A2AServerOptions,
  type Task,
  type TaskStore,
} from '../src/index.js';
import { PUSH_CONFIG_LIMITS } from '../src/wire/v1.js';
import { rawBinding, serveEcho, serveGrpc, serveSlow, startHarness, type Harness } from './helpers/agents.js';
import type { BindingUnderTest, CallOutcome, RawBinding } from './helpers/raw-bindings.js';

const BINDINGS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;
const CREATE = 'CreateTaskPushNotificationConfig';
const HOOK = 'https://127.0.0.1:9/hook';

/**
 * Allows every inbound call but those whose `context.method` is in `deny`,
 * and keeps each check it was asked: what an OPA policy keyed on
 * `input.context.method` decides, through the same seam.
 */
class MethodPolicy implements PolicyEnforcer {
  readonly deny = new Set<string>();
  readonly checks: Array<{ action: string; method: unknown; taskId: unknown }> = [];

  async checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    const method = check.context?.method;
    this.checks.push({ action: check.action, method, taskId: check.context?.taskId });
    const allowed = !this.deny.has(String(method));
    return Object.freeze({
      allowed,
      reason: allowed ? 'allowed' : `${String(method)} denied`,
      auditId: `audit-${this.checks.length}`,
    });
  }

  async checkOutbound(): Promise<AuthzDecision> {
    return Object.freeze({ allowed: false, reason: 'inbound only', auditId: '' });
  }
}

interface Agent {
  h: Harness;
  grpc: A2AGrpcServer;
  /** Callers of each echo run, in order. */
  ran: string[];
  /** Release of each running `slow` task, by id. */
  release: Map<string, () => void>;
  bindingFor(name: BindingUnderTest): RawBinding;
  close(): Promise<void>;
}

async function startAgent(extra: Partial<A2AServerOptions>): Promise<Agent> {
  const ran: string[] = [];
  const release = new Map<string, () => void>();
  const h = await startHarness(
    (a2a) => {
      serveEcho(a2a, ran);
      serveSlow(a2a, (id, r) => release.set(id, r), 'done');
      a2a.registerTaskHandler({ id: 'ask', name: 'ask', description: 'asks', tags: [] }, async (ctx) => {
        const reply = await ctx.requestInput('which city?');
        return `city: ${reply.parts[0]?.text ?? ''}`;
      });
    },
    { push: { enabled: true, send: async () => undefined }, ...extra },
  );
  const grpc = await serveGrpc(h);
  return {
    h,
    grpc,
    ran,
    release,
    bindingFor: (name) => rawBinding(h, grpc, name),
    async close() {
      for (const r of release.values()) r();
      await grpc.close(100);
      await h.close();
    },
  };
}

// Results are read loosely here; each test asserts the shape it depends on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function ok(o: CallOutcome): any {
  if (!o.ok) throw new Error(`call failed: ${o.error.code} ${o.error.message}`);
  return o.result;
}

function refused(o: CallOutcome): { code: string; jsonRpcCode: number; message: string; data?: unknown } {
  if (o.ok) throw new Error(`expected a refusal, got ${JSON.stringify(o.result).slice(0, 200)}`);
  return o.error as never;
}

const message = (text: string, extra: Record<string, unknown> = {}) => ({
  messageId: `m-${Math.random().toString(36).slice(2)}`,
  role: 'ROLE_USER',
  parts: [{ text }],
  ...extra,
});

async function taskIds(b: RawBinding): Promise<string[]> {
  return ((ok(await b.call('ListTasks', {})).tasks ?? []) as Task[]).map((t) => t.id);
}

describe('a push config given with SendMessage is authorized as CreateTaskPushNotificationConfig too', () => {
  const policy = new MethodPolicy();
  let a: Agent;
  beforeAll(async () => {
    a = await startAgent({ enforcer: policy });
  });
  afterAll(() => a.close());

  describe.each(BINDINGS)('binding %s', (name) => {
    let b: RawBinding;
    beforeAll(() => {
      b = a.bindingFor(name);
    });
    afterAll(() => b.close());

    async function asking(): Promise<Task> {
      const r = ok(await b.call('SendMessage', { message: message('go', { metadata: { skill: 'ask' } }) }));
      expect((r.task as Task).status.state).toBe('TASK_STATE_INPUT_REQUIRED');
      return r.task as Task;
    }

    it('denied that method, a new task with a webhook is PERMISSION_DENIED: no task, no run, no config', async () => {
      policy.deny.clear();
      policy.deny.add(CREATE);
      const store = a.h.a2a.manager.store as InMemoryTaskStore;
      const before = await taskIds(b);
      const size = store.size;
      const ran = a.ran.length;
      const checks = policy.checks.length;
      const err = refused(
        await b.call('SendMessage', {
          message: message('x', { metadata: { skill: 'echo' } }),
          configuration: { taskPushNotificationConfig: { url: HOOK, token: 'tok' } },
        }),
      );
      expect(err.code).toBe('PERMISSION_DENIED');
      expect(policy.checks.slice(checks)).toEqual([
        { action: 'echo', method: 'SendMessage', taskId: undefined },
        { action: 'echo', method: CREATE, taskId: undefined },
      ]);
      expect(a.ran.length).toBe(ran);
      expect(store.size).toBe(size);
      expect(await taskIds(b)).toEqual(before);
      // The SendMessage alone is allowed: the denial is the webhook's.
      const r = ok(await b.call('SendMessage', { message: message('y', { metadata: { skill: 'echo' } }) }));
      expect((r.task as Task).status.state).toBe('TASK_STATE_COMPLETED');
      expect(a.ran.length).toBe(ran + 1);
    });

    it('denied that method, a reply with a webhook is PERMISSION_DENIED and not taken; no config is kept', async () => {
      policy.deny.clear();
      const task = await asking();
      policy.deny.add(CREATE);
      const checks = policy.checks.length;
      const err = refused(
        await b.call('SendMessage', {
          message: message('Paris', { taskId: task.id, contextId: task.contextId }),
          configuration: { taskPushNotificationConfig: { url: HOOK } },
        }),
      );
      expect(err.code).toBe('PERMISSION_DENIED');
      expect(policy.checks.slice(checks)).toEqual([
        { action: 'ask', method: 'SendMessage', taskId: task.id },
        { action: 'ask', method: CREATE, taskId: task.id },
      ]);
      const store = a.h.a2a.manager.store as InMemoryTaskStore;
      expect(await store.listPushConfigs(task.id)).toEqual([]);
      expect((ok(await b.call('GetTask', { id: task.id })) as Task).status.state).toBe(
        'TASK_STATE_INPUT_REQUIRED',
      );
      // The reply was not taken: without the webhook it is.
      const r = ok(await b.call('SendMessage', { message: message('Rome', { taskId: task.id }) }));
      expect((r.task as Task).status.state).toBe('TASK_STATE_COMPLETED');
      expect(JSON.stringify((r.task as Task).artifacts)).toContain('city: Rome');
    });

    it('allowed both, the webhook is kept with a new task and with a reply, and the policy was asked both', async () => {
      policy.deny.clear();
      const store = a.h.a2a.manager.store as InMemoryTaskStore;
      let checks = policy.checks.length;
      const ran = a.ran.length;
      const r = ok(
        await b.call('SendMessage', {
          message: message('x', { metadata: { skill: 'echo' } }),
          configuration: { taskPushNotificationConfig: { url: HOOK, id: 'new' } },
        }),
      );
      const made = r.task as Task;
      expect(made.status.state).toBe('TASK_STATE_COMPLETED');
      expect(a.ran.length).toBe(ran + 1);
      expect((await store.listPushConfigs(made.id)).map((c) => c.id)).toEqual(['new']);
      expect(policy.checks.slice(checks)).toEqual([
        { action: 'echo', method: 'SendMessage', taskId: undefined },
        { action: 'echo', method: CREATE, taskId: undefined },
      ]);

      const task = await asking();
      checks = policy.checks.length;
      ok(
        await b.call('SendMessage', {
          message: message('Oslo', { taskId: task.id }),
          configuration: { taskPushNotificationConfig: { url: HOOK, id: 'reply' } },
        }),
      );
      expect(policy.checks.slice(checks)).toEqual([
        { action: 'ask', method: 'SendMessage', taskId: task.id },
        { action: 'ask', method: CREATE, taskId: task.id },
      ]);
      expect((await store.listPushConfigs(task.id)).map((c) => c.id)).toEqual(['reply']);
    });
  });

  it('SendStreamingMessage with a webhook is denied the same way, before any event', async () => {
    policy.deny.clear();
    policy.deny.add(CREATE);
    const b = a.bindingFor('JSONRPC');
    try {
      const before = await taskIds(b);
      const ran = a.ran.length;
      const s = await b.stream('SendStreamingMessage', {
        message: message('x', { metadata: { skill: 'echo' } }),
        configuration: { taskPushNotificationConfig: { url: HOOK } },
      });
      expect(s.events).toEqual([]);
      expect(s.failure?.error.code).toBe('PERMISSION_DENIED');
      expect(a.ran.length).toBe(ran);
      expect(await taskIds(b)).toEqual(before);
    } finally {
      b.close();
    }
  });
});

// ---- the store refuses the config for the caller's share ---------------------------------

const KiB = 1024;
const SHARE = 24 * KiB;

/** As large as the request bounds let a config be (~8 KiB as stored). */
const bigConfig = () => ({
  url: HOOK,
  token: 't'.repeat(PUSH_CONFIG_LIMITS.token),
  authentication: { scheme: 'Bearer', credentials: 'c'.repeat(PUSH_CONFIG_LIMITS.credentials) },
});

/** A subclass: the TaskManager takes it for a durable store (writes awaited, no shared records). */
class DurableStore extends InMemoryTaskStore implements TaskStore {}

// The running task's text is sized to leave 2 to 8 KiB of the share: room
// for a new echo task, not for a config of ~8 KiB. A durable store keeps the
// task's first event as a copy, so counts its text twice.
describe.each([
  [
    'the embedded store',
    (): Partial<A2AServerOptions> => ({ limits: { retainedBytes: { perCaller: SHARE } } }),
    SHARE - 4.5 * KiB,
  ],
  [
    'a durable store',
    (): Partial<A2AServerOptions> => ({ taskStore: new DurableStore({ maxBytesPerOwner: SHARE }) }),
    (SHARE - 5 * KiB) / 2,
  ],
])('a webhook over the caller’s share on %s', (_store, options, holdText) => {
  const policy = new MethodPolicy();
  let a: Agent;
  let holding: Task;
  beforeAll(async () => {
    a = await startAgent({ enforcer: policy, ...options() });
    // A task that keeps running holds most of the caller's share.
    const b = a.bindingFor('JSONRPC');
    try {
      const r = ok(
        await b.call('SendMessage', {
          message: message('h'.repeat(holdText), { metadata: { skill: 'slow' } }),
          configuration: { returnImmediately: true },
        }),
      );
      holding = r.task as Task;
    } finally {
      b.close();
    }
    const left = SHARE - (a.h.a2a.manager.store as InMemoryTaskStore).bytes(a.h.clientId.toString());
    expect(left).toBeGreaterThan(2 * KiB);
    expect(left).toBeLessThan(8 * KiB);
  });
  afterAll(() => a.close());

  it.each(BINDINGS)(
    'over %s: refused as CreateTaskPushNotificationConfig is, with no task left behind and no run',
    async (name) => {
      const b = a.bindingFor(name);
      try {
        const store = a.h.a2a.manager.store as InMemoryTaskStore;
        const owner = a.h.clientId.toString();
        // The same config added to the running task: what the store says of it
        // (the caller's finished tasks are freed first, for it as for the one below).
        const standalone = refused(await b.call(CREATE, { taskId: holding.id, ...bigConfig() }));
        expect(standalone.code).toBe('RESOURCE_EXHAUSTED');

        const before = await taskIds(b);
        const size = store.size;
        const bytes = store.bytes(owner);
        const ran = a.ran.length;
        const err = refused(
          await b.call('SendMessage', {
            message: message('x', { metadata: { skill: 'echo' } }),
            configuration: { taskPushNotificationConfig: bigConfig() },
          }),
        );
        expect({ code: err.code, jsonRpcCode: err.jsonRpcCode, data: err.data }).toEqual({
          code: standalone.code,
          jsonRpcCode: standalone.jsonRpcCode,
          data: standalone.data,
        });
        expect(a.ran.length).toBe(ran);
        expect(await taskIds(b)).toEqual(before);
        expect(store.size).toBe(size);
        expect(store.bytes(owner)).toBe(bytes);

        // Without the webhook the same message makes a task and runs it.
        const r = ok(await b.call('SendMessage', { message: message('x', { metadata: { skill: 'echo' } }) }));
        expect((r.task as Task).status.state).toBe('TASK_STATE_COMPLETED');
        expect(a.ran.length).toBe(ran + 1);
      } finally {
        b.close();
      }
    },
  );
});
