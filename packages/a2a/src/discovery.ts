import { request, type Dispatcher } from 'undici';
import { SpiffeId, budgetMs } from '@weave/identity';
import { MAX_CARD_DEPTH, verifyAgentCard, type VerifyAgentCardOptions } from './card-signing.js';
import { exceedsDepth } from './depth.js';
import { z } from 'zod';
import { A2AClientError } from './errors.js';
import { A2AConfigError, checkBudget, checkOptions, durationMs, positiveCount } from './options.js';
import {
  boundedSignal,
  callFailure,
  deadlineExceeded,
  readLimited,
  untilAborted,
} from './transports/http.js';
import { AgentCardSchema, type AgentCard } from './wire/v1.js';

const DiscoveryNumbers = z.object({
  ttlMs: durationMs.optional(),
  maxEntries: positiveCount.optional(),
  maxCardBytes: positiveCount.optional(),
  timeoutMs: budgetMs.optional(),
});

/** Options of {@link DiscoveryClient}. */
export interface DiscoveryClientOptions {
  /** The transport, e.g. a `@weave/transport` SecureChannel. Required: there is no implicit plain-HTTP default. */
  readonly dispatcher: Dispatcher;
  /** How long a fetched card is reused, in ms. Default 5 minutes. */
  readonly ttlMs?: number;
  /** Most cards cached; the least recently fetched go first. Default 1000. */
  readonly maxEntries?: number;
  /** Largest card accepted, in bytes. Default 1 MiB. */
  readonly maxCardBytes?: number;
  /** Longest a fetch may take in ms, whatever its callers allow. Default 10 s. */
  readonly timeoutMs?: number;
  /**
   * How the signatures of fetched cards are checked (A2A §8.4, see
   * `verifyAgentCard`); a card that fails is not cached and `discover`
   * throws `AgentCardSignatureError`. `tlsPeer` defaults to the dispatcher's
   * `expectedPeer` when that is one SPIFFE ID (a SecureChannel bound to a
   * peer). Without this option signatures are not looked at (policy `off`).
   */
  readonly signatures?: Omit<VerifyAgentCardOptions, 'now'>;
}

/** Options of one {@link DiscoveryClient.discover}. */
export interface DiscoverOptions {
  /** Fetch even when a fresh card is cached. */
  readonly force?: boolean;
  /** Gives up waiting for the card (`ABORTED`, or `DEADLINE_EXCEEDED` for a timeout signal). */
  readonly signal?: AbortSignal | undefined;
  /** Gives up waiting after this many ms (`DEADLINE_EXCEEDED`). */
  readonly timeoutMs?: number | undefined;
}

/** Counters of the card cache. */
export interface DiscoveryStats {
  readonly hits: number;
  readonly misses: number;
  readonly errors: number;
  readonly evictions: number;
  readonly entries: number;
}

/** Outcome of discovering one URL with {@link DiscoveryClient.discoverMultiple}. */
export type DiscoveryResult =
  | { readonly url: string; readonly card: AgentCard; readonly error?: undefined }
  | { readonly url: string; readonly card?: undefined; readonly error: Error };

interface Entry {
  readonly card: AgentCard;
  readonly expires: number;
}

/** A fetch shared by every concurrent caller; aborted once all of them gave up. */
interface Inflight {
  readonly promise: Promise<AgentCard>;
  readonly controller: AbortController;
  /** Callers still waiting; one that waits without a bound pins the fetch (its own timeout still applies). */
  waiters: number;
}

/**
 * Fetches and caches agent cards (`/.well-known/agent-card.json`), validated
 * with zod. Concurrent requests for the same URL share one fetch.
 */
export class DiscoveryClient {
  readonly #dispatcher: Dispatcher;
  readonly #ttl: number;
  readonly #max: number;
  readonly #maxBytes: number;
  readonly #timeout: number;
  readonly #signatures: VerifyAgentCardOptions | undefined;
  readonly #cache = new Map<string, Entry>();
  readonly #inflight = new Map<string, Inflight>();
  /** Given URL → its card URL: a caller names the same agent on every call, and parsing it each time shows in profiles. */
  readonly #cardUrls = new Map<string, string>();
  #hits = 0;
  #misses = 0;
  #errors = 0;
  #evictions = 0;

