import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemoryTaskStore, TaskStoreUnavailableError, type TaskStore } from '@weave/a2a';
import type { AuthzDecision, InboundCheck, OutboundCheck, PolicyEnforcer } from '@weave/authz';
import type { AgentMetrics } from './metrics.js';

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
  const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return { server, url: `http://${h}:${addr.port}` };
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
  readonly #windowMs: number;
  #store: TaskStore | undefined;
  #failedAt: number | undefined;
  #probing = false;

  constructor(options: { windowMs?: number } = {}) {
    this.#windowMs = options.windowMs ?? 30_000;
  }

  /**
   * Follows `store` from now on: the hook `storeProxy` passes each
   * of its operations' results through, so that this health learns whether
   * the store answered. Undefined for the embedded in-memory store, which
   * cannot be away: left unwrapped, its fast path intact.
   */
  follow(store: TaskStore): ((result: unknown) => unknown) | undefined {
    if (Object.getPrototypeOf(store) === InMemoryTaskStore.prototype) return undefined;
    this.#store = store;
    this.#failedAt = undefined;
    return this.#seen;
  }

  /** Why the agent is not ready for its store's sake, or undefined. */
  notReadyReason(now = Date.now()): string | undefined {
    const at = this.#failedAt;
    if (at === undefined) return undefined;
    this.#probe();
    if (now - at > this.#windowMs) return undefined;
    return `the task store cannot be reached (last failure at ${new Date(at).toISOString()})`;
  }

  // A field, not a method: handed to the store's proxy, called without `this`.
  readonly #seen = (result: unknown): unknown => {
    if (!(result instanceof Promise)) return result;
    return result.then(this.#answered, this.#failed);
  };

  readonly #answered = <T>(value: T): T => {
    this.#failedAt = undefined;
    return value;
  };

  readonly #failed = (err: unknown): never => {
    // Only the store being away: a conflict or a refused value is an answer.
    if (err instanceof TaskStoreUnavailableError) this.#failedAt = Date.now();
    else this.#failedAt = undefined;
    throw err;
  };

  #probe(): void {
    const store = this.#store;
    if (this.#probing || store === undefined) return;
    this.#probing = true;
    // Through #seen: its answer sets or clears the failure as any operation's
    // does. In a promise: a store that throws at once must not fail a probe request.
    const read = new Promise((resolve) => resolve(store.get(PROBE_TASK_ID)));
    (this.#seen(read) as Promise<unknown>)
      .catch(() => undefined)
      .finally(() => {
        this.#probing = false;
      });
  }
}

/** No task has this id (task ids are UUIDs): reading it costs one index lookup. */
const PROBE_TASK_ID = 'weave-readiness-probe';
