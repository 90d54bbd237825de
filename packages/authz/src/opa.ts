import { Agent, request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { PinoAuditSink, type AuditSink } from './audit.js';
import {
  auditSubject,
  DecisionRecorder,
  normalizeCheck,
  type AuditSubject,
  type NormalizedCheck,
  type Verdict,
} from './decision.js';
import { AuthzConfigError } from './errors.js';
import type { AuthzDecision, Direction, InboundCheck, OutboundCheck, PolicyEnforcer } from './types.js';

/** Options of {@link OpaEnforcer}. */
export interface OpaEnforcerOptions {
  /** OPA's base URL, e.g. `http://127.0.0.1:8181`. */
  readonly url: string;
  /** Data API path of the decision, default `weave/authz/decision` (see `policies/weave.rego`). */
  readonly path?: string;
  /** Whole-request timeout in ms (default 500); a timeout denies. */
  readonly timeoutMs?: number;
  /**
   * Decision cache. Key: direction, caller, callee, action and tenant
   * (`input.context.tenant`); never the rest of the request context, so only
   * enable it for policies that read nothing else of `input.context`.
   * Only answers from OPA are cached, never failures.
   */
  readonly cache?: { readonly ttlMs: number; readonly maxEntries?: number };
  /** Extra request headers, e.g. `authorization: Bearer …` for an OPA with token auth. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly audit?: AuditSink;
  /** Connection pool to use; default a keep-alive pool owned (and closed) by the enforcer. */
  readonly dispatcher?: Dispatcher;
  /** Clock for cache expiry (ms); default `Date.now`. */
  readonly now?: () => number;
}

/** The longest decision timeout an {@link OpaEnforcer} takes: a policy call slower than a minute is taken for a mistake. */
export const OPA_MAX_TIMEOUT_MS = 60_000;

const optionsSchema = z.object({
  url: z.url({ protocol: /^https?$/, error: 'url must be an http(s) URL' }),
  path: z
    .string()
    .regex(/^[A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*$/, 'path must look like "weave/authz/decision"')
    .optional(),
  timeoutMs: z.number().int().positive().max(OPA_MAX_TIMEOUT_MS).optional(),
  cache: z
    .object({ ttlMs: z.number().int().positive(), maxEntries: z.number().int().positive().optional() })
    .optional(),
});

/** OPA's answer: `{ result }`, or `{}` when the rule is undefined. */
const responseSchema = z.looseObject({ result: z.unknown().optional(), decision_id: z.string().optional() });
/** What Weave accepts as `result`. */
const resultSchema = z.union([
  z.boolean(),
  z.looseObject({
    allow: z.boolean(),
    reason: z.string().max(1024).optional(),
    rule_id: z.string().max(256).optional(),
    policy_id: z.string().max(256).optional(),
  }),
]);
const errorSchema = z.looseObject({ code: z.string().optional(), message: z.string().optional() });

/** Result of {@link OpaEnforcer.health}. */
export interface OpaHealth {
  readonly ok: boolean;
  readonly status?: number;
  readonly reason?: string;
}

interface CacheEntry {
  readonly verdict: Verdict;
  readonly expires: number;
}

/**
 * A {@link PolicyEnforcer} that asks OPA over its REST Data API
 * (`POST /v1/data/<path>` with `{ input }`, input shape in the README). Fails
 * closed: a timeout, a refused connection, an HTTP error, an undefined result
 * or an answer of the wrong shape each deny with their own reason.
 */
export class OpaEnforcer implements PolicyEnforcer {
  private readonly base: string;
  private readonly path: string;
  private readonly decisionUrl: string;
  private readonly timeoutMs: number;
  private readonly headers: Record<string, string>;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly recorder: DecisionRecorder;
  private readonly cache: Map<string, CacheEntry> | undefined;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  /** @throws {AuthzConfigError} (`OPA_CONFIG_INVALID`) on a bad URL, path, timeout or cache setting. */
  constructor(options: OpaEnforcerOptions) {
    const res = optionsSchema.safeParse(options);
    if (!res.success) {
      throw new AuthzConfigError(
        'OPA_CONFIG_INVALID',
        `invalid OpaEnforcer options: ${res.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
      );
    }
    this.base = options.url.replace(/\/+$/, '');
    this.path = options.path ?? 'weave/authz/decision';
    this.decisionUrl = `${this.base}/v1/data/${this.path}`;
    this.timeoutMs = options.timeoutMs ?? 500;
    this.headers = { ...options.headers, 'content-type': 'application/json', accept: 'application/json' };
    this.ownsDispatcher = options.dispatcher === undefined;
    this.dispatcher = options.dispatcher ?? new Agent({ keepAliveTimeout: 10_000, connections: 16 });
    this.recorder = new DecisionRecorder(options.audit ?? new PinoAuditSink(), 'opa');
    this.cache = options.cache ? new Map() : undefined;
    this.ttlMs = options.cache?.ttlMs ?? 0;
    this.maxEntries = options.cache?.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return this.decide('inbound', check, false);
  }

  checkOutbound(check: OutboundCheck): Promise<AuthzDecision> {
    return this.decide('outbound', check, true);
  }

  /** Probes `GET /health` (with `?bundles` when asked); never throws. */
  async health(options: { bundles?: boolean } = {}): Promise<OpaHealth> {
    const url = `${this.base}/health${options.bundles ? '?bundles' : ''}`;
    try {
      const res = await request(url, {
        method: 'GET',
        dispatcher: this.dispatcher,
        headers: this.headers,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      await res.body.dump();
      return res.statusCode === 200
        ? { ok: true, status: 200 }
        : { ok: false, status: res.statusCode, reason: `opa health: HTTP ${res.statusCode}` };
    } catch (err) {
      return { ok: false, reason: `opa health: ${transportReason(err, this.timeoutMs, this.base)}` };
    }
  }

  /** Drops every cached decision (e.g. after pushing a new policy to OPA). */
  clearCache(): void {
    this.cache?.clear();
  }

  async close(): Promise<void> {
    this.cache?.clear();
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  private async decide(
    direction: Direction,
    check: unknown,
    calleeRequired: boolean,
  ): Promise<AuthzDecision> {
    const start = process.hrtime.bigint();
    const n = normalizeCheck(direction, check, calleeRequired);
    if ('invalid' in n)
      return this.recorder.finish(start, direction, n, { allowed: false, reason: n.invalid });
    const who = auditSubject(n);
    let verdict: Verdict;
    try {
      verdict = await this.cachedAsk(n, who);
    } catch (err) {
      verdict = { allowed: false, reason: `opa: client error: ${(err as Error).message}` };
    }
    return this.recorder.finish(start, direction, who, verdict);
  }

  private async cachedAsk(n: NormalizedCheck, who: AuditSubject): Promise<Verdict> {
    if (!this.cache) return (await this.ask(n)).verdict;
    // The tenant is in the key: a policy may well decide per tenant.
    const key = `${n.direction}\n${who.caller}\n${who.callee ?? ''}\n${who.action}\n${who.tenant ?? ''}`;
    const hit = this.cache.get(key);
    const now = this.now();
    if (hit && hit.expires > now) return { ...hit.verdict, cached: true, opaDecisionId: undefined };
    if (hit) this.cache.delete(key);
    const { verdict, cacheable } = await this.ask(n);
    if (cacheable) {
      if (this.cache.size >= this.maxEntries) {
        // Map iterates in insertion order: drop the oldest entry.
        const oldest = this.cache.keys().next();
        if (!oldest.done) this.cache.delete(oldest.value);
      }
      this.cache.set(key, { verdict, expires: this.now() + this.ttlMs });
    }
    return verdict;
  }

  private async ask(n: NormalizedCheck): Promise<{ verdict: Verdict; cacheable: boolean }> {
    const input = opaInput(n);
    let status: number;
    let text: string;
    try {
      const res = await request(this.decisionUrl, {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: this.headers,
        body: JSON.stringify({ input }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      return {
        verdict: { allowed: false, reason: `opa: ${transportReason(err, this.timeoutMs, this.base)}` },
        cacheable: false,
      };
    }
    if (status !== 200) {
      const body = safeJson(text);
      const e = errorSchema.safeParse(body);
      const detail =
        e.success && (e.data.code || e.data.message)
          ? `: ${[e.data.code, e.data.message].filter(Boolean).join(': ')}`
          : '';
      return {
        verdict: { allowed: false, reason: `opa: HTTP ${status}${truncate(detail)}` },
        cacheable: false,
      };
    }
    const parsed = responseSchema.safeParse(safeJson(text));
    if (!parsed.success) {
      return {
        verdict: { allowed: false, reason: 'opa: invalid response: body is not a JSON object' },
        cacheable: false,
      };
    }
    const decisionId = parsed.data.decision_id;
    if (!('result' in parsed.data) || parsed.data.result === undefined) {
      return {
        verdict: {
          allowed: false,
          reason: `opa: result undefined for data.${this.path.replaceAll('/', '.')} (no such rule or no policy loaded)`,
          opaDecisionId: decisionId,
        },
        cacheable: false,
      };
    }
    const result = resultSchema.safeParse(parsed.data.result);
    if (!result.success) {
      return {
        verdict: {
          allowed: false,
          reason: 'opa: invalid result: expected true/false or { allow, reason }',
          opaDecisionId: decisionId,
        },
        cacheable: false,
      };
    }
    const r = result.data;
    if (typeof r === 'boolean') {
      return {
        verdict: { allowed: r, reason: r ? 'opa: allowed' : 'opa: denied', opaDecisionId: decisionId },
        cacheable: true,
      };
    }
    return {
      verdict: {
        allowed: r.allow,
        reason: `opa: ${r.reason ?? (r.allow ? 'allowed' : 'denied')}`,
        policyId: r.policy_id,
        ruleId: r.rule_id,
        opaDecisionId: decisionId,
      },
      cacheable: true,
    };
  }
}

/**
 * The `input` document sent to OPA. Documented in the README; `policies/weave.rego` reads it.
 */
function opaInput(n: NormalizedCheck): Record<string, unknown> {
  return {
    caller: { spiffe_id: n.caller.toString(), trust_domain: n.caller.trustDomain.name },
    ...(n.callee
      ? { callee: { spiffe_id: n.callee.toString(), trust_domain: n.callee.trustDomain.name } }
      : {}),
    action: n.action,
    direction: n.direction,
    context: n.context ?? {},
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function truncate(s: string): string {
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
}

function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e !== null && typeof e === 'object'; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A distinct reason per transport failure, so operators can tell them apart. */
function transportReason(err: unknown, timeoutMs: number, base: string): string {
  const name = (err as { name?: unknown } | null)?.name;
  const code = errorCode(err);
  if (
    name === 'TimeoutError' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  ) {
    return `timeout after ${timeoutMs} ms`;
  }
  if (code === 'ECONNREFUSED') return `connection refused (${base})`;
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return `connection reset (${base})`;
  return `unreachable (${code ?? (err instanceof Error ? err.message : String(err))})`;
}
