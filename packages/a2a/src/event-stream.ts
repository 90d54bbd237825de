import type { A2AError } from './errors.js';
import { A2AErrors } from './errors.js';
import type { StreamResponse } from './wire/v1.js';

/** One event of a task stream: the event and its sequence number in the task's log (for resume). */
export interface TaskStreamEvent {
  readonly event: StreamResponse;
  /** Sequence number in the task's event log; what a client resumes after (`Last-Event-ID`). */
  readonly seq: number;
}

/**
 * Events queued for one subscriber that has not read them yet. Beyond this the
 * subscriber is too slow to keep up with the task: its stream ends with an
 * error that names the last event it got, so it can resume from there (the
 * task's event log serves the rest), instead of the server buffering without
 * bound or dropping events silently.
 */
export const MAX_QUEUED_EVENTS = 16_384;

/**
 * A task's events for one subscriber, as an `AsyncIterable` the bindings
 * read at their own pace (a binding awaits its socket before reading on).
 * The producer side ({@link push}, {@link end}) is synchronous, so events
 * keep the order the task manager gave them.
 */
export class TaskEventStream implements AsyncIterable<TaskStreamEvent> {
  readonly #queue: TaskStreamEvent[] = [];
  #head = 0;
  #ended = false;
  #error: A2AError | undefined;
  #wake: (() => void) | undefined;
  #onClose: (() => void) | undefined;
  #closed = false;
  #lastSeq: number | undefined;

  /** `onClose` runs once, when the stream ends or its reader leaves. */
  constructor(onClose?: () => void) {
    this.#onClose = onClose;
  }

  /** Whether the producer may stop pushing (ended, or the reader left). */
  get closed(): boolean {
    return this.#ended || this.#closed;
  }

  /** Queues an event; an overflowing queue ends the stream with a resumable error. */
  push(e: TaskStreamEvent): void {
    if (this.#ended || this.#closed) return;
    if (this.#queue.length - this.#head >= MAX_QUEUED_EVENTS) {
      const last = this.#lastSeq;
      this.end(
        A2AErrors.unavailable(
          `subscriber too slow: more than ${MAX_QUEUED_EVENTS} events unread; resume after event ${last ?? 'none'}`,
        ),
      );
      return;
    }
    this.#queue.push(e);
    this.#notify();
  }

  /** No more events: the reader gets the queued ones, then the end (or `error`). */
  end(error?: A2AError): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    this.#notify();
  }

  /** The reader left: drop what is queued and release the subscription. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#queue.length = 0;
    this.#head = 0;
    this.#notify();
    const fn = this.#onClose;
    this.#onClose = undefined;
    fn?.();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /** The next event, or `undefined` at the end; rejects with the stream's error. */
  async next(): Promise<TaskStreamEvent | undefined> {
    for (;;) {
      if (this.#head < this.#queue.length) {
        const e = this.#queue[this.#head++] as TaskStreamEvent;
        if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
          this.#queue.splice(0, this.#head);
          this.#head = 0;
        }
        this.#lastSeq = e.seq;
        return e;
      }
      if (this.#ended) {
        const err = this.#error;
        this.close();
        if (err) throw err;
        return undefined;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** Events already queued, without waiting (lets a binding write a burst in one go). */
  takeQueued(): TaskStreamEvent[] {
    const out = this.#queue.slice(this.#head);
    this.#queue.length = 0;
    this.#head = 0;
    if (out.length > 0) this.#lastSeq = (out[out.length - 1] as TaskStreamEvent).seq;
    return out;
  }

  [Symbol.asyncIterator](): AsyncIterator<TaskStreamEvent> {
    return {
      next: async () => {
        const e = await this.next();
        return e === undefined ? { done: true, value: undefined } : { done: false, value: e };
      },
      return: async () => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }
}
