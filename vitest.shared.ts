// Shared vitest settings: `@weave/<pkg>` resolves to that package's `src/`, so
// tests run against source and need no build step.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const packagesDir = fileURLToPath(new URL('./packages/', import.meta.url));

export const shared = defineConfig({
  resolve: {
    alias: [
      { find: /^@weave\/([a-z0-9-]+)$/, replacement: `${packagesDir}$1/src/index.ts` },
      { find: /^@weave\/([a-z0-9-]+)\/(.+)$/, replacement: `${packagesDir}$1/src/$2.ts` },
    ],
  },
  // Node 20 cannot parse standard decorators: have esbuild lower them.
  esbuild: { target: 'node20' },
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // TLS and gRPC tests on a 2-core box: forks isolate native handles and keep
    // timing-sensitive tests from starving each other.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
  },
});
