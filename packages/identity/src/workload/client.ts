import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import {
  ChannelCredentials,
  Client as GrpcClient,
  Metadata,
  credentials,
  status as GrpcStatus,
  type ClientReadableStream,
  type MethodDefinition,
  type StatusObject,
} from '@grpc/grpc-js';
import { z } from 'zod';
import { BundleSet, JwtBundle, X509Bundle, jwtBundleFromParsedJwks } from '../bundle.js';
import { parseJwtSvidInsecure, type JwtSvid } from '../jwt-svid.js';
import { defaultLogger, type Logger } from '../log.js';
import type { TrustDomain } from '../spiffe-id.js';
import { SpiffeId } from '../spiffe-id.js';
import { X509Svid } from '../x509-svid.js';
import { derCertificateCount } from '../x509-util.js';
import { budgetRefusal, checkKnownKeys, MAX_TIMER_MS } from '../options.js';
import { IdentityConfigError } from '../provider.js';
import { resolveWorkloadApiAddress, type WorkloadApiAddress } from './address.js';
import { ExponentialBackoff, resolveBackoff, type BackoffOptions, type ResolvedBackoff } from './backoff.js';
import { WorkloadApiError, badResponse } from './errors.js';
import {
  WORKLOAD_API_HEADER,
  structToJson,
  workloadApiService,
  type JsonValue,
  type JwtBundlesResponse,
  type JwtSvidResponse,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';

/** Options of {@link WorkloadApiClient}. */
export interface WorkloadApiClientOptions {
  /** `unix:///path` or `tcp://IP:PORT`; default: `SPIFFE_ENDPOINT_SOCKET` from `env`. */
  readonly address?: string;
  /** Where `SPIFFE_ENDPOINT_SOCKET` is read from. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Reconnect backoff of the watchers. Default 1 s doubling to 30 s, with jitter; 1 s while the SVID is (about to be) expired. */
  readonly backoff?: BackoffOptions;
  readonly logger?: Logger;
}

/**
 * @internal Every option of {@link WorkloadApiClient}; the provider and the
 * JWT source take them too, beside their own.
 */
export const CLIENT_OPTION_KEYS = {
  address: true,
  env: true,
  backoff: true,
  logger: true,
} satisfies Record<keyof WorkloadApiClientOptions, true>;

/**
 * @internal What a caller who wrote one of these keys meant: the agent config
 * and the CLI call the endpoint `socket` (`identity.workloadApi.socket`,
 * `--socket`), and a `socket` dropped silently left `SPIFFE_ENDPOINT_SOCKET`
 * in use, another workload's identity.
 */
export const CLIENT_OPTION_HINTS: ReadonlyMap<string, string> = new Map([
  ['socket', 'the Workload API endpoint is "address"'],
]);

/** @internal The client's own options, out of the options of a provider or a source (checked there). */
export function clientOptions(o: WorkloadApiClientOptions): WorkloadApiClientOptions {
  return { address: o.address, env: o.env, backoff: o.backoff, logger: o.logger };
}

/**
 * Per-call options of the fetch methods. A key not named here is refused with
 * `IdentityConfigError` before the call is made.
 */
export interface FetchOptions {
  /** Cancels the call. */
  readonly signal?: AbortSignal;
  /**
   * Gives up after this long with `WORKLOAD_API_DEADLINE_EXCEEDED`: a number
   * of ms above 0 and at most 2147483647, fractions taken (leave it unset for
   * no deadline).
   * Anything else is refused with `IdentityConfigError` before the call is made,
   * instead of failing at once as if the deadline had passed.
   */
  readonly timeoutMs?: number;
}

/** Every option of {@link FetchOptions}. */
const FETCH_OPTION_KEYS = { signal: true, timeoutMs: true } satisfies Record<keyof FetchOptions, true>;

/** Every key of the `params` of {@link WorkloadApiClient.fetchJwtSvids} (and `fetchJwtSvid`). */
export const JWT_SVID_PARAM_KEYS = { audience: true, subject: true } satisfies Record<
  keyof Parameters<WorkloadApiClient['fetchJwtSvids']>[0],
  true
>;

/** For a key a caller may write by mistake (the Workload API's own field names among them), what to write. */
export const JWT_SVID_PARAM_HINTS: ReadonlyMap<string, string> = new Map([
  ['spiffeId', 'the identity asked for is "subject"'],
  ['id', 'the identity asked for is "subject"'],
  ['sub', 'the identity asked for is "subject"'],
  ['audiences', 'one audience or several is "audience"'],
  ['aud', 'one audience or several is "audience"'],
]);

/** Everything one X509SVIDResponse carries: the SVIDs (the first is the default) and the trusted X.509 bundles. */
export interface X509Context {
  /** All SVIDs the workload is entitled to; never empty. */
  readonly svids: readonly X509Svid[];
  /** The default SVID (`svids[0]`). */
  readonly defaultSvid: X509Svid;
  /** The bundles of the SVIDs' own trust domains plus the federated ones (X.509 only). */
  readonly bundles: BundleSet;
}

/** The result of ValidateJWTSVID, checked by the Workload API server. */
export interface ValidatedJwtSvid {
  readonly id: SpiffeId;
  readonly claims: Record<string, JsonValue>;
}

/** Receives the updates of a watch. A throwing callback is logged and does not stop the watch. */
export interface Watcher<T> {
  /**
   * Called with the full current state after a message. A watch takes a
   * message at most every 100 ms (longer after one that was slow to parse):
   * of several that arrive meanwhile only the latest is taken, which holds the
   * whole state.
   */
  onUpdate(value: T): void;
  /** Called for every failure: a dropped stream (followed by a reconnect) or an invalid message (ignored). */
  onError?(error: WorkloadApiError): void;
  /**
   * When a new message is needed at the latest (epoch ms), e.g. the held
   * SVID's expiry: a reconnect that would come later is brought forward
   * (at most `backoff.urgentMaxMs`), and a stream still open that has
   * brought nothing new shortly before it (at most 30 s; a quarter of the
   * time left when less; a new stream first gets 10 s for its first message)
   * is restarted, once per value. Asked at each connect, reconnect and message.
   */
  needBy?(): number | undefined;
}

/** A running watch. */
export interface WatchHandle {
  /** Stops the stream and any pending reconnect. */
  stop(): void;
  /**
   * Settles when the watch ends: `undefined` after {@link WatchHandle.stop} or client close, the error when the
   * server answered INVALID_ARGUMENT (a client never retries that).
   */
  readonly done: Promise<WorkloadApiError | undefined>;
}

const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected bytes');
const nonEmptyBytes = bytes.refine((b) => b.length > 0, 'must not be empty');
const bundleMap = z.record(z.string(), bytes);

const X509SvidResponseSchema = z.object({
  svids: z
    .array(
      z.object({
        spiffeId: z.string().min(1, 'spiffe_id is empty'),
        x509Svid: nonEmptyBytes,
        x509SvidKey: nonEmptyBytes,
        bundle: nonEmptyBytes,
        hint: z.string(),
      }),
    )
    .min(1, 'no SVID in the response'),
  crl: z.array(bytes),
  federatedBundles: bundleMap,
});
const X509BundlesResponseSchema = z.object({ crl: z.array(bytes), bundles: bundleMap });
const JwtBundlesResponseSchema = z.object({ bundles: bundleMap });
const JwtSvidResponseSchema = z.object({
  svids: z
    .array(z.object({ spiffeId: z.string().min(1), svid: z.string().min(1), hint: z.string() }))
    .min(1, 'no JWT-SVID in the response'),
});
const ValidateResponseSchema = z.object({ spiffeId: z.string().min(1), claims: z.unknown() });

const zodReason = (err: z.ZodError): string =>
  err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');

/**
 * The most SVIDs one Workload API response may carry (an X509SVIDResponse or a
 * JWTSVIDResponse). Each is parsed and checked (about 2 ms of CPU for an
 * X.509-SVID), so a response with more is refused as `WORKLOAD_API_BAD_RESPONSE`
 * before any is parsed.
 */
export const WORKLOAD_API_MAX_SVIDS = 256;

/**
 * The most trust domains one Workload API response may carry bundles for (the
 * federated bundles of an X509SVIDResponse, the bundles of an
 * X509BundlesResponse or a JWTBundlesResponse). A response with more is
 * refused as `WORKLOAD_API_BAD_RESPONSE` before any bundle is parsed.
 */
export const WORKLOAD_API_MAX_TRUST_DOMAINS = 1024;

/**
 * The most authorities (CA certificates of the X.509 bundles, keys of the JWT
 * bundles) one Workload API response may carry over all its bundles. Each is
 * parsed and its key checked (about 0.6 ms of CPU for a certificate), so a
 * bundle that would take the count past it is refused as
 * `WORKLOAD_API_BAD_RESPONSE` before it is parsed.
 */
export const WORKLOAD_API_MAX_AUTHORITIES = 2048;

/** Refuses a response with more than `max` of something, before any of it is parsed. */
function atMost(what: string, count: number, max: number, noun: string): void {
  if (count > max) throw badResponse(what, `it carries ${count} ${noun}, more than the ${max} taken`);
}

/** A digest of byte and text parts, each framed by its length so that two lists of parts never share one. */
function digest(...parts: (Uint8Array | string)[]): string {
  const h = createHash('sha256');
  for (const part of parts) {
    const b = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    h.update(`${b.byteLength}:`).update(b);
  }
  return h.digest('base64');
}

/**
 * The parts (SVIDs, bundles) of a watch's last message, by content. A stream
 * resends the whole state on every change, and a broken server resends it
 * unchanged: a part seen in the previous message is taken as it was parsed
 * then (the same object) instead of being parsed and checked again, and a part
 * repeated within a message (every SVID of a trust domain carries its bundle)
 * is parsed once. Parsing is independent of the clock, so nothing goes stale.
 * Holds the parts of two messages at most.
 */
class PartsMemo {
  #prev = new Map<string, unknown>();
  #next = new Map<string, unknown>();

  get<T>(key: string, make: () => T): T {
    const value = this.peek<T>(key) ?? make();
    this.#next.set(key, value);
    return value;
  }

  peek<T>(key: string): T | undefined {
    return (this.#next.get(key) ?? this.#prev.get(key)) as T | undefined;
  }

  /** The message was taken: its parts are the ones the next message may reuse. */
  keep(): void {
    this.#prev = this.#next;
    this.#next = new Map();
  }

  /** The message was refused: the last taken one's parts stay. */
  drop(): void {
    this.#next = new Map();
  }
}

/** The JSON value of `text`, or undefined when it is no JSON (the bundle parser then refuses it, saying so). */
function tryParseJson(text: string): { readonly doc: unknown } | undefined {
  try {
    return { doc: JSON.parse(text) as unknown };
  } catch {
    return undefined;
  }
}

/** How many keys a JWKS document lists, whatever they are (0 when it is no JWKS: the parser refuses it). */
function jwksKeyCount(doc: unknown): number {
  const keys = typeof doc === 'object' && doc !== null ? (doc as { keys?: unknown }).keys : undefined;
  return Array.isArray(keys) ? keys.length : 0;
}

/**
 * One response being parsed: its parts are taken from the memo when seen
 * before, and the authorities of its bundles are counted against
 * {@link WORKLOAD_API_MAX_AUTHORITIES}, each distinct bundle once and before
 * it is parsed.
 */
class ResponseParts {
  readonly #counted = new Set<string>();
  #authorities = 0;

  constructor(
    private readonly what: string,
    private readonly memo: PartsMemo,
  ) {}

  x509Svid(s: { x509Svid: Uint8Array; x509SvidKey: Uint8Array; hint: string }): X509Svid {
    return this.memo.get(`svid:${digest(s.x509Svid, s.x509SvidKey, s.hint)}`, () =>
      X509Svid.parse(s.x509Svid, s.x509SvidKey, { hint: s.hint }),
    );
  }

  x509Bundle(td: TrustDomain, der: Uint8Array): X509Bundle {
    return this.#bundle(
      `x509:${td.name}:${digest(der)}`,
      () => derCertificateCount(der, WORKLOAD_API_MAX_AUTHORITIES),
      () => X509Bundle.fromDer(td, der),
      (b) => b.authorities.length,
    );
  }

  jwtBundle(td: TrustDomain, jwks: Uint8Array): JwtBundle {
    // Decoded and parsed once: the count (which comes first) hands its parse to the bundle parser.
    let text: string | undefined;
    let parsed: { readonly doc: unknown } | undefined;
    const read = (): string => (text ??= Buffer.from(jwks).toString('utf8'));
    return this.#bundle(
      `jwt:${td.name}:${digest(jwks)}`,
      () => {
        parsed = tryParseJson(read());
        return jwksKeyCount(parsed?.doc);
      },
      // Not parsed (or no JSON): fromJwks parses, and refuses it as it always did.
      () => (parsed ? jwtBundleFromParsedJwks(td, read(), parsed.doc) : JwtBundle.fromJwks(td, read())),
      (b) => b.keys.size,
    );
  }

  #bundle<B>(key: string, count: () => number, parse: () => B, size: (bundle: B) => number): B {
    if (!this.#counted.has(key)) {
      this.#counted.add(key);
      const known = this.memo.peek<B>(key);
      this.#authorities += known === undefined ? count() : size(known);
      if (this.#authorities > WORKLOAD_API_MAX_AUTHORITIES) {
        throw badResponse(
          this.what,
          `its bundles hold at least ${this.#authorities} authorities, more than the ${WORKLOAD_API_MAX_AUTHORITIES} taken`,
        );
      }
    }
    return this.memo.get(key, parse);
  }
}

