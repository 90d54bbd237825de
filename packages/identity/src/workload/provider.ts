import { z } from 'zod';
import { BundleSet } from '../bundle.js';
import { Listeners } from '../listeners.js';
import { defaultLogger, type Logger } from '../log.js';
import { checkKnownKeys, checkOptions, signalOption, timerMs } from '../options.js';
import { IdentityNotReadyError } from '../provider.js';
import { IdentityProviderBase } from '../provider-base.js';
import { SpiffeId } from '../spiffe-id.js';
import { cutText } from '../text.js';
import { verifyX509Svid, type X509Svid } from '../x509-svid.js';
import {
  CLIENT_OPTION_HINTS,
  CLIENT_OPTION_KEYS,
  clientOptions,
  WorkloadApiClient,
  type WatchHandle,
  type WorkloadApiClientOptions,
  type X509Context,
} from './client.js';
import { WorkloadApiError } from './errors.js';

/** Options of {@link WorkloadApiIdentityProvider.create}. */
export interface WorkloadApiIdentityProviderOptions extends WorkloadApiClientOptions {
  /**
   * How long {@link WorkloadApiIdentityProvider.create} waits for the first
   * SVID: a whole number of ms from 1 to 2147483647 (Node's longest timer).
   * Default 30 000.
   */
  readonly readyTimeoutMs?: number;
  /** Use the SVID with this operator hint instead of the first one. */
  readonly hint?: string;
  /**
   * Use the SVID with this SPIFFE ID instead of the first one: a workload
   * registered under several entries (SPIRE sends every SVID it is entitled to)
   * picks the identity it was configured with. Combined with `hint`, both must match.
   */
  readonly spiffeId?: string | SpiffeId;
  /**
   * Cancels the wait for the first SVID: {@link WorkloadApiIdentityProvider.create}
   * rejects with the signal's reason as soon as it aborts (at once when it
   * already has), having closed every connection it opened. An abort after
   * `create()` resolved does nothing; close the provider instead.
   */
  readonly signal?: AbortSignal;
}

const OPTION_KEYS = {
  ...CLIENT_OPTION_KEYS,
  readyTimeoutMs: true,
  hint: true,
  spiffeId: true,
  signal: true,
} satisfies Record<keyof WorkloadApiIdentityProviderOptions, true>;

const OptionsSchema = z.object({
  readyTimeoutMs: timerMs().default(30_000),
  hint: z.string().min(1).optional(),
  spiffeId: z
    .string()
    .optional()
    .transform((s, ctx) => {
      if (s === undefined) return undefined;
      try {
        return SpiffeId.parse(s).toString();
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `spiffeId: ${(err as Error).message}` });
        return z.NEVER;
      }
    }),
  signal: signalOption,
});

/**
 * How many SVID IDs, and how many characters of each, an error listing the
 * SVIDs received names: a Workload API may send 256 SVIDs with IDs of 2 KB,
 * and the error goes to the logs on every update.
 */
const SHOWN_SVIDS = 5;
const SHOWN_ID_CHARS = 128;

/** `a, b, c, d, e and 251 more`: the IDs of the SVIDs received, bounded. */
function sentIds(svids: readonly X509Svid[]): string {
  const shown = svids.slice(0, SHOWN_SVIDS).map((s) => cutText(s.id.toString(), SHOWN_ID_CHARS));
  const more = svids.length - shown.length;
  return shown.join(', ') + (more > 0 ? ` and ${more} more` : '');
}

/** A failure the provider reports through {@link WorkloadApiIdentityProvider.onError}. */
export type WorkloadIdentityError = WorkloadApiError | IdentityNotReadyError;

/**
 * The production {@link IdentityProvider}: the workload's identity from the
 * SPIFFE Workload API (a SPIRE agent, or Weave's dev server).
 *
 * It keeps a stream open for X.509-SVIDs (with their bundles) and one for JWT
 * bundles, applies every update (rotation, federated bundles added or
 * removed), and reconnects with capped exponential backoff and jitter —
 * within about a second while its SVID is expired or about to be. While the endpoint
 * is unreachable it keeps serving the last SVID until that SVID expires; then
 * it logs an error, notifies {@link WorkloadApiIdentityProvider.onExpired} and
 * {@link WorkloadApiIdentityProvider.onError} listeners, and
 * {@link WorkloadApiIdentityProvider.getX509Svid} throws
 * {@link IdentityNotReadyError} until a fresh SVID arrives. After
 * INVALID_ARGUMENT it stops, as go-spiffe does.
 */
