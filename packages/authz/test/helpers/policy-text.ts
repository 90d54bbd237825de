// A one-rule policy file's text and the caller it names, for the tests that
// write, swap and reload policy files.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { SpiffeId } from '@weave/identity';
import type { LocalPolicyEnforcer } from '../../src/index.js';

export const CALLER = SpiffeId.parse('spiffe://demo.weave/agent/orchestrator');

/** A policy `id` that allows {@link CALLER} one `action` (rule `allow-<action>`) and denies the rest. */
export const policyText = (id: string, action: string) => `version: 1
id: ${id}
default: deny
rules:
  - id: allow-${action}
    effect: allow
    callers: ["${CALLER.toString()}"]
    actions: ["${action}"]
`;

/** Where a test writes its policy files, and the enforcer it loads from them. */
export interface PolicyDir {
  /** A directory of this test's own, removed after it. */
  readonly dir: string;
  /** Set by the test; closed after it. */
  enforcer: LocalPolicyEnforcer | undefined;
}

/** Registers the hooks that give each test of the calling block a fresh {@link PolicyDir}. */
export function policyDirEachTest(): PolicyDir {
  const scratch: { dir: string; enforcer: LocalPolicyEnforcer | undefined } = {
    dir: '',
    enforcer: undefined,
  };
  beforeEach(async () => {
    scratch.dir = await mkdtemp(join(tmpdir(), 'weave-authz-'));
  });
  afterEach(async () => {
    await scratch.enforcer?.close();
    scratch.enforcer = undefined;
    await rm(scratch.dir, { recursive: true, force: true });
  });
  return scratch;
}