/** Map keys of bundle maps are `spiffe://<td>`; anything else is a protocol error. */
function bundleKey(key: string, what: string): TrustDomain {
  const id = SpiffeId.tryParse(key);
  if (!id || id.path !== '')
    throw badResponse(what, `bundle key ${JSON.stringify(key)} is not a trust domain ID`);
  return id.trustDomain;
}

function wrapParse<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof WorkloadApiError) throw err;
    throw badResponse(what, err instanceof Error ? err.message : String(err), err);
  }
}

/** How many elements an array, or members an object, has (a decoded message is still untrusted). */
const sizeOf = (v: unknown): number =>
  Array.isArray(v) ? v.length : typeof v === 'object' && v !== null ? Object.keys(v).length : 0;

/** @internal Parses and checks an X509SVIDResponse. */
function parseX509Context(msg: X509SvidResponse, memo: PartsMemo): X509Context {
  const what = 'X509SVID';
  atMost(what, sizeOf(msg.svids), WORKLOAD_API_MAX_SVIDS, 'SVIDs');
  atMost(what, sizeOf(msg.federatedBundles), WORKLOAD_API_MAX_TRUST_DOMAINS, 'federated bundles');
  const parsed = X509SvidResponseSchema.safeParse(msg);
  if (!parsed.success) throw badResponse(what, zodReason(parsed.error));
  const parts = new ResponseParts(what, memo);
  return wrapParse(what, () => {
    const bundles = new BundleSet();
    const svids = parsed.data.svids.map((s) => {
      const id = SpiffeId.parse(s.spiffeId);
      const svid = parts.x509Svid(s);
      if (!svid.id.equals(id)) {
        throw badResponse(
          what,
          `spiffe_id ${id.toString()} does not match the certificate's ${svid.id.toString()}`,
        );
      }
      bundles.setX509Bundle(parts.x509Bundle(id.trustDomain, s.bundle));
      return svid;
    });
    for (const [key, der] of Object.entries(parsed.data.federatedBundles)) {
      const td = bundleKey(key, what);
      // The SVIDs' own bundles are authoritative for their trust domains.
      if (!bundles.getX509Bundle(td)) bundles.setX509Bundle(parts.x509Bundle(td, der));
    }
    return { svids, defaultSvid: svids[0]!, bundles };
  });
}

