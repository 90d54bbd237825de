import { SecureChannel } from './channel.js';
import { ClientCertificateRequiredError } from './errors.js';

/**
 * Returns `dispatcher` when it is a {@link SecureChannel}, for APIs that must
 * call over SPIFFE mTLS; anything else (a plain undici `Agent`, a `fetch`
 * dispatcher of another library) is refused with a
 * {@link ClientCertificateRequiredError} that names what to pass instead,
 * rather than a TLS alert from the server later. `where` names the API.
 */
export function requireSecureChannel(dispatcher: unknown, where: string): SecureChannel {
  if (dispatcher instanceof SecureChannel) return dispatcher;
  throw new ClientCertificateRequiredError(where, dispatcher);
}
