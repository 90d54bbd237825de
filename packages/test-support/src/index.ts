/**
 * @weave/test-support — the PKI and mTLS harness shared by the tests of the
 * packages above `@weave/transport`. Private: never published. Subpaths, so
 * that each test loads only its own layer and those below it:
 * `@weave/test-support/spiffe-tls` (identity's tests: node:tls with the
 * SPIFFE check in code), `@weave/test-support/tls-fixtures` (transport's:
 * dev CAs on disk, raw TLS servers, crafted certificates),
 * `@weave/test-support/a2a-sdk` (the official A2A SDK as a peer) and
 * `@weave/test-support/tcp-relay` (a loopback TCP relay that a test can cut,
 * silence, slow down or reset; node:net only, also exported here).
 *
 * @packageDocumentation
 */
export * from './pki.js';
export * from './tcp-relay.js';
export * from './workload-api.js';