/** @internal */
function parseX509Bundles(msg: X509BundlesResponse, memo: PartsMemo): BundleSet {
  const what = 'X509Bundles';
  atMost(what, sizeOf(msg.bundles), WORKLOAD_API_MAX_TRUST_DOMAINS, 'bundles');
  const parsed = X509BundlesResponseSchema.safeParse(msg);
  if (!parsed.success) throw badResponse(what, zodReason(parsed.error));
  const parts = new ResponseParts(what, memo);
  return wrapParse(what, () =>
    BundleSet.of(
      ...Object.entries(parsed.data.bundles).map(([k, der]) => parts.x509Bundle(bundleKey(k, what), der)),
    ),
  );
}

/** @internal */
function parseJwtBundles(msg: JwtBundlesResponse, memo: PartsMemo): BundleSet {
  const what = 'JWTBundles';
  atMost(what, sizeOf(msg.bundles), WORKLOAD_API_MAX_TRUST_DOMAINS, 'bundles');
  const parsed = JwtBundlesResponseSchema.safeParse(msg);
  if (!parsed.success) throw badResponse(what, zodReason(parsed.error));
  const parts = new ResponseParts(what, memo);
  return wrapParse(what, () =>
    BundleSet.of(
      ...Object.entries(parsed.data.bundles).map(([k, jwks]) => parts.jwtBundle(bundleKey(k, what), jwks)),
    ),
  );
}

