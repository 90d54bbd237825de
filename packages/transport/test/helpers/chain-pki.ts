import { X509Svid, type Authorizer, type BundleSet } from '@weave/identity';
import { SetProvider } from '@weave/test-support/tls-fixtures';
import { makeCert, type TestCa } from '../../../identity/test/helpers/forge.js';

/**
 * An identity of `id` whose SVID (an hour) is issued by the last of
 * `issuers` and presented with every issuer but the first (the root, which
 * only the bundle holds), trusting `bundles`: the expiry tests' peers, whose
 * chains go through intermediates and roots forged with short lives.
 */
export async function chainIdentity(issuers: TestCa[], id: string, bundles: BundleSet): Promise<SetProvider> {
  const leaf = await makeCert(issuers.at(-1)!, { uris: [id] });
  const chain = [
    leaf.der,
    ...issuers
      .slice(1)
      .reverse()
      .map((c) => new Uint8Array(c.cert.rawData)),
  ];
  const identity = new SetProvider();
  identity.set(X509Svid.parse(chain, leaf.keyPem), bundles);
  return identity;
}

/** A whole second at least `ms` from now (certificate times have no finer grain). */
export const secondAfter = (ms: number): Date => new Date(Math.ceil((Date.now() + ms) / 1000) * 1000);

/** Waits until a moment after `t` (epoch ms). */
export const pastOf = (t: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, t + 200 - Date.now()));

/** Admits every verified caller: the expiry tests are about the chain, not who calls. */
export const anyone: Authorizer = () => ({ ok: true });

/** A channel that keeps its connections for the test's length, never retries and never breaks. */
export const KEEP = { idleTimeoutMs: 60_000, retry: { retries: 0 }, circuitBreaker: false } as const;
