import { z } from 'zod';
import { BundleSet, type JwtBundle, type X509Bundle } from '../bundle.js';
import { ExpiryWatch } from '../expiry.js';
import { UpdateListeners } from '../listeners.js';
import { defaultLogger, type Logger } from '../log.js';
import {
  IdentityConfigError,
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from '../provider.js';
import { SpiffeId, type TrustDomain } from '../spiffe-id.js';
import type { X509Svid } from '../x509-svid.js';
import {
  WorkloadApiClient,
  type WatchHandle,
  type WorkloadApiClientOptions,
  type X509Context,
} from './client.js';
import { WorkloadApiError } from './errors.js';

/** Options of {@link WorkloadApiIdentityProvider.create}. */
export interface WorkloadApiIdentityProviderOptions extends WorkloadApiClientOptions {
  /** How long {@link WorkloadApiIdentityProvider.create} waits for the first SVID. Default 30 000. */
  readonly readyTimeoutMs?: number;
  /** Use the SVID with this operator hint instead of the first one. */
  readonly hint?: string;
  /**
   * Use the SVID with this SPIFFE ID instead of the first one: a workload
   * registered under several entries (SPIRE sends every SVID it is entitled to)
   * picks the identity it was configured with. Combined with `hint`, both must match.
   */
  readonly spiffeId?: string | SpiffeId;
}

const OptionsSchema = z.object({
  readyTimeoutMs: z.number().int().positive().default(30_000),
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
});

/** A failure the provider reports through {@link WorkloadApiIdentityProvider.onError}. */
export type WorkloadIdentityError = WorkloadApiError | IdentityNotReadyError;

const sameX509 = (a: ReadonlyMap<string, X509Bundle>, b: ReadonlyMap<string, X509Bundle>): boolean =>
  a.size === b.size && [...a].every(([k, v]) => v.equals(b.get(k)));

const jwksText = (m: ReadonlyMap<string, JwtBundle>): string =>
  JSON.stringify([...m].sort(([x], [y]) => x.localeCompare(y)).map(([k, v]) => [k, v.toJwks()]));

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
export class WorkloadApiIdentityProvider implements IdentityProvider {
  readonly #client: WorkloadApiClient;
  readonly #log: Logger;
  readonly #hint: string | undefined;
  readonly #spiffeId: string | undefined;
  readonly #updates: UpdateListeners;
  readonly #errors = new Set<(err: WorkloadIdentityError) => void>();
  #svid: X509Svid | undefined;
  #x509 = new Map<string, X509Bundle>();
  #jwt = new Map<string, JwtBundle>();
  #bundles = new BundleSet();
  readonly #expiry: ExpiryWatch;
  #lastError: WorkloadApiError | undefined;
  #watches: WatchHandle[] = [];
  #closed = false;
  #onFirst: (() => void) | undefined;

  private constructor(
    client: WorkloadApiClient,
    log: Logger,
    hint: string | undefined,
    spiffeId: string | undefined,
  ) {
    this.#client = client;
    this.#log = log;
    this.#hint = hint;
    this.#spiffeId = spiffeId;
    this.#updates = new UpdateListeners(log);
    this.#expiry = new ExpiryWatch(log, (svid) => this.#expiredMessage(svid));
    // onError listeners predate onExpired and still hear of an expiry.
    this.#expiry.add((e) => this.#reportError(new IdentityNotReadyError(e.message)));
  }

  /**
   * Connects to the Workload API and resolves once the first X.509-SVID arrived.
   *
   * @throws {WorkloadApiAddressError} when the address is missing or malformed.
   * @throws {IdentityConfigError} when `readyTimeoutMs`, `hint` or `spiffeId` is invalid.
   * @throws {IdentityNotReadyError} when no SVID arrived within `readyTimeoutMs` (the message names the last error).
   * @throws {WorkloadApiError} `WORKLOAD_API_INVALID_ARGUMENT` when the server rejected the request.
   */
  static async create(
    options: WorkloadApiIdentityProviderOptions = {},
  ): Promise<WorkloadApiIdentityProvider> {
    const parsed = OptionsSchema.safeParse({
      readyTimeoutMs: options.readyTimeoutMs,
      hint: options.hint,
      spiffeId: options.spiffeId?.toString(),
    });
    if (!parsed.success) {
      throw new IdentityConfigError(
        `invalid Workload API provider options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    }
    const { readyTimeoutMs, hint, spiffeId } = parsed.data;
    const client = new WorkloadApiClient(options);
    const log = (options.logger ?? defaultLogger('workload-api-provider')).child({
      address: client.address.uri,
    });
    const provider = new WorkloadApiIdentityProvider(client, log, hint, spiffeId);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        provider.#onFirst = resolve;
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
      provider.#onFirst = undefined;
    }
  }

  /** The SPIFFE ID of the current SVID. */
  get id(): SpiffeId {
    if (!this.#svid) throw new IdentityNotReadyError();
    return this.#svid.id;
  }

  /**
   * The current X.509-SVID.
   *
   * @throws {IdentityNotReadyError} when the provider is closed, or the last SVID expired before a new one arrived.
   */
  getX509Svid(): X509Svid {
    if (this.#closed) throw new IdentityNotReadyError('the Workload API identity provider is closed');
    if (!this.#svid) throw new IdentityNotReadyError();
    if (this.#expiry.expired) {
      throw new IdentityNotReadyError(this.#expiredMessage(this.#svid));
    }
    return this.#svid;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#bundles.getX509Bundle(trustDomain);
  }

  /** A snapshot of every trusted bundle (X.509 and JWT, own and federated). */
  getBundleSet(): BundleSet {
    return this.#bundles.clone();
  }

  onUpdate(listener: (update: IdentityUpdate) => void): () => void {
    return this.#updates.add(listener);
  }

  /**
   * Called once when the SVID expires before the Workload API delivered a new
   * one (e.g. the agent is unreachable); the next `'svid'`/`'both'` update ends it.
   */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void {
    return this.#expiry.add(listener);
  }

  /**
   * Called for each Workload API failure (stream dropped, invalid message,
   * request rejected) and when the held SVID expires without a replacement.
   * Returns the unsubscribe function.
   */
  onError(listener: (error: WorkloadIdentityError) => void): () => void {
    const entry = (e: WorkloadIdentityError): void => listener(e);
    this.#errors.add(entry);
    return () => {
      this.#errors.delete(entry);
    };
  }

  /** Stops the streams and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#watches) w.stop();
    this.#expiry.close();
    this.#client.close();
    this.#updates.clear();
    this.#errors.clear();
    await Promise.all(this.#watches.map((w) => w.done));
  }

  #start(onFatal: (err: WorkloadApiError) => void): void {
    const x509 = this.#client.watchX509Context({
      onUpdate: (ctx) => this.#applyX509(ctx),
      onError: (err) => this.#reportError(err),
      // Without a usable SVID (expired, or expiring before the next attempt), reconnect at once.
      needBy: () => this.#svid?.expiresAt.getTime(),
    });
    const jwt = this.#client.watchJwtBundles({
      onUpdate: (set) => this.#applyJwt(set),
      onError: (err) => this.#reportError(err),
    });
    this.#watches = [x509, jwt];
    void x509.done.then((err) => {
      if (!err) return;
      this.#log.error(
        { err },
        'the Workload API rejected the X.509-SVID watch; the provider no longer updates',
      );
      onFatal(err);
    });
  }

  #reportError(err: WorkloadIdentityError): void {
    if (err instanceof WorkloadApiError) this.#lastError = err;
    for (const l of [...this.#errors]) {
      try {
        l(err);
      } catch (e) {
        this.#log.error({ err: e }, 'identity error listener threw');
      }
    }
  }

  #applyX509(ctx: X509Context): void {
    if (this.#closed) return;
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
          `the Workload API sent no X.509-SVID with ${wanted} (it sent ${ctx.svids.map((s) => s.id.toString()).join(', ')})`,
        ),
      );
      return;
    }
    const x509 = new Map(
      ctx.bundles.trustDomains().flatMap((td) => {
        const b = ctx.bundles.getX509Bundle(td);
        return b ? [[td.name, b] as const] : [];
      }),
    );
    const prev = this.#svid;
    let svidChanged = !prev || !sameChain(prev, svid);
    const bundlesChanged = !sameX509(this.#x509, x509);
    this.#svid = svid;
    this.#x509 = x509;
    if (svidChanged) {
      this.#log.info(
        { id: svid.id.toString(), expiresAt: svid.expiresAt.toISOString() },
        'X.509-SVID updated',
      );
      // An SVID sent already expired is no rotation: announcing it would end the expiry.
      svidChanged = this.#expiry.follow(svid);
    }
    if (bundlesChanged) this.#rebuildBundles();
    if (this.#onFirst) {
      this.#onFirst();
      return;
    }
    if (svidChanged || bundlesChanged) {
      this.#emit(svidChanged && bundlesChanged ? 'both' : svidChanged ? 'svid' : 'bundles');
    }
  }

  #applyJwt(set: BundleSet): void {
    if (this.#closed) return;
    const jwt = new Map<string, JwtBundle>();
    for (const td of set.trustDomains()) {
      const b = set.getJwtBundle(td);
      if (b) jwt.set(td.name, b);
    }
    if (jwksText(jwt) === jwksText(this.#jwt)) return;
    this.#jwt = jwt;
    this.#rebuildBundles();
    // Before the first SVID there is nothing to announce; the bundles ride along with it.
    if (this.#svid && !this.#onFirst) this.#emit('bundles');
  }

  #rebuildBundles(): void {
    this.#bundles = BundleSet.of(...this.#x509.values(), ...this.#jwt.values());
  }

  #emit(reason: IdentityUpdate['reason']): void {
    const svid = this.#svid;
    if (!svid) return;
    this.#updates.emit({ svid, bundles: this.#bundles.clone(), reason });
  }

  #expiredMessage(svid: X509Svid): string {
    return (
      `the X.509-SVID of ${svid.id.toString()} expired at ${svid.expiresAt.toISOString()} and the Workload API at ` +
      `${this.#client.address.uri} has not delivered a new one` +
      (this.#lastError ? ` (last error: ${this.#lastError.message})` : '')
    );
  }
}

function sameChain(a: X509Svid, b: X509Svid): boolean {
  const x = a.toDer().certChain;
  const y = b.toDer().certChain;
  return Buffer.from(x).equals(Buffer.from(y));
}
