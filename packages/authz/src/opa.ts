import { Agent, request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { cutText } from '@weave/identity';
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
  /**
   * OPA's base URL, e.g. `http://127.0.0.1:8181` (a path prefix is kept). The
   * Data API path is appended to it, so a query, a fragment or user info is
   * refused; send credentials with `headers`.
   */
  readonly url: string;
  /** Data API path of the decision, default `weave/authz/decision` (see `policies/weave.rego`). */
  readonly path?: string;
  /** Whole-request timeout in ms (default 500); a timeout denies. */
  readonly timeoutMs?: number;
  /**
   * Largest answer read from OPA, in bytes: a whole number from 1 to 64 MiB,
   * default 1 MiB. A longer answer denies and is not read further.
   */
  readonly maxResponseBytes?: number;
  /**
   * Decision cache. Key: direction, caller, callee, action and tenant
   * (`input.context.tenant`, when absent or a string, number, boolean or null;
   * a check with another tenant is not cached); never the rest of the request
   * context, so only enable it for policies that read nothing else of
   * `input.context`. Only answers from OPA are cached, never failures.
   */
  readonly cache?: { readonly ttlMs: number; readonly maxEntries?: number };
  /** Extra request headers, e.g. `authorization: Bearer …` for an OPA with token auth. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly audit?: AuditSink;
  /** Connection pool to use; default a keep-alive pool owned (and closed) by the enforcer. */
  readonly dispatcher?: Dispatcher;
  /** Clock for cache expiry (ms); default `Date.now`. */
  readonly now?: () => number;
  /**
   * Told, after each exchange with OPA (a decision not answered from the
   * cache, or {@link OpaEnforcer.health}), whether OPA answered: so that a
   * caller can tell an engine that is away from a policy that denies without
   * reading deny reasons (an agent's readiness and metrics do). Called before
   * the decision is returned; what it throws is ignored and changes no
   * decision.
   */
  readonly onAvailability?: (event: OpaAvailability) => void;
}

/**
 * What {@link OpaEnforcerOptions.onAvailability} is told after an exchange
 * with OPA.
 */
export interface OpaAvailability {
  /**
   * False when OPA could not be reached or failed: a transport failure (a
   * refused or reset connection), a timeout, or an HTTP 5xx. True when it
   * answered anything else, whatever the decision: allow, deny, an undefined
   * result, an answer of the wrong shape, a 4xx (a request of ours refused).
   */
  readonly available: boolean;
  /** Why OPA is unavailable (the deny reason, or the health probe's); absent when available. */
  readonly reason?: string;
  /** The direction of the decision that found it out; absent for a {@link OpaEnforcer.health} probe. */
  readonly direction?: Direction;
}

/** The longest decision timeout an {@link OpaEnforcer} takes: a policy call slower than a minute is taken for a mistake. */
export const OPA_MAX_TIMEOUT_MS = 60_000;

/** The largest `maxResponseBytes` an {@link OpaEnforcer} takes: a decision is a few hundred bytes. */
export const OPA_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/** `maxResponseBytes` when not given. */
export const OPA_DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

