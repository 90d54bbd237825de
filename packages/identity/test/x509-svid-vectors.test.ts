// Weave's verdict on every shared verification vector (test/helpers/vectors.ts).
// The interop suite has go-spiffe judge the same vectors and requires the same
// verdicts; here each vector's expected Weave verdict is checked on its own.
import { beforeAll, describe, expect, it } from 'vitest';
import { SpiffeId, SpiffeIdError } from '@weave/identity';
import { ID_VECTORS, judgeByWeave, makeChainVectors, type ChainVector } from './helpers/vectors.js';

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
