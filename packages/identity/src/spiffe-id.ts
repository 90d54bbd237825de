import { SpiffeIdError } from './errors.js';

/** go-spiffe's error reasons, used verbatim so messages match the ecosystem. */
export const SpiffeIdReason = {
  empty: 'cannot be empty',
  badScheme: 'scheme is missing or invalid',
  missingTrustDomain: 'trust domain is missing',
  badTrustDomainChar:
    'trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores',
  badPathSegmentChar:
    'path segment characters are limited to letters, numbers, dots, dashes, and underscores',
  emptySegment: 'path cannot contain empty segments',
  dotSegment: 'path cannot contain dot segments',
  trailingSlash: 'path cannot have a trailing slash',
  noLeadingSlash: 'path must have a leading slash',
  tooLong: 'SPIFFE ID is longer than 2048 bytes',
} as const;

const SCHEME = 'spiffe://';
const MAX_BYTES = 2048;

function isTrustDomainChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2e || // .
    c === 0x2d || // -
    c === 0x5f // _
  );
}

function isPathChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2e ||
    c === 0x2d ||
    c === 0x5f
  );
}

/** Returns the reason a trust domain name is invalid, or undefined when it is valid. */
function trustDomainProblem(name: string): string | undefined {
  if (name.length === 0) return SpiffeIdReason.missingTrustDomain;
  for (let i = 0; i < name.length; i++) {
    if (!isTrustDomainChar(name.charCodeAt(i))) return SpiffeIdReason.badTrustDomainChar;
  }
  return undefined;
}

/** Returns the reason a path (possibly empty) is invalid, or undefined when it is valid. */
function pathProblem(path: string): string | undefined {
  if (path.length === 0) return undefined;
  if (path[0] !== '/') return SpiffeIdReason.noLeadingSlash;
  let segStart = 1;
  for (let i = 1; i <= path.length; i++) {
    if (i === path.length || path[i] === '/') {
      const seg = path.slice(segStart, i);
      if (seg.length === 0) {
        return i === path.length ? SpiffeIdReason.trailingSlash : SpiffeIdReason.emptySegment;
      }
      if (seg === '.' || seg === '..') return SpiffeIdReason.dotSegment;
      segStart = i + 1;
      continue;
    }
    if (!isPathChar(path.charCodeAt(i))) return SpiffeIdReason.badPathSegmentChar;
  }
  return undefined;
}

/**
 * A SPIFFE trust domain, e.g. `example.org`. Immutable; compare with {@link TrustDomain.equals}.
 */
export class TrustDomain {
  /** The bare name, e.g. `example.org`. */
  readonly name: string;

  private constructor(name: string) {
    this.name = name;
    Object.freeze(this);
  }

  /**
   * Parses `example.org`, or the trust domain of a SPIFFE ID such as
   * `spiffe://example.org/workload`.
   *
   * @throws {SpiffeIdError} when the input is not a valid trust domain.
   */
  static parse(input: string): TrustDomain {
    if (typeof input !== 'string' || input.length === 0)
      throw new SpiffeIdError(String(input), SpiffeIdReason.missingTrustDomain);
    if (input.includes(':/')) return SpiffeId.parse(input).trustDomain;
    const problem = trustDomainProblem(input);
    if (problem) throw new SpiffeIdError(input, problem);
    return new TrustDomain(input);
  }

  /** @internal used by {@link SpiffeId.parse} after it validated the name. */
  static unchecked(name: string): TrustDomain {
    return new TrustDomain(name);
  }

  /** `spiffe://<name>`: the trust domain's own SPIFFE ID (used as a bundle key). */
  get idString(): string {
    return `${SCHEME}${this.name}`;
  }

  /** The trust domain's own SPIFFE ID (no path), e.g. the SAN of a CA. */
  toSpiffeId(): SpiffeId {
    return SpiffeId.parse(this.idString);
  }

  equals(other: TrustDomain | string): boolean {
    return this.name === (typeof other === 'string' ? other : other.name);
  }

