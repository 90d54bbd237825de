import { lookup as dnsLookup } from 'node:dns/promises';
import { setMaxListeners } from 'node:events';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { MAX_TIMER_MS } from '@weave/identity';
import {
  CircuitBreaker,
  CircuitOpenError,
  LogRate,
  urlHost,
  type CircuitBreakerOptionsInput,
} from '@weave/transport';
import { A2AClientError } from './errors.js';
import { A2AConfigError, checkOptions, positiveCount, timerMs, timerMsOr0 } from './options.js';
import { A2A_JSON_MEDIA_TYPE, boundedSignal, untilAborted } from './transports/http.js';
import type { StreamResponse, TaskPushNotificationConfig } from './wire/v1.js';

// ---- SSRF guard ------------------------------------------------------------------------

/** Why a webhook URL or address was refused before any connection was made. */
export class PushUrlRefusedError extends A2AClientError {
  constructor(message: string) {
    super('PUSH_URL_REFUSED', message);
  }
}

/**
 * Cloud metadata services that sit in ordinary unicast space (the others —
 * 169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192 — are already
 * link-local, unique-local, carrier-grade NAT or reserved).
 */
const METADATA_ADDRESSES = new Set(['168.63.129.16']);

/** A parsed allowlist entry: an address range that webhooks may resolve to although it is not public. */
type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseAllow(entries: readonly string[] | undefined): Cidr[] {
  return (entries ?? []).map((e) => {
    try {
      if (e.includes('/')) return ipaddr.parseCIDR(e);
      const a = ipaddr.parse(e);
      return [a, a.kind() === 'ipv4' ? 32 : 128] as Cidr;
    } catch {
      throw new A2AConfigError('createWebhookSender', [
        `allowAddresses: ${JSON.stringify(e)} is neither an IP address nor a CIDR range`,
      ]);
    }
  });
}

/**
 * Why `address` may not receive a webhook, or undefined when it may: only
 * public unicast addresses are reachable, plus what `allow` lists. IPv4
 * inside IPv6 (mapped, IPv4-compatible, NAT64, 6to4, Teredo) is refused
 * unless allowed, since it can smuggle a private IPv4 address.
 */
function refusal(address: string, allow: readonly Cidr[]): string | undefined {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // process() turns ::ffff:10.0.0.1 into 10.0.0.1, so the IPv4 rules apply to it.
    ip = ipaddr.process(canonicalIPv6(address));
  } catch {
    return `${address} is not an IP address`;
  }
  if (allow.some(([range, bits]) => range.kind() === ip.kind() && ip.match(range, bits))) return undefined;
  if (METADATA_ADDRESSES.has(ip.toString())) return `${address} is a cloud metadata address`;
  const range = ip.range();
  if (range !== 'unicast') return `${address} is a ${range} address`;
  // ::/96 (:: and ::1 aside, named above): ipaddr.js calls it unicast, but
  // ::a9fe:a9fe is 169.254.169.254 to a stack that still routes the
  // deprecated IPv4-compatible form (RFC 4291 §2.5.5.1).
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).parts.slice(0, 6).every((p) => p === 0)) {
    return `${address} is an IPv4-compatible IPv6 address`;
  }
  return undefined;
}

/**
 * An IPv6 address as the URL parser writes it (an IPv4 one as given):
 * ipaddr.js reads `::1.2.3.4` as the mapped `::ffff:1.2.3.4`, which would
 * pass as the public 1.2.3.4, while the address is `::102:304`. A zone id
 * (`%eth0`) is kept aside; no rule depends on it.
 */
function canonicalIPv6(address: string): string {
  if (!address.includes(':')) return address;
  const zone = address.indexOf('%');
  const bare = zone < 0 ? address : address.slice(0, zone);
  // Throws for what is not an IPv6 address: refused as such by the caller.
  return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
}

/** Options of {@link checkWebhookUrl}. */
export interface WebhookUrlCheckOptions {
  /**
   * Addresses or CIDR ranges a webhook may resolve to although they are
   * loopback, link-local, private or otherwise not public (e.g.
   * `['127.0.0.0/8', '::1']` for tests, `['10.20.0.0/16']` for an internal
   * receiver network). Empty by default: only public unicast addresses.
   */
  readonly allowAddresses?: readonly string[];
  /** Resolves a host name to its addresses. Default: the system resolver (`dns.lookup`, all addresses). */
  readonly lookup?: (hostname: string) => Promise<string[]>;
}

