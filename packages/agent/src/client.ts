import { pino, type Logger } from 'pino';
import type { z } from 'zod';
import type { PolicyEnforcer } from '@weave/authz';
import type { IdentityProvider, SpiffeId } from '@weave/identity';
import { parseAgentConfig, type AgentConfigInput } from './config.js';
import { AgentMetrics } from './metrics.js';
import { MeteredEnforcer } from './observability.js';
import { Outbound, type CallAgentOptions, type CallResult, type ChannelFactory } from './outbound.js';

/** Options of {@link WeaveClient}. */
export interface WeaveClientOptions {
  /** Whose SVID the calls present (any `IdentityProvider`). Not owned: `close()` leaves it open. */
  readonly identity: IdentityProvider;
  /**
   * The outbound policy: asked before every call, as an agent's is. There is
   * no client without one. Not owned: `close()` leaves it open.
   */
  readonly enforcer: PolicyEnforcer;
  /** A name for logs and metrics (lowercase, digits, dashes; default `weave-client`). */
  readonly name?: string;
  /** Static discovery: where each peer's A2A endpoint is. */
  readonly peers?: AgentConfigInput['peers'];
  /** The same transport settings as an agent's config (`transport:` section). */
  readonly transport?: AgentConfigInput['transport'];
  /**
   * The same discovery settings as an agent's config (`discovery:` section):
   * `cardSignatures` is `required` by default (a peer called by URL proves
   * its SPIFFE ID with a card signed by that ID's SVID); `if-present` also
   * calls a peer whose card is unsigned (one that predates card signing, or
   * another SDK's), never one badly signed.
   */
  readonly discovery?: AgentConfigInput['discovery'];
  /** Logger (default: pino on stdout at `info`). */
  readonly logger?: Logger;
  /** Builds the channel to each peer instead of the default `SecureChannel` (see {@link ChannelFactory}). */
  readonly channel?: ChannelFactory;
}

/**
 * `callAgent` without serving anything: the outbound half of a
 * {@link SecureAgent} (policy first, a SPIFFE-verified channel per peer,
 * retries where safe, a circuit breaker per peer, deadline and trace
 * propagation), for a process that only calls agents: a CLI, a job, a web
 * backend. Errors are the same {@link CallError}s.
 *
 * @throws {AgentConfigError} for invalid `peers`, `transport` or `discovery` settings.
 */
export class WeaveClient {
  readonly #identity: IdentityProvider;
  readonly #outbound: Outbound;
  /** Counters and histograms of the calls (a prom-client registry of its own). */
  readonly metrics: AgentMetrics;

  constructor(options: WeaveClientOptions) {
    const name = options.name ?? 'weave-client';
    const config = parseAgentConfig(
      {
        name,
        peers: options.peers ?? [],
        transport: options.transport ?? {},
        ...(options.discovery === undefined ? {} : { discovery: options.discovery }),
      },
      { enforcer: true, env: {} },
    );
    this.#identity = options.identity;
    this.metrics = new AgentMetrics({ agent: name });
    this.#outbound = new Outbound({
      identity: options.identity,
      // As SecureAgent's: a decision counted, and a throwing enforcer or one
      // that answers anything but a decision is a deny, never a call sent.
      enforcer: new MeteredEnforcer(options.enforcer, this.metrics),
      metrics: this.metrics,
      logger: (options.logger ?? pino({ name })).child({ client: name }),
      config,
      channel: options.channel,
    });
  }

  /**
   * Tells the client where the agent with `id` is served.
   *
   * @throws {CallError} `PEER_UNKNOWN` for an invalid SPIFFE ID or a URL that is not https.
   */
  addPeer(id: SpiffeId | string, url: string): this {
    this.#outbound.addPeer(id, url);
    return this;
  }

  /** {@link SecureAgent.callAgent} with this client's SVID as the caller; the same errors. */
  callAgent<O extends z.ZodType | undefined = undefined>(
    ...[target, capability, input, options = {}]: [SpiffeId | string, string, unknown, CallAgentOptions<O>?]
  ): Promise<CallResult<O>> {
    const self = this.#identity.id;
    return this.#outbound.call(self, target, capability, input, options) as Promise<CallResult<O>>;
  }

  /** Closes the client's channels; calls after this fail. Idempotent. */
  close(): Promise<void> {
    return this.#outbound.close();
  }
}