  /** @throws {A2AConfigError} when the dispatcher is missing or a number is out of range; nothing is started. */
  constructor(options: DiscoveryClientOptions) {
    if (!options?.dispatcher) throw new A2AConfigError('DiscoveryClient', ['dispatcher is required']);
    checkOptions('DiscoveryClient', DiscoveryNumbers, options);
    this.#dispatcher = options.dispatcher;
    this.#ttl = options.ttlMs ?? 300_000;
    this.#max = options.maxEntries ?? 1000;
    this.#maxBytes = options.maxCardBytes ?? 1024 * 1024;
    this.#timeout = options.timeoutMs ?? 10_000;
    const sig = options.signatures;
    if (sig) {
      const expected = (options.dispatcher as { expectedPeer?: unknown }).expectedPeer;
      const tlsPeer = sig.tlsPeer ?? (typeof expected === 'string' ? SpiffeId.tryParse(expected) : undefined);
      this.#signatures = tlsPeer === undefined ? sig : { ...sig, tlsPeer };
    }
  }

  /**
   * The agent card at `url` (a base URL or the card's own URL), from cache
   * while fresh. Concurrent callers share one fetch; each stops waiting at its
   * own signal or `timeoutMs`, and the fetch is abandoned once no caller waits.
   */
  async discover(url: string, options: DiscoverOptions = {}): Promise<AgentCard> {
    // A NaN or out-of-range wait would end at once as DEADLINE_EXCEEDED.
    if (options.timeoutMs !== undefined)
      checkBudget('DiscoveryClient.discover', 'timeoutMs', options.timeoutMs);
    const cardUrl = this.#cardUrl(url);
    const now = Date.now();
    const hit = this.#cache.get(cardUrl);
    if (hit && !options.force && hit.expires > now) {
      this.#hits++;
      return hit.card;
    }
    let f = this.#inflight.get(cardUrl);
    if (f) this.#hits++;
    else {
      this.#misses++;
      f = this.#start(cardUrl);
    }
    return this.#wait(f, cardUrl, options);
  }

