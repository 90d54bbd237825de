// Root round-trip benchmark of Weave: a full `callAgent` between two
// SecureAgents vs bare node mTLS vs the official @a2a-js/sdk, in one run.
// The implementation lives in packages/agent/bench/ so that it resolves its
// dependencies (express, @a2a-js/sdk, undici) from that package. See README.md.
await import('../packages/agent/bench/roundtrip.js');
