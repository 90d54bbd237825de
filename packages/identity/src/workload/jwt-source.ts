import { z } from 'zod';
import { BundleSet, type JwtBundle, type JwtBundleSource } from '../bundle.js';
import { validateJwtSvid, type JwtSvid } from '../jwt-svid.js';
import { defaultLogger, type Logger } from '../log.js';
import { checkKnownKeys, checkOptions, shown, signalOption, timerMs } from '../options.js';
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
  signal: signalOption,
});

interface CacheEntry {
  readonly svid: JwtSvid;
  /** After this instant the token is fetched again. */
  readonly refreshAt: number;
}

/**
 * JWT-SVIDs from the Workload API, cached per audience (and subject) until
 * near expiry, and validation of peers' JWT-SVIDs against the JWT bundles the
 * source keeps watching (own trust domain plus federated ones).
 */
export class JwtSource implements JwtBundleSource {
  readonly #client: WorkloadApiClient;
  readonly #log: Logger;
  readonly #ratio: number;
  readonly #fetchTimeoutMs: number;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inflight = new Map<string, Promise<JwtSvid>>();
  #bundles = new BundleSet();
  #watch: WatchHandle | undefined;
  #ready = false;
  #closed = false;

  private constructor(client: WorkloadApiClient, log: Logger, ratio: number, fetchTimeoutMs: number) {
    this.#client = client;
    this.#log = log;
    this.#ratio = ratio;
    this.#fetchTimeoutMs = fetchTimeoutMs;
  }

  /**
   * Connects and resolves once the first JWT bundles arrived.
   *
   * @throws {WorkloadApiAddressError} when the address is missing or malformed.
   * @throws {IdentityConfigError} when an option is unknown (`socket` for `address`, say), or `readyTimeoutMs`, `refreshAtRemainingRatio`, `fetchTimeoutMs`, `signal` or a `backoff` option is invalid (the message names it).
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
      signal: options.signal,
    });
    const signal = opts.signal;
    signal?.throwIfAborted();
    const client = new WorkloadApiClient(clientOptions(options));
    const log = (options.logger ?? defaultLogger('jwt-source')).child({ address: client.address.uri });
    const source = new JwtSource(client, log, opts.refreshAtRemainingRatio, opts.fetchTimeoutMs);
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
            if (!source.#ready) {
              source.#ready = true;
              resolve();
            }
          },
          onError: (err) => {
            lastError = err;
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
   * fraction of its lifetime is left, else freshly fetched. Concurrent calls
   * for the same audience share one fetch.
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
    if (cached && Date.now() < cached.refreshAt) return cached.svid;
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    const p = (async () => {
      const requestedAt = Date.now();
      const svid = await this.#client.fetchJwtSvid(
        { audience, ...(subject ? { subject } : {}) },
        { timeoutMs: this.#fetchTimeoutMs },
      );
      const iat = typeof svid.claims.iat === 'number' ? svid.claims.iat * 1000 : requestedAt;
      const exp = svid.expiresAt.getTime();
      const issuedAt = Math.min(iat, exp);
      this.#cache.set(key, { svid, refreshAt: exp - (exp - issuedAt) * this.#ratio });
      return svid;
    })().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  /**
   * Validates a JWT-SVID received from a peer against the watched JWT bundles
   * (signature, `kid` in the bundle of `sub`'s trust domain, `aud`, `exp`).
   *
   * @throws {JwtSvidError} with the code of the first rule broken.
   */
  async validateJwtSvid(token: string, audience: string): Promise<JwtSvid> {
    if (this.#closed) throw new WorkloadApiError('WORKLOAD_API_CLOSED', 'the JWT source is closed');
    return validateJwtSvid(token, this.#bundles, audience);
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
    this.#client.close();
    this.#cache.clear();
    await this.#watch?.done;
    this.#log.debug('JWT source closed');
  }
}