const optionsSchema = z.object({
  url: z
    .url({ protocol: /^https?$/, error: 'url must be an http(s) URL' })
    // Anything after a `?` or `#` would swallow the Data API path appended to the base.
    .refine((url) => !/[?#]/.test(url), 'url must have no query or fragment')
    .refine((url) => !hasUserInfo(url), 'url must hold no user info (send credentials with `headers`)'),
  path: z
    .string()
    .regex(/^[A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*$/, 'path must look like "weave/authz/decision"')
    .optional(),
  timeoutMs: z.number().int().positive().max(OPA_MAX_TIMEOUT_MS).optional(),
  maxResponseBytes: z.number().int().positive().max(OPA_MAX_RESPONSE_BYTES).optional(),
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
  private readonly maxResponseBytes: number;
  private readonly headers: Record<string, string>;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly recorder: DecisionRecorder;
  private readonly cache: Map<string, CacheEntry> | undefined;
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly onAvailability: ((event: OpaAvailability) => void) | undefined;

  /** @throws {AuthzConfigError} (`OPA_CONFIG_INVALID`) on a bad URL, path, timeout, size bound or cache setting. */
  constructor(options: OpaEnforcerOptions) {
    const res = optionsSchema.safeParse(options);
    if (!res.success) {
      throw new AuthzConfigError(
        'OPA_CONFIG_INVALID',
        `invalid OpaEnforcer options: ${res.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
      );
    }
    // Built from the parsed URL, so what was checked above is what is used.
    const u = new URL(options.url);
    this.base = `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
    this.path = options.path ?? 'weave/authz/decision';
    this.decisionUrl = `${this.base}/v1/data/${this.path}`;
    this.timeoutMs = options.timeoutMs ?? 500;
    this.maxResponseBytes = options.maxResponseBytes ?? OPA_DEFAULT_MAX_RESPONSE_BYTES;
    this.headers = { ...options.headers, 'content-type': 'application/json', accept: 'application/json' };
    this.ownsDispatcher = options.dispatcher === undefined;
    this.dispatcher = options.dispatcher ?? new Agent({ keepAliveTimeout: 10_000, connections: 16 });
    this.recorder = new DecisionRecorder(options.audit ?? new PinoAuditSink(), 'opa');
    this.cache = options.cache ? new Map() : undefined;
    this.ttlMs = options.cache?.ttlMs ?? 0;
    this.maxEntries = options.cache?.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    this.onAvailability = options.onAvailability;
  }

  checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return this.decide('inbound', check, false);
  }

  checkOutbound(check: OutboundCheck): Promise<AuthzDecision> {
    return this.decide('outbound', check, true);
  }

  /**
   * Probes `GET /health` (with `?bundles` when asked); never throws. Its
   * outcome is told to `onAvailability` as a decision's is: a 5xx or no
   * answer is unavailable, any other status available.
   */
  async health(options: { bundles?: boolean } = {}): Promise<OpaHealth> {
    const url = `${this.base}/health${options.bundles ? '?bundles' : ''}`;
    let health: OpaHealth;
    try {
      const res = await request(url, {
        method: 'GET',
        dispatcher: this.dispatcher,
        headers: this.headers,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      await res.body.dump();
      health =
        res.statusCode === 200
          ? { ok: true, status: 200 }
          : { ok: false, status: res.statusCode, reason: `opa health: HTTP ${res.statusCode}` };
    } catch (err) {
      health = { ok: false, reason: `opa health: ${transportReason(err, this.timeoutMs, this.base)}` };
    }
    this.tell(
      health.status !== undefined && health.status < 500
        ? AVAILABLE.health
        : { available: false, reason: health.reason ?? 'opa health: failed' },
    );
    return health;
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
    let snap: NormalizedCheck;
    try {
      // The caller's context read once, as OPA will get it: the cache key, the
      // input and the audit record are then made of the same values, whatever
      // its getters do.
      if (n.context === undefined) snap = n;
      else {
        const context = JSON.parse(JSON.stringify(n.context)) as Record<string, unknown>;
        const tenant = context.tenant;
        snap = { ...n, context, tenant: typeof tenant === 'string' && tenant !== '' ? tenant : undefined };
      }
    } catch (err) {
      // A getter that throws, a BigInt, a cycle: the caller's context, not OPA, is at fault.
      const reason = `opa: context cannot be serialized: ${describeError(err)}`;
      return this.recorder.finish(start, direction, auditSubject(n), { allowed: false, reason });
    }
    const who = auditSubject(snap);
    let verdict: Verdict;
    try {
      verdict = await this.cachedAsk(snap, who);
    } catch (err) {
      verdict = { allowed: false, reason: `opa: client error: ${describeError(err)}` };
    }
    return this.recorder.finish(start, direction, who, verdict);
  }

  private async cachedAsk(n: NormalizedCheck, who: AuditSubject): Promise<Verdict> {
    if (!this.cache) return (await this.ask(n)).verdict;
    const key = cacheKey(n, who);
    if (key === undefined) return (await this.ask(n)).verdict;
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
    let body: string;
    try {
      body = JSON.stringify({ input: opaInput(n) });
    } catch (err) {
      // A getter that throws, a BigInt, a cycle: the caller's context, not OPA, is at fault.
      return {
        verdict: { allowed: false, reason: `opa: context cannot be serialized: ${describeError(err)}` },
        cacheable: false,
      };
    }
    let status: number;
    let text: string | undefined;
    try {
      const res = await request(this.decisionUrl, {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: this.headers,
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = res.statusCode;
      text = await readBounded(res, this.maxResponseBytes);
    } catch (err) {
      const reason = `opa: ${transportReason(err, this.timeoutMs, this.base)}`;
      this.tell({ available: false, reason, direction: n.direction });
      return { verdict: { allowed: false, reason }, cacheable: false };
    }
    if (text === undefined) {
      const over = `answer over ${this.maxResponseBytes} bytes`;
      const reason = status === 200 ? `opa: ${over}` : `opa: HTTP ${status}: ${over}`;
      this.tellStatus(status, reason, n.direction);
      return { verdict: { allowed: false, reason }, cacheable: false };
    }
    if (status !== 200) {
      const e = errorSchema.safeParse(safeJson(text));
      const detail =
        e.success && (e.data.code || e.data.message)
          ? `: ${[e.data.code, e.data.message].filter(Boolean).join(': ')}`
          : '';
      const reason = `opa: HTTP ${status}${cutText(detail, DETAIL_CHARS)}`;
      this.tellStatus(status, reason, n.direction);
      return { verdict: { allowed: false, reason }, cacheable: false };
    }
    this.tell(AVAILABLE[n.direction]);
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

  /** Tells `onAvailability` what an HTTP answer of `status` says of OPA: a 5xx is OPA failing, anything else an answer. */
  private tellStatus(status: number, reason: string, direction: Direction): void {
    this.tell(status >= 500 ? { available: false, reason, direction } : AVAILABLE[direction]);
  }

  private tell(event: OpaAvailability): void {
    if (this.onAvailability === undefined) return;
    try {
      this.onAvailability(event);
    } catch {
      // A listener's failure is the listener's: it must not turn an allow into a deny.
    }
  }
}

/** The events of an answer, made once: one is told per decision asked. */
const AVAILABLE: Readonly<Record<Direction | 'health', OpaAvailability>> = Object.freeze({
  inbound: Object.freeze({ available: true, direction: 'inbound' }),
  outbound: Object.freeze({ available: true, direction: 'outbound' }),
  health: Object.freeze({ available: true }),
});

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

function hasUserInfo(url: string): boolean {
  try {
    const u = new URL(url);
    return u.username !== '' || u.password !== '';
  } catch {
    return false; // not a URL at all: z.url says so
  }
}

/**
 * The cache key: the full values, JSON-encoded so no field can run into the
 * next. The tenant is in it because a policy may well decide per tenant, as
 * OPA receives it: absent, `""` and `5` are three keys. Undefined, so the
 * check is not cached, for another tenant (an object, NaN …), whose key could
 * not be told from what OPA is sent.
 */
function cacheKey(n: NormalizedCheck, who: AuditSubject): string | undefined {
  const tenant: unknown = n.context?.tenant;
  const fields: unknown[] = [n.direction, who.caller, who.callee ?? null, who.action];
  if (tenant === undefined) return JSON.stringify(fields);
  if (
    typeof tenant === 'string' ||
    typeof tenant === 'boolean' ||
    tenant === null ||
    (typeof tenant === 'number' && Number.isFinite(tenant))
  ) {
    fields.push(tenant);
    return JSON.stringify(fields);
  }
  return undefined;
}

const utf8 = new TextDecoder();

/**
 * The body as text, or undefined when it is over `max` bytes; then the body is
 * destroyed (and the connection with it) rather than read to its end.
 */
async function readBounded(res: Dispatcher.ResponseData, max: number): Promise<string | undefined> {
  const declared = res.headers['content-length'];
  if (typeof declared === 'string' && Number(declared) > max) {
    discard(res.body);
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      discard(res.body);
      return undefined;
    }
    chunks.push(chunk);
  }
  return utf8.decode(Buffer.concat(chunks, size));
}

/** Drops a body not read to its end; undici then closes the connection, which cannot be reused. */
function discard(body: Dispatcher.ResponseData['body']): void {
  // Destroying an unfinished body emits an abort error of our own making.
  body.on('error', () => undefined);
  body.destroy();
}

/** A thrown value as one short line; never throws itself (it may be anything). */
function describeError(err: unknown): string {
  try {
    const s = err instanceof Error ? String(err.message) : String(err);
    return cutText(s.replace(/\s+/g, ' '), DETAIL_CHARS);
  } catch {
    return '<unprintable>';
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Most characters of what OPA (or a failure reaching it) said that a deny reason repeats. */
const DETAIL_CHARS = 300;

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
