import { decodeProtectedHeader } from 'jose';
import { z } from 'zod';
import { BundleSet, type JwtBundle, type JwtBundleSource } from '../bundle.js';
import {
  JWT_SVID_DEFAULT_LEEWAY_SECONDS,
  leewaySecondsOption,
  validateJwtSvid,
  type JwtSvid,
} from '../jwt-svid.js';
import { defaultLogger, type Logger } from '../log.js';
import {
  MAX_TIMER_MS,
  checkKnownKeys,
  checkOptions,
  shown,
  signalOption,
  timerMs,
  wholeNumber,
} from '../options.js';
import { IdentityNotReadyError } from '../provider.js';
import { SpiffeId, type TrustDomain } from '../spiffe-id.js';
import {
  CLIENT_OPTION_HINTS,
  CLIENT_OPTION_KEYS,
  JWT_SVID_PARAM_HINTS,
  JWT_SVID_PARAM_KEYS,
  clientOptions,
  WorkloadApiClient,
  type WatchHandle,
  type WorkloadApiClientOptions,
} from './client.js';
import { WorkloadApiError } from './errors.js';

/** Options of {@link JwtSource.create}. */
export interface JwtSourceOptions extends WorkloadApiClientOptions {
  /**
   * How long {@link JwtSource.create} waits for the first JWT bundles: a whole
   * number of ms from 1 to 2147483647 (Node's longest timer). Default 30 000.
   */
  readonly readyTimeoutMs?: number;
  /**
   * A cached JWT-SVID is reused while more than this fraction of its lifetime
   * is left: a number between 0 and 1, both excluded. Default 0.5 (SPIRE's
   * own agent cache refreshes at half-life).
   */
  readonly refreshAtRemainingRatio?: number;
  /**
   * How long one FetchJWTSVID may take before it fails with
   * `WORKLOAD_API_DEADLINE_EXCEEDED`: a whole number of ms from 1 to
   * 2147483647. Default 10 000. Concurrent calls for one audience share a
   * fetch, so without a bound one that never answered held every later call
   * for that audience until {@link JwtSource.close}.
   */
  readonly fetchTimeoutMs?: number;
  /**
   * How many JWT-SVIDs (one per subject and audience set) the cache holds at
   * most: a whole number from 1 to 100 000. Default 1000 (the SPIRE agent's
   * `jwt_svid_cache_max_size`). Past it the least recently used goes.
   */
  readonly maxCachedSvids?: number;
  /**
   * The clock skew {@link JwtSource.validateJwtSvid} allows on `exp`, `nbf`
   * and `iat` (the `leewaySeconds` of {@link validateJwtSvid}): a whole
   * number of seconds from 0 to 300. Default 60, go-jose's, as go-spiffe.
   */
  readonly leewaySeconds?: number;
  /**
   * Cancels the wait for the first JWT bundles: {@link JwtSource.create}
   * rejects with the signal's reason as soon as it aborts (at once when it
   * already has), having closed every connection it opened. An abort after
   * `create()` resolved does nothing; close the source instead.
   */
  readonly signal?: AbortSignal;
}

const ratioError = (issue: { input?: unknown }): string =>
  `must be a number between 0 and 1 (both excluded), got ${shown(issue.input)}`;

const OPTION_KEYS = {
  ...CLIENT_OPTION_KEYS,
  readyTimeoutMs: true,
  refreshAtRemainingRatio: true,
  fetchTimeoutMs: true,
  maxCachedSvids: true,
  leewaySeconds: true,
  signal: true,
} satisfies Record<keyof JwtSourceOptions, true>;

const OptionsSchema = z.object({
  readyTimeoutMs: timerMs().default(30_000),
  refreshAtRemainingRatio: z
    .number({ error: ratioError })
    .gt(0, { error: ratioError })
    .lt(1, { error: ratioError })
    .default(0.5),
  fetchTimeoutMs: timerMs().default(10_000),
  maxCachedSvids: wholeNumber(1, 100_000, 'a whole number from 1 to 100000').default(1000),
  leewaySeconds: leewaySecondsOption.default(JWT_SVID_DEFAULT_LEEWAY_SECONDS),
  signal: signalOption,
});

interface CacheEntry {
  readonly svid: JwtSvid;
  /** The `kid` of the token's header: it is served while its trust domain's JWT bundle has that key. */
  readonly kid: string;
  /** After this instant the token is fetched again. */
  readonly refreshAt: number;
}

