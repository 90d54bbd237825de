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
 * Unread events at which a subscriber counts as behind for
 * {@link TaskEventStream.caughtUp} (and so for a task handler's
 * `ctx.drained()`); far below {@link MAX_QUEUED_EVENTS}, so a producer that
 * waits is never cut.
 */
export const STREAM_HIGH_WATER = 256;
/** A subscriber that was behind has caught up again at this many unread events (hysteresis: one wake-up per batch, not per event). */
export const STREAM_LOW_WATER = 64;

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
  /** The binding's writer: whether its socket asked to wait (see {@link attachSink}). */
  #sinkBackedUp: (() => boolean) | undefined;
  /** Producers waiting in {@link caughtUp}. */
  #waiters: Array<() => void> = [];

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
    // Nothing more is pushed: a producer has no reason to wait for this reader.
    this.#release();
  }

  /** The reader left: drop what is queued and release the subscription. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#queue.length = 0;
    this.#head = 0;
    this.#notify();
    this.#release();
    const fn = this.#onClose;
    this.#onClose = undefined;
    fn?.();
  }

  /**
   * Flow control for the producer: `undefined` while this reader keeps up
   * (fewer than {@link STREAM_HIGH_WATER} events unread and the binding's
   * socket taking data), else a promise that resolves once it has caught up
   * ({@link STREAM_LOW_WATER} unread, the socket drained) — or the stream
   * ends or its reader leaves. Never rejects.
   */
  caughtUp(): Promise<void> | undefined {
    if (this.#ended || this.#closed) return undefined;
    if (this.#queue.length - this.#head < STREAM_HIGH_WATER && this.#sinkBackedUp?.() !== true) {
      return undefined;
    }
    return new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /**
   * The binding that writes this stream tells whether its socket holds
   * events it has not taken yet (write asked to wait for 'drain'); it calls
   * {@link sinkDrained} when that clears. A subscriber whose socket is backed
   * up is behind for {@link caughtUp} whatever the queue here holds.
   */
  attachSink(backedUp: () => boolean): void {
    this.#sinkBackedUp = backedUp;
  }

  /** The binding's socket took what it held: producers waiting in {@link caughtUp} may go on if the queue is short too. */
  sinkDrained(): void {
    this.#progress();
  }

  /** The reader took events: wakes waiting producers once it has caught up. */
  #progress(): void {
    if (this.#waiters.length === 0) return;
    if (this.#queue.length - this.#head > STREAM_LOW_WATER || this.#sinkBackedUp?.() === true) return;
    this.#release();
  }

  #release(): void {
    const ws = this.#waiters;
    if (ws.length === 0) return;
    this.#waiters = [];
    for (const w of ws) w();
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
        this.#progress();
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
    this.#progress();
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
