import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemoryTaskStore, TaskStoreUnavailableError, type TaskStore } from '@weave/a2a';
import type {
  AuthzDecision,
  InboundCheck,
  OpaAvailability,
  OutboundCheck,
  PolicyEnforcer,
} from '@weave/authz';
import type { AgentMetrics } from './metrics.js';
import { urlHost } from '@weave/transport';

/**
 * Wraps the agent's enforcer to count every decision (both directions) and
 * every inbound denial of a call as a denied call. Fails closed like the
 * enforcers it wraps: a throwing enforcer gives a deny, never an exception.
 */
export class MeteredEnforcer implements PolicyEnforcer {
  readonly #inner: PolicyEnforcer;
  readonly #metrics: AgentMetrics;

  constructor(inner: PolicyEnforcer, metrics: AgentMetrics) {
    this.#inner = inner;
    this.#metrics = metrics;
  }

  checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return settle(() => this.#inner.checkInbound(check)).then((d) => {
      this.#metrics.authzDecision('inbound', d.allowed);
      if (!d.allowed && startsCall(check)) {
        this.#metrics.calls.inc({
          direction: 'inbound',
          capability: check.action,
          peer: this.#metrics.peerLabel(String(check.caller)),
          outcome: 'denied',
        });
      }
      return d;
    });
  }

  checkOutbound(check: OutboundCheck): Promise<AuthzDecision> {
    return settle(() => this.#inner.checkOutbound(check)).then((d) => {
      this.#metrics.authzDecision('outbound', d.allowed);
      return d;
    });
  }

  async close(): Promise<void> {
    await this.#inner.close?.();
  }
}

/**
 * Whether an inbound check asks if a call may start: a message that starts a
 * task. Other denials are no call: a GetTask, CancelTask or reply to a task
 * (its call is counted once, when it ends), a ListTasks (asked once per
 * served skill, none of them named by the caller), a `/metrics` scrape.
 */
function startsCall(check: InboundCheck): boolean {
  const c = check.context;
  if (c === undefined || c.taskId !== undefined) return false;
  return c.method === 'SendMessage' || c.method === 'SendStreamingMessage';
}

/** The enforcer's decision, or a deny when it threw, rejected or answered something else. */
function settle(fn: () => Promise<AuthzDecision>): Promise<AuthzDecision> {
  let p: Promise<AuthzDecision>;
  try {
    p = Promise.resolve(fn());
  } catch (err) {
    return Promise.resolve(errorDeny(err));
  }
  return p.then((d) => {
    try {
      if (d && typeof d === 'object' && typeof d.allowed === 'boolean') return d;
    } catch (err) {
      return errorDeny(err);
    }
    return Object.freeze({ allowed: false, reason: 'enforcer returned no decision', auditId: '' });
  }, errorDeny);
}

function errorDeny(err: unknown): AuthzDecision {
  return Object.freeze({
    allowed: false,
    reason: `enforcer error: ${err instanceof Error ? err.message : String(err)}`,
    auditId: '',
  });
}

/** What the probes report. */
export interface ProbeState {
  /** Why the agent is not ready, or undefined when it is. */
  notReadyReason(): string | undefined;
}

/** Bodies of the probe endpoints (shared by the mTLS server and the ops listener). */
export function healthBody(): { status: 'ok' } {
  return { status: 'ok' };
}

export function readyBody(state: ProbeState): { code: number; body: { ready: boolean; reason?: string } } {
  const reason = state.notReadyReason();
  return reason === undefined
    ? { code: 200, body: { ready: true } }
    : { code: 503, body: { ready: false, reason } };
}

/**
 * Bounds of the ops listener: how long a request may take to arrive, how
 * long an idle keep-alive connection stays, how many connections it holds.
 */
const OPS_LIMITS = Object.freeze({
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  checkIntervalMs: 1_000,
  keepAliveTimeoutMs: 1_000,
  maxConnections: 64,
});