const systemLookup = async (hostname: string): Promise<string[]> =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

/**
 * Checks a webhook URL before anything is sent to it: `http:` or `https:`
 * only, no user info, and every address its host resolves to must be public
 * unicast or allow-listed (one bad address refuses the URL: a resolver that
 * answers with several must not be able to pick the internal one later).
 * Returns the URL and the checked address to connect to.
 *
 * @throws {PushUrlRefusedError} naming the reason; nothing was connected to.
 */
export async function checkWebhookUrl(
  url: string,
  options: WebhookUrlCheckOptions = {},
): Promise<{ url: URL; address: string }> {
  return checkParsed(url, parseAllow(options.allowAddresses), options.lookup ?? systemLookup);
}

/**
 * {@link checkWebhookUrl} with the allowlist parsed. With `signal`, a lookup
 * still unanswered when it aborts fails with `PUSH_TIMEOUT` (not a refusal:
 * the name may resolve next time), for a resolver any host's DNS can stall.
 */
async function checkParsed(
  raw: string,
  allow: readonly Cidr[],
  lookup: (hostname: string) => Promise<string[]>,
  signal?: AbortSignal,
  timeoutMs?: number,
): Promise<{ url: URL; address: string }> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new PushUrlRefusedError('webhook URL is not a URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new PushUrlRefusedError(`webhook URL scheme ${url.protocol} is not http(s)`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new PushUrlRefusedError('webhook URL carries user info (use authentication instead)');
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  let addresses: string[];
  if (ipaddr.isValid(host)) addresses = [host];
  else {
    try {
      addresses = await (signal ? untilAborted(lookup(host), signal) : lookup(host));
    } catch (err) {
      if (signal?.aborted) {
        const timedOut = (signal.reason as Error | undefined)?.name === 'TimeoutError';
        throw new A2AClientError(
          'PUSH_TIMEOUT',
          timedOut
            ? `webhook host ${host} did not resolve within ${timeoutMs} ms`
            : `webhook host ${host}: lookup cut short (sender closed)`,
          { cause: err },
        );
      }
      throw new PushUrlRefusedError(`webhook host ${host} does not resolve: ${(err as Error).message}`);
    }
  }
  if (addresses.length === 0) throw new PushUrlRefusedError(`webhook host ${host} has no address`);
  for (const a of addresses) {
    const why = refusal(a, allow);
    if (why !== undefined) {
      throw new PushUrlRefusedError(
        `webhook ${redactUrl(url)} refused: ${why} (allow it with allowAddresses if intended)`,
      );
    }
  }
  return { url, address: addresses[0] as string };
}

/**
 * The reason a push deadline aborts with: `AbortSignal.timeout`'s, whose name
 * tells {@link checkParsed} a lookup timed out rather than was cut short.
 */
function timedOut(): DOMException {
  return new DOMException('The operation was aborted due to timeout', 'TimeoutError');
}

/**
 * A URL as it may appear in logs and errors: no user info, a query shown as
 * `?…` (it may hold a token), no fragment.
 *
 * A string that does not parse as a URL with a host (a typo'd port as in
 * `https://user:pw@host:99999`, or `user:pw@host`, which parses with scheme
 * `user:` and the password in its path) is cut textually instead, so it still
 * shows which target was meant: everything after the scheme up to the last
 * `@` is dropped (a password may hold an unencoded `/`, so the first `/` does
 * not tell where user info ends), a query is shown as `?…` and a fragment
 * dropped. With a `?` or `#` before that `@` (a password holding one, or a
 * query or fragment holding an `@`: they cannot be told apart) only the
 * scheme is shown, as `https://…`.
 */
