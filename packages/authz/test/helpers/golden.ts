// The golden table (policies/golden.yaml): one policy document and the
// decision each input must get. One reader for the tests that hold every
// engine to it (test/golden.test.ts) and for the `opa` bench scenario, which
// times the same inputs.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SpiffeId } from '@weave/identity';
import { parse } from 'yaml';
import { z } from 'zod';
import type { AuthzDecision, PolicyEnforcer } from '../../src/index.js';

export const policiesDir = fileURLToPath(new URL('../../policies/', import.meta.url));

export const golden = z
  .object({
    policy: z.unknown(),
    cases: z.array(
      z.object({
        name: z.string(),
        direction: z.enum(['inbound', 'outbound']),
        caller: z.string(),
        callee: z.string().optional(),
        action: z.string(),
        allowed: z.boolean(),
        rule: z.string().nullable(),
      }),
    ),
  })
  .parse(parse(readFileSync(`${policiesDir}golden.yaml`, 'utf8')));

export type GoldenCase = (typeof golden.cases)[number];

/** The case's question, its SPIFFE IDs parsed once (a bench times only the decision): ask it of any engine. */
export function goldenQuestion(c: GoldenCase): (e: PolicyEnforcer) => Promise<AuthzDecision> {
  const caller = SpiffeId.parse(c.caller);
  const callee = c.callee === undefined ? undefined : SpiffeId.parse(c.callee);
  if (c.direction === 'outbound')
    return (e) => e.checkOutbound({ caller, callee: callee as SpiffeId, action: c.action });
  return (e) => e.checkInbound({ caller, ...(callee ? { callee } : {}), action: c.action });
}
