// Builds real, deliberately broken certificates with @peculiar/x509, to exercise
// every SVID rule. Nothing here is used by the package itself.
import 'reflect-metadata';
import { KeyObject, webcrypto } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints } from '@peculiar/asn1-x509';
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
  opts: {
    notBefore?: Date;
    notAfter?: Date;
    name?: string;
    pathLength?: number;
    extensions?: x509.Extension[];
  } = {},
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
      new x509.BasicConstraintsExtension(true, opts.pathLength, true),
      new x509.KeyUsagesExtension(KU.keyCertSign | KU.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${td}` }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...(opts.extensions ?? []),
    ],
  });
  return { cert, keys };
}

export interface LeafOptions {
  uris?: string[];
  dns?: string[];
  ips?: string[];
  ca?: boolean;
  keyUsage?: number | null;
  notBefore?: Date;
  notAfter?: Date;
  subject?: string;
  sanCritical?: boolean;
  /** basicConstraints pathLenConstraint (CAs only). */
  pathLength?: number;
  /** Further extensions, e.g. name constraints or an unknown critical one. */
  extensions?: x509.Extension[];
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
    ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const ku =
    opts.keyUsage === undefined ? KU.digitalSignature | KU.keyEncipherment | KU.keyAgreement : opts.keyUsage;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(opts.ca ?? false, opts.pathLength, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
  ];
  if (ku !== null) extensions.push(new x509.KeyUsagesExtension(ku, true));
  if (sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(sans, opts.sanCritical ?? false));
  extensions.push(...(opts.extensions ?? []));
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

/** An intermediate CA usable as an issuer; `opts` may override any of its fields. */
export async function makeIntermediate(issuer: TestCa, td: string, opts: LeafOptions = {}): Promise<TestCa> {
  const leaf = await makeCert(issuer, {
    ca: true,
    uris: [`spiffe://${td}`],
    keyUsage: KU.keyCertSign | KU.cRLSign,
    subject: 'CN=test intermediate',
    ...opts,
  });
  return { cert: leaf.cert, keys: leaf.keys };
}

/** A name constraints extension (critical, as RFC 5280 requires) from permitted and excluded subtrees. */
export function nameConstraints(
  permitted: x509.JsonGeneralName[],
  excluded: x509.JsonGeneralName[] = [],
): x509.Extension {
  const subtrees = (names: x509.JsonGeneralName[]): GeneralSubtrees | undefined =>
    names.length
      ? new GeneralSubtrees(
          names.map(
            (n) =>
              new GeneralSubtree({
                base: AsnConvert.parse(new x509.GeneralName(n.type, n.value).rawData, GeneralName),
              }),
          ),
        )
      : undefined;
  const value = AsnConvert.serialize(
    new NameConstraints({ permittedSubtrees: subtrees(permitted), excludedSubtrees: subtrees(excluded) }),
  );
  return new x509.Extension('2.5.29.30', true, value);
}

/** A critical extension of a private OID no verifier understands (value: ASN.1 NULL). */
export function unknownExtension(critical = true): x509.Extension {
  return new x509.Extension('1.3.6.1.4.1.55555.1.1', critical, new Uint8Array([0x05, 0x00]));
}

export { KU, x509 };
