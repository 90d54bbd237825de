import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { context as otelContext } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { z } from 'zod';
import {
  A2AClient,
  A2AClientError,
  A2AError,
  AgentCardSignatureError,
  agentSpiffeId,
  isInterrupted,
  isResumableStreamError,
  isSettled,
  approxJsonBytes,
  redactUrl,
  type Artifact,
  type Message,
  type SendMessageParams,
  type Task,
} from '@weave/a2a';
import type { PolicyEnforcer } from '@weave/authz';
import { SpiffeId, type IdentityProvider, randomUuid } from '@weave/identity';
import {
  CircuitOpenError,
  ClientCertificateRequiredError,
  PeerVerificationError,
  SecureChannel,
  TransportIdentityError,
  requireSecureChannel,
  type TransportConfigInput,
} from '@weave/transport';
import type { AgentConfig } from './config.js';
import { AgentError, CallError, type AgentErrorCode, type CallErrorDetails } from './errors.js';
import type { AgentMetrics, CallOutcome } from './metrics.js';
import {
  DEADLINE_HEADER,
  DEADLINE_KEY,
  earliest,
  isDeadlineReason,
  scopedSignal,
  timeLeft,
  type CallScope,
} from './scope.js';
import { injectTraceHeaders, outgoingTraceContext, traceIdOf } from './tracing.js';
import { payloadOfParts, payloadOfTask, textOfParts } from './reply.js';

/** Metadata key under which a Weave callee reports its error code on a failed task. */
export const ERROR_METADATA_KEY = 'weave.dev/error';

/** Options of {@link SecureAgent.callAgent}. */
export interface CallAgentOptions<O extends z.ZodType | undefined = undefined> {
  /**
   * Time budget of the whole call in ms (default `transport.requestTimeoutMs`).
   * Inside a capability handler the caller's own deadline caps it. Anything
   * but a finite number above 0 is refused with `AGENT_CONFIG_INVALID` before
   * anything is sent.
   */
  readonly timeoutMs?: number;
  /** Aborts the call (the callee's task is abandoned; it stops at the propagated deadline). */
  readonly signal?: AbortSignal;
  /** Use SendStreamingMessage and report the callee's progress messages. */
  readonly stream?: boolean;
  /** Called with the text of each progress message (streaming calls). */
  readonly onProgress?: (text: string) => void;
  /** zod schema the result must match; the call then returns its output type. */
  readonly output?: O;
  /** A2A context id to group related calls. */
  readonly contextId?: string;
}

/** Result type of a call: the output schema's type, or `unknown`. */
export type CallResult<O> = O extends z.ZodType ? z.output<O> : unknown;

/**
 * Builds the outbound channel to one peer, for settings or instrumentation of
 * your own: it must return a `SecureChannel` that presents `identity`'s SVID
 * and verifies exactly `peer` (e.g. `new SecureChannel(identity, peer, { ...defaults, httpVersion: 'http2' })`).
 * `defaults` are the settings the agent would use (from `config.transport`).
 * Anything else fails the call: a plain undici `Agent` with
 * `CLIENT_CERTIFICATE_REQUIRED`, a channel verifying another peer with
 * `PEER_VERIFICATION_FAILED`, before anything is sent. The agent closes the
 * channels it got when it stops.
 */
export type ChannelFactory = (
  peer: SpiffeId,
  identity: IdentityProvider,
  defaults: TransportConfigInput,
) => SecureChannel;

interface Peer {
  readonly channel: SecureChannel;
  readonly client: A2AClient;
  /**
   * The scopes of the calls on this channel that have one (every streaming
   * call), so that stop() can end them: a streaming call whose connection is
   * destroyed would otherwise try to resume its stream over the closed channel.
   */
  readonly calls: Set<{ abort(reason: unknown): void }>;
  /**
   * Calls in flight on this channel: every call that got it from `#peer()`,
   * unary ones too (they have no scope in {@link Peer.calls}). A channel with
   * one is never closed for idleness.
   */
  inFlight: number;
  /** When its last call ended (`Date.now()`), or when it was made. */
  lastUsed: number;
}

interface Discovered {
  readonly id: SpiffeId;
  readonly expires: number;
}

const DISCOVERY_TTL_MS = 300_000;

/** How many times in a row a broken stream is resumed before the call fails. */
const STREAM_RESUMES = 3;
/** First wait before resuming a broken stream; doubled per consecutive break. */
const STREAM_RESUME_BACKOFF_MS = 100;
/**
 * Largest result a streaming call collects (its artifacts, as encoded): the
 * cap of a unary call's whole answer (the A2A client's `maxResponseBytes`
 * default). Each event is capped on its own; without this, a peer appending
 * chunks forever would grow the caller's heap until it ran out.
 */
const MAX_STREAM_RESULT_BYTES = 4 * 1024 * 1024;

