import { describe, expect, it } from 'vitest';
import {
  PeerNotAuthorizedError,
  SpiffeId,
  assertAuthorized,
  authorizeAny,
  authorizeId,
  authorizeMatching,
  authorizeMemberOf,
  authorizeOneOf,
} from '@weave/identity';

const a = SpiffeId.parse('spiffe://example.org/a');
const b = SpiffeId.parse('spiffe://example.org/b');
const other = SpiffeId.parse('spiffe://other.org/a');

describe('authorizers', () => {
  it('authorizeAny accepts every verified peer', () => {
    expect(authorizeAny()(other).ok).toBe(true);
  });

  it('authorizeId accepts only the exact ID', () => {
    const auth = authorizeId('spiffe://example.org/a');
    expect(auth(a).ok).toBe(true);
    const r = auth(b);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toContain('expected spiffe://example.org/a, got spiffe://example.org/b');
    expect(auth(other).ok).toBe(false);
  });

  it('authorizeOneOf accepts listed IDs only', () => {
    const auth = authorizeOneOf(a, 'spiffe://example.org/b');
    expect(auth(a).ok).toBe(true);
    expect(auth(b).ok).toBe(true);
    expect(auth(other).ok).toBe(false);
    expect(authorizeOneOf()(a).ok).toBe(false);
  });

  it('authorizeMemberOf accepts one trust domain', () => {
    const auth = authorizeMemberOf('example.org');
    expect(auth(a).ok).toBe(true);
    expect(auth(other).ok).toBe(false);
  });

  it('authorizeMatching fails closed on throw or non-true', () => {
    expect(authorizeMatching((p) => p.path === '/a')(a).ok).toBe(true);
    expect(authorizeMatching((p) => p.path === '/a')(b).ok).toBe(false);
    expect(authorizeMatching(() => 'yes' as unknown as boolean)(a).ok).toBe(false);
    const threw = authorizeMatching(() => {
      throw new Error('boom');
    })(a);
    expect(threw.ok).toBe(false);
    expect(!threw.ok && threw.reason).toContain('boom');
  });

  it('assertAuthorized throws a typed error on refusal', () => {
    expect(() => assertAuthorized(authorizeId(a), a)).not.toThrow();
    expect(() => assertAuthorized(authorizeId(a), b)).toThrow(PeerNotAuthorizedError);
    try {
      assertAuthorized(authorizeId(a), b);
    } catch (e) {
      expect((e as PeerNotAuthorizedError).code).toBe('PEER_NOT_AUTHORIZED');
      expect((e as PeerNotAuthorizedError).peer.equals(b)).toBe(true);
    }
  });
});
