/**
 * @weave/test-support — the PKI and mTLS harness shared by the tests of the
 * packages above `@weave/transport`. Private: never published. The
 * official A2A SDK as a peer is `@weave/test-support/a2a-sdk`, apart so that
 * only its users load the SDK and express.
 *
 * @packageDocumentation
 */
export * from './pki.js';
export * from './workload-api.js';