export class WorkloadApiIdentityProvider extends IdentityProviderBase {
  readonly #client: WorkloadApiClient;
  readonly #hint: string | undefined;
  readonly #spiffeId: string | undefined;
  readonly #errors: Listeners<WorkloadIdentityError>;
  #lastError: WorkloadApiError | undefined;
  #watches: WatchHandle[] = [];
  #onFirst: (() => void) | undefined;

  private constructor(
    client: WorkloadApiClient,
    log: Logger,
    hint: string | undefined,
    spiffeId: string | undefined,
  ) {
    super({ logger: log });
    this.#client = client;
    this.#hint = hint;
    this.#spiffeId = spiffeId;
    this.#errors = new Listeners(log, 'identity error');
    // onError listeners predate onExpired and still hear of an expiry.
    this.onExpired((e) => this.#reportError(new IdentityNotReadyError(e.message)));
  }

  /**
   * Connects to the Workload API and resolves once the first X.509-SVID arrived.
   *
   * @throws {WorkloadApiAddressError} when the address is missing or malformed.
   * @throws {IdentityConfigError} when an option is unknown (`socket` for `address`, say), or `readyTimeoutMs`, `hint`, `spiffeId`, `signal` or a `backoff` option is invalid (the message names it).
   * @throws {IdentityNotReadyError} when no SVID arrived within `readyTimeoutMs` (the message names the last error).
   * @throws {WorkloadApiError} `WORKLOAD_API_INVALID_ARGUMENT` when the server rejected the request.
   * @throws the reason of `signal` when it aborted first.
   */
  static async create(
    options: WorkloadApiIdentityProviderOptions = {},
  ): Promise<WorkloadApiIdentityProvider> {
    checkKnownKeys('Workload API provider', options, OPTION_KEYS, CLIENT_OPTION_HINTS);
    const { readyTimeoutMs, hint, spiffeId, signal } = checkOptions('Workload API provider', OptionsSchema, {
      readyTimeoutMs: options.readyTimeoutMs,
      hint: options.hint,
      spiffeId: options.spiffeId?.toString(),
      signal: options.signal,
    });
    signal?.throwIfAborted();
    const client = new WorkloadApiClient(clientOptions(options));
    const log = (options.logger ?? defaultLogger('workload-api-provider')).child({
      address: client.address.uri,
    });
    const provider = new WorkloadApiIdentityProvider(client, log, hint, spiffeId);
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        provider.#onFirst = resolve;
        onAbort = () => reject(signal?.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => {
          const last = provider.#lastError;
          reject(
            new IdentityNotReadyError(
              `no X.509-SVID from the Workload API at ${client.address.uri} within ${readyTimeoutMs} ms` +
                (last ? ` (last error: ${last.message})` : ''),
            ),
          );
        }, readyTimeoutMs);
        provider.#start((fatal) => reject(fatal));
      });
      return provider;
    } catch (err) {
      await provider.close();
      throw err;
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      provider.#onFirst = undefined;
    }
  }

  /**
   * Called for each Workload API failure (stream dropped, invalid message,
   * request rejected) and when the held SVID expires without a replacement.
   * Returns the unsubscribe function.
   */
  onError(listener: (error: WorkloadIdentityError) => void): () => void {
    return this.#errors.add(listener);
  }

  /** Stops the streams and ends the connection, also one the server never answered. Idempotent. */
  override async close(): Promise<void> {
    if (this.closed) return;
    await super.close();
    for (const w of this.#watches) w.stop();
    this.#client.close();
    this.#errors.clear();
    await Promise.all(this.#watches.map((w) => w.done));
  }

  #start(onFatal: (err: WorkloadApiError) => void): void {
    const x509 = this.#client.watchX509Context({
      onUpdate: (ctx) => this.#applyX509(ctx),
      onError: (err) => this.#reportError(err, true),
      // Without a usable SVID (expired, or expiring before the next attempt), reconnect at once.
      needBy: () => this.currentSvid?.expiresAt.getTime(),
    });
    const jwt = this.#client.watchJwtBundles({
      onUpdate: (set) => this.#applyJwt(set),
      onError: (err) => this.#reportError(err),
    });
    this.#watches = [x509, jwt];
    void x509.done.then((err) => {
      if (!err) return;
      this.log.error(
        { err },
        'the Workload API rejected the X.509-SVID watch; the provider no longer updates',
      );
      onFatal(err);
    });
  }

  /**
   * `x509`: the failure is why no X.509-SVID came. Only such a failure is the
   * "last error" create() and an expiry name: a JWT bundle stream failing over
   * and over (an endpoint without it) would hide the reason.
   */
  #reportError(err: WorkloadIdentityError, x509 = false): void {
    if (x509 && err instanceof WorkloadApiError) this.#lastError = err;
    this.#errors.emit(err);
  }

  #applyX509(ctx: X509Context): void {
    if (this.closed) return;
    const svid =
      this.#hint === undefined && this.#spiffeId === undefined
        ? ctx.defaultSvid
        : ctx.svids.find(
            (s) =>
              (this.#hint === undefined || s.hint === this.#hint) &&
              (this.#spiffeId === undefined || s.id.toString() === this.#spiffeId),
          );
    if (!svid) {
      const wanted = [
        ...(this.#spiffeId === undefined ? [] : [`ID ${this.#spiffeId}`]),
        ...(this.#hint === undefined ? [] : [`hint ${JSON.stringify(this.#hint)}`]),
      ].join(' and ');
      this.#reportError(
        new WorkloadApiError(
          'WORKLOAD_API_BAD_RESPONSE',
          `the Workload API sent no X.509-SVID with ${wanted} (it sent ${sentIds(ctx.svids)})`,
        ),
        true,
      );
      return;
    }
    try {
      // What the provider base expects of a subclass, and what SvidIdentityProvider and
      // StaticMtlsProvider do: an SVID that is expired, not yet valid, or not chained to
      // the bundle sent with it would replace a good one and fail every handshake.
      verifyX509Svid(svid.certificates, ctx.bundles);
    } catch (err) {
      this.#reportError(
        new WorkloadApiError(
          'WORKLOAD_API_BAD_RESPONSE',
          `the Workload API sent an X.509-SVID for ${svid.id.toString()} that does not verify against its bundle (${(err as Error).message}); keeping the last valid one`,
          { cause: err },
        ),
        true,
      );
      // The bundles of the same message stand on their own (a CA rotation, a
      // federated trust domain): taken, as a bundles-only update would be.
      this.publish({ bundles: merged(ctx.bundles, this.bundles) });
      return;
    }
    const prev = this.currentSvid;
    this.publish({ svid, bundles: merged(ctx.bundles, this.bundles) });
    if (this.currentSvid !== prev) {
      this.log.info(
        { id: svid.id.toString(), expiresAt: svid.expiresAt.toISOString() },
        'X.509-SVID updated',
      );
    }
    this.#onFirst?.();
  }

  #applyJwt(set: BundleSet): void {
    // Before the first SVID nothing is announced; the bundles ride along with it.
    this.publish({ bundles: merged(this.bundles, set) });
  }

  protected override expiredMessage(svid: X509Svid): string {
    return (
      `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} and the Workload API at ` +
      `${this.#client.address.uri} has not delivered a new one` +
      (this.#lastError ? ` (last error: ${this.#lastError.message})` : '')
    );
  }
}

/** The X.509 bundles of `x509From` with the JWT bundles of `jwtFrom`: each Workload API stream replaces its half. */
function merged(x509From: BundleSet, jwtFrom: BundleSet): BundleSet {
  const set = new BundleSet();
  for (const td of x509From.trustDomains()) {
    const b = x509From.getX509Bundle(td);
    if (b) set.setX509Bundle(b);
  }
  for (const td of jwtFrom.trustDomains()) {
    const b = jwtFrom.getJwtBundle(td);
    if (b) set.setJwtBundle(b);
  }
  return set;
}