const OPS_SERVER_OPTIONS = {
  // Probes send a few header lines and no body: a request not in within
  // seconds is a stuck or hostile client holding a connection, not a probe.
  headersTimeout: OPS_LIMITS.headersTimeoutMs,
  requestTimeout: OPS_LIMITS.requestTimeoutMs,
  // Node enforces both only as often as it checks (every 30 s by default).
  connectionsCheckingInterval: OPS_LIMITS.checkIntervalMs,
};

/**
 * The plain-HTTP ops listener: `/health`, `/ready`, `/metrics`, nothing else,
 * GET only. It carries no capability traffic and reads nothing from requests.
 */
export async function startOpsListener(
  host: string,
  port: number,
  state: ProbeState,
  metrics: AgentMetrics,
): Promise<{ server: Server; url: string }> {
  const server = createServer(OPS_SERVER_OPTIONS, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    if (path === '/health') return send(200, 'application/json', JSON.stringify(healthBody()));
    if (path === '/ready') {
      const r = readyBody(state);
      return send(r.code, 'application/json', JSON.stringify(r.body));
    }
    if (path === '/metrics') {
      metrics.render().then(
        (m) => send(200, m.contentType, m.body),
        () => send(500, 'text/plain', 'metrics unavailable\n'),
      );
      return;
    }
    send(404, 'text/plain', 'not found\n');
  });
  // Probes hold no connection open between polls.
  server.keepAliveTimeout = OPS_LIMITS.keepAliveTimeoutMs;
  // A connection past the cap is closed at once: probes and a scraper need a handful.
  server.maxConnections = OPS_LIMITS.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return { server, url: `http://${urlHost(addr.address)}:${addr.port}` };
}

/**
 * Whether a service the agent depends on answers, as `/ready` sees it: not
 * ready from the moment it fails until it answers. Asked while failing, it
 * runs one probe at a time in the background (the probe reports its own
 * answer through {@link failed} / {@link answered}), so that a service that
 * is back is seen without waiting for traffic, which a not-ready agent no
 * longer gets. A failure older than `windowMs` with no newer one (the probe
 * hangs) is forgotten.
 */
class DependencyHealth {
  readonly #what: string;
  readonly #windowMs: number;
  #probe: (() => Promise<unknown>) | undefined;
  #failedAt: number | undefined;
  #detail: string | undefined;
  #probing = false;

  /** `what` names the service in the reason, e.g. "the task store". */
  constructor(what: string, windowMs: number) {
    this.#what = what;
    this.#windowMs = windowMs;
  }

  /** Follows a new service (or none) from now on, probed with `probe`; its past failures are forgotten. */
  follow(probe: (() => Promise<unknown>) | undefined): void {
    this.#probe = probe;
    this.#failedAt = undefined;
    this.#detail = undefined;
  }

  /** The service could not be reached; `detail` says how, in the reason. */
  failed(detail?: string): void {
    this.#failedAt = Date.now();
    this.#detail = detail;
  }

  answered(): void {
    this.#failedAt = undefined;
    this.#detail = undefined;
  }

  notReadyReason(now = Date.now()): string | undefined {
    const at = this.#failedAt;
    if (at === undefined) return undefined;
    this.#kick();
    if (now - at > this.#windowMs) return undefined;
    const detail = this.#detail === undefined ? '' : `: ${this.#detail}`;
    return `${this.#what} cannot be reached (last failure at ${new Date(at).toISOString()}${detail})`;
  }

  #kick(): void {
    const probe = this.#probe;
    if (this.#probing || probe === undefined) return;
    this.#probing = true;
    // In a promise: a probe that throws at once must not fail a probe request.
    new Promise((resolve) => resolve(probe()))
      .catch(() => undefined)
      .finally(() => {
        this.#probing = false;
      });
  }
}

/**
 * Whether the task store answers: readiness term of an agent whose store is
 * a service (PostgreSQL). Not ready from the moment a store operation fails
 * with `TaskStoreUnavailableError` until one succeeds; every call meanwhile
 * would fail with UNAVAILABLE (HTTP 503). Asked while failing, it reads a
 * task that does not exist, so that a store that is back is seen without
 * waiting for traffic, which a not-ready agent no longer gets. A failure
 * older than `windowMs` with no newer one (the read hangs) is forgotten.
 */
export class StoreHealth {
  readonly #health: DependencyHealth;

