/**
 * Base class of every local Weave failure. Each error carries a stable string
 * `code` so callers can branch on it without matching messages.
 *
 * Wire errors of A2A keep their JSON-RPC numeric codes and live in `@weave/a2a`.
 */
export class WeaveError extends Error {
  /** Stable, machine-readable code, e.g. `INVALID_SPIFFE_ID`, `PEER_VERIFICATION_FAILED`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A string is not a valid SPIFFE ID or trust domain. */
export class SpiffeIdError extends WeaveError {
  /** The rejected input (truncated to 256 characters so logs stay readable). */
  readonly input: string;
  /** The reason alone, in go-spiffe's wording (e.g. "path cannot contain dot segments"). */
  readonly reason: string;

  constructor(input: string, reason: string) {
    const shown = input.length > 256 ? `${input.slice(0, 256)}…` : input;
    super('INVALID_SPIFFE_ID', `invalid SPIFFE ID ${JSON.stringify(shown)}: ${reason}`);
    this.input = shown;
    this.reason = reason;
  }
}
