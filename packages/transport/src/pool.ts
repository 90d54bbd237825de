import { z } from 'zod';
import { SpiffeId, type IdentityProvider } from '@weave/identity';
import { SecureChannel } from './channel.js';
import {
  formatIssues,
  parseTransportConfig,
  type TransportConfig,
  type TransportConfigInput,
} from './config.js';
import { PoolExhaustedError, TransportConfigError, TransportError } from './errors.js';

/** Limits of a {@link ConnectionPool}. */
export const PoolConfigSchema = z.strictObject({
  /** Concurrent leases (in-flight uses) per target SPIFFE ID. */
  maxPerTarget: z.number().int().min(1).max(100_000).default(64),
  /** Concurrent leases over all targets. */
  maxTotal: z.number().int().min(1).max(1_000_000).default(512),
  /** A target's channel unused this long is closed. */
  idleTimeoutMs: z.number().int().min(10).max(86_400_000).default(60_000),
  /** How long `acquire()` waits for a free slot before {@link PoolExhaustedError}; 0 fails at once. */
  acquireTimeoutMs: z.number().int().min(0).max(600_000).default(5_000),
});
export type PoolConfigInput = z.input<typeof PoolConfigSchema>;
export type PoolConfig = z.output<typeof PoolConfigSchema>;

/** A slot held on one target; release it (or let `await using` do it) when done. */
export interface PoolLease extends AsyncDisposable, Disposable {
  readonly target: SpiffeId;
  /** The channel of the target; valid until released. */
  readonly channel: SecureChannel;
  /** Returns the slot. Idempotent. */
  release(): void;
}

/** Counters of a pool. */
export interface PoolStats {
  /** Targets with an open channel. */
  readonly targets: number;
  /** Leases currently held. */
  readonly active: number;
  /** `acquire()` calls waiting for a slot. */
  readonly pending: number;
  readonly created: number;
  readonly closedIdle: number;
  readonly exhausted: number;
  readonly perTarget: Readonly<Record<string, { readonly active: number; readonly pending: number }>>;
}

interface Entry {
  readonly target: SpiffeId;
  readonly channel: SecureChannel;
  active: number;
  lastUsed: number;
}

interface Waiter {
  readonly key: string;
  readonly target: SpiffeId;
  readonly resolve: (lease: PoolLease) => void;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  cleanup: (() => void) | undefined;
}

/**
 * Hands out {@link SecureChannel}s keyed by the target's SPIFFE ID, bounding
 * concurrent use per target and in total. A channel is created on first use
 * (it verifies that the server is exactly that SPIFFE ID) and closed after
 * `idleTimeoutMs` without leases.
 */
export class ConnectionPool {
  readonly config: PoolConfig;
  readonly transport: TransportConfig;
  readonly #identity: IdentityProvider;
  readonly #entries = new Map<string, Entry>();
  readonly #waiters: Waiter[] = [];
  readonly #sweeper: NodeJS.Timeout;
  #active = 0;
  #created = 0;
  #closedIdle = 0;
  #exhausted = 0;
  #closed = false;

  /**
   * @throws {TransportConfigError} for invalid pool or transport settings.
   */
  constructor(
    identity: IdentityProvider,
    config: PoolConfigInput & { transport?: TransportConfigInput } = {},
  ) {
    const { transport, ...pool } = config;
    const res = PoolConfigSchema.safeParse(pool);
    if (!res.success) throw new TransportConfigError(formatIssues(res.error).map((m) => `pool.${m}`));
    if (res.data.maxPerTarget > res.data.maxTotal)
      throw new TransportConfigError(['pool.maxPerTarget: must be <= pool.maxTotal']);
    this.config = res.data;
    this.transport = parseTransportConfig(transport ?? {});
    this.#identity = identity;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(5, Math.floor(this.config.idleTimeoutMs / 2)));
    this.#sweeper.unref();
  }

