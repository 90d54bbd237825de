import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { BundleError, BundleSet, X509Bundle } from './bundle.js';
import { defaultLogger } from './log.js';
import { checkKnownKeys, checkTimerMs } from './options.js';
import { IdentityConfigError } from './provider.js';
import { IdentityProviderBase } from './provider-base.js';
import type { VerifiedIdentity } from './svid-provider.js';
import { TrustDomain } from './spiffe-id.js';
import { verifyX509Svid, X509Svid } from './x509-svid.js';

/** Options of {@link StaticMtlsProvider.create}. */
export interface StaticMtlsOptions {
  /** PEM chain of our X.509-SVID, leaf first. */
  certFile: string;
  /** PEM private key of the SVID. */
  keyFile: string;
  /**
   * PEM CA certificates of our own trust domain. A CA whose `spiffe://` URI
   * SAN names another trust domain is refused (`BUNDLE_FOREIGN_AUTHORITY`):
   * give a partner's CAs in `federated`.
   */
  bundleFile: string;
  /** Trust domain name (`example.org` or `spiffe://example.org`) → PEM CA file, for federation. */
  federated?: Record<string, string>;
  /** Reload when a file changes (default true). */
  watch?: boolean;
  /**
   * Quiet period before a reload, so a cert and key written one after the
   * other are read together (default 100 ms). A whole number of ms up to
   * 2147483647; 0 reloads on the next turn of the event loop (a pair read
   * half-written is refused and read again at the next change).
   */
  debounceMs?: number;
  logger?: Logger;
}

const OPTION_KEYS = {
  certFile: true,
  keyFile: true,
  bundleFile: true,
  federated: true,
  watch: true,
  debounceMs: true,
  logger: true,
} satisfies Record<keyof StaticMtlsOptions, true>;

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
export class StaticMtlsProvider extends IdentityProviderBase {
  readonly #opts: StaticMtlsOptions;
  readonly #log: Logger;
  readonly #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;
  #reloading: Promise<boolean> | undefined;
  #again = false;
  #lastReloadError: Error | undefined;

  private constructor(opts: StaticMtlsOptions, state: VerifiedIdentity, log: Logger) {
    super({ logger: log });
    this.publish(state);
    this.#opts = opts;
    this.#log = log;
  }

  /**
   * Loads the files (they must be valid now) and starts watching them.
   * @throws {IdentityConfigError} when an option is unknown, a file is missing or invalid, or `debounceMs` is not a whole number of ms from 0 to 2147483647.
   *   A bundle file that cannot be taken is its cause: a {@link BundleError}
   *   (with the code of the bundle's own) whose message starts with the option
   *   and the file, `bundleFile (/etc/…/bundle.pem): …` or
   *   `federated.example.org (/etc/…/example.pem): …`.
   */
  static async create(opts: StaticMtlsOptions): Promise<StaticMtlsProvider> {
    // A misspelt `federated` or `watch` would otherwise be dropped silently and its default used.
    checkKnownKeys('StaticMtlsProvider', opts, OPTION_KEYS);
    // Checked when made, not at the first change: a bad delay would fire the timer at once, silently.
    if (opts.debounceMs !== undefined) checkTimerMs('StaticMtlsProvider', 'debounceMs', opts.debounceMs, 0);
    const log = opts.logger ?? defaultLogger('static-mtls-provider');
    let state: VerifiedIdentity;
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
      if (this.#again && !this.closed) {
        this.#again = false;
        void this.reload();
      }
    });
    return this.#reloading;
  }

  override async close(): Promise<void> {
    if (this.closed) return;
    await super.close();
    if (this.#timer) clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers.length = 0;
    await this.#reloading;
  }

  async #doReload(): Promise<boolean> {
    let next: VerifiedIdentity;
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
    if (this.closed) return true;
    const reason = this.publish(next);
    if (reason) this.#log.info({ reason, expiresAt: next.svid.expiresAt }, 'identity files reloaded');
    return true;
  }

  protected override expiredMessage(svid: X509Svid): string {
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
    if (this.closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.reload();
    }, this.#opts.debounceMs ?? 100);
    this.#timer.unref();
  }
}

async function load(opts: StaticMtlsOptions): Promise<VerifiedIdentity> {
  const [cert, key, bundle] = await Promise.all([
    readFile(opts.certFile, 'utf8'),
    readFile(opts.keyFile, 'utf8'),
    readFile(opts.bundleFile, 'utf8'),
  ]);
  const svid = X509Svid.parse(cert, key);
  const own = svid.id.trustDomain;
  // The options are checked before any bundle is parsed: a federated entry
  // for our own domain is the mistake to name first, not what a file holds.
  const federated = Object.entries(opts.federated ?? {}).map(([name, file]) => {
    const td = TrustDomain.parse(name);
    if (td.equals(own))
      throw new IdentityConfigError(`federated bundle given for our own trust domain ${td.name}`);
    return [td, file] as const;
  });
  const bundles = BundleSet.of(bundleOf(own, bundle, `bundleFile (${opts.bundleFile})`));
  for (const [td, file] of federated)
    bundles.setX509Bundle(bundleOf(td, await readFile(file, 'utf8'), `federated.${td.name} (${file})`));
  // Files that do not fit together (an SVID from another CA) are refused here,
  // not at the first handshake.
  verifyX509Svid(svid.certificates, bundles);
  return { svid, bundles };
}

/**
 * The bundle of `td` in `pem`; a refused one names the option and file it
 * came from (`what`) first: which of several files holds, say, a partner's
 * CA filed as ours is the thing to fix, and the bundle alone does not say.
 */
function bundleOf(td: TrustDomain, pem: string, what: string): X509Bundle {
  try {
    return X509Bundle.fromPem(td, pem);
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    throw new BundleError(
      err.code as ConstructorParameters<typeof BundleError>[0],
      `${what}: ${err.message}`,
      {
        cause: err,
      },
    );
  }
}