function parseJwtSvids(msg: JwtSvidResponse, audience: readonly string[]): JwtSvid[] {
  const what = 'JWTSVID';
  atMost(what, sizeOf(msg.svids), WORKLOAD_API_MAX_SVIDS, 'JWT-SVIDs');
  const parsed = JwtSvidResponseSchema.safeParse(msg);
  if (!parsed.success) throw badResponse(what, zodReason(parsed.error));
  return wrapParse(what, () =>
    parsed.data.svids.map((s) => {
      const svid = parseJwtSvidInsecure(s.svid, audience).withHint(s.hint);
      if (!svid.id.equals(s.spiffeId)) {
        throw badResponse(
          what,
          `spiffe_id ${s.spiffeId} does not match the token's sub ${svid.id.toString()}`,
        );
      }
      return svid;
    }),
  );
}

type StreamMethod<Res> = MethodDefinition<Record<string, never>, Res>;

/**
 * Insecure channel credentials (the Workload API is a local endpoint) that
 * hand each connection of the channel to `track` before gRPC uses it, so
 * that its client can end them. Equal to no other: grpc-js shares
 * connections between channels with equal credentials, and one client's
 * close() must not end another's.
 */
class SocketTrackingCredentials extends ChannelCredentials {
  readonly #insecure = credentials.createInsecure();
  readonly #track: (socket: Socket) => boolean;

  constructor(track: (socket: Socket) => boolean) {
    super();
    this.#track = track;
  }

  override compose(): ChannelCredentials {
    throw new Error('Cannot compose insecure credentials');
  }

