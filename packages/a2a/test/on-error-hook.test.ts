// onRequestError: every request answered with an A2A error is told to the
// hook once, with its code, method and binding, on each of the three
// bindings (refusals before any task exists included: an unknown skill, a
// policy denial, a task store that cannot be reached), a stream that ends
// with an error event too; a successful call never is, and a hook that
// throws changes nothing of the reply. Before the hook, nothing outside the
// server could count these refusals (an agent's weave_requests_refused_total
// stayed at 0 while every SendMessage got 503). Real mTLS, real fastify and
// grpc-js servers on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecureChannel } from '@weave/transport';
import { channel, type Workload } from '@weave/test-support';
import {
  A2AError,
  InMemoryTaskStore,
  TaskStoreUnavailableError,
  type A2AGrpcServer,
  type BindingName,
  type StoredEvent,
  type TaskRecord,
  type TaskStore,
} from '../src/index.js';
import { serveEcho, serveGrpc, startHarness, type Harness } from './helpers/agents.js';
import {
  grpcBinding,
  jsonRpcBinding,
  refused,
  restBinding,
  type RawBinding,
} from './helpers/raw-bindings.js';

/** The embedded store, made unreachable (as a database that does not answer) while `away`. */
class AwayStore extends InMemoryTaskStore implements TaskStore {
  away = false;
  override async create(record: TaskRecord, first: StoredEvent): Promise<void> {
    if (this.away) throw new TaskStoreUnavailableError('connect ECONNREFUSED 10.0.0.5:5432');
    return super.create(record, first);
  }
}

interface Heard {
  code: string;
  method: string | undefined;
  binding: BindingName;
}

const heard: Heard[] = [];
/** Whether the hook throws after noting the call. */
let hookThrows = false;
const store = new AwayStore();
const ran: string[] = [];
let h: Harness;
let grpc: A2AGrpcServer;
let stranger: Workload;
let strangerChannel: SecureChannel;

beforeAll(async () => {
  h = await startHarness(
    (a2a) => {
      serveEcho(a2a, ran);
      // Publishes more events at once than a stream holds: the stream ends with an error event.
      a2a.registerTaskHandler({ id: 'flood', name: 'Flood', description: 'flood', tags: [] }, async (ctx) => {
        await new Promise((r) => setTimeout(r, 50));
        for (let i = 0; i < 17_000; i++) ctx.publishStatus('TASK_STATE_WORKING');
        return 'done';
      });
    },
    {
      taskStore: store,
      // The SSE writer's own bound stays out of the way: the stream's is the one under test.
      limits: { maxStreamBufferBytes: 256 * 1024 * 1024 },
      onRequestError: (err, info) => {
        heard.push({ code: err.code, method: info.method, binding: info.binding });
        if (hookThrows) throw new Error('a hook that fails');
      },
    },
  );
  grpc = await serveGrpc(h);
  stranger = await h.pki.workload('/agent/stranger');
  strangerChannel = channel(stranger, h.serverId);
});

afterAll(async () => {
  await grpc?.close(0);
  await strangerChannel?.close();
  await h?.close();
});

const bindings: BindingName[] = ['JSONRPC', 'HTTP+JSON', 'GRPC'];

/** The binding's raw client, as the allowed client or as the stranger the policy denies. */
function bindingOf(name: BindingName, as: 'client' | 'stranger'): RawBinding {
  const ch = as === 'client' ? h.agent : strangerChannel;
  if (name === 'JSONRPC') return jsonRpcBinding(h.url, ch);
  if (name === 'HTTP+JSON') return restBinding(h.url, ch);
  return grpcBinding(grpc.url as string, as === 'client' ? h.client : stranger, h.serverId);
}

const send = (skill: string, text = 'hi') => ({
  message: {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    role: 'ROLE_USER',
    parts: [{ text }],
    metadata: { skill },
  },
});

const refusals: Array<{
  name: string;
  as: 'client' | 'stranger';
  skill: string;
  storeAway: boolean;
  code: string;
}> = [
  { name: 'an unknown skill', as: 'client', skill: 'nope', storeAway: false, code: 'INVALID_PARAMS' },
  { name: 'a policy denial', as: 'stranger', skill: 'echo', storeAway: false, code: 'PERMISSION_DENIED' },
  {
    name: 'a task store that cannot be reached',
    as: 'client',
    skill: 'echo',
    storeAway: true,
    code: 'UNAVAILABLE',
  },
];

describe.each(bindings)('onRequestError on %s', (binding) => {
  it('is not called for a successful call', async () => {
    const b = bindingOf(binding, 'client');
    try {
      heard.length = 0;
      const out = await b.call('SendMessage', send('echo'));
      expect(out.ok).toBe(true);
      expect(ran.at(-1)).toBe(h.clientId.toString());
      expect(heard).toEqual([]);
    } finally {
      b.close();
    }
  });

  for (const c of refusals) {
    it(`is called once for ${c.name} (${c.code}), and the handler does not run`, async () => {
      const b = bindingOf(binding, c.as);
      const before = ran.length;
      heard.length = 0;
      store.away = c.storeAway;
      try {
        const err = refused(await b.call('SendMessage', send(c.skill)));
        expect(err).toBeInstanceOf(A2AError);
        expect(err.code).toBe(c.code);
        expect(heard).toEqual([{ code: c.code, method: 'SendMessage', binding }]);
        expect(ran.length).toBe(before);
      } finally {
        store.away = false;
        b.close();
      }
    });
  }

  it('a hook that throws leaves the reply as it was', async () => {
    const b = bindingOf(binding, 'client');
    heard.length = 0;
    try {
      const quiet = await b.call('SendMessage', send('nope'));
      hookThrows = true;
      const loud = await b.call('SendMessage', send('nope'));
      expect(loud.ok).toBe(false);
      expect(quiet.ok).toBe(false);
      if (loud.ok || quiet.ok) return;
      expect(loud.status).toBe(quiet.status);
      expect(loud.error.code).toBe('INVALID_PARAMS');
      expect(loud.error.message).toBe(quiet.error.message);
      expect(heard.map((e) => e.code)).toEqual(['INVALID_PARAMS', 'INVALID_PARAMS']);
      // The server goes on answering.
      expect((await b.call('SendMessage', send('echo'))).ok).toBe(true);
    } finally {
      hookThrows = false;
      b.close();
    }
  });

  it('is called once for a stream that ends with an error event', async () => {
    const b = bindingOf(binding, 'client');
    heard.length = 0;
    try {
      const s = await b.stream('SendStreamingMessage', send('flood'));
      expect(s.events.length).toBeGreaterThan(0);
      expect(s.failure?.error.code).toBe('UNAVAILABLE');
      expect(s.failure?.error.message).toMatch(/subscriber too slow/);
      expect(heard).toEqual([{ code: 'UNAVAILABLE', method: 'SendStreamingMessage', binding }]);
    } finally {
      b.close();
    }
  }, 20_000);
});
