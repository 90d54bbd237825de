// Builds real, deliberately broken certificates with @peculiar/x509, to exercise
// every SVID rule. Nothing here is used by the package itself.
import 'reflect-metadata';
import { KeyObject, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as never);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const KU = x509.KeyUsageFlags;

export interface TestCa {
  cert: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

let serial = 1;
const nextSerial = (): string => (0x1000 + serial++).toString(16);

export async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

/** A root CA (`spiffe://<td>` SAN, cA=true, keyCertSign+cRLSign). */
export async function makeRoot(
  td: string,
  opts: { notBefore?: Date; notAfter?: Date; name?: string } = {},
): Promise<TestCa> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: opts.name ?? `CN=test root ${td}`,
    notBefore: opts.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 3600_000),
    signingAlgorithm: SIGN,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(KU.keyCertSign | KU.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${td}` }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

export interface LeafOptions {
  uris?: string[];
  dns?: string[];
  ca?: boolean;
  keyUsage?: number | null;
  notBefore?: Date;
  notAfter?: Date;
  subject?: string;
  sanCritical?: boolean;
  /** Sign with this key instead of the issuer's (a bad signature). */
  signWith?: webcrypto.CryptoKey;
}

export interface Leaf {
  cert: x509.X509Certificate;
  der: Uint8Array;
  keyPem: string;
  keys: webcrypto.CryptoKeyPair;
}

/** A leaf (or intermediate when `ca`) issued by `issuer`, SPIRE-shaped unless told otherwise. */
export async function makeCert(issuer: TestCa, opts: LeafOptions = {}): Promise<Leaf> {
  const keys = await newKeys();
  const sans: x509.JsonGeneralNames = [
    ...(opts.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(opts.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const ku =
    opts.keyUsage === undefined ? KU.digitalSignature | KU.keyEncipherment | KU.keyAgreement : opts.keyUsage;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
  ];
  if (ku !== null) extensions.push(new x509.KeyUsagesExtension(ku, true));
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans, opts.sanCritical ?? false));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: nextSerial(),
    subject: opts.subject ?? 'O=test',
    issuer: issuer.cert.subjectName,
    notBefore: opts.notBefore ?? new Date(Date.now() - 10_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 3600_000),
    signingAlgorithm: SIGN,
    publicKey: keys.publicKey,
    signingKey: opts.signWith ?? issuer.keys.privateKey,
    extensions,
  });
  const keyPem = KeyObject.from(keys.privateKey).export({ format: 'pem', type: 'pkcs8' }).toString();
  return { cert, der: new Uint8Array(cert.rawData), keyPem, keys };
}

/** An intermediate CA usable as an issuer. */
export async function makeIntermediate(issuer: TestCa, td: string): Promise<TestCa> {
  const leaf = await makeCert(issuer, {
    ca: true,
    uris: [`spiffe://${td}`],
    keyUsage: KU.keyCertSign | KU.cRLSign,
    subject: 'CN=test intermediate',
  });
  return { cert: leaf.cert, keys: leaf.keys };
}

export { KU, x509 };
