// Differential fuzzing of the peer-leaf reading (src/x509-leaf.ts) against
// @peculiar/x509. LeafCertificate.read answers only for leaves it reads
// completely, and its safety rests on one claim: whenever it answers, the
// answer is exactly the @peculiar/x509 reading (validity, extensions with
// criticality and value, URI SANs, cA, keyUsage), so verifyX509Svid's verdict
// does not depend on which reading it took. The inputs are real SVID leaves of
// many shapes, mutated through their DER tree (tags, content bytes, dropped
// and repeated elements, non-minimal lengths; the TBS re-signed by the issuer
// so the verdict gets past the signature) and as raw bytes (flips,
// replacements, inserts, deletes, length bytes). Cases: FUZZ_RUNS
// (@weave/test-support/fuzz; `npm run fuzz` runs many more).
import { KeyObject, X509Certificate as NodeX509Certificate, sign } from 'node:crypto';
import fc from 'fast-check';
import { itHolds } from '@weave/test-support/fuzz';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleSet, X509Bundle, X509SvidError, verifyX509Svid } from '@weave/identity';
import { LeafCertificate } from '../src/x509-leaf.js';
import { isCa, keyUsage, uriSans } from '../src/x509-util.js';
import {
  KU,
  makeCert,
  makeRoot,
  nameConstraints,
  unknownExtension,
  x509,
  type TestCa,
} from './helpers/forge.js';

/** A DER element as a tree: constructed ones (and OCTET STRINGs holding DER) by children, others by content. */
interface Node {
  tag: number;
  kids?: Node[];
  bytes?: Uint8Array;
  /** Length octets in long form of this many bytes (non-minimal), when set by a mutation. */
  longLen?: number;
}

function parseAll(b: Uint8Array): Node[] | undefined {
  const out: Node[] = [];
  let i = 0;
  while (i < b.length) {
    if (i + 2 > b.length || (b[i]! & 0x1f) === 0x1f) return undefined;
    const tag = b[i]!;
    let len = b[i + 1]!;
    let start = i + 2;
    if (len >= 0x80) {
      const n = len & 0x7f;
      if (n < 1 || n > 3 || start + n > b.length) return undefined;
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + b[start + k]!;
      start += n;
    }
    const content = b.subarray(start, start + len);
    if (start + len > b.length) return undefined;
    const kids = tag & 0x20 || tag === 0x04 ? parseAll(content) : undefined;
    out.push(kids && (tag & 0x20 || kids.length > 0) ? { tag, kids } : { tag, bytes: content.slice() });
    i = start + len;
  }
  return out;
}

function lengthOctets(len: number, longLen?: number): number[] {
  if (longLen === undefined && len < 0x80) return [len];
  const n = Math.max(longLen ?? 1, len > 0xffff ? 3 : len > 0xff ? 2 : 1);
  const out = [0x80 | n];
  for (let k = n - 1; k >= 0; k--) out.push(Math.floor(len / 256 ** k) & 0xff);
  return out;
}

function encode(n: Node): Buffer {
  const content = n.kids ? Buffer.concat(n.kids.map(encode)) : Buffer.from(n.bytes!);
  return Buffer.concat([Buffer.from([n.tag, ...lengthOctets(content.length, n.longLen)]), content]);
}

/** Every node with its parent, in document order. */
function flatten(root: Node): { node: Node; parent: Node | undefined }[] {
  const out: { node: Node; parent: Node | undefined }[] = [];
  const go = (node: Node, parent: Node | undefined): void => {
    out.push({ node, parent });
    for (const k of node.kids ?? []) go(k, node);
  };
  go(root, undefined);
  return out;
}

type ByteOp = { op: 'flip' | 'set' | 'insert' | 'delete'; at: number; byte: number };
type TreeOp =
  | { kind: 'tag'; pick: number; byte: number }
  | { kind: 'bytes'; pick: number; edit: ByteOp }
  | { kind: 'drop' | 'dup'; pick: number }
  | { kind: 'longLen'; pick: number; n: number };