/** Everything an agent needs to call other agents: peers, channels, breakers. */
export class Outbound {
  readonly #identity: IdentityProvider;
  readonly #enforcer: PolicyEnforcer;
  readonly #metrics: AgentMetrics;
  readonly #log: Logger;
  readonly #config: AgentConfig;
  readonly #transport: TransportConfigInput;
  readonly #peers = new Map<string, { readonly id: SpiffeId; readonly url: string }>();
  readonly #urls = new Map<string, SpiffeId>();
  readonly #discovered = new Map<string, Discovered>();
  readonly #channels = new Map<string, Peer>();
  readonly #channelFactory: ChannelFactory | undefined;
  /** `transport.channelIdleMs`: a channel unused this long is closed and forgotten. */
  readonly #channelIdleMs: number;
  /** The sweep of idle channels: one timer for every peer, running only while there are channels. */
  #sweep: NodeJS.Timeout | undefined;
  /** Idle channels still closing, for {@link close} to wait for. */
  readonly #idleClosing = new Set<Promise<void>>();
  #closed = false;
  /** The reason {@link close} aborts the calls still in flight with, once it began. */
  #stopping: AgentError | undefined;

  constructor(opts: {
    identity: IdentityProvider;
    enforcer: PolicyEnforcer;
    metrics: AgentMetrics;
    logger: Logger;
    config: AgentConfig;
    channel?: ChannelFactory | undefined;
  }) {
    this.#identity = opts.identity;
    this.#channelFactory = opts.channel;
    this.#enforcer = opts.enforcer;
    this.#metrics = opts.metrics;
    this.#log = opts.logger;
    this.#config = opts.config;
    const t = opts.config.transport;
    this.#channelIdleMs = t.channelIdleMs;
    this.#transport = {
      minTlsVersion: t.tlsMinVersion,
      connectTimeoutMs: t.connectTimeoutMs,
      requestTimeoutMs: t.requestTimeoutMs,
      retry: { retries: t.retries },
      // No circuitBreaker setting: each peer's channel breaks with the
      // transport's default, on the A2A client's calls over every binding
      // (the HTTP ones dispatched on it, gRPC through its guardCall).
    };
    for (const p of opts.config.peers) this.addPeer(p.id, p.url);
  }

  /** Where `id` is served. A later call replaces an earlier URL. */
  addPeer(id: SpiffeId | string, url: string): void {
    const peer = checkPeer(id, url);
    const key = peer.id.toString();
    const old = this.#peers.get(key);
    if (old !== undefined) this.#urls.delete(normalizeUrl(old.url));
    this.#peers.set(key, peer);
    this.#urls.set(normalizeUrl(peer.url), peer.id);
  }

  /** The known peers (configured, added, not discovered). */
  peers(): Array<{ id: string; url: string }> {
    return [...this.#peers.values()].map((p) => ({ id: p.id.toString(), url: p.url }));
  }

  /**
   * Circuit state per peer whose channel is open (called within
   * `transport.channelIdleMs`, or with a call in flight), for diagnostics.
   */
  circuitStates(): Record<string, string> {
    return Object.fromEntries(
      [...this.#channels].map(([peer, p]) => [peer, p.channel.circuitBreaker?.state ?? 'closed']),
    );
  }

  async call(
    self: SpiffeId,
    target: SpiffeId | string,
    capability: string,
    input: unknown,
    options: CallAgentOptions<z.ZodType | undefined>,
    parent?: CallScope,
  ): Promise<unknown> {
    const started = performance.now();
    // The call being served: handed over by ctx.callAgent, or found in the
    // active OpenTelemetry context when the application registered a manager.
    const inherited = parent ? parent.deadline : otelContext.active().getValue(DEADLINE_KEY);
    const trace = outgoingTraceContext(parent?.trace);
    const correlationId = traceIdOf(trace);
    const budget = options.timeoutMs ?? this.#config.transport.requestTimeoutMs;
    // Whole ms: the callee ignores a deadline header that is not an integer, so a
    // fractional budget would leave it without a deadline at all.
    const deadline = earliest(
      Math.floor(Date.now() + budget),
      typeof inherited === 'number' ? inherited : undefined,
    ) as number;
    // A URL target is shown without its user info and query (credentials, tokens),
    // also one that does not parse: the details go into errors, and from there into logs.
    const details: { target: string; capability: string; callee?: string } = {
      target: shownTarget(target),
      capability,
    };
    let outcome: CallOutcome = 'error';
    // What the failure log line says of why (the error's code, and for a denial its audit id).
    let failure: CallError | undefined;
    try {
      // The caller's own mistake, told apart from a failed call: nothing is resolved or sent.
      // Plain comparisons, no schema: this runs on every call.
      if (typeof budget !== 'number' || !Number.isFinite(budget) || budget <= 0) {
        throw new CallError(
          'AGENT_CONFIG_INVALID',
          `options.timeoutMs must be a number of milliseconds above 0, got ${
            typeof budget === 'number' ? String(budget) : typeof budget
          }`,
          details,
        );
      }
      if (this.#closed) throw new CallError('AGENT_NOT_STARTED', 'the agent is stopped', details);
      // A known peer's ID string (the usual target) is resolved here, without
      // awaiting an async function: one promise and one turn less per call.
      const known = typeof target === 'string' ? this.#peers.get(target) : undefined;
      const { id, url } = known ?? (await this.#resolve(target, details, deadline));
      details.callee = id.toString();
      if (Date.now() >= deadline) {
        throw new CallError('DEADLINE_EXCEEDED', 'the deadline passed before the call was sent', details);
      }
      const decision = await this.#enforcer.checkOutbound({
        caller: self,
        callee: id,
        action: capability,
        context: { correlationId, deadline },
      });
      // `=== true`: an enforcer's answer of `"false"` or `1` is no allow.
      if (decision.allowed !== true) {
        outcome = 'denied';
        throw new CallError(
          'CALL_DENIED',
          `policy refused ${self.toString()} → ${id.toString()} "${capability}": ${decision.reason}`,
          { ...details, deniedBy: 'caller', decision, auditId: decision.auditId },
        );
      }
      const peer = this.#peer(id, details);
      const result = await this.#send(
        peer,
        url,
        capability,
        input,
        options,
        parent?.signal,
        trace,
        deadline,
        details,
      );
      outcome = 'success';
      return result;
    } catch (err) {
      const mapped = this.#mapError(err, details, options.signal, parent?.signal, deadline);
      if (mapped.code === 'CALL_DENIED') outcome = 'denied';
      failure = mapped;
      throw mapped;
    } finally {
      const seconds = (performance.now() - started) / 1000;
      // The target as shown, not as given: the metrics keep a URL's cells under
      // its redacted label, so the raw URL would miss them and be redacted again on every call.
      this.#metrics.observeCall('outbound', capability, details.callee ?? details.target, outcome, seconds);
      // The log line is built only when it is written (most calls succeed, below the info level).
      if (outcome !== 'success' || this.#log.isLevelEnabled('info')) {
        const entry = {
          correlationId,
          caller: self.toString(),
          callee: details.callee ?? details.target,
          capability,
          direction: 'outbound',
          outcome,
          ms: Math.round(seconds * 1e4) / 10,
        };
        if (outcome !== 'success') {
          this.#log.warn(
            failure === undefined ? entry : { ...entry, ...failureFields(failure) },
            outcome === 'denied' ? 'call denied' : 'call failed',
          );
        } else this.#log.info(entry, 'call finished');
      }
    }
  }

  /**
   * Closes every peer's channel. The calls in flight get
   * {@link CHANNEL_CLOSE_GRACE_MS} to finish; those still running then fail
   * (`CALL_FAILED`, saying the agent stopped while the call was in flight),
   * without resuming, and their connections end.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#sweep = undefined;
    const peers = [...this.#channels.values()];
    this.#channels.clear();
    const reason = (this.#stopping = new AgentError(
      'AGENT_STOPPING',
      `the agent stopped while the call was in flight (it gives its calls ${CHANNEL_CLOSE_GRACE_MS} ms to finish)`,
    ));
    await Promise.all([
      ...peers.map((p) => closePeer(p, CHANNEL_CLOSE_GRACE_MS, reason)),
      ...this.#idleClosing,
    ]);
  }

  /**
   * Closes and forgets the channels with no call in flight that no call has
   * used for `transport.channelIdleMs` (the next call to that peer makes a new
   * one): an agent calling peers that come and go would otherwise keep a
   * channel (its pool, breaker timers, TLS sessions, rotation subscription)
   * per peer it ever called. Stops the sweep once no channel is left.
   */
  #closeIdle(): void {
    const now = Date.now();
    for (const [key, p] of this.#channels) {
      const idleMs = now - p.lastUsed;
      if (p.inFlight > 0 || idleMs < this.#channelIdleMs) continue;
      this.#channels.delete(key);
      this.#log.debug({ callee: key, idleMs }, 'idle channel closed');
      // No call uses it, so the graceful close is quick; the reason only ends
      // what a call left behind (a cancelTask still in flight) past the grace.
      const reason = new AgentError(
        'CALL_FAILED',
        `the channel to ${key} was closed after ${idleMs} ms unused`,
      );
      const closing = closePeer(p, CHANNEL_CLOSE_GRACE_MS, reason).finally(() =>
        this.#idleClosing.delete(closing),
      );
      this.#idleClosing.add(closing);
    }
    if (this.#channels.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
    }
  }

  /** The failure of a call that {@link close} ended, when `signal` was aborted by it. */
  #stoppedCall(
    signal: AbortSignal | undefined,
    details: CallErrorDetails,
    cause?: unknown,
  ): CallError | undefined {
    if (signal === undefined || !signal.aborted || signal.reason !== this.#stopping) return undefined;
    return new CallError(
      'CALL_FAILED',
      (signal.reason as AgentError).message,
      details,
      cause === undefined ? undefined : { cause },
    );
  }

  // ---- resolution ------------------------------------------------------------------

  async #resolve(
    target: SpiffeId | string,
    details: CallErrorDetails,
    deadline: number,
  ): Promise<{ id: SpiffeId; url: string }> {
    // A target given exactly as a known peer's ID string is resolved by call() itself.
    if (target instanceof SpiffeId || (typeof target === 'string' && target.startsWith('spiffe:'))) {
      let id: SpiffeId;
      try {
        id = target instanceof SpiffeId ? target : SpiffeId.parse(target);
      } catch (err) {
        throw new CallError('PEER_UNKNOWN', `invalid SPIFFE ID: ${(err as Error).message}`, details, {
          cause: err,
        });
      }
      const peer = this.#peers.get(id.toString());
      if (peer === undefined) {
        throw new CallError(
          'PEER_UNKNOWN',
          `no URL known for ${id.toString()}; add it to config.peers or call addPeer()`,
          details,
        );
      }
      return peer;
    }
    if (typeof target !== 'string') {
      throw new CallError('PEER_UNKNOWN', 'target must be a SpiffeId, a SPIFFE ID or an https URL', details);
    }
    let u: URL;
    try {
      u = new URL(target);
    } catch {
      throw new CallError(
        'PEER_UNKNOWN',
        `target is neither a SPIFFE ID nor a URL: ${details.target}`,
        details,
      );
    }
    if (u.protocol !== 'https:') {
      throw new CallError('PEER_UNKNOWN', `only https targets are called, got ${u.protocol}//`, details);
    }
    refuseUserInfo(u, 'target URL', details);
    const key = normalizeUrl(target);
    const byUrl = this.#urls.get(key);
    if (byUrl) return { id: byUrl, url: target };
    const hit = this.#discovered.get(key);
    if (hit && hit.expires > Date.now()) return { id: hit.id, url: target };
    const id = await this.#discover(target, details, deadline);
    if (this.#discovered.size > 1000) this.#discovered.clear();
    this.#discovered.set(key, { id, expires: Date.now() + DISCOVERY_TTL_MS });
    return { id, url: target };
  }

  /**
   * Learns who serves an unknown URL: fetches its agent card over mTLS from a
   * server with any verified SVID, checks the card's signature (signed by the
   * SVID of the SPIFFE ID it declares, per `discovery.cardSignatures`), and
   * accepts that ID only when it is the ID the TLS handshake proved. Only the public card is fetched;
   * no capability request goes out before the outbound policy check.
   */
  async #discover(url: string, details: CallErrorDetails, deadline: number): Promise<SpiffeId> {
    const seen = new Set<string>();
    const channel = new SecureChannel(
      this.#identity,
      // Any peer whose chain verifies against its own trust domain's bundle.
      () => ({ ok: true }),
      { ...this.#transport, retry: { retries: 0 } },
    );
    channel.onPeerVerified((e) => {
      seen.add(e.peer.toString());
      this.#metrics.tlsHandshakes.inc({ side: 'client', result: 'ok' });
    });
    try {
      const client = new A2AClient({
        dispatcher: channel,
        timeoutMs: Math.max(1, timeLeft(deadline)),
        // The signer must be the SPIFFE ID the card declares; that the server proved the same ID is checked below.
        cardSignatures: { policy: this.#config.discovery.cardSignatures, bundles: this.#identity },
      });
      const card = await client.discoverAgent(url);
      const claimed = agentSpiffeId(card);
      if (!claimed) {
        throw new CallError(
          'PEER_UNKNOWN',
          `the agent card at ${redactUrl(url)} names no SPIFFE ID`,
          details,
        );
      }
      if (seen.size !== 1 || !seen.has(claimed)) {
        throw new CallError(
          'PEER_VERIFICATION_FAILED',
          `the agent card at ${redactUrl(url)} claims ${claimed} but the server presented ${[...seen].join(', ') || 'nothing'}`,
          details,
        );
      }
      return SpiffeId.parse(claimed);
    } finally {
      // destroy(), not close(): the card fetch is settled, and a graceful close
      // would wait for a connect still pending to a peer that never finishes
      // its handshake — up to connectTimeoutMs past the call's deadline.
      await channel.destroy().catch(() => undefined);
    }
  }

  #peer(id: SpiffeId, details: CallErrorDetails): Peer {
    const key = id.toString();
    let p = this.#channels.get(key);
    if (!p) {
      // A call that was resolving its peer or awaiting its policy check when
      // stop() came: a channel made now would never be closed.
      if (this.#closed) throw new CallError('AGENT_NOT_STARTED', 'the agent is stopped', details);
      const channel = this.#channelFactory
        ? this.#suppliedChannel(id, details)
        : new SecureChannel(this.#identity, id, this.#transport);
      channel.onPeerVerified(() => this.#metrics.tlsHandshakes.inc({ side: 'client', result: 'ok' }));
      p = {
        channel,
        client: new A2AClient({
          dispatcher: channel,
          timeoutMs: this.#config.transport.requestTimeoutMs,
          streamIdleTimeoutMs: this.#config.transport.streamIdleTimeoutMs,
        }),
        calls: new Set(),
        inFlight: 0,
        lastUsed: Date.now(),
      };
      this.#channels.set(key, p);
      // A channel is closed between channelIdleMs and 1.5 × channelIdleMs after its last call.
      this.#sweep ??= setInterval(() => this.#closeIdle(), this.#channelIdleMs / 2).unref();
    }
    return p;
  }

  /** The channel factory's channel to `id`, refused unless it is a SecureChannel verifying exactly `id`. */
  #suppliedChannel(id: SpiffeId, details: CallErrorDetails): SecureChannel {
    const given: unknown = this.#channelFactory!(id, this.#identity, { ...this.#transport });
    const channel = requireSecureChannel(given, `the channel factory's channel to ${id.toString()}`);
    if (channel.expectedPeer !== id.toString()) {
      void channel.close().catch(() => undefined);
      throw new CallError(
        'PEER_VERIFICATION_FAILED',
        `the channel factory's channel to ${id.toString()} verifies ${channel.expectedPeer} instead: ` +
          'a channel must accept exactly the peer it is built for',
        details,
      );
    }
    return channel;
  }

  // ---- the call itself -----------------------------------------------------------------

  async #send(
    peer: Peer,
    url: string,
    capability: string,
    input: unknown,
    options: CallAgentOptions<z.ZodType | undefined>,
    parentSignal: AbortSignal | undefined,
    trace: ReturnType<typeof outgoingTraceContext>,
    deadline: number,
    details: CallErrorDetails,
  ): Promise<unknown> {
    const message: Message = {
      messageId: randomUuid(),
      role: 'ROLE_USER',
      parts: [{ data: input === undefined ? null : input }],
      metadata: { skill: capability },
    };
    if (options.contextId !== undefined) message.contextId = options.contextId;
    // The caller wants the result, not the conversation: no history back (smaller answer to encode, send and validate).
    const params: SendMessageParams = { message, configuration: { historyLength: 0 } };
    const headers = injectTraceHeaders(trace, { [DEADLINE_HEADER]: String(deadline) });
    // A unary call is bounded by undici's timeouts; a signal is built only when one is needed.
    let scoped =
      options.stream || options.signal || parentSignal
        ? scopedSignal([options.signal, parentSignal], deadline)
        : undefined;
    if (scoped) peer.calls.add(scoped);
    // Counted from here, in the same turn as #peer() handed the channel over:
    // no sweep runs in between. A counter and a timestamp per call, no timer.
    peer.inFlight++;
    // A streamed (or followed) call's task: its id once an event named it, and
    // whether it settled; a call given up before then cancels it (see the catch below).
    let streamed: StreamedTask | undefined = options.stream ? { id: undefined, settled: false } : undefined;
    try {
      let task: Task;
      if (options.stream) {
        task = await this.#stream(peer, url, params, headers, scoped!.signal, options.onProgress, streamed!);
        // An aborted stream can end quietly instead of throwing: say why it ended.
        const signal = scoped!.signal;
        if (signal.aborted) {
          throw (
            this.#stoppedCall(signal, details) ??
            (isDeadlineReason(signal.reason)
              ? new CallError('DEADLINE_EXCEEDED', 'the call ran past its deadline', details)
              : new CallError('CALL_FAILED', 'the call was aborted by the caller', details))
          );
        }
        if (!isSettled(task.status.state)) {
          throw new CallError(
            Date.now() >= deadline ? 'DEADLINE_EXCEEDED' : 'CALL_FAILED',
            `the stream ended while the task was ${task.status.state}`,
            { ...details, taskId: task.id, taskState: task.status.state },
          );
        }
      } else {
        // Two literals, not a spread followed by more keys (V8's slow path on Node 20, per call).
        const timeoutMs = Math.max(1, timeLeft(deadline));
        const r = await peer.client.sendMessage(
          url,
          params,
          scoped ? { headers, signal: scoped.signal, timeoutMs } : { headers, timeoutMs },
        );
        if ('message' in r) return resultOfMessage(r.message, options.output, details);
        task = r.task;
        if (!isSettled(task.status.state)) {
          // Answered before the task settled, with the deadline still ahead:
          // followed as a streamed call is (its signal: stop, abort, deadline),
          // and canceled if given up.
          if (!scoped) peer.calls.add((scoped = scopedSignal([], deadline)));
          streamed = { id: task.id, settled: false };
          task = await this.#follow(peer, url, task, headers, scoped.signal);
          streamed.settled = true;
        }
      }
      if (isInterrupted(task.status.state)) {
        // callAgent is one request, one result: a task waiting for input would wait forever.
        peer.client.cancelTask(url, task.id).catch(() => undefined);
      }
      return resultOfTask(task, options.output, details);
    } catch (err) {
      // A streamed or followed call given up (the caller's abort, its
      // deadline) leaves its task running on the callee: only a Weave callee
      // reads the deadline header, and closing a stream does not cancel a task (§3.1.6).
      // Cancelled here, best effort; not while the agent stops (the channel
      // is going) nor for a task that settled.
      if (streamed?.id !== undefined && !streamed.settled && scoped?.signal.aborted) {
        const stopped = this.#stoppedCall(scoped.signal, details, err);
        if (stopped) throw stopped;
        // With the call's trace, for the callee's log; not its deadline, which may be what passed.
        const { [DEADLINE_HEADER]: _deadline, ...traced } = headers;
        peer.client.cancelTask(url, streamed.id, { headers: traced }).catch(() => undefined);
        // Named in the error: the caller can read what the task did before it was canceled.
        throw this.#mapError(
          err,
          { ...details, taskId: streamed.id },
          options.signal,
          parentSignal,
          deadline,
        );
      }
      throw this.#stoppedCall(scoped?.signal, details, err) ?? err;
    } finally {
      peer.inFlight--;
      peer.lastUsed = Date.now();
      if (scoped) {
        scoped.dispose();
        peer.calls.delete(scoped);
      }
    }
  }

  /**
   * Follows `task`, which a blocking SendMessage was answered with before it
   * settled, until it settles: the callee's own wait may be shorter than
   * this call's deadline (Weave's `limits.blockingTimeoutMs`, 60 s by
   * default; other servers have theirs), or the replica that answered
   * stopped and handed the task to another. Read with GetTask, which every
   * server answers (streaming or not) and which, behind a load balancer,
   * reaches whichever replica holds the task now, at growing intervals
   * ({@link FOLLOW_FIRST_MS} doubled up to {@link FOLLOW_MAX_MS}: a task
   * that outlived a blocking wait is a long one). A read that fails on the
   * way (a replica going away, a connection refused, a retryable
   * UNAVAILABLE) is tried again at the next interval; any other answer of
   * the callee ends the call. `signal` ends it too (deadline, abort, stop).
   */
  async #follow(
    peer: Peer,
    url: string,
    task: Task,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<Task> {
    // The last read that failed: what the call ends with (as its cause) if the signal ends it next.
    let failure: unknown;
    for (let wait = FOLLOW_FIRST_MS; ; wait = Math.min(wait * 2, FOLLOW_MAX_MS)) {
      try {
        await delay(wait, undefined, { signal });
      } catch (err) {
        throw failure ?? err;
      }
      try {
        // No history back, as the call asked of SendMessage.
        task = await peer.client.getTask(url, task.id, 0, { headers, signal });
      } catch (err) {
        if (signal.aborted || !worthReadingAgain(err)) throw err;
        failure = err;
        this.#log.debug({ taskId: task.id, err }, 'following a task: read failed; trying again');
        continue;
      }
      failure = undefined;
      if (isSettled(task.status.state)) return task;
    }
  }

  /**
   * Consumes a streaming call to its settled state. The client resumes a
   * stream that breaks or ends before the task settles with SubscribeToTask
   * after the last event id seen (a Weave server replays what was missed),
   * so progress is reported once each and the result is not lost with a
   * connection. The resubscription is part of the call the outbound policy
   * already allowed (same caller, callee, capability and task; the callee
   * authorizes it again on its side), so no new decision is taken here.
   */
  async #stream(
    peer: Peer,
    url: string,
    params: SendMessageParams,
    headers: Record<string, string>,
    signal: AbortSignal,
    onProgress: ((text: string) => void) | undefined,
    streamed: StreamedTask,
  ): Promise<Task> {
    let task: Task | undefined;
    // The task's artifacts by id (the first of an id, as appends extend it): one lookup per event.
    let artifactsById = new Map<string, Artifact>();
    // Encoded size of the artifacts collected so far.
    let collected = 0;
    const grow = (bytes: number, taskId: string): void => {
      collected += bytes;
      if (collected > MAX_STREAM_RESULT_BYTES) {
        // Thrown inside the loop: leaving it closes the stream, nothing more is read.
        throw new A2AClientError(
          'RESPONSE_TOO_LARGE',
          `the streamed result of task ${taskId} exceeds ${MAX_STREAM_RESULT_BYTES} bytes`,
        );
      }
    };
    const events = peer.client.streamTaskUpdates(url, params, {
      headers,
      signal,
      maxReconnects: STREAM_RESUMES,
      resumeBackoffMs: STREAM_RESUME_BACKOFF_MS,
      onResume: ({ taskId, lastEventId, attempt, error }) =>
        this.#log.info({ taskId, lastEventId, attempt, err: error }, 'resuming a broken stream'),
    });
    for await (const e of events) {
      if ('task' in e) {
        task = e.task;
        artifactsById = new Map();
        // A snapshot replaces everything collected before it.
        collected = 0;
        for (const a of task.artifacts ?? []) {
          grow(approxJsonBytes(a), task.id);
          if (!artifactsById.has(a.artifactId)) artifactsById.set(a.artifactId, a);
        }
      } else if ('statusUpdate' in e) {
        if (!task)
          task = {
            id: e.statusUpdate.taskId,
            contextId: e.statusUpdate.contextId,
            status: e.statusUpdate.status,
          };
        task.status = e.statusUpdate.status;
        const text = textOfParts(e.statusUpdate.status.message?.parts);
        if (text !== undefined && e.statusUpdate.status.state === 'TASK_STATE_WORKING' && onProgress) {
          try {
            onProgress(text);
          } catch (err) {
            this.#log.warn({ err }, 'onProgress threw; ignored');
          }
        }
      } else if ('artifactUpdate' in e) {
        if (!task)
          task = {
            id: e.artifactUpdate.taskId,
            contextId: e.artifactUpdate.contextId,
            status: { state: 'TASK_STATE_WORKING' },
          };
        const list = (task.artifacts ??= []);
        const a = e.artifactUpdate.artifact;
        const prev = artifactsById.get(a.artifactId);
        if (prev && e.artifactUpdate.append) {
          grow(approxJsonBytes(a.parts), task.id);
          for (const p of a.parts) prev.parts.push(p);
        } else {
          grow(approxJsonBytes(a), task.id);
          list.push(a);
          if (!prev) artifactsById.set(a.artifactId, a);
        }
      } else if ('message' in e) {
        return {
          id: e.message.taskId ?? '',
          contextId: e.message.contextId ?? '',
          status: { state: 'TASK_STATE_COMPLETED', message: e.message },
        };
      }
      if (task) {
        streamed.id = task.id;
        // The server ends the stream here; a break after this point loses nothing.
        if (isSettled(task.status.state)) {
          streamed.settled = true;
          return task;
        }
      }
    }
    // The client ends a stream only settled or with an error; the caller says what an unsettled task means.
    if (task) return task;
    throw new A2AClientError('STREAM_ENDED', 'the event stream ended before the task settled');
  }

  #mapError(
    err: unknown,
    details: CallErrorDetails,
    userSignal: AbortSignal | undefined,
    parentSignal: AbortSignal | undefined,
    deadline: number,
  ): CallError {
    if (err instanceof CallError) return err;
    const d = { ...details };
    if (err instanceof ClientCertificateRequiredError) {
      return new CallError('CLIENT_CERTIFICATE_REQUIRED', err.message, d, { cause: err });
    }
    const open = findCause(err, (e) => e instanceof CircuitOpenError);
    if (open) {
      return new CallError('CALL_FAILED', `circuit open for ${d.callee ?? d.target}: not calling`, d, {
        cause: err,
      });
    }
    const own = findCause(err, (e) => e instanceof TransportIdentityError);
    if (own) {
      // Our own identity is missing or expired: nothing was sent, and the peer is not to blame.
      return new CallError('AGENT_NO_IDENTITY', (own as Error).message, d, { cause: err });
    }
    const pv = findCause(err, (e) => e instanceof PeerVerificationError);
    if (pv) {
      this.#metrics.tlsHandshakes.inc({ side: 'client', result: 'rejected' });
      return new CallError('PEER_VERIFICATION_FAILED', (pv as Error).message, d, { cause: err });
    }
    if (err instanceof AgentCardSignatureError) {
      // The card's signature is part of proving who the peer is.
      return new CallError(
        'PEER_VERIFICATION_FAILED',
        `agent card signature refused (${err.code}): ${err.message}`,
        { ...d, remoteCode: err.code },
        { cause: err },
      );
    }
    if (err instanceof A2AError) {
      const auditId = err.auditId;
      if (err.code === 'PERMISSION_DENIED') {
        return new CallError(
          'CALL_DENIED',
          `the callee refused the call: ${err.message}`,
          { ...d, deniedBy: 'callee', jsonRpcCode: err.jsonRpcCode, ...(auditId ? { auditId } : {}) },
          { cause: err },
        );
      }
      return new CallError(
        'CALL_FAILED',
        `the callee answered ${err.jsonRpcCode}: ${err.message}`,
        { ...d, jsonRpcCode: err.jsonRpcCode, remoteCode: err.code },
        { cause: err },
      );
    }
    if (userSignal?.aborted && !isDeadlineReason(userSignal.reason)) {
      return new CallError('CALL_FAILED', 'the call was aborted by the caller', d, { cause: err });
    }
    if (parentSignal?.aborted && !isDeadlineReason(parentSignal.reason)) {
      return new CallError(
        'CALL_FAILED',
        'the call was abandoned: the call it was made for was canceled or its agent is stopping',
        d,
        { cause: err },
      );
    }
    // However undici words it (headers timeout, aborted body, closed stream), a
    // transport failure at or after the deadline is the deadline.
    if (Date.now() >= deadline) {
      return new CallError('DEADLINE_EXCEEDED', 'the call ran past its deadline', d, { cause: err });
    }
    const timeout = findCause(err, (e) => {
      const code = (e as { code?: unknown }).code;
      const name = (e as { name?: unknown }).name;
      return (
        code === 'UND_ERR_HEADERS_TIMEOUT' ||
        code === 'UND_ERR_BODY_TIMEOUT' ||
        name === 'TimeoutError' ||
        (code === 'UND_ERR_ABORTED' && isDeadlineReason((e as { cause?: unknown }).cause)) ||
        isDeadlineReason(e)
      );
    });
    if (timeout)
      return new CallError('DEADLINE_EXCEEDED', 'the call ran past its deadline', d, { cause: err });
    const msg = err instanceof Error ? err.message : String(err);
    return new CallError('CALL_FAILED', msg, d, { cause: err });
  }
}

