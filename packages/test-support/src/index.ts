/**
 * @weave/test-support — the PKI and mTLS harness shared by the tests of the
 * packages above `@weave/transport`. Private: never published.
 *
 * @packageDocumentation
 */
export * from './pki.js';
export * from './workload-api.js';
