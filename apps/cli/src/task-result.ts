// Turning A2A tasks into what `weave call` prints.
import { isTerminal, type Part, type Task, type TaskPayload } from '@weave/a2a';
import { CliError, EXIT } from './shared.js';

/** The input travels as one A2A data part, as `SecureAgent.callAgent` sends it (a JSON string stays a string). */
export function toPayload(input: unknown): TaskPayload {
  return [{ data: input }] as Part[];
}

/** What the task produced, or a CliError saying why it did not complete. */
export function resultOf(task: Task): string {
  const state = task.status.state;
  const why = textOf(task.status.message?.parts ?? []);
  if (state !== 'TASK_STATE_COMPLETED') {
    const what = isTerminal(state) ? 'ended' : 'is waiting';
    throw new CliError(
      'CALL_FAILED',
      `task ${task.id} ${what} in state ${state.replace('TASK_STATE_', '')}${why ? `: ${why}` : ''}`,
      EXIT.failed,
    );
  }
  const parts = (task.artifacts ?? []).flatMap((a) => a.parts);
  if (parts.length === 0 && task.status.message) return render(task.status.message.parts);
  return render(parts);
}

export function render(parts: readonly Part[]): string {
  if (parts.length === 1) {
    const p = parts[0] as Part;
    if (p.text !== undefined) return p.text;
    if (p.data !== undefined) return JSON.stringify(p.data, null, 2);
  }
  return JSON.stringify(parts, null, 2);
}

export function textOf(parts: readonly Part[]): string {
  return parts
    .map((p) => p.text ?? (p.data !== undefined ? JSON.stringify(p.data) : ''))
    .filter((t) => t !== '')
    .join(' ');
}
