// Shared bits of the transport benchmark (run by hand: `pnpm --filter @weave/transport bench`).
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';

export const TRUST_DOMAIN = 'bench.test';
export const SERVER_ID = `spiffe://${TRUST_DOMAIN}/server`;
export const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/client`;

/** A JSON-RPC-sized request body (an A2A SendMessage is a few hundred bytes). */
export const BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'SendMessage',
  params: {
    message: {
      role: 'ROLE_USER',
      messageId: '9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d',
      parts: [{ text: 'find papers about zero-trust service meshes published after 2023' }],
    },
  },
});

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
