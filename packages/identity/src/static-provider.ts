import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { BundleSet, X509Bundle } from './bundle.js';
import { ExpiryWatch } from './expiry.js';
import { UpdateListeners } from './listeners.js';
import { defaultLogger } from './log.js';
import {
  IdentityConfigError,
  IdentityNotReadyError,
  type IdentityExpiry,
  type IdentityProvider,
  type IdentityUpdate,
} from './provider.js';
import { TrustDomain, type SpiffeId } from './spiffe-id.js';
import { verifyX509Svid, X509Svid } from './x509-svid.js';
import { sameDer } from './x509-util.js';

/** Options of {@link StaticMtlsProvider.create}. */
export interface StaticMtlsOptions {
  /** PEM chain of our X.509-SVID, leaf first. */
  certFile: string;
  /** PEM private key of the SVID. */
  keyFile: string;
  /** PEM CA certificates of our own trust domain. */
  bundleFile: string;
  /** Trust domain name (`example.org` or `spiffe://example.org`) → PEM CA file, for federation. */
  federated?: Record<string, string>;
  /** Reload when a file changes (default true). */
  watch?: boolean;
  /** Quiet period before a reload, so a cert and key written one after the other are read together (default 100 ms). */
  debounceMs?: number;
  logger?: Logger;
}

interface Loaded {
  svid: X509Svid;
  bundles: BundleSet;
}

/**
 * An {@link IdentityProvider} reading an SVID and bundles from PEM files (e.g.
 * written by spiffe-helper or cert-manager). It reloads when the files change;
 * a new set of files that does not parse, whose key does not match, or whose
 * SVID does not verify against the bundle, is refused: the last good identity
 * stays in use and the reason is logged. When the certificate in the files
 * passes notAfter before valid new files are written, it reports
 * {@link StaticMtlsProvider.onExpired} and {@link StaticMtlsProvider.getX509Svid}
 * throws until they are.
 */
export class StaticMtlsProvider implements IdentityProvider {
  readonly id: SpiffeId;
  readonly #opts: StaticMtlsOptions;
  readonly #log: Logger;
  readonly #listeners: UpdateListeners;
  readonly #expiry: ExpiryWatch;
  readonly #watchers: FSWatcher[] = [];
  #state: Loaded;
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<boolean> | undefined;
  #again = false;
  #closed = false;
  #lastReloadError: Error | undefined;

  private constructor(opts: StaticMtlsOptions, state: Loaded, log: Logger) {
    this.#opts = opts;
    this.#state = state;
    this.id = state.svid.id;
    this.#log = log;
    this.#listeners = new UpdateListeners(log);
    this.#expiry = new ExpiryWatch(log, (svid) => this.#expiredMessage(svid));
    this.#expiry.follow(state.svid);
  }

  /**
   * Loads the files (they must be valid now) and starts watching them.
   * @throws {IdentityConfigError} when a file is missing or invalid.
   */
  static async create(opts: StaticMtlsOptions): Promise<StaticMtlsProvider> {
    const log = opts.logger ?? defaultLogger('static-mtls-provider');
    let state: Loaded;
    try {
      state = await load(opts);
    } catch (err) {
      throw new IdentityConfigError(`cannot load identity files: ${(err as Error).message}`, { cause: err });
    }
    const p = new StaticMtlsProvider(opts, state, log);
    if (opts.watch !== false) p.#watch();
    return p;
  }

  /** The reason the last reload was refused; undefined after a good one. */
  get lastReloadError(): Error | undefined {
    return this.#lastReloadError;
  }

  /**
   * The SVID from the files.
   * @throws {IdentityNotReadyError} when the provider is closed, or the SVID expired before valid new files were written.
   */
  getX509Svid(): X509Svid {
    if (this.#closed) throw new IdentityNotReadyError('identity provider is closed');
    if (this.#expiry.expired) throw new IdentityNotReadyError(this.#expiredMessage(this.#state.svid));
    return this.#state.svid;
  }

  getX509Bundle(trustDomain: TrustDomain): X509Bundle | undefined {
    return this.#state.bundles.getX509Bundle(trustDomain);
  }

  getBundleSet(): BundleSet {
    return this.#state.bundles;
  }

  onUpdate(listener: (update: IdentityUpdate) => void): () => void {
    return this.#listeners.add(listener);
  }

  /** Called once when the certificate in the files expires; the next `'svid'`/`'both'` update ends it. */
  onExpired(listener: (expiry: IdentityExpiry) => void): () => void {
    return this.#expiry.add(listener);
  }

  /**
   * Reads the files again now. Resolves true when the new state was taken (or
   * nothing changed), false when it was refused (see {@link lastReloadError}).
   */
  reload(): Promise<boolean> {
    if (this.#reloading) {
      // A change during a reload must be read after it, not lost.
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = this.#doReload().finally(() => {
      this.#reloading = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        void this.reload();
      }
    });
    return this.#reloading;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers.length = 0;
    this.#listeners.clear();
    this.#expiry.close();
    await this.#reloading;
  }