/** Expired entries are swept at most this often (ms): one sweep walks the whole cache. */
const SWEEP_INTERVAL_MS = 1000;

/** The SPIFFE IDs of an X.509 context, in order (the first is the default identity). */
const identitiesOf = (svids: readonly { id: SpiffeId }[]): string =>
  svids.map((s) => s.id.toString()).join(' ');

/**
 * JWT-SVIDs from the Workload API, cached per audience (and subject) until
 * near expiry, and validation of peers' JWT-SVIDs against the JWT bundles the
 * source keeps watching (own trust domain plus federated ones).
 *
 * The cache holds at most `maxCachedSvids` tokens (least recently used out)
 * and drops each once it is due for refresh. A token is dropped too when its
 * signing key (`kid`) leaves its trust domain's JWT bundle (a JWT authority
 * rotated out or revoked: every receiver would refuse it), and the whole
 * cache when the workload's identities change: from the first
 * {@link JwtSource.fetchJwtSvid} on, the source also watches the workload's
 * X.509-SVIDs for that (a Workload API without FetchX509SVID is not watched;
 * there the cache is still dropped when the server says the workload has no
 * identity).
 */
export class JwtSource implements JwtBundleSource {
  readonly #client: WorkloadApiClient;
  readonly #log: Logger;
  readonly #ratio: number;
  readonly #fetchTimeoutMs: number;
  readonly #maxCached: number;
  readonly #leewaySeconds: number;
  /** Insertion order is use order: the first entry is the least recently used. */
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inflight = new Map<string, Promise<JwtSvid>>();
  #bundles = new BundleSet();
  #watch: WatchHandle | undefined;
  /** The workload's X.509-SVIDs, watched for identity changes once a JWT-SVID was fetched. */
  #idWatch: WatchHandle | undefined;
  /** {@link identitiesOf} the last X.509 context seen. */
  #identities: string | undefined;
  /** Bumped when the cache is cleared: a fetch begun before must not fill it again. */
  #generation = 0;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweepAt = Number.POSITIVE_INFINITY;
  #lastSweep = 0;
  #ready = false;
  #closed = false;

  private constructor(
    client: WorkloadApiClient,
    log: Logger,
    opts: { ratio: number; fetchTimeoutMs: number; maxCached: number; leewaySeconds: number },
  ) {
    this.#client = client;
    this.#log = log;
    this.#ratio = opts.ratio;
    this.#fetchTimeoutMs = opts.fetchTimeoutMs;
    this.#maxCached = opts.maxCached;
    this.#leewaySeconds = opts.leewaySeconds;
  }

