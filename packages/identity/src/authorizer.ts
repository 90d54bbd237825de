import { WeaveError } from './errors.js';
import { SpiffeId, TrustDomain } from './spiffe-id.js';

/**
 * The outcome of an {@link Authorizer}: either the peer is accepted, or it is
 * refused with a human-readable reason.
 */
export type AuthorizerResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Decides whether a peer whose certificate chain has already been verified
 * may talk to us. Every layer (transport client and server, the Workload API
 * federation checks) uses this one function type.
 */
export type Authorizer = (peer: SpiffeId) => AuthorizerResult;

/** A verified peer was refused by an {@link Authorizer}. */
export class PeerNotAuthorizedError extends WeaveError {
  readonly peer: SpiffeId;
  constructor(peer: SpiffeId, reason: string) {
    super('PEER_NOT_AUTHORIZED', `peer ${peer.toString()} is not authorized: ${reason}`);
    this.peer = peer;
  }
}

const OK: AuthorizerResult = Object.freeze({ ok: true });
const refuse = (reason: string): AuthorizerResult => Object.freeze({ ok: false, reason });

const toId = (id: SpiffeId | string): SpiffeId => (typeof id === 'string' ? SpiffeId.parse(id) : id);

/**
 * Accepts any peer whose chain verified against a trusted bundle. Use only
 * where another layer (policy) decides; it never bypasses chain verification.
 */
export function authorizeAny(): Authorizer {
  return () => OK;
}

/** Accepts exactly one SPIFFE ID. */
export function authorizeId(expected: SpiffeId | string): Authorizer {
  const want = toId(expected);
  return (peer) => (peer.equals(want) ? OK : refuse(`expected ${want.toString()}, got ${peer.toString()}`));
}

/** Accepts any of the given SPIFFE IDs. */
export function authorizeOneOf(...ids: (SpiffeId | string)[]): Authorizer {
  const allowed = new Set(ids.map((id) => toId(id).toString()));
  return (peer) =>
    allowed.has(peer.toString())
      ? OK
      : refuse(`${peer.toString()} is not one of ${[...allowed].join(', ') || '(none)'}`);
}

/** Accepts any workload of the given trust domain. */
export function authorizeMemberOf(trustDomain: TrustDomain | string): Authorizer {
  const td = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
  return (peer) =>
    peer.isMemberOf(td) ? OK : refuse(`${peer.toString()} is not a member of trust domain ${td.name}`);
}

/**
 * Accepts a peer when `match` returns true. A thrown error or a non-true
 * answer refuses the peer (fail closed).
 */
export function authorizeMatching(
  match: (peer: SpiffeId) => boolean,
  description = 'custom matcher',
): Authorizer {
  return (peer) => {
    try {
      return match(peer) === true ? OK : refuse(`${peer.toString()} rejected by ${description}`);
    } catch (err) {
      return refuse(`${description} threw: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

/**
 * Runs an authorizer and throws {@link PeerNotAuthorizedError} when it refuses.
 * A throwing authorizer also refuses.
 */
export function assertAuthorized(authorizer: Authorizer, peer: SpiffeId): void {
  let result: AuthorizerResult;
  try {
    result = authorizer(peer);
  } catch (err) {
    throw new PeerNotAuthorizedError(
      peer,
      `authorizer threw: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (!result || result.ok !== true) {
    throw new PeerNotAuthorizedError(
      peer,
      result && 'reason' in result ? result.reason : 'authorizer refused',
    );
  }
}
