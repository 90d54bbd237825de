import { defineProject, mergeConfig } from 'vitest/config';
import { shared } from '../../vitest.shared.js';

// These tests start the `weave` program as a child process (through the TypeScript
// loader), often several per test; at load 11-12 on two cores one such test took
// 15-17 s alone and timed out at the shared 30 s in a full run.
export default mergeConfig(
  shared,
  defineProject({ test: { name: 'cli', passWithNoTests: true, testTimeout: 120_000 } }),
);
