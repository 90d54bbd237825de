import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { redactUrl, type A2AGrpcServer } from '@weave/a2a';
import type { ConnectionRefusals } from '@weave/transport/server';

export type CallDirection = 'inbound' | 'outbound';
export type CallOutcome = 'success' | 'error' | 'denied';

/**
 * The `reason` values of `weave_requests_refused_total`: the A2A error
 * reasons an agent sends, and `other` for anything else, so that nothing a
 * caller sends can add a series.
 */
export const REFUSAL_REASONS = [
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'UNAVAILABLE',
  'PAYLOAD_TOO_LARGE',
  'INVALID_PARAMS',
  'INVALID_REQUEST',
  'PARSE_ERROR',
  'METHOD_NOT_FOUND',
  'CONTENT_TYPE_NOT_SUPPORTED',
  'VERSION_NOT_SUPPORTED',
  'EXTENSION_SUPPORT_REQUIRED',
  'TASK_NOT_FOUND',
  'TASK_NOT_CANCELABLE',
  'UNSUPPORTED_OPERATION',
  'PUSH_NOTIFICATION_NOT_SUPPORTED',
  'EXTENDED_AGENT_CARD_NOT_CONFIGURED',
  'INTERNAL_ERROR',
  'other',
] as const;
const REFUSAL_SET: ReadonlySet<string> = new Set(REFUSAL_REASONS);

/**
 * The `port` values of `weave_connections_refused_total`: the agent's mTLS
 * port (`http`: JSON-RPC and HTTP+JSON, `/metrics`) and its gRPC one
 * (`server.grpc`), named as the agent's logger components name them.
 */
export type ConnectionPort = 'http' | 'grpc';

/** The `bound` label of each count of {@link ConnectionRefusals}, named as the config option in snake case. */
const BOUNDS = [
  ['server', 'max_connections'],
  ['peer', 'max_connections_per_peer'],
  ['address', 'max_handshakes_per_address'],
] as const satisfies ReadonlyArray<readonly [keyof ConnectionRefusals, string]>;

/** The handshake counts a server keeps itself, as `A2AGrpcServer.tlsHandshakes` gives them. */
type HandshakeCounts = A2AGrpcServer['tlsHandshakes'];

/** The series of `weave_tls_handshakes_total` each count of {@link HandshakeCounts} is added to. */
const HANDSHAKE_SERIES = [
  ['ok', { side: 'server', result: 'ok' }],
  ['error', { side: 'server', result: 'error' }],
] as const satisfies ReadonlyArray<readonly [keyof HandshakeCounts, { side: string; result: string }]>;

