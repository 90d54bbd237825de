// Shared bits of the transport micro-benchmarks (handshake.bench.ts and its server.ts; run by hand).
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';

export const TRUST_DOMAIN = 'bench.test';
export const SERVER_ID = `spiffe://${TRUST_DOMAIN}/server`;
export const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/client`;

/** `--key value` pairs of argv. */
export function args(): Record<string, string> {
  const out: Record<string, string> = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i];
    const v = a[i + 1];
    if (k?.startsWith('--') && v !== undefined) out[k.slice(2)] = v;
  }
  return out;
}

/** The dev CA persisted in `dir`, shared by every process of one run. */
export function identity(dir: string, id: string): Promise<DevCaIdentityProvider> {
  return DevCertificateAuthority.create({ trustDomain: TRUST_DOMAIN, dir }).then((ca) =>
    DevCaIdentityProvider.create({ ca, id, ttlSeconds: 3600 }),
  );
}
