// Turning A2A tasks into what `weave call` prints.
import { isTerminal, type Part, type Task, type TaskPayload } from '@weave/a2a';
import { payloadOfParts, payloadOfTask } from '@weave/agent';
import { printable } from './io.js';
import { CliError, EXIT } from './shared.js';

/** The input travels as one A2A data part, as `SecureAgent.callAgent` sends it (a JSON string stays a string). */
export function toPayload(input: unknown): TaskPayload {
  return [{ data: input }] as Part[];
}

/** What the task produced, read as `callAgent` reads it, or a CliError saying why it did not complete. */
export function resultOf(task: Task): string {
  const state = task.status.state;
  const why = textOf(task.status.message?.parts ?? []);
  if (state !== 'TASK_STATE_COMPLETED') {
    const what = isTerminal(state) ? 'ended' : 'is waiting';
    throw new CliError(
      'CALL_FAILED',
      printable(
        `task ${task.id} ${what} in state ${state.replace('TASK_STATE_', '')}${why ? `: ${why}` : ''}`,
      ),
      EXIT.failed,
    );
  }
  return show(payloadOfTask(task).value);
}

/** A direct message's payload, read as `callAgent` reads it. */
export function render(parts: readonly Part[]): string {
  return show(payloadOfParts(parts).value);
}

/** Text as it is; anything else as indented JSON. */
function show(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value ?? null, null, 2) ?? 'null');
}

/** A status message for a human: its text and data parts on one line. */
export function textOf(parts: readonly Part[]): string {
  return parts
    .map((p) => p.text ?? (p.data !== undefined ? JSON.stringify(p.data) : ''))
    .filter((t) => t !== '')
    .join(' ');
}
