// What a log line keeps of a value application code threw: loggableError
// gives a bounded plain object (a 10 MB message was logged whole, twice:
// message and stack), keeps what identifies the error (type, the start of its
// message, the frames of its stack, its code and fields, its cause), and never
// throws, whatever was thrown. Logged through pino with its default error
// serializer, as Weave's loggers are.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { WeaveError } from '@weave/identity';
import { A2AError, FAILURE_TEXT_CHARS, loggableError, thrownText } from '../src/index.js';

/** Logs `err` as `{ err: loggableError(err) }` with pino's defaults; the line as written. */
function logLine(err: unknown): string {
  let line = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      line += chunk.toString();
      done();
    },
  });
  pino({ level: 'info' }, sink).warn({ taskId: 't-1', err: loggableError(err) }, 'task failed');
  return line;
}

const TEN_MB = 10 * 1024 * 1024;

/** An object whose `message`, `code`, `stack` and `cause` throw when read. */
function unreadable(): object {
  const boom = () => {
    throw new Error('getter password=hunter2');
  };
  return Object.defineProperties(
    {},
    {
      message: { get: boom },
      code: { get: boom },
      stack: { get: boom },
      cause: { get: boom, enumerable: true },
    },
  );
}

describe('loggableError of an error with a 10 MB message', () => {
  const err = new Error(`boom: ${'x'.repeat(TEN_MB)}`);

  it('cuts the message, and the stack after the message it starts with, keeping the frames', () => {
    const out = loggableError(err);
    expect(out.type).toBe('Error');
    expect(out.message).toMatch(/^boom: x+… \(10485766 characters\)$/);
    expect(out.message.length).toBeLessThan(FAILURE_TEXT_CHARS + 30);
    expect(out.stack).toMatch(/^Error: boom: x+… \(10485766 characters\)\n {4}at /);
    // The frames say where it was thrown: this file.
    expect(out.stack).toContain('loggable-error.test.ts');
    expect(JSON.stringify(out).length).toBeLessThan(6000);
  });

  it('is a line of a few KB through pino, still naming the error and where it was thrown', () => {
    const line = logLine(err);
    expect(line.length).toBeLessThan(8000);
    const logged = JSON.parse(line) as { taskId: string; err: Record<string, unknown> };
    expect(logged.taskId).toBe('t-1');
    // pino's serializer takes the object for an error: its type stays the thrown value's.
    expect(logged.err).toMatchObject({
      type: 'Error',
      message: expect.stringMatching(/^boom: x+… \(10485766 characters\)$/) as string,
      stack: expect.stringContaining('loggable-error.test.ts') as string,
    });
  });
});

describe('loggableError keeps what identifies an error, each part bounded', () => {
  it('the class and code of a WeaveError, and its fields that are strings, numbers or booleans', () => {
    const err = new A2AError(-32006, 'Invalid agent response: output holds a Date object at parts.0.data.at');
    expect(loggableError(err)).toMatchObject({
      type: 'A2AError',
      name: 'A2AError',
      message: 'Invalid agent response: output holds a Date object at parts.0.data.at',
      code: 'INVALID_AGENT_RESPONSE',
      jsonRpcCode: -32006,
    });
    // `data` (an object) is not copied: only what is small by nature.
    expect(loggableError(err)).not.toHaveProperty('data');
  });

  it("a Node error's code and details; a code that is not a string is left out", () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), {
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
      address: '10.0.0.5',
      port: 5432,
    });
    expect(loggableError(refused)).toMatchObject({
      type: 'Error',
      code: 'ECONNREFUSED',
      errno: -111,
      syscall: 'connect',
      address: '10.0.0.5',
      port: 5432,
    });
    expect(loggableError(Object.assign(new Error('x'), { code: 42 }))).not.toHaveProperty('code');
  });

  it('its cause one level deep, through pino as pino shows the cause of an Error', () => {
    const err = new WeaveError('OUTER', 'outer', {
      cause: new TypeError('inner', { cause: new Error('innermost') }),
    });
    const out = loggableError(err);
    expect(out.cause).toMatchObject({ type: 'TypeError', message: 'inner' });
    expect(out.cause).not.toHaveProperty('cause');
    const logged = JSON.parse(logLine(err)) as { err: { type: string; message: string; stack: string } };
    expect(logged.err.type).toBe('WeaveError');
    expect(logged.err.message).toBe('outer: inner');
    expect(logged.err.stack).toMatch(/^WeaveError: outer\n[\s\S]*caused by: TypeError: inner\n/);
    expect(JSON.stringify(logged)).not.toContain('innermost');
  });

  it('at most about 10 KB, however large every part of the error and its cause is', () => {
    const huge = 'y'.repeat(1_000_000);
    const fields = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`field${i}`, huge]));
    const inner = Object.assign(new Error(huge), { code: huge, stack: huge }, fields);
    const err = Object.assign(new Error(huge, { cause: inner }), { code: huge, stack: huge }, fields, {
      [huge]: 'a 1 MB key',
    });
    const out = loggableError(err);
    expect(Object.keys(out).filter((k) => k.startsWith('field'))).toHaveLength(8);
    expect(out.field0).toMatch(/^y+… \(1000000 characters\)$/);
    expect(JSON.stringify(out).length).toBeLessThan(11_000);
    expect(logLine(err).length).toBeLessThan(12_000);
  });
});

describe('loggableError never throws', () => {
  it('on a value whose getters throw: its type, and a message saying it cannot be read', () => {
    const out = loggableError(unreadable());
    expect(out).toMatchObject({ type: 'Object', message: 'a thrown object that cannot be read' });
    expect(JSON.stringify(out)).not.toContain('hunter2');
    expect(logLine(unreadable())).toContain('a thrown object that cannot be read');
  });

  it('on a Proxy whose every trap throws', () => {
    const trap = () => {
      throw new Error('trap');
    };
    const hostile = new Proxy(
      {},
      { get: trap, getPrototypeOf: trap, ownKeys: trap, has: trap, getOwnPropertyDescriptor: trap },
    );
    expect(loggableError(hostile)).toMatchObject({
      type: 'object',
      message: 'a thrown object that cannot be read',
    });
  });

  it('on what is not an object: a string (cut), null, undefined, a symbol, a number', () => {
    expect(loggableError('x'.repeat(TEN_MB))).toMatchObject({
      type: 'string',
      message: expect.stringMatching(/^x+… \(10485760 characters\)$/) as string,
    });
    expect(loggableError(null)).toMatchObject({ type: 'null', message: 'null' });
    expect(loggableError(undefined)).toMatchObject({ type: 'undefined', message: 'undefined' });
    expect(loggableError(Symbol('s'))).toMatchObject({ type: 'symbol', message: 'Symbol(s)' });
    expect(loggableError(42)).toMatchObject({ type: 'number', message: '42' });
  });
});

describe('thrownText', () => {
  it('is the message cut to FAILURE_TEXT_CHARS, else the value as a string, else a stand-in', () => {
    expect(thrownText(new Error('short'))).toBe('short');
    expect(thrownText(new Error('z'.repeat(5000)))).toMatch(/^z{1024}… \(5000 characters\)$/);
    expect(thrownText('plain', 3)).toBe('pla… (5 characters)');
    expect(thrownText(Object.create(null))).toBe('a thrown object that cannot be read');
    expect(thrownText(unreadable())).toBe('a thrown object that cannot be read');
  });
});