function editBytes(b: Uint8Array, e: ByteOp): Uint8Array {
  const at = b.length === 0 ? 0 : e.at % (e.op === 'insert' ? b.length + 1 : b.length);
  const out = [...b];
  if (e.op === 'insert') out.splice(at, 0, e.byte);
  else if (out.length === 0) return b;
  else if (e.op === 'delete') out.splice(at, 1);
  else if (e.op === 'flip') out[at] = out[at]! ^ (1 << (e.byte & 7));
  else out[at] = e.byte;
  return new Uint8Array(out);
}

function applyTreeOp(tbs: Node, t: TreeOp): void {
  const all = flatten(tbs);
  const { node, parent } = all[t.pick % all.length]!;
  switch (t.kind) {
    case 'tag':
      node.tag = t.byte;
      return;
    case 'bytes': {
      // A constructed node's content is its children's encoding; edited, it stays raw bytes.
      const raw = node.kids ? Buffer.concat(node.kids.map(encode)) : node.bytes!;
      delete node.kids;
      node.bytes = editBytes(raw, t.edit);
      return;
    }
    case 'drop':
    case 'dup': {
      if (!parent?.kids) return;
      const i = parent.kids.indexOf(node);
      if (t.kind === 'drop') parent.kids.splice(i, 1);
      else parent.kids.splice(i, 0, structuredClone(node));
      return;
    }
    case 'longLen':
      node.longLen = t.n;
  }
}

interface Base {
  der: Uint8Array;
  issuer: TestCa;
}

const ID = 'spiffe://a.test/workload';

/** SVID leaves (and near-SVIDs) of many shapes: SAN kinds, criticality, extensions, validity encodings. */
async function makeBases(): Promise<{ bases: Base[]; root: TestCa }> {
  const root = await makeRoot('a.test');
  const now = Date.now();
  const DS = KU.digitalSignature;
  const shapes: Parameters<typeof makeCert>[1][] = [
    { uris: [ID] },
    { uris: [ID], dns: ['w.a.test'], ips: ['10.0.0.1', '2001:db8::1'] },
    { uris: [ID, 'spiffe://a.test/other'] },
    { uris: [ID], sanCritical: true, keyUsage: DS },
    { uris: [ID], keyUsage: null },
    { uris: [ID], keyUsage: DS | KU.keyCertSign | KU.cRLSign | KU.decipherOnly },
    { uris: [ID], ca: true, pathLength: 1 },
    { uris: ['https://a.test/x'] },
    { dns: ['only.dns'] },
    { uris: [ID], extensions: [unknownExtension(true)] },
    { uris: [ID], extensions: [unknownExtension(false)] },
    { uris: [ID], extensions: [nameConstraints([{ type: 'dns', value: 'a.test' }])] },
    {
      uris: [ID],
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'email', value: 'w@a.test' },
          { type: 'url', value: 'spiffe://a.test/second' },
        ]),
      ],
    },
    {
      uris: [ID],
      extensions: [
        new x509.Extension(
          '2.5.29.17',
          false,
          new x509.SubjectAlternativeNameExtension([
            { type: 'upn', value: 'w@a.test' },
            { type: 'guid', value: '8ee13e53-2c1c-42bb-8df7-39927c0bdbb6' },
            { type: 'id', value: '1.2.3.4' },
            { type: 'dn', value: 'CN=x' },
          ]).value,
        ),
      ],
    },
    {
      uris: [ID],
      notBefore: new Date(Date.UTC(1949, 11, 31, 23, 59, 59)),
      notAfter: new Date(Date.UTC(2050, 0, 1)),
    },
    {
      uris: [ID],
      notBefore: new Date(Date.UTC(2049, 11, 31, 23, 59, 59)),
      notAfter: new Date(Date.UTC(9999, 11, 31)),
    },
    { uris: [ID], notBefore: new Date(now + 3600_000), notAfter: new Date(now + 7200_000) },
    { uris: [ID], notBefore: new Date(now - 7200_000), notAfter: new Date(now - 3600_000) },
  ];
  const bases: Base[] = [];
  for (const s of shapes) bases.push({ der: (await makeCert(root, s)).der, issuer: root });
  return { bases, root };
}

