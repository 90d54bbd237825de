// Where Weave needs a SPIFFE mTLS dispatcher (secureFetch, an agent's outbound
// channel), a plain undici Agent is refused up front with a typed error that
// says a client certificate is required and what to pass instead.
import { Agent } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ClientCertificateRequiredError,
  SecureChannel,
  TransportError,
  requireSecureChannel,
  secureFetch,
} from '../src/index.js';
import { makeTd, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

afterAll(() => removeTempDirs());

describe('a plain undici Agent where a SecureChannel is required', () => {
  it('secureFetch refuses it with CLIENT_CERTIFICATE_REQUIRED, naming the fix', async () => {
    const plain = new Agent();
    try {
      let err: unknown;
      try {
        secureFetch(plain as unknown as SecureChannel);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ClientCertificateRequiredError);
      expect(err).toBeInstanceOf(TransportError);
      expect(err).toMatchObject({ code: 'CLIENT_CERTIFICATE_REQUIRED' });
      expect((err as Error).message).toBe(
        "secureFetch: a client certificate is required: SPIFFE mTLS needs a dispatcher that presents this workload's " +
          "SVID and verifies the server's SPIFFE ID, and a plain undici Agent does neither. Pass a SecureChannel " +
          "from @weave/transport: new SecureChannel(identity, 'spiffe://…/expected-server')",
      );
    } finally {
      await plain.close();
    }
  });

  it('names what was given instead; a SecureChannel passes through', async () => {
    expect(() => requireSecureChannel(undefined, 'x')).toThrow('and undefined does neither');
    expect(() => requireSecureChannel({ dispatch() {} }, 'x')).toThrow('and an object does neither');
    const td = await makeTd('require.test');
    const identity = await provider(td, '/client');
    const channel = new SecureChannel(identity, 'spiffe://require.test/server');
    try {
      expect(requireSecureChannel(channel, 'x')).toBe(channel);
    } finally {
      await channel.close();
      await identity.close();
    }
  });
});
