import { defineProject, mergeConfig } from 'vitest/config';
import { shared } from '../vitest.shared.js';

// Real OPA, SPIRE, PostgreSQL and HAProxy processes: slower to start than the
// in-process fakes of the package suites, so hooks get more room. Files run one
// at a time: each starts its own servers, and 2 cores do not take several SPIREs.
export default mergeConfig(
  shared,
  defineProject({
    test: {
      name: 'interop',
      include: ['**/*.test.ts'],
      exclude: ['**/node_modules/**'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      fileParallelism: false,
    },
  }),
);