  /**
   * Connects and resolves once the first JWT bundles arrived.
   *
   * @throws {WorkloadApiAddressError} when the address is missing or malformed.
   * @throws {IdentityConfigError} when an option is unknown (`socket` for `address`, say), or `readyTimeoutMs`, `refreshAtRemainingRatio`, `fetchTimeoutMs`, `maxCachedSvids`, `leewaySeconds`, `signal` or a `backoff` option is invalid (the message names it).
   * @throws {IdentityNotReadyError} when no bundles arrived within `readyTimeoutMs`.
   * @throws {WorkloadApiError} `WORKLOAD_API_INVALID_ARGUMENT` when the server rejected the request.
   * @throws the reason of `signal` when it aborted first.
   */
  static async create(options: JwtSourceOptions = {}): Promise<JwtSource> {
    checkKnownKeys('JwtSource', options, OPTION_KEYS, CLIENT_OPTION_HINTS);
    const opts = checkOptions('JwtSource', OptionsSchema, {
      readyTimeoutMs: options.readyTimeoutMs,
      refreshAtRemainingRatio: options.refreshAtRemainingRatio,
      fetchTimeoutMs: options.fetchTimeoutMs,
      maxCachedSvids: options.maxCachedSvids,
      leewaySeconds: options.leewaySeconds,
      signal: options.signal,
    });
    const signal = opts.signal;
    signal?.throwIfAborted();
    const client = new WorkloadApiClient(clientOptions(options));
    const log = (options.logger ?? defaultLogger('jwt-source')).child({ address: client.address.uri });
    const source = new JwtSource(client, log, {
      ratio: opts.refreshAtRemainingRatio,
      fetchTimeoutMs: opts.fetchTimeoutMs,
      maxCached: opts.maxCachedSvids,
      leewaySeconds: opts.leewaySeconds,
    });
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let lastError: WorkloadApiError | undefined;
        onAbort = () => reject(signal?.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(
          () =>
            reject(
              new IdentityNotReadyError(
                `no JWT bundles from the Workload API at ${client.address.uri} within ${opts.readyTimeoutMs} ms` +
                  (lastError ? ` (last error: ${lastError.message})` : ''),
              ),
            ),
          opts.readyTimeoutMs,
        );
        source.#watch = client.watchJwtBundles({
          onUpdate: (set) => {
            source.#bundles = set;
            source.#dropUntrusted();
            if (!source.#ready) {
              source.#ready = true;
              resolve();
            }
          },
          onError: (err) => {
            lastError = err;
            source.#onWatchError(err);
          },
        });
        void source.#watch.done.then((err) => {
          if (err) {
            log.error({ err }, 'the Workload API rejected the JWT bundle watch; bundles no longer update');
            reject(err);
          }
        });
      });
      return source;
    } catch (err) {
      await source.close();
      throw err;
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * A JWT-SVID for `audience`, from the cache while more than the configured
   * fraction of its lifetime is left (and its key is in its trust domain's
   * JWT bundle, and the workload's identities did not change), else freshly
   * fetched. Concurrent calls for the same audience share one fetch. The
   * same frozen {@link JwtSvid} answers every caller of one audience.
   *
   * @throws {IdentityConfigError} when `params` has a key other than
   *   `audience` and `subject` (a misspelt `subject` would fetch the default
   *   identity's token instead), before any cache lookup.
   */
  async fetchJwtSvid(params: {
    audience: string | readonly string[];
    subject?: SpiffeId | string;
  }): Promise<JwtSvid> {
    if (this.#closed) throw new WorkloadApiError('WORKLOAD_API_CLOSED', 'the JWT source is closed');
    // Before the cache: a cached token of another identity must not answer a misspelt request.
    checkKnownKeys('JwtSource JWT-SVID request', params, JWT_SVID_PARAM_KEYS, JWT_SVID_PARAM_HINTS);
    const audience = typeof params.audience === 'string' ? [params.audience] : [...params.audience];
    const subject = params.subject === undefined ? '' : SpiffeId.parse(params.subject.toString()).toString();
    const key = JSON.stringify([subject, [...new Set(audience)].sort()]);
    const cached = this.#cache.get(key);
    if (cached && Date.now() < cached.refreshAt) {
      // Moved to the end: the least recently used entry is the first to go.
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached.svid;
    }
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    this.#watchIdentities();
    const generation = this.#generation;
    const p = (async () => {
      const requestedAt = Date.now();
      const svid = await this.#client.fetchJwtSvid(
        { audience, ...(subject ? { subject } : {}) },
        { timeoutMs: this.#fetchTimeoutMs },
      );
      const iat = typeof svid.claims.iat === 'number' ? svid.claims.iat * 1000 : requestedAt;
      const exp = svid.expiresAt.getTime();
      const issuedAt = Math.min(iat, exp);
      const kid = tokenKid(svid.token);
      // Not cached when the identities changed meanwhile (it may be the old
      // identity's), or when its key is not in the bundle: receivers refuse it.
      if (!this.#closed && generation === this.#generation && this.#trusted(svid, kid)) {
        this.#store(key, { svid, kid, refreshAt: exp - (exp - issuedAt) * this.#ratio });
      }
      return svid;
    })().finally(() => {
      // Only its own entry: after a clear, a later fetch of the key may be the one in flight.
      if (this.#inflight.get(key) === p) this.#inflight.delete(key);
    });
    this.#inflight.set(key, p);
    return p;
  }

  /**
   * Validates a JWT-SVID received from a peer against the watched JWT bundles
   * (signature, `kid` in the bundle of `sub`'s trust domain, `aud`, `exp`,
   * `nbf`, `iat`, allowing the `leewaySeconds` of clock skew the source was
   * created with).
   *
   * @throws {JwtSvidError} with the code of the first rule broken.
   */
  async validateJwtSvid(token: string, audience: string): Promise<JwtSvid> {
    if (this.#closed) throw new WorkloadApiError('WORKLOAD_API_CLOSED', 'the JWT source is closed');
    return validateJwtSvid(token, this.#bundles, audience, { leewaySeconds: this.#leewaySeconds });
  }

  getJwtBundle(trustDomain: TrustDomain): JwtBundle | undefined {
    return this.#bundles.getJwtBundle(trustDomain);
  }

  /** A snapshot of the current JWT bundles. */
  getBundleSet(): BundleSet {
    return this.#bundles.clone();
  }

  /** Stops watching and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.stop();
    this.#idWatch?.stop();
    this.#client.close();
    this.#cache.clear();
    clearTimeout(this.#sweepTimer);
    await Promise.all([this.#watch?.done, this.#idWatch?.done]);
    this.#log.debug('JWT source closed');
  }

  /** Caches `entry` as the most recently used, the least recently used out past the bound. */
  #store(key: string, entry: CacheEntry): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    for (const oldest of this.#cache.keys()) {
      if (this.#cache.size <= this.#maxCached) break;
      this.#cache.delete(oldest);
    }
    this.#scheduleSweep(entry.refreshAt);
  }

  /** Whether the JWT bundle of `svid`'s trust domain holds the key it was signed with. */
  #trusted(svid: JwtSvid, kid: string): boolean {
    return kid !== '' && this.#bundles.getJwtBundle(svid.id.trustDomain)?.keys.has(kid) === true;
  }

  /**
   * Drops the cached tokens whose key left their trust domain's JWT bundle:
   * after a JWT authority was rotated out or revoked every receiver refuses
   * them, for up to the rest of their refresh time.
   */
  #dropUntrusted(): void {
    for (const [key, entry] of this.#cache) {
      if (!this.#trusted(entry.svid, entry.kid)) this.#cache.delete(key);
    }
  }

  /** Empties the cache, and keeps a fetch begun before from filling it with what it brings. */
  #clear(why: string): void {
    this.#generation++;
    // A fetch begun before answers its own callers, not those who come after.
    this.#inflight.clear();
    if (this.#cache.size === 0) return;
    this.#log.debug({ dropped: this.#cache.size }, `JWT-SVID cache cleared: ${why}`);
    this.#cache.clear();
  }

  #onWatchError(err: WorkloadApiError): void {
    // The workload has no identity now (SPIRE: "no identity issued"): its
    // cached tokens are no longer its to hand out.
    if (err.code === 'WORKLOAD_API_PERMISSION_DENIED') this.#clear('the workload has no identity');
  }

  /**
   * Starts watching the workload's X.509-SVIDs, once: its identities change
   * there (a registration entry changed), and only there, as the Workload
   * API has no other word of it. Not before the first fetch, so a source
   * that only validates (whose workload may have no identity of its own)
   * opens no stream it does not need.
   */
  #watchIdentities(): void {
    if (this.#idWatch || this.#closed) return;
    this.#idWatch = this.#client.watchX509Context({
      onUpdate: (ctx) => {
        const ids = identitiesOf(ctx.svids);
        if (this.#identities !== undefined && ids !== this.#identities) {
          this.#clear('the workload identities changed');
        }
        this.#identities = ids;
      },
      onError: (err) => {
        if (err.code === 'WORKLOAD_API_UNIMPLEMENTED') {
          // A Workload API serving JWT-SVIDs only: nothing to learn here.
          this.#log.debug({ err }, 'no X.509-SVID stream to watch identities on');
          this.#idWatch?.stop();
          return;
        }
        this.#onWatchError(err);
      },
    });
  }

  /** Sweeps the entries due for refresh at `at` (epoch ms) at the latest, at most once a {@link SWEEP_INTERVAL_MS}. */
  #scheduleSweep(at: number): void {
    if (this.#closed) return;
    const when = Math.max(at, this.#lastSweep + SWEEP_INTERVAL_MS);
    if (this.#sweepTimer !== undefined && this.#sweepAt <= when) return;
    clearTimeout(this.#sweepTimer);
    this.#sweepAt = when;
    // A token valid for longer than a timer reaches: look again when it fires.
    this.#sweepTimer = setTimeout(
      () => this.#sweep(),
      Math.min(Math.max(0, when - Date.now()), MAX_TIMER_MS),
    );
    this.#sweepTimer.unref();
  }

  /** Drops every entry due for refresh: it is never served again, only held. */
  #sweep(): void {
    this.#sweepTimer = undefined;
    this.#sweepAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    this.#lastSweep = now;
    let next = Number.POSITIVE_INFINITY;
    for (const [key, entry] of this.#cache) {
      if (entry.refreshAt <= now) this.#cache.delete(key);
      else next = Math.min(next, entry.refreshAt);
    }
    if (next !== Number.POSITIVE_INFINITY) this.#scheduleSweep(next);
  }
}

/** The `kid` of a token's header (`''` when it has none). */
function tokenKid(token: string): string {
  const kid = decodeProtectedHeader(token).kid;
  return typeof kid === 'string' ? kid : '';
}
