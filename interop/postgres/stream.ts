/**
 * What the PostgreSQL replica tests share: reading A2A JSON-RPC event
 * streams (with the SDK's own SSE parser) and the one-caller policy of the
 * replicas under test.
 */
import { LocalPolicyEnforcer } from '@weave/authz';
import type { StreamResponse } from '@weave/a2a';
import { parseSse } from '../../packages/a2a/src/sse-parse.js';

/** One JSON-RPC SSE event: its id (the task log's sequence number) and payload. */
export interface Sse {
  readonly id?: string;
  readonly data: { result?: StreamResponse & Record<string, unknown>; error?: unknown };
}

/**
 * Reads the events of `body` into `events` as they come. `stopWhen` (asked
 * after each event) leaves early, keeping the events so far; `broken` says
 * the connection failed before the stream ended (the replica serving it died).
 */
export async function readEvents(
  body: AsyncIterable<Uint8Array | string> & { destroy?: () => void },
  stopWhen?: (events: readonly Sse[]) => boolean,
  events: Sse[] = [],
): Promise<{ events: Sse[]; broken: boolean }> {
  try {
    for await (const e of parseSse(body, 1 << 20)) {
      events.push(e.id === undefined ? { data: JSON.parse(e.data) } : { id: e.id, data: JSON.parse(e.data) });
      if (stopWhen?.(events)) {
        body.destroy?.();
        break;
      }
    }
  } catch {
    return { events, broken: true };
  }
  return { events, broken: false };
}

/** The events of a whole response body. */
export async function eventsOf(body: string): Promise<Sse[]> {
  return (await readEvents(once(body))).events;
}

async function* once(text: string): AsyncGenerator<string> {
  yield text;
}

/** The state an event reports (a status update, or a task), if any. */
export function stateOf(e: Sse | undefined): string | undefined {
  const r = e?.data.result as StreamResponse | undefined;
  if (!r) return undefined;
  if ('statusUpdate' in r) return r.statusUpdate.status.state;
  if ('task' in r) return r.task.status.state;
  return undefined;
}

/** Deny by default; `caller` may do anything. */
export function allowOnly(caller: string): LocalPolicyEnforcer {
  return LocalPolicyEnforcer.fromObject({
    version: 1,
    id: 'replicas',
    default: 'deny',
    rules: [{ id: 'caller', effect: 'allow', callers: [caller], actions: ['*'] }],
  });
}
