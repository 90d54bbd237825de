// SVID issuance and verification throughput, each beside a node:crypto baseline
// measured in the same run. Run by hand:
//   node_modules/.bin/tsx --conditions=weave-source packages/identity/bench/svid.bench.ts
import { X509Certificate as NodeX509, generateKeyPair, sign } from 'node:crypto';
import { promisify } from 'node:util';
import { compactVerify } from 'jose';
import { validateJwtSvid, verifyX509Svid } from '@weave/identity';
import { DevCertificateAuthority } from '@weave/identity/dev';

const generateKeyPairAsync = promisify(generateKeyPair);

async function measure(fn: () => unknown | Promise<unknown>, minMs = 1500): Promise<number> {
  for (let i = 0; i < 20; i++) await fn(); // warm-up
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < minMs) {
    for (let i = 0; i < 50; i++) await fn();
    n += 50;
    elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  }
  return (n / elapsed) * 1000;
}

const fmt = (x: number): string => x.toFixed(0).padStart(9);

async function row(
  name: string,
  weave: () => unknown,
  baselineName: string,
  baseline: () => unknown,
): Promise<void> {
  const w = await measure(weave);
  const b = await measure(baseline);
  console.log(
    `${name.padEnd(34)} ${fmt(w)} ops/s | baseline ${baselineName.padEnd(40)} ${fmt(b)} ops/s | weave/baseline ${(w / b).toFixed(2)}`,
  );
}

const ca = await DevCertificateAuthority.create({ trustDomain: 'bench.test' });
const svid = await ca.issueX509Svid('spiffe://bench.test/workload');
const leafDer = new Uint8Array(svid.certificates[0]!.rawData);
const caKey = new NodeX509(Buffer.from(ca.certificate.rawData)).publicKey;
const tbs = Buffer.alloc(400, 7); // about the size of an SVID's to-be-signed part
const caPrivate = await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
const jwt = await ca.issueJwtSvid('spiffe://bench.test/workload', 'spiffe://bench.test/api');
const jwtKey = ca.jwtBundle.findKey([...ca.jwtBundle.keys.keys()][0]!)!;

console.log(`node ${process.version}, ${new Date().toISOString()}`);
await row(
  'issueX509Svid',
  () => ca.issueX509Svid('spiffe://bench.test/workload'),
  'EC P-256 keygen + ECDSA sign (node:crypto)',
  async () => {
    await generateKeyPairAsync('ec', { namedCurve: 'P-256' });
    sign('sha256', tbs, caPrivate.privateKey);
  },
);
// More distinct SVIDs than verifyX509Svid's parse cache holds (512), visited
// in a cycle, so every verification parses from scratch.
const cold: Uint8Array[] = [];
for (let i = 0; i < 600; i++)
  cold.push(new Uint8Array((await ca.issueX509Svid(`spiffe://bench.test/w${i}`)).certificates[0]!.rawData));
let ci = 0;
let bi = 0;
await row(
  'verifyX509Svid (DER, first sight)',
  () => verifyX509Svid([cold[ci++ % cold.length]!], ca.x509Bundle),
  'new X509Certificate(der).verify(caKey)',
  () => new NodeX509(Buffer.from(cold[bi++ % cold.length]!)).verify(caKey),
);
await row(
  'verifyX509Svid (DER, seen before)',
  () => verifyX509Svid([leafDer], ca.x509Bundle),
  'new X509Certificate(der).verify(caKey)',
  () => new NodeX509(Buffer.from(leafDer)).verify(caKey),
);
await row(
  'verifyX509Svid (parsed chain)',
  () => verifyX509Svid(svid.certificates, ca.x509Bundle),
  'X509Certificate.verify(caKey), pre-parsed',
  (() => {
    const parsed = new NodeX509(Buffer.from(leafDer));
    return () => parsed.verify(caKey);
  })(),
);
await row(
  'validateJwtSvid',
  () => validateJwtSvid(jwt.token, ca.jwtBundle, 'spiffe://bench.test/api'),
  'jose compactVerify (signature only)',
  () => compactVerify(jwt.token, jwtKey),
);
