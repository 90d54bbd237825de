import { lookup as dnsLookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { MAX_TIMER_MS } from '@weave/identity';
import { CircuitBreaker, CircuitOpenError, type CircuitBreakerOptionsInput } from '@weave/transport';
import { A2AClientError } from './errors.js';
import { A2AConfigError, checkOptions, positiveCount, timerMs, timerMsOr0 } from './options.js';
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

async function checkParsed(
  raw: string,
  allow: readonly Cidr[],
  lookup: (hostname: string) => Promise<string[]>,
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
      addresses = await lookup(host);
    } catch (err) {
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

/** A URL as it may appear in logs: no query (it may hold a token) and no user info. */
export function redactUrl(url: URL | string): string {
  try {
    const u = typeof url === 'string' ? new URL(url) : url;
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return '(invalid URL)';
  }
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

const SenderNumbers = z.object({
  timeoutMs: timerMs.optional(),
  maxAttempts: positiveCount.optional(),
  initialBackoffMs: timerMsOr0('retry at once').optional(),
  maxBackoffMs: timerMsOr0('retry at once').optional(),
  maxQueuePerTask: positiveCount.optional(),
});

/** Options of {@link createWebhookSender}. */
export interface WebhookSenderOptions extends WebhookUrlCheckOptions {
  /**
   * The transport to the webhooks. For Weave receivers a `@weave/transport`
   * SecureChannel, so the receiver's SPIFFE ID is verified before any byte
   * is sent. Required.
   */
  readonly dispatcher: Dispatcher;
  /** Per-attempt timeout in ms. Default 5000. */
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
  /** Where delivery failures are logged (secrets redacted). Default: not logged. */
  readonly logger?: Pick<Logger, 'warn' | 'debug'>;
}

/** Counters of a {@link WebhookSender}. */
export interface WebhookSenderStats {
  readonly delivered: number;
  readonly attempts: number;
  readonly retries: number;
  /** Events given up after `maxAttempts` or a permanent refusal. */
  readonly failed: number;
  /** Events dropped because a queue was full. */
  readonly dropped: number;
  /** URLs refused by the SSRF guard (no connection made). */
  readonly refused: number;
  /** Attempts not made because the receiver's circuit was open (no connection made). */
  readonly shortCircuited: number;
  /** Events waiting or in flight. */
  readonly queued: number;
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
  /** Stops delivering: queued events are dropped, waits are cut short. */
  close(): void;
  /**
   * The SSRF guard alone ({@link checkWebhookUrl} with this sender's
   * allowlist); `A2AServer` calls it when a push config is created.
   * @throws {PushUrlRefusedError}
   */
  checkUrl(url: string): Promise<{ url: URL; address: string }>;
}

interface Queue {
  readonly items: StreamResponse[];
  config: TaskPushNotificationConfig;
  running: boolean;
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
 * - Each receiver (URL origin) has a circuit breaker shared by all its
 *   queues: once it keeps failing, further attempts to it are not made
 *   until the breaker lets a trial through (`circuitBreaker`).
 * - 2xx is delivered. Network errors, timeouts, 408, 429 and 5xx are retried
 *   with exponential backoff up to `maxAttempts`; other answers, including
 *   redirects (never followed), fail the event at once.
 * - Before every attempt the URL passes the SSRF guard ({@link checkWebhookUrl});
 *   the request then goes to the address that was checked (the Host header
 *   keeps the name), so a DNS answer that changes in between is not used.
 * - Logs name the config without its secrets ({@link redactPushConfig}).
 */
export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  if (!options?.dispatcher) throw new A2AConfigError('createWebhookSender', ['dispatcher is required']);
  checkOptions('createWebhookSender', SenderNumbers, options);
  const dispatcher = options.dispatcher;
  const timeout = options.timeoutMs ?? 5000;
  const tokenHeader = (options.tokenHeader ?? 'X-A2A-Notification-Token').toLowerCase();
  const maxAttempts = options.maxAttempts ?? 5;
  const initialBackoff = options.initialBackoffMs ?? 250;
  const maxBackoff = options.maxBackoffMs ?? 30_000;
  const maxQueue = options.maxQueuePerTask ?? 100;
  const allow = parseAllow(options.allowAddresses);
  const lookup = options.lookup ?? systemLookup;
  const log = options.logger;
  const queues = new Map<string, Queue>();
  const idleWaiters = new Set<() => void>();
  const stop = new AbortController();
  const n = { delivered: 0, attempts: 0, retries: 0, failed: 0, dropped: 0, refused: 0, shortCircuited: 0 };
  const breakerOptions = options.circuitBreaker ?? {};
  // Checked now: a bad option fails here, not at the first delivery.
  new CircuitBreaker(breakerOptions).shutdown();
  const breakers = new Map<string, CircuitBreaker>();
  /** The breaker of the receiver at `url` (by origin); the map is bounded, idle closed breakers go first. */
  const breakerOf = (url: string): CircuitBreaker => {
    let origin: string;
    try {
      origin = new URL(url).origin;
    } catch {
      origin = url; // refused by the guard in the attempt anyway
    }
    let b = breakers.get(origin);
    if (b === undefined) {
      if (breakers.size >= MAX_RECEIVER_BREAKERS) {
        for (const [k, old] of breakers) {
          if (old.state !== 'closed') continue;
          old.shutdown();
          breakers.delete(k);
          break;
        }
      }
      b = new CircuitBreaker({
        ...breakerOptions,
        name: `push receiver ${origin}`,
        isFailure: (err) => !(err instanceof Permanent),
      });
      breakers.set(origin, b);
    }
    return b;
  };

  const attempt = async (config: TaskPushNotificationConfig, body: string): Promise<void> => {
    let checked: { url: URL; address: string };
    try {
      checked = await checkParsed(config.url, allow, lookup);
    } catch (err) {
      n.refused++;
      throw new Permanent((err as Error).message, { cause: err });
    }
    const { url, address } = checked;
    const headers: Record<string, string> = { 'content-type': 'application/a2a+json', host: url.host };
    if (config.authentication?.credentials) {
      headers.authorization = `${config.authentication.scheme} ${config.authentication.credentials}`;
    }
    if (config.token) headers[tokenHeader] = config.token;
    // Connect to the address the guard checked, not to whatever the name resolves to next.
    const origin = `${url.protocol}//${address.includes(':') ? `[${address}]` : address}${url.port ? `:${url.port}` : ''}`;
    n.attempts++;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${origin}${url.pathname}${url.search}`, {
        method: 'POST',
        dispatcher,
        headers,
        body,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.any([stop.signal, AbortSignal.timeout(timeout)]),
      });
    } catch (err) {
      throw new A2AClientError('PUSH_FAILED', `webhook unreachable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    await res.body.dump().catch(() => undefined);
    const s = res.statusCode;
    if (s >= 200 && s < 300) return;
    const message = `webhook answered HTTP ${s}`;
    if (s === 408 || s === 429 || s >= 500) throw new A2AClientError('PUSH_REJECTED', message);
    throw new Permanent(s >= 300 && s < 400 ? `${message} (redirects are not followed)` : message);
  };

  const deliver = async (q: Queue, event: StreamResponse): Promise<void> => {
    const body = JSON.stringify(event);
    for (let i = 1; ; i++) {
      try {
        await breakerOf(q.config.url).execute(() => attempt(q.config, body));
        n.delivered++;
        return;
      } catch (err) {
        if (err instanceof CircuitOpenError) n.shortCircuited++;
        const last = err instanceof Permanent || i >= maxAttempts || stop.signal.aborted;
        log?.[last ? 'warn' : 'debug'](
          { err: { message: (err as Error).message }, config: redactPushConfig(q.config), attempt: i },
          last ? 'a2a: push notification failed' : 'a2a: push notification attempt failed; retrying',
        );
        if (last) {
          n.failed++;
          return;
        }
        n.retries++;
        const base = Math.min(maxBackoff, initialBackoff * 2 ** (i - 1));
        // The jitter can take a backoff near the bound past the longest timer.
        await sleep(Math.min(base * (0.8 + Math.random() * 0.4), MAX_TIMER_MS), stop.signal);
      }
    }
  };

  const run = async (key: string, q: Queue): Promise<void> => {
    q.running = true;
    try {
      for (let e = q.items.shift(); e !== undefined; e = q.items.shift()) {
        if (stop.signal.aborted) break;
        await deliver(q, e);
      }
    } finally {
      q.running = false;
      queues.delete(key);
      if (queues.size === 0) for (const w of idleWaiters) w();
    }
  };

  const send = ((config: TaskPushNotificationConfig, event: StreamResponse): Promise<void> => {
    if (stop.signal.aborted) return Promise.resolve();
    const key = `${config.taskId}\u0000${config.id ?? config.url}`;
    let q = queues.get(key);
    if (q === undefined) {
      q = { items: [], config, running: false };
      queues.set(key, q);
    }
    q.config = config;
    if (q.items.length >= maxQueue) {
      q.items.shift();
      n.dropped++;
      log?.warn({ config: redactPushConfig(config) }, 'a2a: push queue full; oldest event dropped');
    }
    q.items.push(event);
    if (!q.running) void run(key, q);
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
  send.stats = () => ({
    ...n,
    queued: [...queues.values()].reduce((s, q) => s + q.items.length + (q.running ? 1 : 0), 0),
  });
  send.close = () => {
    stop.abort();
    for (const b of breakers.values()) b.shutdown();
    breakers.clear();
  };
  send.checkUrl = (url: string) => checkParsed(url, allow, lookup);
  return send;
}

/** Receivers with a breaker at once; beyond it, an idle closed breaker makes room. */
const MAX_RECEIVER_BREAKERS = 1000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    t.unref();
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
