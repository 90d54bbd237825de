import { fetch as undiciFetch } from 'undici';
import type { SecureChannel } from './channel.js';
import { requireSecureChannel } from './require-channel.js';

/**
 * A WHATWG `fetch` whose every request goes through `channel`: mTLS with this
 * workload's SVID, and only to a server proving the channel's SPIFFE ID (a
 * mismatch rejects with a `TypeError` whose `cause` is the
 * `PeerVerificationError`, before any request byte is sent). For libraries
 * that take a `fetchImpl`, such as `@a2a-js/sdk`'s `JsonRpcTransportFactory`
 * and `DefaultAgentCardResolver`. Anything but a `SecureChannel` (a plain
 * undici `Agent`, say) throws a `ClientCertificateRequiredError`.
 */
export function secureFetch(channel: SecureChannel): typeof fetch {
  const dispatcher = requireSecureChannel(channel, 'secureFetch');
  // undici's fetch is the WHATWG one Node's global fetch is built on; its
  // Request/Response types differ from lib.dom's only in name.
  return ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(input as string, { ...(init as object), dispatcher } as never)) as unknown as typeof fetch;
}