  _isSecure(): boolean {
    return false;
  }

  _equals(other: ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(
    ...args: Parameters<ChannelCredentials['_createSecureConnector']>
  ): ReturnType<ChannelCredentials['_createSecureConnector']> {
    const inner = this.#insecure._createSecureConnector(...args);
    return {
      connect: (socket) => {
        if (this.#track(socket)) return inner.connect(socket);
        socket.destroy();
        return Promise.reject(new Error('the Workload API client is closed'));
      },
      waitForReady: () => inner.waitForReady(),
      getCallCredentials: () => inner.getCallCredentials(),
      destroy: () => inner.destroy(),
    };
  }
}

/** How long before the held SVID's expiry a watch that brought nothing new is restarted (at most; a quarter of the time left when less). */
const STALE_MARGIN_MS = 30_000;
/** How long a new watch stream may take to deliver its first message before it counts as stale. */
const STALE_GRACE_MS = 10_000;
/**
 * A watch takes a message at most this often, and waits after one at least
 * {@link UPDATE_COST_FACTOR} times what parsing it took: a server that sends
 * faster (a broken agent in a loop) has the messages in between skipped but
 * the latest, so a flood costs at most about a tenth of a CPU.
 */
const MIN_UPDATE_INTERVAL_MS = 100;
const UPDATE_COST_FACTOR = 9;

/**
 * A client of the SPIFFE Workload API (SPIRE agent or Weave's dev server) over
 * gRPC, as go-spiffe's `workloadapi.Client`: every call carries the
 * `workload.spiffe.io: true` header, every response is validated before use,
 * and the watchers reconnect with capped exponential backoff and jitter
 * (faster while the watched SVID is expired or about to be), except after
 * INVALID_ARGUMENT.
 */
export class WorkloadApiClient {
  readonly address: WorkloadApiAddress;
  readonly #grpc: GrpcClient;
  readonly #backoff: ResolvedBackoff;
  readonly #log: Logger;
  readonly #watches = new Set<WatchHandle>();
  readonly #calls = new Set<{ cancel(): void }>();
  /** Every connection the channel has opened and not yet seen closed. */
  readonly #sockets = new Set<Socket>();
  #closed = false;

  /**
   * @throws {IdentityConfigError} when an option is unknown (`socket` for `address`, say) or a `backoff` option is out of range (the message names it).
   * @throws {WorkloadApiAddressError} when the address (option or `SPIFFE_ENDPOINT_SOCKET`) is missing or malformed.
   */
  constructor(options: WorkloadApiClientOptions = {}) {
    // First: an unknown `socket` would otherwise fall back to SPIFFE_ENDPOINT_SOCKET, or be reported as no address at all.
    checkKnownKeys('Workload API client', options, CLIENT_OPTION_KEYS, CLIENT_OPTION_HINTS);
    this.address = resolveWorkloadApiAddress(options.address, options.env);
    this.#backoff = resolveBackoff(options.backoff);
    this.#log = (options.logger ?? defaultLogger('workload-api-client')).child({ address: this.address.uri });
    // No TLS: the Workload API is a local endpoint secured by the socket's
    // reachability, and the server identifies the caller by its process.
    // grpc-js keeps its own reconnect backoff per channel and fails calls at
    // once while it waits. Ours spaces the calls; the channel's is kept at the
    // urgent bound, so a socket that reappears is used by the next call (a
    // local socket: a connect attempt a second at most, and only when called).
    this.#grpc = new GrpcClient(this.address.grpcTarget, new SocketTrackingCredentials(this.#track), {
      'grpc.initial_reconnect_backoff_ms': Math.min(this.#backoff.initialMs, this.#backoff.urgentMaxMs),
      'grpc.max_reconnect_backoff_ms': this.#backoff.urgentMaxMs,
    });
  }

  /** Fetches the current X.509 context (SVIDs and X.509 bundles) once. */
  async fetchX509Context(options: FetchOptions = {}): Promise<X509Context> {
    return parseX509Context(
      await this.#first(workloadApiService().FetchX509SVID, 'FetchX509SVID', options),
      new PartsMemo(),
    );
  }

  /** Fetches the default X.509-SVID once. */
  async fetchX509Svid(options: FetchOptions = {}): Promise<X509Svid> {
    return (await this.fetchX509Context(options)).defaultSvid;
  }

  /** Fetches the X.509 bundles (own and federated) once. */
  async fetchX509Bundles(options: FetchOptions = {}): Promise<BundleSet> {
    return parseX509Bundles(
      await this.#first(workloadApiService().FetchX509Bundles, 'FetchX509Bundles', options),
      new PartsMemo(),
    );
  }

  /** Fetches the JWT bundles (own and federated) once. */
  async fetchJwtBundles(options: FetchOptions = {}): Promise<BundleSet> {
    return parseJwtBundles(
      await this.#first(workloadApiService().FetchJWTBundles, 'FetchJWTBundles', options),
      new PartsMemo(),
    );
  }

  /**
   * Fetches a JWT-SVID for `audience` (the first of the workload's identities,
   * or `subject`'s). The token is checked (sub, aud, exp) but its signature is
   * not: it came from the trusted local endpoint.
   *
   * @throws {IdentityConfigError} when `params` has a key other than `audience` and `subject`.
   */
  async fetchJwtSvid(
    params: { audience: string | readonly string[]; subject?: SpiffeId | string },
    options: FetchOptions = {},
  ): Promise<JwtSvid> {
    return (await this.fetchJwtSvids(params, options))[0]!;
  }

  /**
   * Fetches JWT-SVIDs of every identity of the workload (or only `subject`'s) for `audience`.
   *
   * @throws {IdentityConfigError} when `params` has a key other than `audience` and
   *   `subject` (a misspelt `subject` would fetch every identity's token instead of one's).
   */
  async fetchJwtSvids(
    params: { audience: string | readonly string[]; subject?: SpiffeId | string },
    options: FetchOptions = {},
  ): Promise<JwtSvid[]> {
    checkKnownKeys('Workload API JWT-SVID request', params, JWT_SVID_PARAM_KEYS, JWT_SVID_PARAM_HINTS);
    const audience = typeof params.audience === 'string' ? [params.audience] : [...params.audience];
    if (audience.length === 0 || audience.some((a) => typeof a !== 'string' || a === '')) {
      throw new WorkloadApiError(
        'WORKLOAD_API_INVALID_REQUEST',
        'a JWT-SVID needs at least one non-empty audience',
      );
    }
    const subject = params.subject === undefined ? '' : SpiffeId.parse(params.subject.toString()).toString();
    const method = workloadApiService().FetchJWTSVID;
    const res = await this.#unary(method, 'FetchJWTSVID', { audience, spiffeId: subject }, options);
    const svids = parseJwtSvids(res, audience);
    // Asked for one identity's token, an answer for another must not pass as it.
    const other = subject === '' ? undefined : svids.find((s) => s.id.toString() !== subject);
    if (other) {
      throw badResponse(
        'JWTSVID',
        `asked for a JWT-SVID of ${subject}, the Workload API sent one of ${other.id.toString()}`,
      );
    }
    return svids;
  }

  /**
   * Asks the Workload API to validate a JWT-SVID for `audience`
   * (ValidateJWTSVID). Invalid tokens fail with `WORKLOAD_API_INVALID_ARGUMENT`.
   */
  async validateJwtSvid(
    token: string,
    audience: string,
    options: FetchOptions = {},
  ): Promise<ValidatedJwtSvid> {
    if (typeof token !== 'string' || token === '' || typeof audience !== 'string' || audience === '') {
      throw new WorkloadApiError(
        'WORKLOAD_API_INVALID_REQUEST',
        'ValidateJWTSVID needs a token and an audience',
      );
    }
    const method = workloadApiService().ValidateJWTSVID;
    const res = await this.#unary(method, 'ValidateJWTSVID', { audience, svid: token }, options);
    const parsed = ValidateResponseSchema.safeParse(res);
    if (!parsed.success) throw badResponse('ValidateJWTSVID', zodReason(parsed.error));
    const id = SpiffeId.tryParse(parsed.data.spiffeId);
    if (!id)
      throw badResponse('ValidateJWTSVID', `spiffe_id ${JSON.stringify(parsed.data.spiffeId)} is invalid`);
    return { id, claims: structToJson(res.claims) };
  }

  /** Watches X.509 contexts: SVID rotations and bundle changes, reconnecting as needed. */
  watchX509Context(watcher: Watcher<X509Context>): WatchHandle {
    return this.#watch(workloadApiService().FetchX509SVID, 'FetchX509SVID', parseX509Context, watcher);
  }

  /** Watches the X.509 bundles. */
  watchX509Bundles(watcher: Watcher<BundleSet>): WatchHandle {
    return this.#watch(workloadApiService().FetchX509Bundles, 'FetchX509Bundles', parseX509Bundles, watcher);
  }

  /** Watches the JWT bundles. */
  watchJwtBundles(watcher: Watcher<BundleSet>): WatchHandle {
    return this.#watch(workloadApiService().FetchJWTBundles, 'FetchJWTBundles', parseJwtBundles, watcher);
  }

  /**
   * Stops every watch and call, closes the channel and ends every connection,
   * also one to a server that accepted it and never answered. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) w.stop();
    for (const c of [...this.#calls]) c.cancel();
    this.#grpc.close();
    // grpc-js keeps a connection whose HTTP/2 handshake the server never
    // answers (a hung SPIRE agent) open past close(), waiting for it.
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  /** Takes each new connection of the channel; `false` (the client is closed) has it refused. */
  readonly #track = (socket: Socket): boolean => {
    if (this.#closed) return false;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    return true;
  };

  #metadata(): Metadata {
    const md = new Metadata();
    md.set(WORKLOAD_API_HEADER, 'true');
    return md;
  }