  #start(cardUrl: string): Inflight {
    const controller = new AbortController();
    const promise = this.#fetch(cardUrl, controller.signal).then(
      (card) => {
        this.#inflight.delete(cardUrl);
        this.#cache.delete(cardUrl);
        if (this.#cache.size >= this.#max) {
          const oldest = this.#cache.keys().next().value;
          if (oldest !== undefined) {
            this.#cache.delete(oldest);
            this.#evictions++;
          }
        }
        this.#cache.set(cardUrl, { card, expires: Date.now() + this.#ttl });
        return card;
      },
      (err: unknown) => {
        this.#inflight.delete(cardUrl);
        this.#errors++;
        throw err;
      },
    );
    // Callers that gave up do not see the fetch's own failure.
    promise.catch(() => undefined);
    const f: Inflight = { promise, controller, waiters: 0 };
    this.#inflight.set(cardUrl, f);
    return f;
  }

  #wait(f: Inflight, cardUrl: string, options: DiscoverOptions): Promise<AgentCard> {
    f.waiters++;
    const { signal, timeoutMs } = options;
    if (signal === undefined && timeoutMs === undefined) return f.promise;
    const what = `agent card ${cardUrl}`;
    return new Promise<AgentCard>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let done = false;
      const finish = () => {
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const giveUp = (err: Error) => {
        if (done) return;
        finish();
        // The last caller gone: nobody wants the card any more, stop fetching it.
        if (--f.waiters === 0) f.controller.abort(err);
        reject(err);
      };
      const onAbort = () => giveUp(callFailure(what, signal?.reason, signal));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined)
        timer = setTimeout(() => giveUp(deadlineExceeded(what)), Math.max(1, timeoutMs));
      f.promise.then(
        (card) => {
          if (done) return;
          finish();
          resolve(card);
        },
        (err: unknown) => {
          if (done) return;
          finish();
          reject(err as Error);
        },
      );
    });
  }

  /**
   * The cached card of `url` while fresh, without fetching (counted as a hit);
   * `undefined` when it must be fetched with {@link discover}.
   * @throws {A2AClientError} `INVALID_AGENT_URL` for a string that is not a URL.
   */
  cached(url: string): AgentCard | undefined {
    const hit = this.#cache.get(this.#cardUrl(url));
    if (hit === undefined || hit.expires <= Date.now()) return undefined;
    this.#hits++;
    return hit.card;
  }

  #cardUrl(url: string): string {
    let cardUrl = this.#cardUrls.get(url);
    if (cardUrl === undefined) {
      cardUrl = agentCardUrl(url);
      if (this.#cardUrls.size >= this.#max) this.#cardUrls.clear();
      this.#cardUrls.set(url, cardUrl);
    }
    return cardUrl;
  }

  /** Discovers several agents at once; one failure does not fail the others. */
  async discoverMultiple(urls: readonly string[]): Promise<DiscoveryResult[]> {
    const settled = await Promise.allSettled(urls.map((u) => this.discover(u)));
    return settled.map((s, i) => {
      const url = urls[i] as string;
      return s.status === 'fulfilled'
        ? { url, card: s.value }
        : { url, error: s.reason instanceof Error ? s.reason : new Error(String(s.reason)) };
    });
  }

  /**
   * The agents among `urls` offering `capability`: a skill id or tag, or a
   * predicate on the card. Agents that cannot be reached are left out.
   */
  async findAgentsWithCapability(
    urls: readonly string[],
    capability: string | ((card: AgentCard) => boolean),
  ): Promise<Array<{ url: string; card: AgentCard }>> {
    const match =
      typeof capability === 'function'
        ? capability
        : (card: AgentCard) => card.skills.some((s) => s.id === capability || s.tags.includes(capability));
    const found: Array<{ url: string; card: AgentCard }> = [];
    for (const r of await this.discoverMultiple(urls)) {
      if (r.card && match(r.card)) found.push({ url: r.url, card: r.card });
    }
    return found;
  }

  /** Drops one cached card, or all. */
  invalidate(url?: string): void {
    if (url === undefined) this.#cache.clear();
    else this.#cache.delete(this.#cardUrl(url));
  }

  stats(): DiscoveryStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      errors: this.#errors,
      evictions: this.#evictions,
      entries: this.#cache.size,
    };
  }

  async #fetch(cardUrl: string, signal: AbortSignal): Promise<AgentCard> {
    // One timer bounds the whole fetch: undici's own headers timeout would let a
    // SecureChannel repeat the GET (idempotent) after each expiry.
    const bounded = boundedSignal(signal, this.#timeout, deadlineExceeded, `agent card ${cardUrl}`);
    try {
      return await this.#get(cardUrl, bounded.signal);
    } finally {
      bounded.dispose();
    }
  }

  async #get(cardUrl: string, signal: AbortSignal): Promise<AgentCard> {
    let res: Dispatcher.ResponseData;
    try {
      res = await untilAborted(
        request(cardUrl, {
          dispatcher: this.#dispatcher,
          headers: { accept: 'application/json', 'a2a-version': '1.0' },
          signal,
        }),
        signal,
      );
    } catch (err) {
      const e = callFailure(`agent card ${cardUrl}`, err, signal);
      if (e instanceof A2AClientError && e.code !== 'TRANSPORT_FAILED') throw e;
      throw new A2AClientError(
        'AGENT_CARD_UNREACHABLE',
        `cannot fetch agent card ${cardUrl}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    let text: string;
    try {
      text = await readLimited(res.body, this.#maxBytes, cardUrl);
    } catch (err) {
      throw callFailure(`agent card ${cardUrl}`, err, signal);
    }
    if (res.statusCode !== 200) {
      throw new A2AClientError(
        'AGENT_CARD_UNAVAILABLE',
        `agent card ${cardUrl} answered HTTP ${res.statusCode}`,
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new A2AClientError('AGENT_CARD_INVALID', `agent card ${cardUrl} is not JSON`, { cause: err });
    }
    // A card that deep (400 000 levels fit in 1 MiB) overflowed the stack in the
    // signature check, and in whatever the caller does with it (JSON.stringify).
    if (exceedsDepth(json, MAX_CARD_DEPTH)) {
      throw new A2AClientError(
        'AGENT_CARD_INVALID',
        `agent card ${cardUrl} is nested deeper than ${MAX_CARD_DEPTH} levels`,
      );
    }
    const parsed = AgentCardSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new A2AClientError(
        'AGENT_CARD_INVALID',
        `agent card ${cardUrl} is invalid: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'unknown'}`,
      );
    }
    if (this.#signatures) await verifyAgentCard(parsed.data, this.#signatures);
    return parsed.data;
  }
}

/** `https://h/x` → `https://h/x/.well-known/agent-card.json`; a card URL is kept. */
export function agentCardUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new A2AClientError('INVALID_AGENT_URL', `not a URL: ${JSON.stringify(url)}`);
  }
  if (u.pathname.endsWith('/.well-known/agent-card.json') || u.pathname.endsWith('/.well-known/agent.json')) {
    return u.toString();
  }
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return new URL('.well-known/agent-card.json', u).toString();
}