  /**
   * Takes a slot on `target`, waiting up to `acquireTimeoutMs` when the
   * per-target or total limit is reached.
   *
   * @throws {PoolExhaustedError} when no slot frees up in time.
   * @throws {SpiffeIdError} for an invalid target string.
   */
  acquire(target: SpiffeId | string, options: { signal?: AbortSignal } = {}): Promise<PoolLease> {
    if (this.#closed) return Promise.reject(new TransportError('POOL_CLOSED', 'connection pool is closed'));
    let id: SpiffeId;
    try {
      id = typeof target === 'string' ? SpiffeId.parse(target) : target;
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const key = id.toString();
    const full = this.#limitHit(key);
    if (!full) {
      try {
        return Promise.resolve(this.#lease(id));
      } catch (err) {
        return Promise.reject(err as Error);
      }
    }
    if (this.config.acquireTimeoutMs === 0) {
      this.#exhausted++;
      return Promise.reject(new PoolExhaustedError(key, full, 'no free slot'));
    }
    return new Promise<PoolLease>((resolve, reject) => {
      const waiter: Waiter = { key, target: id, resolve, reject, timer: undefined, cleanup: undefined };
      const drop = (err: Error) => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        waiter.cleanup?.();
        reject(err);
      };
      waiter.timer = setTimeout(() => {
        this.#exhausted++;
        drop(
          new PoolExhaustedError(
            key,
            this.#limitHit(key) ?? full,
            `no free slot within ${this.config.acquireTimeoutMs} ms`,
          ),
        );
      }, this.config.acquireTimeoutMs);
      const signal = options.signal;
      if (signal) {
        const onAbort = () => drop(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.cleanup = () => {
          clearTimeout(waiter.timer);
          signal.removeEventListener('abort', onAbort);
        };
      } else {
        waiter.cleanup = () => clearTimeout(waiter.timer);
      }
      this.#waiters.push(waiter);
    });
  }

  /** Runs `fn` with a leased channel of `target` and releases the slot afterwards. */
  async use<T>(target: SpiffeId | string, fn: (channel: SecureChannel) => Promise<T>): Promise<T> {
    const lease = await this.acquire(target);
    try {
      return await fn(lease.channel);
    } finally {
      lease.release();
    }
  }

  /** Current counters. */
  getStats(): PoolStats {
    const perTarget: Record<string, { active: number; pending: number }> = {};
    for (const [k, e] of this.#entries) perTarget[k] = { active: e.active, pending: 0 };
    for (const w of this.#waiters) {
      const t = (perTarget[w.key] ??= { active: 0, pending: 0 });
      t.pending++;
    }
    return {
      targets: this.#entries.size,
      active: this.#active,
      pending: this.#waiters.length,
      created: this.#created,
      closedIdle: this.#closedIdle,
      exhausted: this.#exhausted,
      perTarget,
    };
  }

  /** Rejects waiters, stops the sweeper and closes every channel (in-flight requests finish). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const w of this.#waiters.splice(0)) {
      w.cleanup?.();
      w.reject(new TransportError('POOL_CLOSED', 'connection pool is closed'));
    }
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(entries.map((e) => e.channel.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #limitHit(key: string): 'perTarget' | 'total' | undefined {
    if (this.#active >= this.config.maxTotal) return 'total';
    if ((this.#entries.get(key)?.active ?? 0) >= this.config.maxPerTarget) return 'perTarget';
    return undefined;
  }

  #lease(target: SpiffeId): PoolLease {
    const key = target.toString();
    let entry = this.#entries.get(key);
    if (!entry) {
      entry = {
        target,
        channel: new SecureChannel(this.#identity, target, this.transport),
        active: 0,
        lastUsed: 0,
      };
      this.#entries.set(key, entry);
      this.#created++;
    }
    entry.active++;
    entry.lastUsed = Date.now();
    this.#active++;
    const e = entry;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      e.active--;
      e.lastUsed = Date.now();
      this.#active--;
      this.#wake();
    };
    return {
      target,
      channel: e.channel,
      release,
      [Symbol.dispose]: release,
      [Symbol.asyncDispose]: async () => release(),
    };
  }

  #wake(): void {
    // FIFO, but a waiter blocked by its own target's limit does not block others.
    for (let i = 0; i < this.#waiters.length;) {
      const w = this.#waiters[i]!;
      if (this.#limitHit(w.key)) {
        if (this.#active >= this.config.maxTotal) return;
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      w.cleanup?.();
      try {
        w.resolve(this.#lease(w.target));
      } catch (err) {
        w.reject(err as Error);
      }
    }
  }

  #sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.#entries) {
      if (
        e.active === 0 &&
        now - e.lastUsed >= this.config.idleTimeoutMs &&
        !this.#waiters.some((w) => w.key === k)
      ) {
        this.#entries.delete(k);
        this.#closedIdle++;
        void e.channel.close();
      }
    }
  }
}