/**
 * Prometheus metrics of one agent. Each agent has its own registry so several
 * agents in one process (tests, the demo) do not collide.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly calls: Counter<'direction' | 'capability' | 'peer' | 'outcome'>;
  readonly callDuration: Histogram<'direction' | 'capability' | 'outcome'>;
  readonly authzDecisions: Counter<'direction' | 'decision'>;
  readonly authzEngineErrors: Counter<'direction'>;
  readonly tlsHandshakes: Counter<'side' | 'result'>;
  readonly taskStates: Counter<'state'>;
  readonly requestsRefused: Counter<'reason'>;
  readonly connectionsRefused: Counter<'port' | 'bound'>;

  /**
   * How many distinct values the `peer` label takes: the first peers (SPIFFE
   * IDs, or the URL of an outbound call whose callee is unknown) keep a series
   * of their own; any peer after them is counted as `other`. A peer is chosen
   * by whoever connects, so without a bound each new one adds series for the
   * life of the process; 1000 leaves every agent of a large mesh its own.
   */
  static readonly maxPeerLabels = 1000;

  /**
   * How many distinct values the `capability` label of outbound calls takes,
   * bounded as `peer` is: the first capabilities called keep a series of
   * their own, any after them is counted as `other`. The capability a call
   * names may come from user or model input, so without a bound each new name
   * would add series for the life of the process (17 of
   * `weave_call_duration_seconds` per outcome). Inbound calls need none: they
   * name the agent's own capabilities (a message naming another is refused
   * before it is counted).
   */
  static readonly maxCapabilityLabels = 256;

  constructor(options: { agent: string; defaultMetrics?: boolean }) {
    this.registry.setDefaultLabels({ agent: options.agent });
    const registers = [this.registry];
    this.calls = new Counter({
      collect: () => this.#flushCalls(false),
      name: 'weave_calls_total',
      help: `Capability calls, by direction, capability ("other" past the first ${AgentMetrics.maxCapabilityLabels} capabilities called), peer SPIFFE ID ("other" past the first ${AgentMetrics.maxPeerLabels} peers) and outcome`,
      labelNames: ['direction', 'capability', 'peer', 'outcome'],
      registers,
    });
    this.callDuration = new Histogram({
      name: 'weave_call_duration_seconds',
      help: `Latency of capability calls, by direction, capability ("other" past the first ${AgentMetrics.maxCapabilityLabels} capabilities called) and outcome`,
      labelNames: ['direction', 'capability', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.authzDecisions = new Counter({
      collect: () => this.#decisions.flush(),
      name: 'weave_authz_decisions_total',
      help: 'Policy decisions, by direction and decision',
      labelNames: ['direction', 'decision'],
      registers,
    });
    // A counter of its own, not a label of weave_authz_decisions_total: the
    // denies it counts stay decision="deny" there, as the agent denied them,
    // and queries and alerts on that series keep their meaning.
    this.authzEngineErrors = new Counter({
      collect: () => this.#engineErrors.flush(),
      name: 'weave_authz_engine_errors_total',
      help: 'Policy decisions denied because the policy engine (OPA) could not be reached or failed (no answer, timeout, HTTP 5xx), by direction; each is also a decision="deny" of weave_authz_decisions_total',
      labelNames: ['direction'],
      registers,
    });
    this.tlsHandshakes = new Counter({
      collect: () => this.#handshakeSources.collect(),
      name: 'weave_tls_handshakes_total',
      help: 'TLS handshakes of the agent, by side and result: side="server" on its mTLS and gRPC ports (result ok: completed, client certificate verified; error: refused or failed), side="client" on its outbound calls (ok: the peer proved the expected SPIFFE ID; rejected: it proved another)',
      labelNames: ['side', 'result'],
      registers,
    });
    this.taskStates = new Counter({
      collect: () => this.#states.flush(),
      name: 'weave_task_state_transitions_total',
      help: 'A2A task state transitions of tasks served by this agent',
      labelNames: ['state'],
      registers,
    });
    this.requestsRefused = new Counter({
      collect: () => this.#refusals.flush(),
      name: 'weave_requests_refused_total',
      help: 'A2A requests answered with an error, by A2A error reason (including those refused before any task or call exists)',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsRefused = new Counter({
      collect: () => this.#refusalSources.collect(),
      name: 'weave_connections_refused_total',
      help: 'Connections the agent server closed at a connection bound, by port and bound',
      labelNames: ['port', 'bound'],
      registers,
    });
    this.#states = new Tally(this.taskStates);
    this.#refusals = new Tally(this.requestsRefused);
    this.#decisions = new Tally(this.authzDecisions);
    this.#engineErrors = new Tally(this.authzEngineErrors);
    this.#refusalSources = new CountedSources(this.connectionsRefused);
    this.#handshakeSources = new CountedSources(this.tlsHandshakes);
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  // Counted in plain numbers and handed to prom-client when it collects (a
  // scrape or get()): prom-client hashes and validates the label set on every
  // inc(), which showed up per call in the round-trip bench.
  readonly #states: Tally<'state'>;
  readonly #decisions: Tally<'direction' | 'decision'>;
  readonly #engineErrors: Tally<'direction'>;
  readonly #refusals: Tally<'reason'>;
  // A call's count and its duration histogram are found by the strings the
  // call already has (peer, then capability, then a slot for direction and
  // outcome), not by a key joined from them, two new strings per call:
  // observeCall allocated 788 and 771 B per call on a `callAgent` caller with
  // them, 288 and 339 B without (bench/, two `--only call --heap-prof` runs each).
  readonly #calls = new Map<string, Map<string, Array<CallCell | undefined>>>();
  #callSets = 0;
  // The peers that have a `peer` label of their own: prom-client keeps a
  // series for every label set it was ever handed, so every new peer ID or
  // URL would be a series for the life of the process (20 000 callers had
  // grown `/metrics` to 2.6 MB and the heap by 9 MB).
  readonly #peers = new LabelBound(AgentMetrics.maxPeerLabels);
  // The same for the capabilities the agent calls.
  readonly #outboundCapabilities = new LabelBound(AgentMetrics.maxCapabilityLabels);
  // The servers count their own refusals; they are read when prom-client collects.
  readonly #refusalSources: CountedSources<keyof ConnectionRefusals, 'port' | 'bound'>;
  // The same for the handshakes of the servers that count their own (gRPC's port).
  readonly #handshakeSources: CountedSources<keyof HandshakeCounts, 'side' | 'result'>;

  /**
   * Counts the connections a server of `port` refuses from now on in
   * `weave_connections_refused_total`, read from `read` (a server's
   * `connectionRefusals`) when prom-client collects: nothing is counted per
   * connection. Its series are 0 until then. Returns the function that stops
   * reading it, having counted its last refusals: call it once the server is
   * closed.
   */
  watchConnectionRefusals(port: ConnectionPort, read: () => ConnectionRefusals): () => void {
    for (const [, bound] of BOUNDS) this.connectionsRefused.inc({ port, bound }, 0);
    return this.#refusalSources.watch(
      read,
      BOUNDS.map(([key, bound]) => [key, { port, bound }] as const),
    );
  }

  /**
   * Counts the TLS handshakes a server completes or refuses from now on in
   * `weave_tls_handshakes_total{side="server"}`, read from `read` (a server's
   * `tlsHandshakes`) when prom-client collects, as
   * {@link watchConnectionRefusals} reads refusals. Returns the function that
   * stops reading it, having counted its last handshakes: call it once the
   * server is closed.
   */
  watchTlsHandshakes(read: () => HandshakeCounts): () => void {
    return this.#handshakeSources.watch(read, HANDSHAKE_SERIES);
  }

  /** Records one finished call. */
  observeCall(
    direction: CallDirection,
    capability: string,
    peer: string,
    outcome: CallOutcome,
    seconds: number,
  ): void {
    const slot = (direction === 'inbound' ? 0 : 3) + OUTCOME_SLOT[outcome];
    let byCapability = this.#calls.get(peer);
    if (byCapability === undefined) {
      // Only a peer not counted since the last clear is looked up in the
      // bound: a known peer's call costs no more than it did without one.
      peer = this.peerLabel(peer);
      byCapability = this.#calls.get(peer);
      if (byCapability === undefined) {
        byCapability = new Map();
        this.#calls.set(peer, byCapability);
      }
    }
    let cells = byCapability.get(capability);
    if (cells === undefined && direction === 'outbound') {
      // As for the peer: only a capability not counted since the last clear is looked up in the bound.
      capability = this.#outboundCapabilities.label(capability);
      cells = byCapability.get(capability);
    }
    if (cells === undefined) {
      cells = new Array<CallCell | undefined>(6);
      byCapability.set(capability, cells);
    }
    let cell = cells[slot];
    if (cell === undefined) {
      // Bounded: past 10 000 label sets, hand everything over and start again.
      if (this.#callSets >= 10_000) {
        this.#flushCalls(true);
        this.observeCall(direction, capability, peer, outcome, seconds);
        return;
      }
      cell = {
        labels: { direction, capability, peer, outcome },
        n: 0,
        duration: this.callDuration.labels({ direction, capability, outcome }),
      };
      cells[slot] = cell;
      this.#callSets++;
    }
    cell.n++;
    cell.duration.observe(seconds);
  }

  /**
   * The `peer` label for `peer`: itself if it has one or fewer than
   * {@link AgentMetrics.maxPeerLabels} peers do, else `other`. A URL (an
   * outbound call whose callee is unknown) is labelled without its user
   * name, password and fragment, its query shown as `?…`: they may hold
   * credentials. Every
   * count labelled by peer goes through it (a count added to {@link calls}
   * directly should too).
   */
  peerLabel(peer: string): string {
    return this.#peers.label(withoutCredentials(peer));
  }

  /** Adds the calls counted since the last flush to `calls`; with `clear`, forgets every label set. */
  #flushCalls(clear: boolean): void {
    for (const byCapability of this.#calls.values()) {
      for (const cells of byCapability.values()) {
        for (const c of cells) {
          if (c === undefined || c.n === 0) continue;
          this.calls.inc(c.labels, c.n);
          c.n = 0;
        }
      }
    }
    if (clear) {
      this.#calls.clear();
      this.#callSets = 0;
    }
  }

  /** Counts one task state transition. */
  taskState(state: string): void {
    if (!this.#states.bump(state)) this.#states.add(state, { state });
  }

  /**
   * Counts one request answered with an A2A error, by its reason (the A2A
   * error's `code`); a reason not in {@link REFUSAL_REASONS} counts as `other`.
   */
  requestRefused(reason: string): void {
    const r = REFUSAL_SET.has(reason) ? reason : 'other';
    if (!this.#refusals.bump(r)) this.#refusals.add(r, { reason: r });
  }

  /** Counts one policy decision. */
  authzDecision(direction: CallDirection, allowed: boolean): void {
    const key = allowed ? direction : `${direction}\0deny`;
    if (!this.#decisions.bump(key)) {
      this.#decisions.add(key, { direction, decision: allowed ? 'allow' : 'deny' });
    }
  }

  /** Counts one decision denied because the policy engine could not be reached or failed. */
  authzEngineError(direction: CallDirection): void {
    if (!this.#engineErrors.bump(direction)) this.#engineErrors.add(direction, { direction });
  }

  /** The exposition text for `/metrics`. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * One label set of `weave_calls_total`, the calls counted for it since the
 * last flush, and its series of `weave_call_duration_seconds` (which has no
 * peer label: the cells of several peers share it).
 */
interface CallCell {
  readonly labels: { direction: CallDirection; capability: string; peer: string; outcome: CallOutcome };
  n: number;
  readonly duration: ReturnType<AgentMetrics['callDuration']['labels']>;
}

const OUTCOME_SLOT: Record<CallOutcome, number> = { success: 0, error: 1, denied: 2 };

/**
 * The values a label takes at most: the first `max` distinct values keep
 * their own, any after them is `other`. A value once given its own keeps it.
 */
class LabelBound {
  readonly #max: number;
  readonly #own = new Set<string>();

  constructor(max: number) {
    this.#max = max;
  }

  label(value: string): string {
    if (this.#own.has(value)) return value;
    if (this.#own.size >= this.#max) return 'other';
    this.#own.add(value);
    return value;
  }
}

/**
 * `peer` as a URL may appear in logs (`redactUrl`: no user name or password,
 * a query shown as `?…`, no fragment). A SPIFFE ID has none of them (nor has
 * any other string without `@`, `?` or `#`), and is returned as it is, unparsed.
 */
function withoutCredentials(peer: string): string {
  return /[@?#]/.test(peer) ? redactUrl(peer) : peer;
}

/** A watched source of {@link CountedSources}: how to read it, where its counts go, and what was counted of it so far. */
interface CountedSource<K extends string, L extends string> {
  readonly read: () => Readonly<Record<K, number>>;
  readonly series: ReadonlyArray<readonly [K, Partial<Record<L, string>>]>;
  last: Readonly<Record<K, number>>;
}

/**
 * Counts that servers keep themselves (refusals, handshakes), added to a
 * prom-client counter when it collects: nothing is counted per connection.
 * Each watched source is read at each collect, and what it counted since it
 * was last read is added to the series its keys map to.
 */
class CountedSources<K extends string, L extends string> {
  readonly #counter: Counter<L>;
  readonly #sources = new Set<CountedSource<K, L>>();

  constructor(counter: Counter<L>) {
    this.#counter = counter;
  }

  /**
   * Reads `read` from now on, adding each key's growth to its series in
   * `series`. Returns the function that stops reading it, having added its
   * last counts (once: later calls do nothing).
   */
  watch(
    read: () => Readonly<Record<K, number>>,
    series: ReadonlyArray<readonly [K, Partial<Record<L, string>>]>,
  ): () => void {
    const source: CountedSource<K, L> = { read, series, last: read() };
    this.#sources.add(source);
    return () => {
      if (this.#sources.delete(source)) this.#take(source);
    };
  }

  /** Adds what every source counted since it was last read. */
  collect(): void {
    for (const source of this.#sources) this.#take(source);
  }

  #take(source: CountedSource<K, L>): void {
    const now = source.read();
    for (const [key, labels] of source.series) {
      const n = now[key] - source.last[key];
      if (n > 0) this.#counter.inc(labels, n);
    }
    source.last = now;
  }
}

/** Counts per label set, added to a prom-client counter on flush. */
class Tally<L extends string> {
  readonly #counter: Counter<L>;
  readonly #counts = new Map<string, { labels: Partial<Record<L, string>>; n: number }>();

  constructor(counter: Counter<L>) {
    this.#counter = counter;
  }

  /** Adds one to a label set already seen; false when it is new (then {@link add} it). */
  bump(key: string): boolean {
    const e = this.#counts.get(key);
    if (e === undefined) return false;
    e.n++;
    return true;
  }

  add(key: string, labels: Partial<Record<L, string>>): void {
    // Bounded: past 10 000 label sets, hand everything over and start again.
    if (this.#counts.size >= 10_000) this.flush(true);
    this.#counts.set(key, { labels, n: 1 });
  }

  flush(clear = false): void {
    for (const e of this.#counts.values()) {
      if (e.n > 0) this.#counter.inc(e.labels, e.n);
      e.n = 0;
    }
    if (clear) this.#counts.clear();
  }
}
