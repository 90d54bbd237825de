import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type CallDirection = 'inbound' | 'outbound';
export type CallOutcome = 'success' | 'error' | 'denied';

/**
 * Prometheus metrics of one agent. Each agent has its own registry so several
 * agents in one process (tests, the demo) do not collide.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly calls: Counter<'direction' | 'capability' | 'peer' | 'outcome'>;
  readonly callDuration: Histogram<'direction' | 'capability' | 'outcome'>;
  readonly authzDecisions: Counter<'direction' | 'decision'>;
  readonly tlsHandshakes: Counter<'side' | 'result'>;
  readonly taskStates: Counter<'state'>;

  constructor(options: { agent: string; defaultMetrics?: boolean }) {
    this.registry.setDefaultLabels({ agent: options.agent });
    const registers = [this.registry];
    this.calls = new Counter({
      name: 'weave_calls_total',
      help: 'Capability calls, by direction, capability, peer SPIFFE ID and outcome',
      labelNames: ['direction', 'capability', 'peer', 'outcome'],
      registers,
    });
    this.callDuration = new Histogram({
      name: 'weave_call_duration_seconds',
      help: 'Latency of capability calls',
      labelNames: ['direction', 'capability', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.authzDecisions = new Counter({
      name: 'weave_authz_decisions_total',
      help: 'Policy decisions, by direction and decision',
      labelNames: ['direction', 'decision'],
      registers,
    });
    this.tlsHandshakes = new Counter({
      name: 'weave_tls_handshakes_total',
      help: 'TLS handshakes seen by the agent server, by result',
      labelNames: ['side', 'result'],
      registers,
    });
    this.taskStates = new Counter({
      name: 'weave_task_state_transitions_total',
      help: 'A2A task state transitions of tasks served by this agent',
      labelNames: ['state'],
      registers,
    });
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  // Label children are cached: hashing label sets on every call shows up in profiles.
  readonly #callChildren = new Map<
    string,
    {
      calls: ReturnType<AgentMetrics['calls']['labels']>;
      duration: ReturnType<AgentMetrics['callDuration']['labels']>;
    }
  >();
  readonly #simple = new Map<string, { inc(): void }>();

  /** Records one finished call. */
  observeCall(
    direction: CallDirection,
    capability: string,
    peer: string,
    outcome: CallOutcome,
    seconds: number,
  ): void {
    const key = `${direction}\0${capability}\0${peer}\0${outcome}`;
    let c = this.#callChildren.get(key);
    if (!c) {
      if (this.#callChildren.size >= 10_000) this.#callChildren.clear();
      c = {
        calls: this.calls.labels({ direction, capability, peer, outcome }),
        duration: this.callDuration.labels({ direction, capability, outcome }),
      };
      this.#callChildren.set(key, c);
    }
    c.calls.inc();
    c.duration.observe(seconds);
  }

  /** Counts one task state transition. */
  taskState(state: string): void {
    this.#child(`s\0${state}`, () => this.taskStates.labels({ state })).inc();
  }

  /** Counts one policy decision. */
  authzDecision(direction: CallDirection, allowed: boolean): void {
    const decision = allowed ? 'allow' : 'deny';
    this.#child(`a\0${direction}\0${decision}`, () =>
      this.authzDecisions.labels({ direction, decision }),
    ).inc();
  }

  #child(key: string, make: () => { inc(): void }): { inc(): void } {
    let c = this.#simple.get(key);
    if (!c) {
      c = make();
      this.#simple.set(key, c);
    }
    return c;
  }

  /** The exposition text for `/metrics`. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
