import { lstat, mkdir, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { connect } from 'node:net';
import {
  Server as GrpcServer,
  ServerCredentials,
  status as GrpcStatus,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { z } from 'zod';
import { BundleSet, type JwtBundle, type X509Bundle } from '../bundle.js';
import { DevCertificateAuthority, JWT_SVID_MAX_TTL_SECONDS } from '../dev-ca.js';
import { rotationDelayMs } from '../dev-ca-provider.js';
import { WeaveError } from '../errors.js';
import { validateJwtSvid } from '../jwt-svid.js';
import { defaultLogger, type Logger } from '../log.js';
import { issueText, MAX_TIMER_MS, wholeNumber } from '../options.js';
import { SpiffeId, TrustDomain } from '../spiffe-id.js';
import type { X509Svid } from '../x509-svid.js';
import { parseWorkloadApiAddress } from './address.js';
import {
  WORKLOAD_API_HEADER,
  jsonToStruct,
  workloadApiService,
  type EmptyRequest,
  type JwtBundlesResponse,
  type JwtSvidRequest,
  type JwtSvidResponse,
  type ValidateJwtSvidRequest,
  type ValidateJwtSvidResponse,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';

/** The dev Workload API server was misconfigured or misused. */
export class DevWorkloadApiServerError extends WeaveError {
  constructor(
    code:
      | 'DEV_WORKLOAD_API_INVALID_OPTIONS'
      | 'DEV_WORKLOAD_API_UNKNOWN_WORKLOAD'
      | 'DEV_WORKLOAD_API_CLOSED'
      | 'DEV_WORKLOAD_API_SOCKET_IN_USE'
      | 'DEV_WORKLOAD_API_SOCKET_PROBE_FAILED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Options of {@link DevWorkloadApiServer.start}. */
export interface DevWorkloadApiServerOptions {
  /** Directory of the persisted dev CA (so a restart keeps the trust domain) and, by default, of the sockets. */
  readonly stateDir: string;
  readonly trustDomain: string | TrustDomain;
  /**
   * Workload name → SPIFFE ID. Each workload gets its own socket. `null`
   * gives a socket with no identity: its callers are answered
   * PERMISSION_DENIED, as SPIRE answers a process no registration entry matches.
   */
  readonly workloads: Readonly<Record<string, string | SpiffeId | null>>;
  /** X.509-SVID lifetime. Default 3600 (SPIRE's). Rotation happens when about half is left. */
  readonly x509SvidTtlSeconds?: number;
  /** JWT-SVID lifetime: a whole number of seconds from 1 to 2592000 (30 days). Default 300 (SPIRE's). */
  readonly jwtSvidTtlSeconds?: number;
  /** Where the sockets go. Default `<stateDir>/sockets`. Paths must fit in 107 bytes. */
  readonly socketDir?: string;
  readonly logger?: Logger;
}

const WORKLOAD_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const workloadName = z
  .string()
  .regex(WORKLOAD_NAME, 'workload names are 1-63 of [A-Za-z0-9._-], starting alphanumeric');
const isA = <T>(cls: { prototype: T }) =>
  z.custom<T>((v) => v instanceof (cls as unknown as abstract new () => T));
const workloadId = z.union([z.string(), isA(SpiffeId), z.null()]);

// Strict: a misspelt `socketDir` or TTL would otherwise be dropped silently and its default used.
const OptionsSchema = z.strictObject({
  stateDir: z.string().min(1),
  trustDomain: z.union([z.string(), isA(TrustDomain)]),
  workloads: z.record(z.string(), workloadId),
  x509SvidTtlSeconds: z.number().int().min(2).default(3600),
  jwtSvidTtlSeconds: wholeNumber(
    1,
    JWT_SVID_MAX_TTL_SECONDS,
    `a whole number of seconds from 1 to ${JWT_SVID_MAX_TTL_SECONDS} (30 days)`,
  ).default(300),
  socketDir: z.string().min(1).optional(),
  logger: z.unknown().optional(),
});

/** SPIRE's wording, so logs and errors read the same against either server. */
const NO_IDENTITY = 'no identity issued';
const MISSING_HEADER = 'security header missing from request';

type Stream<T> = ServerWritableStream<EmptyRequest, T>;

interface Workload {
  readonly name: string;
  readonly socketPath: string;
  readonly server: GrpcServer;
  id: SpiffeId | undefined;
  svid: X509Svid | undefined;
  rotation: NodeJS.Timeout | undefined;
  /** Bumped on every (re)registration so a late rotation of an old identity is dropped. */
  generation: number;
  readonly x509Streams: Set<Stream<X509SvidResponse>>;
  readonly x509BundleStreams: Set<Stream<X509BundlesResponse>>;
  readonly jwtBundleStreams: Set<Stream<JwtBundlesResponse>>;
}

class CallError extends Error {
  constructor(
    readonly code: GrpcStatus,
    readonly details: string,
  ) {
    super(details);
  }
}

/**
 * Weave's development Workload API server: the embedded default on one
 * machine. It speaks the SPIFFE Workload API over gRPC exactly as a SPIRE
 * agent does, one Unix socket per workload (the socket identifies the caller),
 * backed by a {@link DevCertificateAuthority} persisted in `stateDir`.
 *
 * Streams send their first message at once and every change after; X.509-SVIDs
 * are re-issued and pushed when about half their lifetime is left; federated
 * bundles can be added and removed at run time. Never use it in production.
 */
export class DevWorkloadApiServer {
  readonly ca: DevCertificateAuthority;
  readonly socketDir: string;
  readonly #log: Logger;
  readonly #x509Ttl: number;
  readonly #jwtTtl: number;
  readonly #workloads = new Map<string, Workload>();
  readonly #federated = new Map<string, { x509?: X509Bundle; jwt?: JwtBundle }>();
  #closed = false;

  private constructor(
    ca: DevCertificateAuthority,
    socketDir: string,
    log: Logger,
    x509Ttl: number,
    jwtTtl: number,
  ) {
    this.ca = ca;
    this.socketDir = socketDir;
    this.#log = log;
    this.#x509Ttl = x509Ttl;
    this.#jwtTtl = jwtTtl;
  }

  /**
   * Loads (or creates) the dev CA in `stateDir` and listens on one socket per workload.
   *
   * @throws {DevWorkloadApiServerError} `DEV_WORKLOAD_API_INVALID_OPTIONS` on bad or unknown options,
   *   `DEV_WORKLOAD_API_SOCKET_IN_USE` when a running server answers on a workload's socket file,
   *   `DEV_WORKLOAD_API_SOCKET_PROBE_FAILED` when a connect to it fails other than with
   *   ECONNREFUSED or ENOENT (e.g. EAGAIN, EACCES): the file is left in place.
   * @throws {DevCaError} when the CA state in `stateDir` is invalid or of another trust domain.
   */
  static async start(options: DevWorkloadApiServerOptions): Promise<DevWorkloadApiServer> {
    const parsed = OptionsSchema.safeParse(options);
    if (!parsed.success) {
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_INVALID_OPTIONS',
        `invalid dev Workload API server options: ${issueText(parsed.error)}`,
      );
    }
    const o = parsed.data;
    const trustDomain = typeof o.trustDomain === 'string' ? TrustDomain.parse(o.trustDomain) : o.trustDomain;
    const stateDir = resolve(o.stateDir);
    const socketDir = resolve(o.socketDir ?? join(stateDir, 'sockets'));
    // Checked before the CA is made: a refused start writes nothing to the
    // state directory (a CA saved for the wrong trust domain blocks the next start).
    for (const [name, id] of Object.entries(o.workloads)) {
      const n = workloadName.safeParse(name);
      if (!n.success) {
        throw new DevWorkloadApiServerError(
          'DEV_WORKLOAD_API_INVALID_OPTIONS',
          `workload ${JSON.stringify(name)}: ${n.error.issues[0]?.message}`,
        );
      }
      if (id !== null) checkWorkloadId(name, id, trustDomain);
    }
    const ca = await DevCertificateAuthority.create({ trustDomain, dir: stateDir });
    await mkdir(socketDir, { recursive: true, mode: 0o700 });
    const log = (options.logger ?? defaultLogger('dev-workload-api')).child({
      trustDomain: trustDomain.name,
    });
    const server = new DevWorkloadApiServer(ca, socketDir, log, o.x509SvidTtlSeconds, o.jwtSvidTtlSeconds);
    try {
      for (const [name, id] of Object.entries(o.workloads)) await server.addWorkload(name, id);
    } catch (err) {
      await server.close();
      throw err;
    }
    return server;
  }

  /** The trust domain of the CA. */
  get trustDomain(): TrustDomain {
    return this.ca.trustDomain;
  }

  /** Names of every workload with a socket (including those whose identity was removed). */
  workloadNames(): string[] {
    return [...this.#workloads.keys()];
  }

  /**
   * The Workload API address of a workload, `unix:///…/<name>.sock`, for
   * `SPIFFE_ENDPOINT_SOCKET` or the clients' `address` option.
   *
   * @throws {DevWorkloadApiServerError} `DEV_WORKLOAD_API_UNKNOWN_WORKLOAD`.
   */
  address(name: string): string {
    const w = this.#workloads.get(name);
    if (!w)
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_UNKNOWN_WORKLOAD',
        `no workload named ${JSON.stringify(name)}`,
      );
    return `unix://${w.socketPath}`;
  }

  /**
   * Registers a workload: opens its socket if it has none yet, and gives it
   * the identity `id` (`null`: none). Re-registering a workload whose identity
   * was removed reuses its socket. Returns the workload's address.
   *
   * @throws {DevWorkloadApiServerError} on a bad name, an ID outside the trust domain, or a workload that has an identity.
   */
  async addWorkload(name: string, id: string | SpiffeId | null): Promise<string> {
    this.#assertOpen();
    const n = workloadName.safeParse(name);
    if (!n.success) {
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_INVALID_OPTIONS',
        `workload ${JSON.stringify(name)}: ${n.error.issues[0]?.message}`,
      );
    }
    const sid = id === null ? undefined : this.#checkId(name, id);
    const existing = this.#workloads.get(name);
    if (existing) {
      if (existing.id) {
        throw new DevWorkloadApiServerError(
          'DEV_WORKLOAD_API_INVALID_OPTIONS',
          `workload ${name} is already registered as ${existing.id.toString()}`,
        );
      }
      await this.#register(existing, sid);
      return this.address(name);
    }
    const socketPath = join(this.socketDir, `${name}.sock`);
    try {
      parseWorkloadApiAddress(`unix://${socketPath}`);
    } catch (err) {
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_INVALID_OPTIONS',
        `socket of workload ${name}: ${(err as Error).message}; use a shorter socketDir`,
        { cause: err },
      );
    }
    await removeStaleSocket(socketPath);
    const w: Workload = {
      name,
      socketPath,
      server: new GrpcServer(),
      id: undefined,
      svid: undefined,
      rotation: undefined,
      generation: 0,
      x509Streams: new Set(),
      x509BundleStreams: new Set(),
      jwtBundleStreams: new Set(),
    };
    w.server.addService(workloadApiService(), this.#handlers(w));
    // The identity exists before the socket does: a client that connects the
    // moment the socket appears gets its SVID, not a spurious PERMISSION_DENIED.
    this.#workloads.set(name, w);
    try {
      await this.#register(w, sid);
      await new Promise<void>((ok, fail) =>
        w.server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (err) =>
          err ? fail(err) : ok(),
        ),
      );
    } catch (err) {
      this.#workloads.delete(name);
      w.generation++;
      clearTimeout(w.rotation);
      w.server.forceShutdown();
      throw err;
    }
    this.#log.info(
      { workload: name, id: sid?.toString() ?? null, socket: socketPath },
      'workload socket ready',
    );
    return this.address(name);
  }

  /**
   * Removes a workload's identity at run time. Its socket stays, so a process
   * still holding the address is answered PERMISSION_DENIED ("no identity
   * issued"), and its open streams end with that status.
   *
   * @throws {DevWorkloadApiServerError} `DEV_WORKLOAD_API_UNKNOWN_WORKLOAD`.
   */
  removeWorkload(name: string): void {
    const w = this.#workloads.get(name);
    if (!w)
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_UNKNOWN_WORKLOAD',
        `no workload named ${JSON.stringify(name)}`,
      );
    w.generation++;
    w.id = undefined;
    w.svid = undefined;
    clearTimeout(w.rotation);
    const denied = { code: GrpcStatus.PERMISSION_DENIED, details: NO_IDENTITY };
    for (const set of [w.x509Streams, w.x509BundleStreams, w.jwtBundleStreams] as Set<Stream<unknown>>[]) {
      for (const call of set) call.emit('error', denied);
      set.clear();
    }
    this.#log.info({ workload: name }, 'workload identity removed');
  }

  /**
   * Trusts a foreign trust domain: its bundles go to every workload (the
   * `federated_bundles` of X509SVIDResponse and both bundle streams). Calling it
   * again replaces them.
   *
   * @throws {DevWorkloadApiServerError} for the server's own trust domain or a bundle of another trust domain.
   */
  setFederatedBundle(
    trustDomain: TrustDomain | string,
    bundles: { x509?: X509Bundle; jwt?: JwtBundle },
  ): void {
    this.#assertOpen();
    const td = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
    if (td.equals(this.trustDomain)) {
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_INVALID_OPTIONS',
        `${td.name} is the server's own trust domain`,
      );
    }
    for (const b of [bundles.x509, bundles.jwt]) {
      if (b && !b.trustDomain.equals(td)) {
        throw new DevWorkloadApiServerError(
          'DEV_WORKLOAD_API_INVALID_OPTIONS',
          `a bundle of ${b.trustDomain.name} cannot be federated as ${td.name}`,
        );
      }
    }
    if (!bundles.x509 && !bundles.jwt) {
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_INVALID_OPTIONS',
        'a federated bundle needs an X.509 or a JWT bundle',
      );
    }
    this.#federated.set(td.name, { ...bundles });
    this.#log.info({ federated: td.name }, 'federated bundle set');
    this.#pushAll();
  }

  /** Stops trusting a foreign trust domain; returns whether it was trusted. */
  removeFederatedBundle(trustDomain: TrustDomain | string): boolean {
    this.#assertOpen();
    const td = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
    const removed = this.#federated.delete(td.name);
    if (removed) {
      this.#log.info({ federated: td.name }, 'federated bundle removed');
      this.#pushAll();
    }
    return removed;
  }

  /** Re-issues a workload's X.509-SVID now and pushes it (rotation also happens by itself). */
  async rotateX509Svid(name: string): Promise<X509Svid> {
    const w = this.#workloads.get(name);
    if (!w?.id)
      throw new DevWorkloadApiServerError(
        'DEV_WORKLOAD_API_UNKNOWN_WORKLOAD',
        `workload ${JSON.stringify(name)} has no identity`,
      );
    await this.#issue(w, w.generation);
    return w.svid!;
  }

  /** Ends every stream, stops every socket and timer. The CA state stays in `stateDir`. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const ws = [...this.#workloads.values()];
    this.#workloads.clear();
    await Promise.all(
      ws.map(async (w) => {
        clearTimeout(w.rotation);
        w.generation++;
        // Streams never end by themselves; forceShutdown cancels them.
        w.server.forceShutdown();
        await unlink(w.socketPath).catch(() => undefined);
      }),
    );
  }

  #assertOpen(): void {
    if (this.#closed)
      throw new DevWorkloadApiServerError('DEV_WORKLOAD_API_CLOSED', 'the dev Workload API server is closed');
  }

  #checkId(name: string, id: string | SpiffeId): SpiffeId {
    return checkWorkloadId(name, id, this.trustDomain);
  }

  async #register(w: Workload, id: SpiffeId | undefined): Promise<void> {
    w.generation++;
    w.id = id;
    w.svid = undefined;
    clearTimeout(w.rotation);
    if (id) await this.#issue(w, w.generation);
  }

  /** Issues a fresh SVID for `w`, pushes it and schedules the next rotation. */
  async #issue(w: Workload, generation: number): Promise<void> {
    const id = w.id;
    if (!id) return;
    const svid = await this.ca.issueX509Svid(id, { ttlSeconds: this.#x509Ttl });
    // The workload was removed, re-registered or the server closed while we were issuing.
    if (generation !== w.generation || this.#closed) return;
    w.svid = svid;
    // SPIRE's rule, the same as the dev CA provider's, measured from now.
    this.#scheduleRotation(w, generation, rotationDelayMs(svid));
    this.#log.debug({ workload: w.name, expiresAt: svid.expiresAt.toISOString() }, 'X.509-SVID issued');
    for (const call of w.x509Streams) this.#write(call, this.#x509Response(w));
  }

  #scheduleRotation(w: Workload, generation: number, delayMs: number): void {
    clearTimeout(w.rotation);
    w.rotation = setTimeout(
      () => {
        this.#issue(w, generation).catch((err: unknown) => {
          this.#log.error({ err, workload: w.name }, 'X.509-SVID rotation failed; retrying in 1 s');
          if (generation === w.generation && !this.#closed) this.#scheduleRotation(w, generation, 1000);
        });
      },
      // Node fires a longer timer after 1 ms: an SVID whose half-life is beyond
      // it is rotated early (after ~24.8 days) rather than over and over.
      Math.min(Math.max(0, delayMs), MAX_TIMER_MS),
    );
    // The sockets keep the process alive while the server runs; the timer alone must not.
    w.rotation.unref();
  }

  #pushAll(): void {
    for (const w of this.#workloads.values()) {
      if (!w.id) continue;
      if (w.svid) for (const call of w.x509Streams) this.#write(call, this.#x509Response(w));
      for (const call of w.x509BundleStreams) this.#write(call, this.#x509Bundles());
      for (const call of w.jwtBundleStreams) this.#write(call, this.#jwtBundles());
    }
  }

  #write<T>(call: Stream<T>, msg: T): void {
    if (!call.cancelled && !call.writableEnded) call.write(msg);
  }

  #bundles(): BundleSet {
    const set = BundleSet.of(this.ca.x509Bundle, this.ca.jwtBundle);
    for (const f of this.#federated.values()) {
      if (f.x509) set.setX509Bundle(f.x509);
      if (f.jwt) set.setJwtBundle(f.jwt);
    }
    return set;
  }

  #x509Response(w: Workload): X509SvidResponse {
    const svid = w.svid!;
    const der = svid.toDer();
    const federatedBundles: Record<string, Uint8Array> = {};
    for (const [td, f] of this.#federated) if (f.x509) federatedBundles[`spiffe://${td}`] = f.x509.toDer();
    return {
      svids: [
        {
          spiffeId: svid.id.toString(),
          x509Svid: der.certChain,
          x509SvidKey: der.privateKey,
          bundle: this.ca.x509Bundle.toDer(),
          hint: '',
        },
      ],
      crl: [],
      federatedBundles,
    };
  }

  #x509Bundles(): X509BundlesResponse {
    const bundles: Record<string, Uint8Array> = { [this.trustDomain.idString]: this.ca.x509Bundle.toDer() };
    for (const [td, f] of this.#federated) if (f.x509) bundles[`spiffe://${td}`] = f.x509.toDer();
    return { crl: [], bundles };
  }

  #jwtBundles(): JwtBundlesResponse {
    const enc = (b: JwtBundle): Uint8Array => Buffer.from(JSON.stringify(b.toJwks()));
    const bundles: Record<string, Uint8Array> = { [this.trustDomain.idString]: enc(this.ca.jwtBundle) };
    for (const [td, f] of this.#federated) if (f.jwt) bundles[`spiffe://${td}`] = enc(f.jwt);
    return { bundles };
  }

  /** Header check first (INVALID_ARGUMENT), then the caller's identity (PERMISSION_DENIED), as SPIRE orders them. */
  #authorize(w: Workload, metadata: { get(key: string): unknown[] }): SpiffeId {
    const header = metadata.get(WORKLOAD_API_HEADER);
    if (header.length !== 1 || header[0] !== 'true')
      throw new CallError(GrpcStatus.INVALID_ARGUMENT, MISSING_HEADER);
    if (!w.id || this.#workloads.get(w.name) !== w)
      throw new CallError(GrpcStatus.PERMISSION_DENIED, NO_IDENTITY);
    return w.id;
  }

  #stream<T>(w: Workload, streams: (w: Workload) => Set<Stream<T>>, first: () => T | undefined) {
    return (call: Stream<T>): void => {
      try {
        this.#authorize(w, call.metadata);
      } catch (err) {
        return fail(call, err);
      }
      const set = streams(w);
      set.add(call);
      const forget = (): void => void set.delete(call);
      call.on('cancelled', forget);
      call.on('close', forget);
      call.on('error', forget);
      const msg = first();
      if (msg) this.#write(call, msg);
    };
  }

  #handlers(w: Workload): UntypedServiceImplementation {
    return {
      FetchX509SVID: this.#stream<X509SvidResponse>(
        w,
        (x) => x.x509Streams,
        () => (w.svid ? this.#x509Response(w) : undefined),
      ),
      FetchX509Bundles: this.#stream<X509BundlesResponse>(
        w,
        (x) => x.x509BundleStreams,
        () => this.#x509Bundles(),
      ),
      FetchJWTBundles: this.#stream<JwtBundlesResponse>(
        w,
        (x) => x.jwtBundleStreams,
        () => this.#jwtBundles(),
      ),
      FetchJWTSVID: (
        call: ServerUnaryCall<JwtSvidRequest, JwtSvidResponse>,
        cb: sendUnaryData<JwtSvidResponse>,
      ) => {
        void (async () => {
          const id = this.#authorize(w, call.metadata);
          const audience = call.request.audience ?? [];
          if (audience.length === 0 || audience.some((a) => a === '')) {
            throw new CallError(GrpcStatus.INVALID_ARGUMENT, 'audience must be specified');
          }
          if (call.request.spiffeId) {
            const wanted = SpiffeId.tryParse(call.request.spiffeId);
            if (!wanted) throw new CallError(GrpcStatus.INVALID_ARGUMENT, `requested SPIFFE ID is invalid`);
            if (!wanted.equals(id)) {
              throw new CallError(
                GrpcStatus.PERMISSION_DENIED,
                `no identity issued for ${wanted.toString()}`,
              );
            }
          }
          const svid = await this.ca.issueJwtSvid(id, audience, { ttlSeconds: this.#jwtTtl });
          return { svids: [{ spiffeId: id.toString(), svid: svid.token, hint: '' }] };
        })().then(
          (res) => cb(null, res),
          (err: unknown) => cb(toStatus(err)),
        );
      },
      ValidateJWTSVID: (
        call: ServerUnaryCall<ValidateJwtSvidRequest, ValidateJwtSvidResponse>,
        cb: sendUnaryData<ValidateJwtSvidResponse>,
      ) => {
        void (async () => {
          this.#authorize(w, call.metadata);
          if (!call.request.audience)
            throw new CallError(GrpcStatus.INVALID_ARGUMENT, 'audience must be specified');
          if (!call.request.svid) throw new CallError(GrpcStatus.INVALID_ARGUMENT, 'svid must be specified');
          let svid;
          try {
            svid = await validateJwtSvid(call.request.svid, this.#bundles(), call.request.audience);
          } catch (err) {
            throw new CallError(GrpcStatus.INVALID_ARGUMENT, `token is invalid: ${(err as Error).message}`);
          }
          return {
            spiffeId: svid.id.toString(),
            claims: jsonToStruct(svid.claims as Record<string, unknown>),
          };
        })().then(
          (res) => cb(null, res),
          (err: unknown) => cb(toStatus(err)),
        );
      },
      // The WIT-SVID profile is incubating upstream; say so instead of pretending.
      FetchWITSVID: (call: Stream<unknown>) => this.#unimplemented(w, call, 'FetchWITSVID'),
      FetchWITBundles: (call: Stream<unknown>) => this.#unimplemented(w, call, 'FetchWITBundles'),
    };
  }

  #unimplemented(w: Workload, call: Stream<unknown>, name: string): void {
    try {
      this.#authorize(w, call.metadata);
    } catch (err) {
      return fail(call, err);
    }
    fail(
      call,
      new CallError(GrpcStatus.UNIMPLEMENTED, `${name} is not implemented by the dev Workload API server`),
    );
  }
}

