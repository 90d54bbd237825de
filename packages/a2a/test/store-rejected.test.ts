// A write the task store refuses for good (TaskStoreRejectedError: content
// its backing service cannot keep) is not retried forever with the task
// frozen: the task ends FAILED as stored, its handler is aborted, waiters and
// the store error callback hear of it.
import { describe, expect, it } from 'vitest';
import {
  InMemoryTaskStore,
  TaskManager,
  TaskStoreRejectedError,
  type TaskRecord,
  type StoredEvent,
  type Task,
  type TaskStore,
} from '../src/index.js';
import { serveEcho, startHarness } from './helpers/agents.js';
import { jsonRpcBinding, refused } from './helpers/raw-bindings.js';

/** A durable-path store (a subclass) that refuses any write carrying the text "refuse me". */
class Refusing extends InMemoryTaskStore implements TaskStore {
  refused = 0;

  override async append(id: string, task: Task, events: readonly StoredEvent[], updatedAt: number) {
    if (JSON.stringify(events).includes('refuse me')) {
      this.refused++;
      throw new TaskStoreRejectedError('22P05 unsupported Unicode escape sequence');
    }
    return super.append(id, task, events, updatedAt);
  }
}

describe('a write the task store refuses for good', () => {
  it('ends the task FAILED as stored, once, aborting its handler and telling waiters and onStoreError', async () => {
    const store = new Refusing();
    const errors: unknown[] = [];
    const m = new TaskManager({ store, retryMaxMs: 20, onStoreError: (err) => errors.push(err) });
    try {
      const { task } = await m.create({
        owner: 'spiffe://t.test/a',
        skill: 's',
        message: { messageId: 'm1', role: 'ROLE_USER', parts: [{ text: 'hi' }] },
      });
      m.setStatus(task.id, 'TASK_STATE_WORKING');
      await m.flush();
      const signal = m.signalOf(task.id);
      m.addArtifact(task.id, { artifactId: 'out', parts: [{ text: 'refuse me' }] });
      const ended = await m.waitForCompletion(task.id, { terminalOnly: true, timeoutMs: 5_000 });
      expect(ended.status.state).toBe('TASK_STATE_FAILED');
      expect(ended.status.message?.parts[0]?.text).toMatch(
        /^Task failed: the task store cannot keep its content: task store refused the write: 22P05/,
      );
      await m.flush();
      const stored = await store.get(task.id);
      expect(stored?.task.status.state).toBe('TASK_STATE_FAILED');
      expect(stored?.task.artifacts ?? []).toEqual([]);
      expect(store.refused).toBe(1);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(TaskStoreRejectedError);
      expect(signal?.aborted).toBe(true);
      expect(signal?.reason).toBeInstanceOf(TaskStoreRejectedError);
      expect(m.isLive(task.id)).toBe(false);
    } finally {
      await m.close();
    }
  });

  it('a request whose content the store refuses is INVALID_PARAMS (not a retryable or internal error) and runs nothing', async () => {
    /** Refuses a context id it cannot keep, as PostgreSQL refused a NUL before the request schema did. */
    class NoNul extends InMemoryTaskStore implements TaskStore {
      override async create(record: TaskRecord, first: StoredEvent) {
        if (record.task.contextId.includes('unkeepable')) {
          throw new TaskStoreRejectedError('22P05 unsupported Unicode escape sequence');
        }
        return super.create(record, first);
      }
    }
    const ran: string[] = [];
    const h = await startHarness((a2a) => serveEcho(a2a, ran), { taskStore: new NoNul() });
    try {
      const out = await jsonRpcBinding(h.url, h.agent).call('SendMessage', {
        message: { messageId: 'nul', contextId: 'c-unkeepable', role: 'ROLE_USER', parts: [{ text: 'x' }] },
        metadata: { skill: 'echo' },
      });
      expect(out.status).toBe(200);
      const err = refused(out);
      expect(err.jsonRpcCode).toBe(-32602);
      expect(err.message).toMatch(/task store cannot keep what this request carries$/);
      expect(err.message).not.toMatch(/22P05/);
      expect(ran).toEqual([]);
    } finally {
      await h.close();
    }
  });
});
