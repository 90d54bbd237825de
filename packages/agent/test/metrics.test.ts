import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../src/index.js';
import { sample } from './helpers.js';

describe('AgentMetrics', () => {
  it('reports every count, whether counted on the hot path or by prom-client directly', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    for (let i = 0; i < 5; i++) m.observeCall('inbound', 'echo', 'spiffe://td/x', 'success', 0.002);
    m.observeCall('outbound', 'echo', 'spiffe://td/y', 'error', 0.2);
    m.calls.inc({ direction: 'inbound', capability: 'echo', peer: 'spiffe://td/x', outcome: 'denied' });
    m.taskState('TASK_STATE_COMPLETED');
    m.taskState('TASK_STATE_COMPLETED');
    m.taskState('TASK_STATE_FAILED');
    m.authzDecision('inbound', true);
    m.authzDecision('inbound', false);
    m.authzDecision('outbound', true);

    expect(await sample(m.calls, { direction: 'inbound', outcome: 'success' })).toBe(5);
    expect(await sample(m.calls, { direction: 'inbound', outcome: 'denied' })).toBe(1);
    expect(await sample(m.calls, { direction: 'outbound', outcome: 'error', peer: 'spiffe://td/y' })).toBe(1);
    expect(await sample(m.taskStates, { state: 'TASK_STATE_COMPLETED' })).toBe(2);
    expect(await sample(m.taskStates, { state: 'TASK_STATE_FAILED' })).toBe(1);
    expect(await sample(m.authzDecisions, { direction: 'inbound', decision: 'allow' })).toBe(1);
    expect(await sample(m.authzDecisions, { direction: 'inbound', decision: 'deny' })).toBe(1);
    expect(await sample(m.authzDecisions, { direction: 'outbound', decision: 'allow' })).toBe(1);
    // A second collection neither loses nor repeats what the first one handed over.
    m.observeCall('inbound', 'echo', 'spiffe://td/x', 'success', 0.002);
    expect(await sample(m.calls, { direction: 'inbound', outcome: 'success' })).toBe(6);
    expect(await sample(m.callDuration, { direction: 'inbound', le: '0.0025' })).toBe(6);
    expect(await sample(m.callDuration, { direction: 'outbound', outcome: 'error', le: '0.25' })).toBe(1);
    expect(await sample(m.callDuration, { direction: 'outbound', outcome: 'error', le: '0.1' })).toBe(0);

    const text = (await m.render()).body;
    expect(text).toContain(
      'weave_calls_total{direction="inbound",capability="echo",peer="spiffe://td/x",outcome="success",agent="a"} 6',
    );
    expect(text).toContain('weave_task_state_transitions_total{state="TASK_STATE_COMPLETED",agent="a"} 2');
  });

  it('keeps each direction, outcome, capability and peer of a call apart', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    const peers = ['spiffe://td/x', 'spiffe://td/y'];
    const caps = ['echo', 'sum'];
    const dirs = ['inbound', 'outbound'] as const;
    const outcomes = ['success', 'error', 'denied'] as const;
    let n = 0;
    for (const peer of peers)
      for (const capability of caps)
        for (const direction of dirs)
          for (const outcome of outcomes) {
            n++;
            for (let i = 0; i < n; i++) m.observeCall(direction, capability, peer, outcome, 0.001 * n);
          }
    n = 0;
    for (const peer of peers)
      for (const capability of caps)
        for (const direction of dirs)
          for (const outcome of outcomes) {
            n++;
            expect(await sample(m.calls, { peer, capability, direction, outcome })).toBe(n);
          }
    // Durations are by direction, capability and outcome (not peer): the two peers' calls together.
    expect(
      await sample(m.callDuration, {
        direction: 'outbound',
        capability: 'sum',
        outcome: 'denied',
        le: '+Inf',
      }),
    ).toBe(12 + 24);
  });

  it('keeps counting past 10 000 label sets', async () => {
    const m = new AgentMetrics({ agent: 'a' });
    for (let i = 0; i < 10_050; i++) m.observeCall('inbound', 'echo', `spiffe://td/p${i}`, 'success', 0.001);
    m.observeCall('inbound', 'echo', 'spiffe://td/p0', 'success', 0.001);
    expect(await sample(m.calls, { direction: 'inbound' })).toBe(10_051);
    expect(await sample(m.calls, { peer: 'spiffe://td/p0' })).toBe(2);
  });
});
