// An error repeats a caller's value (a task id, a method, a version) cut to
// 256 characters, marked with its length. Repeated whole, a 100 KB task id
// in GetTask made the gRPC trailers (grpc-message, and the ErrorInfo in
// grpc-status-details-bin, both carrying it) too large for the client: the
// call hung until its deadline instead of answering TASK_NOT_FOUND. Real
// mTLS with dev-CA SVIDs, Weave's client on each binding. A gRPC status
// bounds whatever else its message holds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AError } from '../src/index.js';
import { A2AErrors } from '../src/errors.js';
import { GRPC_STATUS_DETAILS_KEY, a2aErrorToGrpcStatus } from '../src/grpc/status.js';
import { startEchoEverywhere, type EchoEverywhere } from './helpers/agents.js';

let e: EchoEverywhere;
beforeAll(async () => {
  e = await startEchoEverywhere([]);
});
afterAll(() => e.close());

// HTTP+JSON carries the id in the path, which the 16 KiB header bound refuses first (431).
// An id over 256 characters is refused before any lookup now (INVALID_PARAMS,
// naming the field, not repeating it): what is asserted is a prompt answer
// that does not carry the id.
describe.each([
  ['JSONRPC', 100_000],
  ['HTTP+JSON', 10_000],
  ['GRPC', 100_000],
] as const)('%s: GetTask with a %d-character id', (binding, n) => {
  it('answers INVALID_PARAMS at once, without repeating the id', async () => {
    const id = 'x'.repeat(n);
    const err = await e
      .client(binding)
      .getTask(e.h.url, id, undefined, { timeoutMs: 5_000 })
      .catch((x: unknown) => x);
    expect(err).toBeInstanceOf(A2AError);
    expect({ code: (err as A2AError).code, message: (err as A2AError).message }).toEqual({
      code: 'INVALID_PARAMS',
      message: 'Invalid params: id: at most 256 characters and 512 bytes of UTF-8',
    });
  });
});

describe('an id within the bound', () => {
  it.each(['JSONRPC', 'HTTP+JSON', 'GRPC'] as const)(
    '%s: is repeated whole in TASK_NOT_FOUND',
    async (binding) => {
      const id = 'x'.repeat(256);
      const err = await e
        .client(binding)
        .getTask(e.h.url, id, undefined, { timeoutMs: 5_000 })
        .catch((x: unknown) => x);
      expect({ code: (err as A2AError).code, message: (err as A2AError).message }).toEqual({
        code: 'TASK_NOT_FOUND',
        message: `Task not found: ${id}`,
      });
    },
  );
});

describe('a gRPC status', () => {
  it('carries an error message cut to 4096 characters, in grpc-message and in the details trailer', () => {
    const status = a2aErrorToGrpcStatus(A2AErrors.invalidParams('y'.repeat(10_000)));
    const cut = `Invalid params: ${'y'.repeat(4096 - 'Invalid params: '.length)}… (10016 characters)`;
    expect(status.details).toBe(cut);
    const trailer = status.metadata?.get(GRPC_STATUS_DETAILS_KEY)[0] as Buffer;
    expect(trailer.length).toBeLessThan(4400);
    expect(trailer.includes(Buffer.from(cut))).toBe(true);
  });
});