  #assertOpen(): void {
    if (this.#closed) throw new WorkloadApiError('WORKLOAD_API_CLOSED', 'the Workload API client is closed');
  }

  /**
   * @throws {IdentityConfigError} when `options` has a key it does not know (a misspelt
   *   `timeoutMs` would leave the call without a deadline), or `timeoutMs` is not a number of
   *   ms above 0 and at most 2147483647.
   */
  #callOptions(options: FetchOptions): { deadline?: Date } {
    checkKnownKeys('Workload API call', options, FETCH_OPTION_KEYS);
    if (options.timeoutMs === undefined) return {};
    // Refused, not passed on: a NaN, negative or zero deadline fails the call at
    // once with a misleading WORKLOAD_API_DEADLINE_EXCEEDED.
    const refusal = budgetRefusal(options.timeoutMs);
    if (refusal !== undefined) {
      throw new IdentityConfigError(`invalid Workload API call options: timeoutMs: ${refusal}`);
    }
    return { deadline: new Date(Date.now() + options.timeoutMs) };
  }

  /** Opens a stream, takes its first message and cancels it (go-spiffe's Fetch* on streaming RPCs). */
  #first<Res>(method: StreamMethod<Res>, name: string, options: FetchOptions): Promise<Res> {
    const callOptions = this.#callOptions(options);
    this.#assertOpen();
    return new Promise<Res>((resolve, reject) => {
      const call = this.#grpc.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        {},
        this.#metadata(),
        callOptions,
      );
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        this.#calls.delete(call);
        options.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = (): void => {
        settle(() => reject(new WorkloadApiError('WORKLOAD_API_CANCELLED', `${name} was aborted`)));
        call.cancel();
      };
      this.#calls.add(call);
      call.on('data', (msg: Res) => {
        settle(() => resolve(msg));
        call.cancel();
      });
      call.on('error', (err) => settle(() => reject(this.#closedOr(err, name))));
      call.on('status', (st: StatusObject) => {
        if (st.code === GrpcStatus.OK) {
          settle(() =>
            reject(
              new WorkloadApiError('WORKLOAD_API_UNAVAILABLE', `${name} stream ended without a message`),
            ),
          );
        }
      });
      // Listeners first: cancelling emits an error that must not go unhandled.
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #unary<Req, Res>(
    method: MethodDefinition<Req, Res>,
    name: string,
    req: Req,
    options: FetchOptions,
  ): Promise<Res> {
    const callOptions = this.#callOptions(options);
    this.#assertOpen();
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        this.#calls.delete(call);
        options.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const call = this.#grpc.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        req,
        this.#metadata(),
        callOptions,
        (err, res) => {
          if (err || res === undefined) settle(() => reject(this.#closedOr(err, name)));
          else settle(() => resolve(res));
        },
      );
      const onAbort = (): void => {
        settle(() => reject(new WorkloadApiError('WORKLOAD_API_CANCELLED', `${name} was aborted`)));
        call.cancel();
      };
      this.#calls.add(call);
      if (options.signal?.aborted) onAbort();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #closedOr(err: unknown, name: string): WorkloadApiError {
    if (this.#closed)
      return new WorkloadApiError('WORKLOAD_API_CLOSED', `${name}: the Workload API client is closed`);
    return WorkloadApiError.fromGrpc(err ?? new Error('no response'), name);
  }

  #watch<Res, T>(
    method: StreamMethod<Res>,
    name: string,
    parse: (msg: Res, memo: PartsMemo) => T,
    watcher: Watcher<T>,
  ): WatchHandle {
    this.#assertOpen();
    const backoff = new ExponentialBackoff(this.#backoff);
    const log = this.#log.child({ rpc: name });
    let stopped = false;
    let failures = 0;
    let call: ClientReadableStream<Res> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let staleTimer: NodeJS.Timeout | undefined;
    /** The `needBy` a stale stream was last restarted for: a server that then sends the same has nothing newer. */
    let restartedFor: number | undefined;
    let resolveDone!: (err: WorkloadApiError | undefined) => void;
    const done = new Promise<WorkloadApiError | undefined>((r) => (resolveDone = r));

    const safely = (fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        log.error({ err }, 'Workload API watcher callback threw');
      }
    };
    const memo = new PartsMemo();
    /** The latest message not taken yet, with what to do on its stream once it was. */
    let pending: { msg: Res; taken: () => void } | undefined;
    let takeTimer: NodeJS.Timeout | undefined;
    /** No message is taken before this instant (epoch ms): see {@link MIN_UPDATE_INTERVAL_MS}. */
    let quietUntil = 0;
    const take = (): void => {
      takeTimer = undefined;
      const next = pending;
      pending = undefined;
      if (next === undefined || stopped) return;
      const started = performance.now();
      let value: T;
      try {
        value = parse(next.msg, memo);
        memo.keep();
      } catch (err) {
        memo.drop();
        const e = err instanceof WorkloadApiError ? err : badResponse(name, String(err), err);
        log.error({ err: e }, 'ignoring an invalid Workload API message');
        safely(() => watcher.onError?.(e));
        return;
      } finally {
        // What parsing took, not what the watcher's callback takes: that is the caller's own time.
        quietUntil =
          Date.now() + Math.max(MIN_UPDATE_INTERVAL_MS, (performance.now() - started) * UPDATE_COST_FACTOR);
      }
      safely(() => watcher.onUpdate(value));
      next.taken();
    };
    const finish = (err: WorkloadApiError | undefined): void => {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      clearTimeout(staleTimer);
      clearTimeout(takeTimer);
      pending = undefined;
      call?.cancel();
      this.#watches.delete(handle);
      resolveDone(err);
    };
    const connect = (): void => {
      if (stopped) return;
      let ended = false;
      const c = this.#grpc.makeServerStreamRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        {},
        this.#metadata(),
      );
      call = c;
      const dropped = (err: WorkloadApiError): void => {
        if (ended || stopped) return;
        ended = true;
        clearTimeout(staleTimer);
        safely(() => watcher.onError?.(err));
        if (err.grpcStatus === GrpcStatus.INVALID_ARGUMENT) {
          log.error({ err }, 'Workload API rejected the request; not retrying');
          finish(err);
          return;
        }
        const delay = backoff.next(watcher.needBy?.());
        failures++;
        // The first failure and every tenth after it are warnings; the rest would only flood the log.
        const level = failures === 1 || failures % 10 === 0 ? 'warn' : 'debug';
        log[level](
          { code: err.code, reason: err.message, failures, retryInMs: delay },
          'Workload API stream failed; reconnecting',
        );
        timer = setTimeout(connect, delay);
      };
      c.on('data', (msg: Res) => {
        if (stopped) return;
        backoff.reset();
        failures = 0;
        pending = { msg, taken: () => watchForStale(false) };
        if (takeTimer !== undefined) return;
        const wait = quietUntil - Date.now();
        if (wait <= 0) take();
        else takeTimer = setTimeout(take, wait);
      });
      // A stream can stay open and bring nothing (a server that lost the
      // subscription; a new stream goes over the same connection, so one
      // that is itself stuck is not cured here). The server sends a new SVID
      // well before the one held expires (SPIRE at half its life), so a
      // stream that has not brought one when the held SVID is about to
      // expire is restarted, while there is time to fetch another. A new
      // stream gets a grace to deliver its first message.
      // Once per SVID: a restarted stream that brings the same one again is
      // alive, and its server has nothing newer (e.g. the agent cannot reach
      // its server); restarting it again would only load the agent.
      const watchForStale = (fresh: boolean): void => {
        clearTimeout(staleTimer);
        const needBy = watcher.needBy?.();
        if (needBy === undefined || needBy === restartedFor || ended || stopped) return;
        const now = Date.now();
        const at = Math.max(needBy - Math.min(STALE_MARGIN_MS, Math.max(0, needBy - now) / 4), now);
        const first = fresh ? now + STALE_GRACE_MS : 0;
        const wait = Math.max(at, first) - now;
        if (wait > MAX_TIMER_MS) {
          // An SVID of more than ~50 days: Node would fire the timer after
          // 1 ms and restart a healthy stream. Look again once the timer can reach.
          staleTimer = setTimeout(() => watchForStale(false), MAX_TIMER_MS);
          staleTimer.unref();
          return;
        }
        staleTimer = setTimeout(() => {
          restartedFor = needBy;
          dropped(
            new WorkloadApiError(
              'WORKLOAD_API_UNAVAILABLE',
              `${name} stream brought no update while the SVID held expires at ${new Date(needBy).toISOString()}; restarting it`,
            ),
          );
          c.cancel();
        }, wait);
        staleTimer.unref();
      };
      watchForStale(true);
      c.on('error', (err) => dropped(WorkloadApiError.fromGrpc(err, name)));
      c.on('status', (st: StatusObject) => {
        if (st.code === GrpcStatus.OK) {
          dropped(
            new WorkloadApiError('WORKLOAD_API_UNAVAILABLE', `${name} stream was closed by the server`),
          );
        }
      });
    };
    const handle: WatchHandle = { stop: () => finish(undefined), done };
    this.#watches.add(handle);
    connect();
    return handle;
  }
}