/**
 * How long a channel may take to close gracefully when the agent stops (its
 * tasks are drained by then). A graceful close also waits for a connect still
 * pending, which against a peer that accepts TCP and never answers the TLS
 * handshake lasts until `transport.connectTimeoutMs` (up to 10 minutes).
 */
const CHANNEL_CLOSE_GRACE_MS = 1_000;

/**
 * Closes `peer`'s channel, and destroys it with `reason` if that takes longer
 * than `ms`: the calls still running then fail and their connections end.
 * Their scopes are aborted with `reason` first, also when the channel closed
 * in time (a streaming call waiting to resume has no request in flight): a
 * streaming call ends instead of resuming over the closed channel.
 */
async function closePeer(peer: Peer, ms: number, reason: AgentError): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = await Promise.race([
    peer.channel.close().then(
      () => false,
      () => false,
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), ms);
    }),
  ]);
  clearTimeout(timer);
  for (const call of [...peer.calls]) call.abort(reason);
  peer.calls.clear();
  if (late) await peer.channel.destroy(reason).catch(() => undefined);
}

/** Whether an error says something about the peer's health (for the circuit breaker). */
function findCause(err: unknown, pred: (e: object) => boolean): object | undefined {
  let e: unknown = err;
  for (let i = 0; i < 6 && e !== null && typeof e === 'object'; i++) {
    if (pred(e)) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Validates a peer entry: a valid SPIFFE ID and an https URL.
 *
 * @throws {CallError} `PEER_UNKNOWN` naming what is wrong.
 */
export function checkPeer(id: SpiffeId | string, url: string): { id: SpiffeId; url: string } {
  const details = { target: String(id), capability: '' };
  let sid: SpiffeId;
  try {
    sid = typeof id === 'string' ? SpiffeId.parse(id) : id;
  } catch (err) {
    throw new CallError('PEER_UNKNOWN', `invalid peer SPIFFE ID: ${(err as Error).message}`, details, {
      cause: err,
    });
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // No cause: the URL parser's error holds the URL as given (`input`), which
    // util.inspect and console.error print.
    throw new CallError('PEER_UNKNOWN', `invalid peer URL ${JSON.stringify(redactUrl(url))}`, details);
  }
  if (u.protocol !== 'https:') {
    throw new CallError('PEER_UNKNOWN', `peer URL must be https, got ${redactUrl(u)}`, details);
  }
  refuseUserInfo(u, 'peer URL', details);
  return { id: sid, url };
}

/**
 * Refuses a URL holding a user name or password, as config.peers' URLs are
 * refused at load (config.ts, `httpsUrl`, same wording): the agent
 * authenticates with its SVID, and a URL ends up in errors and logs (the A2A
 * client's messages quote it as given). The URL is not quoted: it holds a secret.
 *
 * @throws {CallError} `PEER_UNKNOWN`.
 */
function refuseUserInfo(u: URL, what: string, details: CallErrorDetails): void {
  if (u.username !== '' || u.password !== '') {
    throw new CallError(
      'PEER_UNKNOWN',
      `${what} must not hold a user name or password (user:password@): the agent authenticates with its SVID, and a URL is printed and logged`,
      details,
    );
  }
}

/**
 * A call's target as errors and logs show it: a SPIFFE ID (or a string that
 * claims to be one) as it is, anything else through `redactUrl` (@weave/a2a:
 * no user info, query or fragment, also for a string that does not parse).
 */
export function shownTarget(target: SpiffeId | string): string {
  const text = String(target);
  return target instanceof SpiffeId || text.startsWith('spiffe:') ? text : redactUrl(text);
}

/** Why a call failed, for its log line: the code, who denied it and the audit id, the callee's A2A code. */
function failureFields(err: CallError): Record<string, string> {
  const f: Record<string, string> = { code: err.code };
  if (err.deniedBy !== undefined) f.deniedBy = err.deniedBy;
  if (err.auditId !== undefined) f.auditId = err.auditId;
  if (err.remoteCode !== undefined) f.remoteCode = err.remoteCode;
  return f;
}

/**
 * Whether a failed read of a followed task may succeed if tried again: the
 * server's retryable UNAVAILABLE (a replica shutting down), or a transport
 * failure a new connection may not meet (refused, reset, a breaker open for
 * now). Not an answer (any other A2A error, one too large or malformed), a
 * peer that failed verification, this agent's own identity gone, nor a
 * channel closed for good.
 */
function worthReadingAgain(err: unknown): boolean {
  if (err instanceof A2AError) return err.code === 'UNAVAILABLE';
  if (!(err instanceof A2AClientError)) return false;
  // A read that took too long (undici's own timeouts; the call's deadline aborts the signal instead).
  if (err.code === 'DEADLINE_EXCEEDED') return true;
  if (err.code !== 'TRANSPORT_FAILED' || !isResumableStreamError(err)) return false;
  return !findCause(err, (e) => e instanceof PeerVerificationError || e instanceof TransportIdentityError);
}

/** The first wait of {@link Outbound.#follow} before it reads the task, in ms. */
const FOLLOW_FIRST_MS = 100;
/** The longest wait between two reads of a followed task, in ms. */
const FOLLOW_MAX_MS = 1_000;

/** What a streamed call saw of its task: its id once an event named it, and whether it settled. */
interface StreamedTask {
  id: string | undefined;
  settled: boolean;
}

function normalizeUrl(url: string): string {
  const u = new URL(url);
  const path = u.pathname.replace(/\/+$/, '');
  return `${u.origin}${path}`;
}

/** Validates a result against `callAgent`'s `output` schema (also used by OfflineTestAgent's stand-in). */
export function checkOutput(
  value: unknown,
  output: z.ZodType | undefined,
  details: CallErrorDetails | (() => CallErrorDetails),
): unknown {
  if (!output) return value;
  const r = output.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new CallError(
    'CALL_FAILED',
    `the callee's result does not match the output schema${issue ? ` at ${issue.path.join('.') || '(root)'}: ${issue.message}` : ''}`,
    typeof details === 'function' ? details() : details,
  );
}

function resultOfMessage(
  m: Message,
  output: z.ZodType | undefined,
  details: CallErrorDetails | (() => CallErrorDetails),
): unknown {
  return checkOutput(payloadOfParts(m.parts).value, output, details);
}

function resultOfTask(task: Task, output: z.ZodType | undefined, details: CallErrorDetails): unknown {
  const state = task.status.state;
  // Built only for an error: an object spread per successful call showed up in profiles.
  const d = (): CallErrorDetails => ({ ...details, taskId: task.id, taskState: state });
  if (state === 'TASK_STATE_COMPLETED') {
    // One artifact: its payload (a value, text or file); several (`reply.artifacts`): each one's, in order.
    return checkOutput(payloadOfTask(task).value, output, d);
  }
  const meta = task.status.message?.metadata?.[ERROR_METADATA_KEY] as
    { code?: unknown; message?: unknown } | undefined;
  const remoteCode = typeof meta?.code === 'string' ? meta.code : undefined;
  const text = textOfParts(task.status.message?.parts) ?? `task ended in ${state}`;
  const code: AgentErrorCode = remoteCode === 'DEADLINE_EXCEEDED' ? 'DEADLINE_EXCEEDED' : 'CALL_FAILED';
  throw new CallError(code, `the callee's task ended in ${state}: ${text}`, {
    ...d(),
    ...(remoteCode ? { remoteCode } : {}),
  });
}
