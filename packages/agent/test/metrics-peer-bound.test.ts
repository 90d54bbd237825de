// The `peer` label of weave_calls_total takes at most AgentMetrics.maxPeerLabels
// values; any peer after them counts as `other`. It used to keep a series per
// peer for the life of the process: 20 000 distinct callers, 20 000 series.
import { describe, expect, it } from 'vitest';
import type { AuthzDecision, PolicyEnforcer } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { AgentMetrics } from '../src/index.js';
import { MeteredEnforcer } from '../src/observability.js';
import { sample } from './helpers.js';

// AgentMetrics.maxPeerLabels, the bound the README names (checked below).
const N = 1000;
const peer = (i: number): string => `spiffe://td/caller/c${i}`;

/** The series of `weave_calls_total`, as a scrape would see them. */
async function series(m: AgentMetrics): Promise<Array<Record<string, string | number>>> {
  return (await m.calls.get()).values.map((v) => v.labels);
}

describe('the peer label of weave_calls_total', () => {
  it('keeps the first maxPeerLabels peers apart and counts any after them as other', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    for (let i = 0; i < N + 50; i++) m.observeCall('inbound', 'echo', peer(i), 'success', 0.001);
    // A peer with a label of its own keeps counting under it, past the bound too.
    m.observeCall('inbound', 'echo', peer(0), 'success', 0.001);
    m.observeCall('inbound', 'echo', peer(N - 1), 'error', 0.001);

    const labels = await series(m);
    expect(new Set(labels.map((l) => l.peer)).size).toBe(N + 1);
    expect(labels).toHaveLength(N + 2); // peer N - 1 has an error series as well
    expect(await sample(m.calls, { peer: peer(0) })).toBe(2);
    expect(await sample(m.calls, { peer: peer(N - 1), outcome: 'error' })).toBe(1);
    expect(await sample(m.calls, { peer: 'other' })).toBe(50);
    expect(await sample(m.calls, { peer: peer(N) })).toBe(0);
    // Nothing is lost: every call is counted under some peer.
    expect(await sample(m.calls, { direction: 'inbound' })).toBe(N + 52);

    const text = (await m.render()).body;
    expect(text).toContain(
      'weave_calls_total{direction="inbound",capability="echo",peer="other",outcome="success",agent="a"} 50',
    );
    expect(text).not.toContain(peer(N));
    // The help a scrape shows says what `other` is.
    expect(text).toContain('peer SPIFFE ID ("other" past the first 1000 peers)');
    expect(AgentMetrics.maxPeerLabels).toBe(N);
  });

  it('bounds outbound targets and inbound denials by the same peers', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    for (let i = 0; i < N; i++) m.observeCall('inbound', 'echo', peer(i), 'success', 0.001);
    // An outbound call whose callee is not known is labelled by its URL.
    for (let i = 0; i < 20; i++) m.observeCall('outbound', 'echo', `https://10.0.0.${i}:8443`, 'error', 0.01);
    m.observeCall('outbound', 'echo', peer(3), 'success', 0.01);

    const deny: PolicyEnforcer = {
      checkInbound: () => Promise.resolve<AuthzDecision>({ allowed: false, reason: 'no', auditId: '' }),
      checkOutbound: () => Promise.resolve<AuthzDecision>({ allowed: false, reason: 'no', auditId: '' }),
    };
    const enforcer = new MeteredEnforcer(deny, m);
    const denied = (caller: string) =>
      enforcer.checkInbound({
        caller: SpiffeId.parse(caller),
        callee: SpiffeId.parse('spiffe://td/agent/self'),
        action: 'echo',
        context: { method: 'SendMessage', binding: 'jsonrpc' },
      });
    for (let i = N; i < N + 30; i++) await denied(peer(i));
    await denied(peer(7));

    const labels = await series(m);
    expect(new Set(labels.map((l) => l.peer)).size).toBe(N + 1);
    expect(await sample(m.calls, { direction: 'outbound', peer: 'other' })).toBe(20);
    expect(await sample(m.calls, { direction: 'outbound', peer: peer(3) })).toBe(1);
    expect(await sample(m.calls, { outcome: 'denied', peer: 'other' })).toBe(30);
    expect(await sample(m.calls, { outcome: 'denied', peer: peer(7) })).toBe(1);
  });
});