/** verifyX509Svid's whole answer (ID, or code and message) for a one-certificate chain. */
function answer(leaf: Uint8Array | x509.X509Certificate | NodeX509Certificate, bundles: BundleSet): string {
  try {
    return `ok ${verifyX509Svid([leaf], bundles).toString()}`;
  } catch (err) {
    // Every refusal is typed, whichever reading took the leaf (one @peculiar/x509 reads but
    // OpenSSL refuses is SVID_MALFORMED too): anything else fails the property.
    if (!(err instanceof X509SvidError)) throw err;
    return `${err.code}: ${err.message}`;
  }
}

const hex = (b: ArrayBuffer): string => Buffer.from(b).toString('hex');

/** The claim: a reading LeafCertificate gives is @peculiar/x509's, and so is every verdict. */
function checkAgrees(der: Uint8Array, bundles: BundleSet): void {
  const leaf = LeafCertificate.read(der);
  let parsed: x509.X509Certificate | undefined;
  try {
    parsed = new x509.X509Certificate(der);
  } catch {
    parsed = undefined;
  }
  if (leaf) {
    expect(parsed, 'read by the walk but not by @peculiar/x509').toBeDefined();
    const p = parsed!;
    expect(leaf.notBefore.getTime()).toBe(p.notBefore.getTime());
    expect(leaf.notAfter.getTime()).toBe(p.notAfter.getTime());
    expect(leaf.extensions.map((e) => [e.type, e.critical, hex(e.value)])).toEqual(
      p.extensions.map((e) => [e.type, e.critical, hex(e.value)]),
    );
    expect(leaf.uris).toEqual(uriSans(p));
    expect(leaf.ca).toBe(isCa(p));
    expect(leaf.keyUsage).toEqual(keyUsage(p));
  }
  const before = parsed
    ? answer(parsed, bundles)
    : 'SVID_MALFORMED: certificate 0 of the chain cannot be parsed';
  expect(answer(der, bundles), 'leaf as DER').toBe(before);
  // Again: a peer presents the same leaf on its next connection, and the leaf cache answers.
  expect(answer(der, bundles), 'leaf as DER, again').toBe(before);
  let node: NodeX509Certificate | undefined;
  try {
    node = new NodeX509Certificate(der);
  } catch {
    node = undefined;
  }
  if (node) expect(answer(node, bundles), "leaf as Node's certificate").toBe(before);
}

