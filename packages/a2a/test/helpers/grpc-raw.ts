// A SendMessage as raw HTTP/2 sees it, for the tests that write gRPC frames
// themselves (stream floods, resets): no gRPC client opens or resets calls so.
import { buildMessage } from '../../src/index.js';
import { a2aGrpcService } from '../../src/grpc/index.js';

/** The header fields of a SendMessage call to a server reached as `localhost`. */
export const SEND_MESSAGE_HEADERS = [
  [':method', 'POST'],
  [':scheme', 'https'],
  [':path', a2aGrpcService().SendMessage.path],
  [':authority', 'localhost'],
  ['content-type', 'application/grpc'],
  ['te', 'trailers'],
  ['a2a-version', '1.0'],
] as const;

/** A SendMessage of `text` to the `echo` skill as one gRPC message: length prefix and body. */
export function sendMessageBody(text: string): Buffer {
  const body = a2aGrpcService().SendMessage.requestSerialize({ message: buildMessage('echo', text) });
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}
