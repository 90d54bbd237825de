// Weave's verdict on every shared verification vector (test/helpers/vectors.ts).
// The interop suite has go-spiffe judge the same vectors and requires the same
// verdicts; here each vector's expected Weave verdict is checked on its own.
import { X509Certificate as NodeX509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { SpiffeId, SpiffeIdError, verifyX509Svid, X509SvidError } from '@weave/identity';
import { LeafCertificate } from '../src/x509-leaf.js';
import { x509 } from './helpers/forge.js';
import {
  bundleSetOf,
  ID_VECTORS,
  judgeByWeave,
  makeChainVectors,
  type ChainVector,
} from './helpers/vectors.js';

/** verifyX509Svid's whole answer (ID, or code and message) for a chain whose leaf is given as `leaf`. */
function answer(v: ChainVector, leaf: Uint8Array | x509.X509Certificate | NodeX509Certificate): string {
  try {
    return `ok ${verifyX509Svid([leaf, ...v.chain.slice(1)], bundleSetOf(v.bundles), { now: v.now }).toString()}`;
  } catch (err) {
    if (!(err instanceof X509SvidError)) throw err;
    return `${err.code}: ${err.message}`;
  }
}

describe('shared SVID verification vectors, judged by Weave', () => {
  let vectors: ChainVector[];
  beforeAll(async () => {
    vectors = await makeChainVectors();
  }, 60_000);

  it('cover every refusal go-spiffe and RFC 5280 path validation make', () => {
    const codes = new Set(vectors.flatMap((v) => (v.weave.ok ? [] : [v.weave.code])));
    for (const code of [
      'SVID_NO_URI_SAN',
      'SVID_MULTIPLE_URI_SANS',
      'SVID_INVALID_SPIFFE_ID',
      'SVID_LEAF_IS_CA',
      'SVID_LEAF_KEY_USAGE',
      'SVID_UNKNOWN_TRUST_DOMAIN',
      'SVID_UNKNOWN_CRITICAL_EXTENSION',
      'SVID_EXPIRED',
      'SVID_NOT_YET_VALID',
      'SVID_PATH_LENGTH_EXCEEDED',
      'SVID_NAME_CONSTRAINT_VIOLATION',
      'SVID_UNTRUSTED',
      'SVID_MALFORMED',
    ] as const)
      expect(codes, code).toContain(code);
  });

  it('every chain gets its expected verdict', () => {
    const wrong: string[] = [];
    for (const v of vectors) {
      const got = judgeByWeave(v);
      const want = v.weave.ok ? `ok ${v.weave.id}` : v.weave.code;
      if (got !== want) wrong.push(`${v.name}: got ${got}, want ${want}`);
    }
    expect(wrong).toEqual([]);
  });

  it('reads the leaf without @peculiar/x509 and says exactly what the @peculiar/x509 reading says', () => {
    let light = 0;
    const differ: string[] = [];
    for (const v of vectors) {
      const der = v.chain[0]!;
      if (LeafCertificate.read(der)) light++;
      // A @peculiar/x509 certificate is verified as before (never read by LeafCertificate).
      let parsed: x509.X509Certificate | undefined;
      try {
        parsed = new x509.X509Certificate(der);
      } catch {
        parsed = undefined;
      }
      const before = parsed
        ? answer(v, parsed)
        : 'SVID_MALFORMED: certificate 0 of the chain cannot be parsed';
      const forms: [string, Uint8Array | NodeX509Certificate][] = [['DER', der]];
      try {
        forms.push(['node', new NodeX509Certificate(der)]);
      } catch {
        // OpenSSL refuses it: only DER can be given.
      }
      for (const [how, leaf] of forms) {
        const now = answer(v, leaf);
        if (now !== before) differ.push(`${v.name} (${how}): ${now} | before: ${before}`);
      }
    }
    expect(differ).toEqual([]);
    // Most vectors are plain DER SVIDs: the fast reading must take them, not fall back.
    expect(light).toBeGreaterThan(vectors.length * 0.8);
  });

  it('every SPIFFE ID input is either parsed or refused with SpiffeIdError', () => {
    for (const input of ID_VECTORS) {
      try {
        expect(SpiffeId.parse(input).toString()).toBe(input);
      } catch (err) {
        expect(err, input).toBeInstanceOf(SpiffeIdError);
      }
    }
  });
});