  async #doReload(): Promise<boolean> {
    let next: Loaded;
    try {
      next = await load(this.#opts);
      if (!next.svid.id.equals(this.id))
        throw new Error(`SVID changed SPIFFE ID from ${this.id.toString()} to ${next.svid.id.toString()}`);
    } catch (err) {
      this.#lastReloadError = err as Error;
      this.#log.warn({ err }, 'identity files rejected; keeping the last good SVID and bundles');
      return false;
    }
    this.#lastReloadError = undefined;
    if (this.#closed) return true;
    const prev = this.#state;
    let svidChanged = !sameSvid(prev.svid, next.svid);
    const bundlesChanged = !sameBundles(prev.bundles, next.bundles);
    if (!svidChanged && !bundlesChanged) return true;
    this.#state = next;
    // load() verified the SVID, but it may have expired since: then it is no rotation.
    if (svidChanged) svidChanged = this.#expiry.follow(next.svid);
    if (!svidChanged && !bundlesChanged) return true;
    const reason = svidChanged && bundlesChanged ? 'both' : svidChanged ? 'svid' : 'bundles';
    this.#log.info({ reason, expiresAt: next.svid.expiresAt }, 'identity files reloaded');
    this.#listeners.emit({ svid: next.svid, bundles: next.bundles, reason });
    return true;
  }

  #expiredMessage(svid: X509Svid): string {
    return (
      `the X.509-SVID of ${svid.id.toString()} in ${this.#opts.certFile} expired at ` +
      `${svid.expiresAt.toISOString()} and no valid replacement was written` +
      (this.#lastReloadError ? ` (last reload refused: ${this.#lastReloadError.message})` : '')
    );
  }

  #watch(): void {
    const files = [
      this.#opts.certFile,
      this.#opts.keyFile,
      this.#opts.bundleFile,
      ...Object.values(this.#opts.federated ?? {}),
    ].map((f) => resolve(f));
    const byDir = new Map<string, Set<string>>();
    for (const f of files) {
      const names = byDir.get(dirname(f)) ?? new Set<string>();
      names.add(basename(f));
      byDir.set(dirname(f), names);
    }
    // Directories, not files, are watched: tools replace files by rename, which
    // a watch on the old inode would miss.
    for (const [dir, names] of byDir) {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (name === null || names.has(name.toString())) this.#schedule();
      });
      w.on('error', (err) => this.#log.error({ err, dir }, 'watching identity files failed'));
      this.#watchers.push(w);
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.reload();
    }, this.#opts.debounceMs ?? 100);
    this.#timer.unref();
  }
}

async function load(opts: StaticMtlsOptions): Promise<Loaded> {
  const [cert, key, bundle] = await Promise.all([
    readFile(opts.certFile, 'utf8'),
    readFile(opts.keyFile, 'utf8'),
    readFile(opts.bundleFile, 'utf8'),
  ]);
  const svid = X509Svid.parse(cert, key);
  const own = svid.id.trustDomain;
  const bundles = BundleSet.of(X509Bundle.fromPem(own, bundle));
  for (const [name, file] of Object.entries(opts.federated ?? {})) {
    const td = TrustDomain.parse(name);
    if (td.equals(own))
      throw new IdentityConfigError(`federated bundle given for our own trust domain ${td.name}`);
    bundles.setX509Bundle(X509Bundle.fromPem(td, await readFile(file, 'utf8')));
  }
  // Files that do not fit together (an SVID from another CA) are refused here,
  // not at the first handshake.
  verifyX509Svid(svid.certificates, bundles);
  return { svid, bundles };
}

function sameSvid(a: X509Svid, b: X509Svid): boolean {
  return (
    a.certificates.length === b.certificates.length &&
    a.certificates.every((c, i) => sameDer(c, b.certificates[i]!)) &&
    a.privateKey.equals(b.privateKey)
  );
}

function sameBundles(a: BundleSet, b: BundleSet): boolean {
  const ta = a.trustDomains();
  const tb = b.trustDomains();
  return (
    ta.length === tb.length &&
    ta.every((td, i) => td.equals(tb[i]!) && (a.getX509Bundle(td)?.equals(b.getX509Bundle(td)) ?? false))
  );
}