const byteOp: fc.Arbitrary<ByteOp> = fc.record({
  op: fc.constantFrom('flip', 'set', 'insert', 'delete'),
  at: fc.nat(),
  byte: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff)),
});
const treeOp: fc.Arbitrary<TreeOp> = fc.oneof(
  fc.record({
    kind: fc.constant('tag' as const),
    pick: fc.nat(),
    byte: fc.constantFrom(
      0x01,
      0x02,
      0x03,
      0x04,
      0x05,
      0x06,
      0x0c,
      0x13,
      0x16,
      0x17,
      0x18,
      0x1e,
      0x30,
      0x31,
      0x80,
      0x81,
      0x82,
      0x86,
      0x87,
      0x88,
      0xa0,
      0xa3,
      0xa4,
    ),
  }),
  fc.record({ kind: fc.constant('bytes' as const), pick: fc.nat(), edit: byteOp }),
  fc.record({ kind: fc.constantFrom('drop' as const, 'dup' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('longLen' as const), pick: fc.nat(), n: fc.integer({ min: 1, max: 4 }) }),
);

describe('fuzz: LeafCertificate.read against @peculiar/x509', () => {
  let bases: Base[];
  let bundles: BundleSet;
  beforeAll(async () => {
    const made = await makeBases();
    bases = made.bases;
    bundles = BundleSet.of(X509Bundle.fromDer('a.test', new Uint8Array(made.root.cert.rawData)));
  }, 60_000);

  it('reads every unmutated leaf and agrees with @peculiar/x509 on it', () => {
    const unread: number[] = [];
    for (const [i, b] of bases.entries()) {
      if (!LeafCertificate.read(b.der)) unread.push(i);
      checkAgrees(b.der, bundles);
    }
    // Only the leaf with name constraints and the one with otherName/registeredID/directoryName
    // SANs go to @peculiar/x509: the mutations start from leaves the walk reads.
    expect(unread).toEqual([11, 13]);
  });

  it('a leaf whose keyUsage value is no BIT STRING is refused alike on every verification', () => {
    // Found by the property below: @peculiar/x509 keeps an empty extension list after failing to
    // decode one, so a kept fallback leaf later read as having no extensions (SVID_NO_URI_SAN here;
    // with a broken extension other than the SAN, no keyUsage and no critical extensions at all).
    const base = bases[0]!;
    const [cert] = parseAll(base.der)!;
    const [tbs, alg] = cert!.kids!;
    const exts = tbs!.kids!.find((n) => n.tag === 0xa3)!.kids![0]!.kids!;
    const ku = exts.find((e) => Buffer.from(e.kids![0]!.bytes!).equals(Buffer.from([0x55, 0x1d, 0x0f])))!;
    ku.kids!.at(-1)!.kids![0]!.tag = 0x01; // the BIT STRING inside the extension value
    const tbsDer = encode(tbs!);
    const signature = Buffer.concat([
      Buffer.from([0]),
      sign('sha256', tbsDer, KeyObject.from(base.issuer.keys.privateKey)),
    ]);
    const der = new Uint8Array(encode({ tag: 0x30, kids: [tbs!, alg!, { tag: 0x03, bytes: signature }] }));
    expect(LeafCertificate.read(der)).toBeUndefined();
    const first = answer(der, bundles);
    expect(first).toMatch(/^SVID_MALFORMED: leaf SAN extension cannot be read/);
    expect(answer(der, bundles)).toBe(first);
    expect(answer(der, bundles)).toBe(first);
    checkAgrees(der, bundles);
  });

  it('a leaf whose issuer name holds a SEQUENCE (OpenSSL reads it, @peculiar/x509 does not) is left to @peculiar/x509', () => {
    // Found by the property below: the walk did not look at the names, so it answered for a leaf
    // @peculiar/x509 cannot parse.
    const base = bases[0]!;
    const [cert] = parseAll(base.der)!;
    const [tbs, alg] = cert!.kids!;
    tbs!.kids![3]!.kids![0]!.kids![0]!.kids![1]!.tag = 0x30; // issuer CN: PrintableString -> SEQUENCE
    const tbsDer = encode(tbs!);
    const signature = Buffer.concat([
      Buffer.from([0]),
      sign('sha256', tbsDer, KeyObject.from(base.issuer.keys.privateKey)),
    ]);
    const der = new Uint8Array(encode({ tag: 0x30, kids: [tbs!, alg!, { tag: 0x03, bytes: signature }] }));
    expect(new NodeX509Certificate(der).issuer).toContain('CN');
    expect(LeafCertificate.read(der)).toBeUndefined();
    checkAgrees(der, bundles);
  });

  itHolds(
    'mutated leaves: whatever the walk reads, @peculiar/x509 reads the same, and verdicts are identical',
    'leaf-walk-vs-peculiar',
    () =>
      fc.property(
        fc.nat(),
        fc.array(treeOp, { minLength: 0, maxLength: 3 }),
        fc.boolean(),
        fc.array(byteOp, { minLength: 0, maxLength: 2 }),
        (pick, treeOps, resign, rawOps) => {
          const base = bases[pick % bases.length]!;
          const [cert] = parseAll(base.der)!;
          const [tbs, alg, sig] = cert!.kids!;
          for (const t of treeOps) applyTreeOp(tbs!, t);
          const tbsDer = encode(tbs!);
          const signature = resign
            ? Buffer.concat([
                Buffer.from([0]),
                sign('sha256', tbsDer, KeyObject.from(base.issuer.keys.privateKey)),
              ])
            : sig!.bytes!;
          let der: Uint8Array = encode({ tag: 0x30, kids: [tbs!, alg!, { tag: 0x03, bytes: signature }] });
          for (const r of rawOps) der = editBytes(der, r);
          checkAgrees(der, bundles);
        },
      ),
    200,
  );
});