  toString(): string {
    return this.name;
  }

  toJSON(): string {
    return this.name;
  }
}

/**
 * A SPIFFE ID: `spiffe://<trust-domain><path>`. Validated exactly as go-spiffe
 * does; immutable; compare with {@link SpiffeId.equals}.
 */
export class SpiffeId {
  readonly trustDomain: TrustDomain;
  /** The path, `''` for a trust domain's own ID, else starting with `/`. */
  readonly path: string;

  private constructor(trustDomain: TrustDomain, path: string) {
    this.trustDomain = trustDomain;
    this.path = path;
    Object.freeze(this);
  }

  /**
   * Parses a SPIFFE ID string.
   *
   * @throws {SpiffeIdError} whose `reason` is go-spiffe's wording.
   */
  static parse(input: string): SpiffeId {
    if (typeof input !== 'string' || input.length === 0)
      throw new SpiffeIdError(String(input ?? ''), SpiffeIdReason.empty);
    if (Buffer.byteLength(input, 'utf8') > MAX_BYTES) throw new SpiffeIdError(input, SpiffeIdReason.tooLong);
    // Scheme is case-sensitive here on purpose: go-spiffe rejects `Spiffe://`.
    if (!input.startsWith(SCHEME)) throw new SpiffeIdError(input, SpiffeIdReason.badScheme);
    const rest = input.slice(SCHEME.length);
    const slash = rest.indexOf('/');
    const td = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? '' : rest.slice(slash);
    // Ports, user info, queries and fragments all surface as characters outside
    // the allowed sets (':' '@' '?' '#'), so they are rejected by the same checks.
    const tdProblem = trustDomainProblem(td);
    if (tdProblem) throw new SpiffeIdError(input, tdProblem);
    const pProblem = pathProblem(path);
    if (pProblem) throw new SpiffeIdError(input, pProblem);
    return new SpiffeId(TrustDomain.unchecked(td), path);
  }

  /** Like {@link SpiffeId.parse} but returns undefined instead of throwing. */
  static tryParse(input: string): SpiffeId | undefined {
    try {
      return SpiffeId.parse(input);
    } catch {
      return undefined;
    }
  }

  /**
   * Builds an ID from a trust domain and path segments:
   * `fromSegments('example.org', 'ns', 'prod')` → `spiffe://example.org/ns/prod`.
   *
   * @throws {SpiffeIdError} when the trust domain or a segment is invalid
   *   (segments may not contain `/`).
   */
  static fromSegments(trustDomain: TrustDomain | string, ...segments: string[]): SpiffeId {
    const td = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
    const path = segments.map((s) => `/${s}`).join('');
    // A '/' inside one segment would silently become two segments.
    const problem = segments.some((s) => s.includes('/'))
      ? SpiffeIdReason.badPathSegmentChar
      : pathProblem(path);
    if (problem) throw new SpiffeIdError(`${SCHEME}${td.name}${path}`, problem);
    return new SpiffeId(td, path);
  }

  /** True when this ID belongs to the given trust domain. */
  isMemberOf(trustDomain: TrustDomain | string): boolean {
    return this.trustDomain.equals(trustDomain);
  }

  #segments: readonly string[] | undefined;

  /**
   * The path split into segments (`[]` for a trust domain's own ID). Split
   * once and frozen: policy engines ask for it on every decision.
   */
  get segments(): readonly string[] {
    return (this.#segments ??= Object.freeze(this.path.length === 0 ? [] : this.path.slice(1).split('/')));
  }

  equals(other: SpiffeId | string): boolean {
    return this.toString() === (typeof other === 'string' ? other : other.toString());
  }

  #text: string | undefined;

  /** The ID as text, built once: policy checks and audit records ask for it on every decision. */
  toString(): string {
    return (this.#text ??= `${SCHEME}${this.trustDomain.name}${this.path}`);
  }

  toJSON(): string {
    return this.toString();
  }
}
