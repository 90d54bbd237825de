import { request, type Dispatcher } from 'undici';
import { SpiffeId } from '@weave/identity';
import { verifyAgentCard, type VerifyAgentCardOptions } from './card-signing.js';
import { A2AClientError } from './errors.js';
import { AgentCardSchema, type AgentCard } from './wire/v1.js';

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
  /** Per-fetch timeout in ms. Default 10 s. */
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
  readonly #inflight = new Map<string, Promise<AgentCard>>();
  /** Given URL → its card URL: a caller names the same agent on every call, and parsing it each time shows in profiles. */
  readonly #cardUrls = new Map<string, string>();
  #hits = 0;
  #misses = 0;
  #errors = 0;
  #evictions = 0;

  constructor(options: DiscoveryClientOptions) {
    if (!options?.dispatcher) throw new TypeError('DiscoveryClient: dispatcher is required');
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

  /** The agent card at `url` (a base URL or the card's own URL), from cache while fresh. */
  async discover(url: string, options: { force?: boolean } = {}): Promise<AgentCard> {
    const cardUrl = this.#cardUrl(url);
    const now = Date.now();
    const hit = this.#cache.get(cardUrl);
    if (hit && !options.force && hit.expires > now) {
      this.#hits++;
      return hit.card;
    }
    const pending = this.#inflight.get(cardUrl);
    if (pending) {
      this.#hits++;
      return pending;
    }
    this.#misses++;
    const p = this.#fetch(cardUrl).then(
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
    this.#inflight.set(cardUrl, p);
    return p;
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

  async #fetch(cardUrl: string): Promise<AgentCard> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(cardUrl, {
        dispatcher: this.#dispatcher,
        headers: { accept: 'application/json', 'a2a-version': '1.0' },
        headersTimeout: this.#timeout,
        bodyTimeout: this.#timeout,
      });
    } catch (err) {
      throw new A2AClientError(
        'AGENT_CARD_UNREACHABLE',
        `cannot fetch agent card ${cardUrl}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const text = await readLimited(res.body, this.#maxBytes, cardUrl);
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

/** Reads a body as UTF-8 text, refusing more than `max` bytes. */
export async function readLimited(
  body: Dispatcher.ResponseData['body'],
  max: number,
  what: string,
): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    const b = c as Buffer;
    n += b.length;
    if (n > max) {
      body.destroy();
      throw new A2AClientError('RESPONSE_TOO_LARGE', `response from ${what} exceeds ${max} bytes`);
    }
    chunks.push(b);
  }
  return chunks.length === 1
    ? (chunks[0] as Buffer).toString('utf8')
    : Buffer.concat(chunks).toString('utf8');
}