function toStatus(err: unknown): { code: GrpcStatus; details: string } {
  if (err instanceof CallError) return { code: err.code, details: err.details };
  return { code: GrpcStatus.INTERNAL, details: err instanceof Error ? err.message : String(err) };
}

function fail(call: Stream<unknown>, err: unknown): void {
  call.emit('error', toStatus(err));
}

/** `id` as the identity of workload `name`: a workload ID (with a path) in `trustDomain`. */
function checkWorkloadId(name: string, id: string | SpiffeId, trustDomain: TrustDomain): SpiffeId {
  let sid: SpiffeId;
  try {
    sid = typeof id === 'string' ? SpiffeId.parse(id) : id;
  } catch (err) {
    throw new DevWorkloadApiServerError(
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      `workload ${name}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (!sid.isMemberOf(trustDomain) || sid.path === '') {
    throw new DevWorkloadApiServerError(
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      `workload ${name}: ${sid.toString()} must be a workload ID (with a path) in trust domain ${trustDomain.name}`,
    );
  }
  return sid;
}

/**
 * A socket file left by a server that died is in the way of bind; anything
 * else is not ours to delete: not a socket, one a live server answers on
 * (another dev server on the same state directory, whose workloads would
 * lose their socket files and could no longer be reached), or one the probe
 * cannot judge.
 */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) {
    throw new DevWorkloadApiServerError(
      'DEV_WORKLOAD_API_INVALID_OPTIONS',
      `${path} exists and is not a socket`,
    );
  }
  const found = await probe(path);
  if (found === 'live') {
    throw new DevWorkloadApiServerError(
      'DEV_WORKLOAD_API_SOCKET_IN_USE',
      `${path} is in use by a running server (another dev Workload API server on this state directory?): stop it, or use another state or socket directory`,
    );
  }
  if (found instanceof Error) {
    throw new DevWorkloadApiServerError(
      'DEV_WORKLOAD_API_SOCKET_PROBE_FAILED',
      `${path} could not be probed for a running server (${found.message}), so it was left in place: stop the server using it, or remove it if none does, or use another state or socket directory`,
      { cause: found },
    );
  }
  // Gone since lstat: nothing left to remove.
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** How long the probe waits for a connect to a Unix socket (which answers at once when it answers at all). */
const PROBE_TIMEOUT_MS = 2000;

/**
 * What a connect to the Unix socket `path` shows: `'live'` when something
 * accepts it; `'dead'` only when the kernel says nobody listens
 * (ECONNREFUSED: a file whose server is gone; ENOENT: no file any more); the
 * error otherwise, which proves neither (EAGAIN: a listener whose backlog is
 * full, EACCES: no permission to look, a timeout).
 */
function probe(path: string): Promise<'live' | 'dead' | Error> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (found: 'live' | 'dead' | Error): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(found);
    };
    const timer = setTimeout(
      () => done(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)),
      PROBE_TIMEOUT_MS,
    );
    s.once('connect', () => done('live'));
    s.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'dead' : err),
    );
  });
}
