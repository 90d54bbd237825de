// The `capability` label of outbound calls took every name a caller passed
// to callAgent (from user or model input, say): each new one added series to
// weave_calls_total and weave_call_duration_seconds for the life of the
// process. It is bounded as `peer` is. And an outbound call to a URL holding
// credentials put them into the `peer` label.
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../src/index.js';
import { sample } from './helpers.js';

// AgentMetrics.maxCapabilityLabels, the bound the README names (checked below).
const N = 256;

describe('the capability label of outbound calls', () => {
  it('keeps the first maxCapabilityLabels capabilities apart and counts any after them as other', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    const peer = 'spiffe://td/agent/callee';
    for (let i = 0; i < N + 40; i++) m.observeCall('outbound', `cap-${i}`, peer, 'error', 0.001);
    // A capability with a label of its own keeps it past the bound, on another peer too.
    m.observeCall('outbound', 'cap-0', 'spiffe://td/agent/other-callee', 'success', 0.001);
    // Inbound calls name the agent's own capabilities: not bounded.
    m.observeCall('inbound', `cap-${N + 1}`, peer, 'success', 0.001);

    const caps = new Set((await m.calls.get()).values.map((v) => v.labels.capability));
    expect(caps.size).toBe(N + 2); // N own, other, and the inbound one
    expect(await sample(m.calls, { direction: 'outbound', capability: 'other' })).toBe(40);
    expect(await sample(m.calls, { direction: 'outbound', capability: 'cap-0' })).toBe(2);
    expect(await sample(m.calls, { direction: 'outbound', capability: `cap-${N}` })).toBe(0);
    expect(await sample(m.calls, { direction: 'inbound', capability: `cap-${N + 1}` })).toBe(1);
    // The histogram has the same labels.
    const durations = (await m.callDuration.get()).values.filter((v) => v.metricName?.endsWith('_count'));
    expect(new Set(durations.map((v) => v.labels.capability)).size).toBe(N + 2);
    expect(AgentMetrics.maxCapabilityLabels).toBe(N);
    expect((await m.render()).body).toContain(`capability ("other" past the first ${N} capabilities called)`);
  });
});

describe('the peer label of a call by URL', () => {
  it('holds no user name, password, query (shown as ?…) or fragment', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    m.observeCall(
      'outbound',
      'greet',
      'https://user:s3cr3tTOKEN@127.0.0.1:1/a2a?access_token=abc#x',
      'error',
      0.01,
    );
    m.observeCall('outbound', 'greet', 'https://127.0.0.1:1/a2a', 'error', 0.01);
    const text = (await m.render()).body;
    expect(text).not.toMatch(/s3cr3tTOKEN|access_token|user:/);
    expect(await sample(m.calls, { peer: 'https://127.0.0.1:1/a2a?…' })).toBe(1);
    expect(await sample(m.calls, { peer: 'https://127.0.0.1:1/a2a' })).toBe(1);
    // A SPIFFE ID is left as it is.
    expect(m.peerLabel('spiffe://td/agent/x')).toBe('spiffe://td/agent/x');
  });
});

describe('weave_tls_handshakes_total', () => {
  it('says what each side and result counts', async () => {
    const text = (await new AgentMetrics({ agent: 'a' }).render()).body;
    const help = text.split('\n').find((l) => l.startsWith('# HELP weave_tls_handshakes_total'));
    expect(help).toMatch(/side="server" on its mTLS and gRPC ports.*ok.*error.*side="client".*ok.*rejected/);
  });
});
