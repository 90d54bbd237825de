import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuthzDecision, InboundCheck, OutboundCheck, PolicyEnforcer } from '@weave/authz';
import type { AgentMetrics } from './metrics.js';

/**
 * Wraps the agent's enforcer to count every decision (both directions) and
 * every inbound denial as a refused call. Fails closed like the enforcers it
 * wraps: a throwing enforcer gives a deny, never an exception.
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
      if (!d.allowed) {
        this.#metrics.calls.inc({
          direction: 'inbound',
          capability: check.action,
          peer: String(check.caller),
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
 * The plain-HTTP ops listener: `/health`, `/ready`, `/metrics`, nothing else,
 * GET only. It carries no capability traffic and reads nothing from requests.
 */
export async function startOpsListener(
  host: string,
  port: number,
  state: ProbeState,
  metrics: AgentMetrics,
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
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
  server.keepAliveTimeout = 1_000;
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
