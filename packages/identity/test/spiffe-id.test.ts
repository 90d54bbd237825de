import { describe, expect, it } from 'vitest';
import { SpiffeId, SpiffeIdError, SpiffeIdReason as R, TrustDomain, WeaveError } from '@weave/identity';

describe('SpiffeId.parse', () => {
  it.each([
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://example.org/workload', 'example.org', '/workload'],
    ['spiffe://example.org/ns/prod/sa/Web-App_1.2', 'example.org', '/ns/prod/sa/Web-App_1.2'],
    ['spiffe://a-b_c.d1', 'a-b_c.d1', ''],
    ['spiffe://example.org/...', 'example.org', '/...'],
    ['spiffe://example.org/.a', 'example.org', '/.a'],
  ])('accepts %s', (input, td, path) => {
    const id = SpiffeId.parse(input);
    expect(id.trustDomain.name).toBe(td);
    expect(id.path).toBe(path);
    expect(id.toString()).toBe(input);
    expect(JSON.stringify({ id })).toBe(JSON.stringify({ id: input }));
  });

  it.each([
    ['', R.empty],
    ['example.org/workload', R.badScheme],
    ['Spiffe://example.org/workload', R.badScheme],
    ['SPIFFE://example.org', R.badScheme],
    ['http://example.org/workload', R.badScheme],
    ['spiffe:/example.org', R.badScheme],
    ['spiffe://', R.missingTrustDomain],
    ['spiffe:///path', R.missingTrustDomain],
    ['spiffe://Example.org/workload', R.badTrustDomainChar],
    ['spiffe://example.org:8080/workload', R.badTrustDomainChar],
    ['spiffe://user@example.org/workload', R.badTrustDomainChar],
    ['spiffe://exa%6dple.org', R.badTrustDomainChar],
    ['spiffe://example.org?x=1', R.badTrustDomainChar],
    ['spiffe://example.org#frag', R.badTrustDomainChar],
    ['spiffe://exa mple.org', R.badTrustDomainChar],
    ['spiffe://example.org/', R.trailingSlash],
    ['spiffe://example.org/a/', R.trailingSlash],
    ['spiffe://example.org//a', R.emptySegment],
    ['spiffe://example.org/a//b', R.emptySegment],
    ['spiffe://example.org/.', R.dotSegment],
    ['spiffe://example.org/a/..', R.dotSegment],
    ['spiffe://example.org/./a', R.dotSegment],
    ['spiffe://example.org/a%20b', R.badPathSegmentChar],
    ['spiffe://example.org/a?x=1', R.badPathSegmentChar],
    ['spiffe://example.org/a#f', R.badPathSegmentChar],
    ['spiffe://example.org/caf\u00e9', R.badPathSegmentChar],
    ['spiffe://example.org/a:b', R.badPathSegmentChar],
  ])('rejects %j with "%s"', (input, reason) => {
    let caught: unknown;
    try {
      SpiffeId.parse(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(SpiffeIdError);
    expect(caught).toBeInstanceOf(WeaveError);
    const e = caught as SpiffeIdError;
    expect(e.code).toBe('INVALID_SPIFFE_ID');
    expect(e.reason).toBe(reason);
    expect(e.message).toContain(reason);
  });

  it('accepts exactly 2048 bytes and rejects 2049', () => {
    const base = 'spiffe://example.org/';
    const ok = base + 'a'.repeat(2048 - base.length);
    expect(SpiffeId.parse(ok).toString()).toHaveLength(2048);
    expect(() => SpiffeId.parse(ok + 'a')).toThrow(R.tooLong);
  });

  it('rejects non-string input with a typed error', () => {
    expect(() => SpiffeId.parse(undefined as unknown as string)).toThrow(SpiffeIdError);
    expect(() => SpiffeId.parse(42 as unknown as string)).toThrow(SpiffeIdError);
  });

  it('tryParse returns undefined instead of throwing', () => {
    expect(SpiffeId.tryParse('nope')).toBeUndefined();
    expect(SpiffeId.tryParse('spiffe://x/y')?.path).toBe('/y');
  });

  it('is immutable and compares by value', () => {
    const a = SpiffeId.parse('spiffe://example.org/a');
    expect(Object.isFrozen(a)).toBe(true);
    expect(a.equals(SpiffeId.parse('spiffe://example.org/a'))).toBe(true);
    expect(a.equals('spiffe://example.org/a')).toBe(true);
    expect(a.equals('spiffe://example.org/A')).toBe(false);
    expect(a.segments).toEqual(['a']);
  });
});

describe('SpiffeId.fromSegments', () => {
  it('builds an ID from segments', () => {
    expect(SpiffeId.fromSegments('example.org', 'ns', 'prod').toString()).toBe(
      'spiffe://example.org/ns/prod',
    );
    expect(SpiffeId.fromSegments(TrustDomain.parse('example.org')).toString()).toBe('spiffe://example.org');
  });

  it.each([
    [['a/b'], R.badPathSegmentChar],
    [[''], R.trailingSlash],
    [['a', '', 'b'], R.emptySegment],
    [['..'], R.dotSegment],
    [['a b'], R.badPathSegmentChar],
  ])('rejects segments %j', (segments, reason) => {
    expect(() => SpiffeId.fromSegments('example.org', ...segments)).toThrow(reason);
  });

  it('rejects an invalid trust domain', () => {
    expect(() => SpiffeId.fromSegments('Example.org', 'a')).toThrow(R.badTrustDomainChar);
  });
});

describe('TrustDomain', () => {
  it.each([
    ['example.org', 'example.org'],
    ['spiffe://example.org', 'example.org'],
    ['spiffe://example.org/some/path', 'example.org'],
  ])('parses %s', (input, name) => {
    const td = TrustDomain.parse(input);
    expect(td.name).toBe(name);
    expect(td.idString).toBe(`spiffe://${name}`);
    expect(td.toSpiffeId().path).toBe('');
  });

  it.each([
    ['', R.missingTrustDomain],
    ['Example.org', R.badTrustDomainChar],
    ['example.org:443', R.badTrustDomainChar],
    ['exa%6dple.org', R.badTrustDomainChar],
    ['spiffe://', R.missingTrustDomain],
    ['Spiffe://example.org', R.badScheme],
    ['spiffe://example.org/a//b', R.emptySegment],
  ])('rejects %j', (input, reason) => {
    expect(() => TrustDomain.parse(input)).toThrow(reason);
  });

  it('isMemberOf compares trust domains', () => {
    const id = SpiffeId.parse('spiffe://example.org/a');
    expect(id.isMemberOf('example.org')).toBe(true);
    expect(id.isMemberOf(TrustDomain.parse('example.org'))).toBe(true);
    expect(id.isMemberOf('example.com')).toBe(false);
  });
});
