// An intermediate CA renewed as CAs are: the same key and subject certified
// again with a later notAfter. Beside forge.ts (whose makeCert always makes a
// new key); used by identity's and transport's chain-expiry tests.
import { x509, type TestCa } from './forge.js';

let serial = 1;

/** `ca` certified again by `issuer` with the same key, subject and extensions, valid until `notAfter`. */
export async function renewed(ca: TestCa, issuer: TestCa, notAfter: Date): Promise<TestCa> {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (0x7a00 + serial++).toString(16),
    subject: ca.cert.subjectName,
    issuer: issuer.cert.subjectName,
    notBefore: new Date(Date.now() - 10_000),
    notAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: ca.keys.publicKey,
    signingKey: issuer.keys.privateKey,
    extensions: ca.cert.extensions,
  });
  return { cert, keys: ca.keys };
}