  constructor(options: { windowMs?: number } = {}) {
    this.#health = new DependencyHealth('the task store', options.windowMs ?? 30_000);
  }

  /**
   * Follows `store` from now on: the hook `storeProxy` passes each
   * of its operations' results through, so that this health learns whether
   * the store answered. Undefined for the embedded in-memory store, which
   * cannot be away: left unwrapped, its fast path intact.
   */
  follow(store: TaskStore): ((result: unknown) => unknown) | undefined {
    if (Object.getPrototypeOf(store) === InMemoryTaskStore.prototype) return undefined;
    // Through #seen: the read's answer sets or clears the failure as any
    // operation's does. In a promise: a store that throws at once is seen too.
    this.#health.follow(
      () => this.#seen(new Promise((resolve) => resolve(store.get(PROBE_TASK_ID)))) as Promise<unknown>,
    );
    return this.#seen;
  }

  /** Why the agent is not ready for its store's sake, or undefined. */
  notReadyReason(now = Date.now()): string | undefined {
    return this.#health.notReadyReason(now);
  }

  // A field, not a method: handed to the store's proxy, called without `this`.
  readonly #seen = (result: unknown): unknown => {
    if (!(result instanceof Promise)) return result;
    return result.then(this.#answered, this.#failed);
  };

  readonly #answered = <T>(value: T): T => {
    this.#health.answered();
    return value;
  };

  readonly #failed = (err: unknown): never => {
    // Only the store being away: a conflict or a refused value is an answer.
    if (err instanceof TaskStoreUnavailableError) this.#health.failed();
    else this.#health.answered();
    throw err;
  };
}

/**
 * Whether the policy engine answers: readiness term of an agent whose policy
 * is an OPA (`authz.opa`). Not ready from the moment a decision (or a health
 * probe) finds OPA away — no answer, a timeout, an HTTP 5xx, when every call
 * is denied — until one gets an answer; a policy's deny is an answer. Asked
 * while failing, it probes OPA's `/health`, so that an OPA that is back is
 * seen without traffic. A failure older than `windowMs` with no newer one is
 * forgotten. Each decision found failing is counted in
 * `weave_authz_engine_errors_total`.
 */
export class PolicyEngineHealth {
  readonly #health: DependencyHealth;
  readonly #metrics: AgentMetrics;

  constructor(metrics: AgentMetrics, options: { windowMs?: number } = {}) {
    this.#metrics = metrics;
    this.#health = new DependencyHealth('the policy engine', options.windowMs ?? 30_000);
  }

  /**
   * Follows the OPA that `probe` (its enforcer's `health()`, which reports
   * to {@link seen}) asks from now on; undefined when the policy is no OPA of
   * the agent's (a policy file, or an enforcer given by the user).
   */
  follow(probe: (() => Promise<unknown>) | undefined): void {
    this.#health.follow(probe);
  }

  /** Why the agent is not ready for its policy engine's sake, or undefined. */
  notReadyReason(now = Date.now()): string | undefined {
    return this.#health.notReadyReason(now);
  }

  /** The `onAvailability` hook of the agent's `OpaEnforcer`: a field, called without `this`. */
  readonly seen = (event: OpaAvailability): void => {
    if (event.available) {
      this.#health.answered();
      return;
    }
    this.#health.failed(event.reason);
    // A decision denied for it, not a health probe.
    if (event.direction !== undefined) this.#metrics.authzEngineError(event.direction);
  };
}

/** No task has this id (task ids are UUIDs): reading it costs one index lookup. */
const PROBE_TASK_ID = 'weave-readiness-probe';
