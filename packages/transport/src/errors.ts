import { WeaveError, type SpiffeId } from '@weave/identity';

/** Base class of every failure raised by `@weave/transport`. */
export class TransportError extends WeaveError {}

/**
 * The peer's certificate verified against a trusted bundle but its SPIFFE ID is
 * not the one expected (or the authorizer refused it), or its chain did not end
 * in the bundle of its own trust domain. Raised during the TLS handshake, so no
 * request byte has been sent when a caller sees it — except on a connection
 * already open whose server's certificate expires, or whose chain a bundle
 * update no longer trusts: what it still carries (a stream) ends with this
 * error after bytes went both ways. Never retried either way.
 */
export class PeerVerificationError extends TransportError {
  /** What the channel accepts: a SPIFFE ID, or a description of the authorizer. */
  readonly expected: string;
  /** The SPIFFE ID the peer presented, or `undefined` when none could be read. */
  readonly actual: SpiffeId | undefined;

  /**
   * `notConnected`: refused before any connection (no bundle to verify a
   * peer with): the message says so rather than that a peer showed no ID.
   */
  constructor(
    expected: string,
    actual: SpiffeId | undefined,
    reason: string,
    options?: { cause?: unknown; notConnected?: boolean },
  ) {
    super(
      'PEER_VERIFICATION_FAILED',
      options?.notConnected
        ? `peer verification failed: expected ${expected}: ${reason}; no connection was made`
        : `peer verification failed: expected ${expected}, got ${actual?.toString() ?? '(no SPIFFE ID)'}: ${reason}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.expected = expected;
    this.actual = actual;
  }
}

/** The circuit breaker of a peer is open: the call was refused without touching the network. */
export class CircuitOpenError extends TransportError {
  /** Name of the breaker (the peer's SPIFFE ID for registry breakers). */
  readonly breaker: string;
  constructor(breaker: string) {
    super('CIRCUIT_OPEN', `circuit breaker ${breaker} is open; call refused`);
    this.breaker = breaker;
  }
}

/** A transport configuration was rejected; `issues` lists every problem found. */
export class TransportConfigError extends TransportError {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super('INVALID_TRANSPORT_CONFIG', `invalid transport config: ${issues.join('; ')}`);
    this.issues = issues;
  }
}

/** The local identity provider could not supply an SVID or bundle for a connection. */
export class TransportIdentityError extends TransportError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('TRANSPORT_IDENTITY_UNAVAILABLE', message, options);
  }
}

/**
 * A SPIFFE mTLS dispatcher was required and something else was given, such as a
 * plain undici `Agent`: it presents no client certificate (a Weave server refuses
 * the handshake) and checks the server's host name, not its SPIFFE ID. Raised
 * before anything is sent.
 */
export class ClientCertificateRequiredError extends TransportError {
  constructor(where: string, given: unknown) {
    super(
      'CLIENT_CERTIFICATE_REQUIRED',
      `${where}: a client certificate is required: SPIFFE mTLS needs a dispatcher that presents this ` +
        `workload's SVID and verifies the server's SPIFFE ID, and ${describe(given)} does neither. Pass a ` +
        "SecureChannel from @weave/transport: new SecureChannel(identity, 'spiffe://…/expected-server')",
    );
  }
}

function describe(given: unknown): string {
  if (given === null || given === undefined) return `${String(given)}`;
  const name = (given as { constructor?: { name?: unknown } }).constructor?.name;
  if (name === 'Agent' || name === 'Pool' || name === 'Client') return `a plain undici ${name}`;
  if (typeof name === 'string' && name !== 'Object') return `a ${name}`;
  return typeof given === 'object' ? 'an object' : `a ${typeof given}`;
}