export function redactUrl(url: URL | string): string {
  let u: URL | undefined;
  if (typeof url !== 'string') u = url;
  else {
    try {
      u = new URL(url);
    } catch {
      u = undefined;
    }
  }
  if (u !== undefined && u.host !== '') {
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
  }
  const text = typeof url === 'string' ? url : url.href;
  const scheme = /^[a-z][a-z\d+.-]*:(?:\/\/)?/i.exec(text)?.[0] ?? '';
  const rest = text.slice(scheme.length);
  const at = rest.lastIndexOf('@');
  const end = rest.search(/[?#]/);
  if (end === -1) return scheme + rest.slice(at + 1);
  if (end < at) return `${scheme}…`;
  return `${scheme}${rest.slice(at + 1, end)}${rest[end] === '?' ? '?…' : ''}`;
}

/** A push config as it may appear in logs: secrets replaced. */
export function redactPushConfig(c: TaskPushNotificationConfig): Record<string, unknown> {
  return {
    id: c.id,
    taskId: c.taskId,
    url: redactUrl(c.url),
    ...(c.token !== undefined ? { token: '[redacted]' } : {}),
    ...(c.authentication
      ? {
          authentication: {
            scheme: c.authentication.scheme,
            ...(c.authentication.credentials !== undefined ? { credentials: '[redacted]' } : {}),
          },
        }
      : {}),
  };
}

// ---- the sender ---------------------------------------------------------------------------

/**
 * The defaults of {@link createWebhookSender}'s numbers. The last three bound
 * what any number of callers can make the sender hold, whatever receivers
 * they register: attempts in flight (sockets) and events queued (memory).
 */
export const WEBHOOK_SENDER_DEFAULTS = {
  timeoutMs: 5000,
  maxAttempts: 5,
  initialBackoffMs: 250,
  maxBackoffMs: 30_000,
  maxQueuePerTask: 100,
  maxConcurrentDeliveries: 64,
  maxConcurrentPerReceiver: 8,
  maxQueuedEvents: 10_000,
} as const;

const SenderNumbers = z.object({
  timeoutMs: timerMs.optional(),
  maxAttempts: positiveCount.optional(),
  initialBackoffMs: timerMsOr0('retry at once').optional(),
  maxBackoffMs: timerMsOr0('retry at once').optional(),
  maxQueuePerTask: positiveCount.optional(),
  maxConcurrentDeliveries: positiveCount.optional(),
  maxConcurrentPerReceiver: positiveCount.optional(),
  maxQueuedEvents: positiveCount.optional(),
});

/** Options of {@link createWebhookSender}. */
export interface WebhookSenderOptions extends WebhookUrlCheckOptions {
  /**
   * The transport to the webhooks. For Weave receivers a `@weave/transport`
   * SecureChannel, so the receiver's SPIFFE ID is verified before any byte
   * is sent. Required.
   */
  readonly dispatcher: Dispatcher;
  /**
   * Per-attempt timeout in ms: resolving the host, connecting (the TLS
   * handshake included), the answer and its body. Default 5000.
   */
  readonly timeoutMs?: number;
  /** Header carrying `config.token`. Default `X-A2A-Notification-Token` (as the official SDK). */
  readonly tokenHeader?: string;
  /** Attempts per event, the first included. Default 5. */
  readonly maxAttempts?: number;
  /** Wait before the first retry in ms, doubled per retry (with ±20 % jitter). Default 250. */
  readonly initialBackoffMs?: number;
  /** Longest wait between retries in ms. Default 30 000. */
  readonly maxBackoffMs?: number;
  /**
   * Events queued per task and webhook. When a receiver falls this far
   * behind, the oldest queued event is dropped (and logged). Default 100.
   */
  readonly maxQueuePerTask?: number;
  /**
   * Attempts in flight at once, to all receivers together: the sender never
   * holds more requests (so sockets) than this. An attempt waits for a place
   * (not timed); backoff waits hold none. Default 64.
   */
  readonly maxConcurrentDeliveries?: number;
  /**
   * Attempts in flight at once to one receiver (the webhook URL's origin),
   * whatever the number of tasks and configs aimed at it, so a slow receiver
   * holds at most this many of `maxConcurrentDeliveries`. Default 8.
   */
  readonly maxConcurrentPerReceiver?: number;
  /**
   * Events waiting or in flight, in all queues together. At the bound a new
   * event makes room by dropping the oldest waiting event of the receiver
   * with the most waiting (a stalled receiver, not the others), or is itself
   * dropped when none is waiting; each drop is counted (`dropped`) and
   * logged. Default 10 000.
   */
  readonly maxQueuedEvents?: number;
  /**
   * One circuit breaker per receiver (the webhook URL's origin), shared by
   * every task's queue to it (`@weave/transport`'s CircuitBreaker; defaults
   * as there: opens at 50 % failed attempts over at least 10 in 10 s, tries
   * again after 10 s). While a receiver's circuit is open its attempts are
   * not made — no connection, no timeout to wait out — and count as failed
   * attempts of their event (retried with backoff as usual, so an event is
   * still delivered if the receiver is back within its attempts). 4xx
   * answers and refused URLs do not count: the receiver is alive.
   */
  readonly circuitBreaker?: CircuitBreakerOptionsInput;
  /**
   * Where delivery failures and drops are logged (secrets redacted), each
   * kind at most 10 lines a minute (a line after some were left out says how
   * many: `suppressed`); `stats()` counts every one. Default: not logged.
   */
  readonly logger?: Pick<Logger, 'warn' | 'debug'>;
}

/** Counters of a {@link WebhookSender}. */
export interface WebhookSenderStats {
  readonly delivered: number;
  readonly attempts: number;
  readonly retries: number;
  /** Events given up after `maxAttempts` or a permanent refusal. */
  readonly failed: number;
  /** Events dropped: a queue or the sender full (`maxQueuePerTask`, `maxQueuedEvents`), or the sender closed. */
  readonly dropped: number;
  /** URLs refused by the SSRF guard (no connection made). */
  readonly refused: number;
  /** Attempts not made because the receiver's circuit was open (no connection made). */
  readonly shortCircuited: number;
  /** Events waiting or in flight. */
  readonly queued: number;
  /** Attempts in flight now (at most `maxConcurrentDeliveries`). */
  readonly inFlight: number;
}

/**
 * What {@link createWebhookSender} returns: the `push.send` of `A2AServer`
 * (queues the event and resolves at once, so neither the task nor other
 * receivers ever wait for a slow one), plus `idle()` and `stats()`.
 */
export interface WebhookSender {
  (config: TaskPushNotificationConfig, event: StreamResponse): Promise<void>;
  /** Resolves when every queue is empty (delivered, failed or dropped). */
  idle(): Promise<void>;
  stats(): WebhookSenderStats;
  /**
   * Stops delivering: queued events are dropped (counted, one log line),
   * attempts in flight and waits are cut short, so `idle()` resolves at
   * once; events sent afterwards are dropped.
   */
  close(): void;
  /**
   * The SSRF guard alone ({@link checkWebhookUrl} with this sender's
   * allowlist, the host's resolution bounded by `timeoutMs`); `A2AServer`
   * calls it when a push config is created.
   * @throws {PushUrlRefusedError}
   */
  checkUrl(url: string): Promise<{ url: URL; address: string }>;
}

/** One receiver (a webhook URL's origin): shared by every queue aimed at it. */
interface Receiver {
  readonly origin: string;
  readonly breaker: CircuitBreaker;
  readonly queues: Set<Queue>;
  /** Its queues whose next event waits for a place, the longest waiting first. */
  readonly ready: Set<Queue>;
  /** Attempts in flight to it. */
  active: number;
  /** When it was last given a place (a count of places given), 0 never. */
  served: number;
  /** Events in its queues (not in flight). */
  waiting: number;
}

/** An event on its way to one webhook. */
interface Item {
  readonly event: StreamResponse;
  attempts: number;
}

interface Queue {
  readonly key: string;
  /**
   * Every undelivered event but the one in flight, oldest first; an event
   * waiting for a retry is back at the head. All of them may be dropped.
   */
  readonly items: Item[];
  config: TaskPushNotificationConfig;
  receiver: Receiver;
  /** New, waiting for a place (in `receiver.ready`), attempting, or backing off. */
  state: 'new' | 'ready' | 'active' | 'backoff';
  /** Ends a backoff at once. */
  wake?: () => void;
}

/** A failure that retrying will not fix. */
class Permanent extends Error {}

/**
 * A push-notification sender with at-least-once delivery. Each event (a v1.0
 * StreamResponse, `application/a2a+json`) is POSTed to the config's URL over
 * `options.dispatcher`, with `Authorization: <scheme> <credentials>` when the
 * config has authentication and the token header when it has a token.
 *
 * - Every (task, webhook) pair has its own ordered queue, bounded by
 *   `maxQueuePerTask`; one event is in flight per queue, so a receiver sees a
 *   task's events in order, and a dead receiver only delays itself.
 * - Attempts in flight are bounded per receiver (`maxConcurrentPerReceiver`)
 *   and in all (`maxConcurrentDeliveries`); a freed place goes to the
 *   receiver with the fewest in flight, so slow receivers holding places
 *   do not put another one behind their backlogs. Events queued are bounded
 *   in all (`maxQueuedEvents`): at the bound the receiver with the most
 *   waiting loses its oldest. A waiting event costs its queue entry only.
 * - Each receiver (URL origin) has a circuit breaker shared by all its
 *   queues: once it keeps failing, further attempts to it are not made
 *   until the breaker lets a trial through (`circuitBreaker`).
 * - 2xx is delivered. Network errors, timeouts, 408, 429 and 5xx are retried
 *   with exponential backoff up to `maxAttempts`; other answers, including
 *   redirects (never followed, whatever interceptors the dispatcher has),
 *   fail the event at once. An answer's body is read up to 128 KiB, then
 *   the connection is dropped.
 * - Before every attempt the URL passes the SSRF guard ({@link checkWebhookUrl});
 *   the request then goes to the address that was checked (the Host header
 *   keeps the name), so a DNS answer that changes in between is not used.
 * - Logs name the config without its secrets ({@link redactPushConfig}).
 */
export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  if (!options?.dispatcher) throw new A2AConfigError('createWebhookSender', ['dispatcher is required']);
  checkOptions('createWebhookSender', SenderNumbers, options);
  const d = WEBHOOK_SENDER_DEFAULTS;
  const dispatcher = options.dispatcher;
  const timeout = options.timeoutMs ?? d.timeoutMs;
  const tokenHeader = (options.tokenHeader ?? 'X-A2A-Notification-Token').toLowerCase();
  const maxAttempts = options.maxAttempts ?? d.maxAttempts;
  const initialBackoff = options.initialBackoffMs ?? d.initialBackoffMs;
  const maxBackoff = options.maxBackoffMs ?? d.maxBackoffMs;
  const maxQueue = options.maxQueuePerTask ?? d.maxQueuePerTask;
  const maxInFlight = options.maxConcurrentDeliveries ?? d.maxConcurrentDeliveries;
  const perReceiver = options.maxConcurrentPerReceiver ?? d.maxConcurrentPerReceiver;
  const maxQueued = options.maxQueuedEvents ?? d.maxQueuedEvents;
  const allow = parseAllow(options.allowAddresses);
  const lookup = options.lookup ?? systemLookup;
  const log = options.logger;
  // Any caller can cause these lines at will (a dead or slow receiver), so each kind is rated.
  const failedLines = new LogRate();
  const droppedLines = new LogRate();
  const queues = new Map<string, Queue>();
  const idleWaiters = new Set<() => void>();
  const stop = new AbortController();
  // One listener per attempt in flight (as many as maxConcurrentDeliveries)
  // and per checkUrl under way, each removed when it ends: not a leak.
  setMaxListeners(0, stop.signal);
  const n = { delivered: 0, attempts: 0, retries: 0, failed: 0, dropped: 0, refused: 0, shortCircuited: 0 };
  /** Events in the queues, and attempts in flight. */
  let waiting = 0;
  let inFlight = 0;
  const breakerOptions = options.circuitBreaker ?? {};
  // Checked now: a bad option fails here, not at the first delivery.
  new CircuitBreaker(breakerOptions).shutdown();
  const receivers = new Map<string, Receiver>();
  /** Receivers with a queue ready. */
  const readyReceivers = new Set<Receiver>();
  let places = 0;
  /** Receivers no queue uses, the longest unused first: they go once there are too many. */
  const unused = new Map<string, Receiver>();

  /** The receiver at `url` (by origin). */
  const receiverOf = (url: string): Receiver => {
    let origin: string;
    try {
      origin = new URL(url).origin;
    } catch {
      origin = url; // refused by the guard in the attempt anyway
    }
    let r = receivers.get(origin);
    if (r === undefined) {
      r = {
        origin,
        breaker: new CircuitBreaker({
          ...breakerOptions,
          name: `push receiver ${origin}`,
          isFailure: (err) => !(err instanceof Permanent),
        }),
        queues: new Set(),
        ready: new Set(),
        active: 0,
        served: 0,
        waiting: 0,
      };
      receivers.set(origin, r);
    }
    return r;
  };
  const attach = (q: Queue, r: Receiver): void => {
    q.receiver = r;
    r.queues.add(q);
    r.waiting += q.items.length;
    unused.delete(r.origin);
    if (q.state === 'ready') setReady(q);
  };
  // A receiver no queue uses is kept for its breaker (which remembers the
  // failures) while there are at most MAX_RECEIVERS_KEPT; past it, the
  // longest unused go. Those in use stay: maxQueuedEvents bounds them.
  const detach = (q: Queue): void => {
    const r = q.receiver;
    r.queues.delete(q);
    r.waiting -= q.items.length;
    unready(q);
    if (r.queues.size > 0) return;
    unused.set(r.origin, r);
    for (const [origin, old] of unused) {
      if (receivers.size <= MAX_RECEIVERS_KEPT) break;
      old.breaker.shutdown();
      receivers.delete(origin);
      unused.delete(origin);
    }
  };
  const setReady = (q: Queue): void => {
    q.state = 'ready';
    q.receiver.ready.add(q);
    readyReceivers.add(q.receiver);
  };
  const unready = (q: Queue): void => {
    const r = q.receiver;
    if (!r.ready.delete(q)) return;
    if (r.ready.size === 0) readyReceivers.delete(r);
  };
  /** Forgets a queue with nothing left to do. */
  const end = (q: Queue): void => {
    queues.delete(q.key);
    if (!stop.signal.aborted) detach(q);
    if (queues.size === 0) for (const w of idleWaiters) w();
  };
  const isLive = (q: Queue): boolean => queues.get(q.key) === q;

  const dropLine = (config: TaskPushNotificationConfig, msg: string): void => {
    const extra = droppedLines.take();
    if (extra) log?.warn({ config: redactPushConfig(config), dropped: n.dropped, ...extra }, msg);
  };
  /** Drops the oldest event of `q` (none is in flight); a queue left empty ends, even in backoff. */
  const dropOldest = (q: Queue, msg: string): void => {
    q.items.shift();
    waiting--;
    q.receiver.waiting--;
    n.dropped++;
    dropLine(q.config, msg);
    if (q.items.length > 0 || q.state === 'active') return;
    end(q);
    q.wake?.(); // after end: the backoff finds the queue gone
  };
  /** A queue of the receiver with the most events waiting, undefined when none waits. */
  const fullestQueue = (): Queue | undefined => {
    let most: Receiver | undefined;
    for (const r of receivers.values()) if (r.waiting > (most?.waiting ?? 0)) most = r;
    if (most === undefined) return undefined;
    for (const q of most.queues) if (q.items.length > 0) return q;
    return undefined;
  };

  /**
   * Runs `work` until the sender closes or `timeout` passes. Not
   * `AbortSignal.any([stop.signal, AbortSignal.timeout(timeout)])`: on Node 20
   * and 22 each of those stays on `stop.signal` for the sender's lifetime.
   */
  const withDeadline = async <T>(work: (deadline: AbortSignal) => Promise<T>): Promise<T> => {
    const deadline = boundedSignal(stop.signal, timeout, timedOut);
    try {
      return await work(deadline.signal);
    } finally {
      deadline.dispose();
    }
  };
  /**
   * One delivery attempt. One deadline for all of it: a name that never
   * resolves, a handshake that never ends or a body that trickles in end with
   * it alike.
   */
  const attempt = async (
    config: TaskPushNotificationConfig,
    body: string,
    deadline: AbortSignal,
  ): Promise<void> => {
    let checked: { url: URL; address: string };
    try {
      checked = await checkParsed(config.url, allow, lookup, deadline, timeout);
    } catch (err) {
      if (!(err instanceof PushUrlRefusedError)) throw err;
      n.refused++;
      throw new Permanent(err.message, { cause: err });
    }
    const { url, address } = checked;
    const headers: Record<string, string> = { 'content-type': A2A_JSON_MEDIA_TYPE, host: url.host };
    if (config.authentication?.credentials) {
      headers.authorization = `${config.authentication.scheme} ${config.authentication.credentials}`;
    }
    if (config.token) headers[tokenHeader] = config.token;
    // Connect to the address the guard checked, not to whatever the name resolves to next.
    const origin = `${url.protocol}//${urlHost(address)}${url.port ? `:${url.port}` : ''}`;
    const requestOptions = {
      method: 'POST' as const,
      dispatcher,
      headers,
      body,
      headersTimeout: timeout,
      bodyTimeout: timeout,
      signal: deadline,
      // A redirect interceptor composed into the dispatcher would follow a
      // 3xx to an address the guard never saw; 0 turns it off for this request.
      maxRedirections: 0,
    };
    n.attempts++;
    let res: Dispatcher.ResponseData;
    try {
      // undici heeds the signal only once connected: a handshake that stalls
      // would hold the attempt for the dispatcher's connect timeout instead.
      res = await untilAborted(request(`${origin}${url.pathname}${url.search}`, requestOptions), deadline);
    } catch (err) {
      if (deadline.aborted && !stop.signal.aborted) {
        throw new A2AClientError('PUSH_TIMEOUT', `webhook did not answer within ${timeout} ms`, {
          cause: err,
        });
      }
      throw new A2AClientError('PUSH_FAILED', `webhook unreachable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    // dump() reads at most 128 KiB, then drops the connection; the deadline cuts a trickle short.
    await res.body.dump().catch(() => undefined);
    const s = res.statusCode;
    if (s >= 200 && s < 300) return;
    const message = `webhook answered HTTP ${s}`;
    if (s === 408 || s === 429 || s >= 500) throw new A2AClientError('PUSH_REJECTED', message);
    throw new Permanent(s >= 300 && s < 400 ? `${message} (redirects are not followed)` : message);
  };

  /**
   * Starts attempts while there are places: each freed place goes to the
   * ready receiver with the fewest attempts in flight (under its own bound),
   * the one given a place longest ago among equals, and to its
   * longest-waiting queue. O(ready receivers) a place.
   */
  const pump = (): void => {
    while (inFlight < maxInFlight && !stop.signal.aborted) {
      let next: Receiver | undefined;
      for (const r of readyReceivers) {
        if (r.active >= perReceiver) continue;
        if (
          next === undefined ||
          r.active < next.active ||
          (r.active === next.active && r.served < next.served)
        ) {
          next = r;
        }
      }
      if (next === undefined) return;
      next.served = ++places;
      const q = next.ready.values().next().value as Queue;
      unready(q);
      void deliver(q);
    }
  };

  /** One attempt of the head event of `q`, which holds a place: then the next step of the queue. */
  const deliver = async (q: Queue): Promise<void> => {
    const r = q.receiver;
    const item = q.items.shift() as Item;
    waiting--;
    r.waiting--;
    q.state = 'active';
    r.active++;
    inFlight++;
    item.attempts++;
    let retry = false;
    try {
      await r.breaker.execute(() =>
        withDeadline((deadline) => attempt(q.config, JSON.stringify(item.event), deadline)),
      );
      n.delivered++;
    } catch (err) {
      if (stop.signal.aborted)
        n.dropped++; // counted and logged once by close()
      else {
        if (err instanceof CircuitOpenError) n.shortCircuited++;
        const fields = {
          err: { message: (err as Error).message },
          config: redactPushConfig(q.config),
          attempt: item.attempts,
        };
        retry = !(err instanceof Permanent) && item.attempts < maxAttempts;
        if (retry) log?.debug(fields, 'a2a: push notification attempt failed; retrying');
        else {
          n.failed++;
          const extra = failedLines.take();
          if (extra) log?.warn({ ...fields, failed: n.failed, ...extra }, 'a2a: push notification failed');
        }
      }
    } finally {
      r.active--;
      inFlight--;
    }
    if (stop.signal.aborted) return end(q);
    if (retry) {
      // Back at the head, so the task's order holds; droppable while it waits.
      q.items.unshift(item);
      waiting++;
      q.receiver.waiting++;
      n.retries++;
      backoff(q, item.attempts);
    } else if (q.items.length > 0) setReady(q);
    else end(q);
    pump();
  };

  /** Waits out the backoff after the `attempts`-th attempt, holding no place, then readies `q`. */
  const backoff = (q: Queue, attempts: number): void => {
    q.state = 'backoff';
    const base = Math.min(maxBackoff, initialBackoff * 2 ** (attempts - 1));
    // The jitter can take a backoff near the bound past the longest timer.
    const t = setTimeout(done, Math.min(base * (0.8 + Math.random() * 0.4), MAX_TIMER_MS));
    t.unref();
    q.wake = done;
    function done(): void {
      clearTimeout(t);
      q.wake = undefined;
      // Ended meanwhile: its last event dropped, or the sender closed.
      if (stop.signal.aborted || !isLive(q)) return;
      setReady(q);
      pump();
    }
  };

  const send = ((config: TaskPushNotificationConfig, event: StreamResponse): Promise<void> => {
    if (stop.signal.aborted) {
      n.dropped++;
      dropLine(config, 'a2a: push sender closed; event dropped');
      return Promise.resolve();
    }
    const key = `${config.taskId}\u0000${config.id ?? config.url}`;
    const had = queues.get(key);
    if (had !== undefined && had.items.length >= maxQueue) {
      dropOldest(had, 'a2a: push queue full; oldest event dropped');
    } else if (waiting + inFlight >= maxQueued) {
      const victim = fullestQueue();
      if (victim === undefined) {
        n.dropped++;
        dropLine(config, 'a2a: push sender full; event dropped');
        return Promise.resolve();
      }
      dropOldest(victim, 'a2a: push sender full; oldest event of its fullest receiver dropped');
    }
    // Looked up again: a drop above may have ended the queue.
    let q = queues.get(key);
    const r = receiverOf(config.url);
    if (q === undefined) {
      q = { key, items: [], config, receiver: r, state: 'new' };
      queues.set(key, q);
      attach(q, r);
    } else if (q.receiver !== r) {
      // The config now points elsewhere: its waiting events go there too.
      detach(q);
      attach(q, r);
    }
    q.config = config;
    q.items.push({ event, attempts: 0 });
    waiting++;
    r.waiting++;
    // A queue attempting or backing off comes to the event in its turn.
    if (q.state === 'new') {
      setReady(q);
      pump();
    }
    return Promise.resolve();
  }) as WebhookSender;
  send.idle = () =>
    queues.size === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const done = () => {
            idleWaiters.delete(done);
            resolve();
          };
          idleWaiters.add(done);
        });
  send.stats = () => ({ ...n, queued: waiting + inFlight, inFlight });
  send.close = () => {
    if (stop.signal.aborted) return;
    const queued = waiting;
    n.dropped += queued;
    stop.abort();
    for (const q of [...queues.values()]) {
      q.wake?.();
      q.items.length = 0;
      // One attempting ends itself once its attempt, cut short, settles.
      if (q.state !== 'active') end(q);
    }
    waiting = 0;
    for (const r of receivers.values()) r.breaker.shutdown();
    receivers.clear();
    unused.clear();
    readyReceivers.clear();
    if (queued + inFlight > 0) {
      log?.warn({ dropped: queued, aborted: inFlight }, 'a2a: push sender closed; queued events dropped');
    }
  };
  send.checkUrl = (url: string) =>
    withDeadline((deadline) => checkParsed(url, allow, lookup, deadline, timeout));
  return send;
}

/** Receivers (and their breakers) kept once no queue uses them. */
const MAX_RECEIVERS_KEPT = 1000;
