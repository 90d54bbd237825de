import { WeaveError } from './errors.js';

/** Why an X.509-SVID was rejected. */
export type X509SvidErrorCode =
  | 'SVID_EMPTY_CHAIN'
  | 'SVID_NO_URI_SAN'
  | 'SVID_MULTIPLE_URI_SANS'
  | 'SVID_INVALID_SPIFFE_ID'
  | 'SVID_ROOT_PATH'
  | 'SVID_LEAF_IS_CA'
  | 'SVID_LEAF_KEY_USAGE'
  | 'SVID_UNKNOWN_TRUST_DOMAIN'
  | 'SVID_UNKNOWN_CRITICAL_EXTENSION'
  | 'SVID_EXPIRED'
  | 'SVID_NOT_YET_VALID'
  | 'SVID_PATH_LENGTH_EXCEEDED'
  | 'SVID_NAME_CONSTRAINT_VIOLATION'
  | 'SVID_UNTRUSTED'
  | 'SVID_KEY_MISMATCH'
  | 'SVID_WEAK_KEY'
  | 'SVID_MALFORMED';

/** An X.509-SVID (own or a peer's) broke a SPIFFE rule or did not verify. */
export class X509SvidError extends WeaveError {
  declare readonly code: X509SvidErrorCode;
  constructor(code: X509SvidErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
