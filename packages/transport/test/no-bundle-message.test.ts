// A channel to a peer of a trust domain this workload has no bundle for
// refuses before connecting. Its error used to say "got (no SPIFFE ID)", as
// if a peer had answered without one: nothing answered, nothing was sent.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import type { IdentityProvider } from '@weave/identity';
import { PeerVerificationError, SecureChannel } from '../src/index.js';
import { makeTd, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

let identity: IdentityProvider;

beforeAll(async () => {
  identity = await provider(await makeTd('a.test'), '/client');
});
afterAll(() => removeTempDirs());

describe('a peer of a trust domain with no bundle', () => {
  it('is refused before connecting, the message saying so, not "got (no SPIFFE ID)"', async () => {
    const channel = new SecureChannel(identity, 'spiffe://unknown.test/server');
    try {
      const err = await request('https://127.0.0.1:9/', { dispatcher: channel }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const pv = err instanceof PeerVerificationError ? err : (err as { cause?: unknown } | undefined)?.cause;
      expect(pv).toBeInstanceOf(PeerVerificationError);
      expect((pv as PeerVerificationError).actual).toBeUndefined();
      expect((pv as Error).message).toBe(
        'peer verification failed: expected spiffe://unknown.test/server: no trusted X.509 bundle for trust domain unknown.test; no connection was made',
      );
    } finally {
      await channel.close();
    }
  });
});
