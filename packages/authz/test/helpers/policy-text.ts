// A one-rule policy file's text and the caller it names, for the tests that
// write, swap and reload policy files.
import { SpiffeId } from '@weave/identity';

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
