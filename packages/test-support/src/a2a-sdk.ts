// The official @a2a-js/sdk 1.3 as a peer of Weave: its requests, its events,
// one echo executor, and its servers (express on a node https server for
// JSON-RPC and HTTP+JSON, grpc-js for gRPC) with the TLS they are given, the
// same mTLS as Weave's. One home for the interop tests and the benchmark
// baselines, so both run against the same SDK agent.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import express from 'express';
import type { Server as GrpcServer, ServerUnaryCall } from '@grpc/grpc-js';
import {
  Role,
  TaskState,
  type AgentCard as SdkAgentCard,
  type ListTasksRequest,
  type Message as SdkMessage,
  type SendMessageRequest,
} from '@a2a-js/sdk';
import {
  AgentEvent,
  DefaultRequestHandler,
  InMemoryTaskStore,
  type A2ARequestHandler,
  type AgentExecutionEvent,
  type AgentExecutor,
  type ExecutionEventBus,
  type RequestContext,
  type TaskStore,
} from '@a2a-js/sdk/server';
import { UserBuilder, agentCardHandler, jsonRpcHandler, restHandler } from '@a2a-js/sdk/server/express';

// ---- requests (the SDK client's ts-proto shapes: `$case` oneofs) ------------------

/** A user text message as the SDK types it. */
export function sdkText(text: string, extra: Partial<SdkMessage> = {}): SdkMessage {
  return {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    contextId: '',
    taskId: '',
    role: Role.ROLE_USER,
    parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: '' }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
    ...extra,
  };
}

/** The SDK client's SendMessage request for `message`. */
export function sdkSendParams(message: SdkMessage): SendMessageRequest {
  return { tenant: '', message, configuration: undefined, metadata: undefined };
}

/** The SDK client's ListTasks request: every state, up to 10 tasks with their artifacts, of one context or all. */
export function sdkListParams(contextId = ''): ListTasksRequest {
  return {
    tenant: '',
    contextId,
    status: TaskState.TASK_STATE_UNSPECIFIED,
    pageSize: 10,
    pageToken: '',
    historyLength: undefined,
    statusTimestampAfter: undefined,
    includeArtifacts: true,
  };
}

/** Which event a stream response of the SDK client is (`task`, `statusUpdate`, ...). */
export function sdkEventKind(e: object): string {
  return Object.keys(e).find((k) => k !== 'eventId') ?? '';
}

/**
 * Reads an SDK client's stream up to its first artifact update and stops
 * there (ending the stream): the payload kinds seen, in order, and the id of
 * the task they belong to.
 */
export async function sdkReadToFirstArtifact(
  stream: AsyncIterable<unknown>,
): Promise<{ seen: string[]; taskId: string }> {
  const seen: string[] = [];
  let taskId = '';
  for await (const ev of stream) {
    const p = (ev as { payload?: { $case: string; value: { id?: string } } }).payload;
    seen.push(p?.$case ?? 'none');
    if (p?.$case === 'task') taskId = p.value.id ?? '';
    if (p?.$case === 'artifactUpdate') break;
  }
  return { seen, taskId };
}

// ---- executor events ----------------------------------------------------------------

/** The SDK event that opens the request's task: SUBMITTED, the user message as history. */
export function sdkSubmittedTask(rc: RequestContext): AgentExecutionEvent {
  return AgentEvent.task({
    id: rc.taskId,
    contextId: rc.contextId,
    status: {
      state: TaskState.TASK_STATE_SUBMITTED,
      message: undefined,
      timestamp: new Date().toISOString(),
    },
    history: [rc.userMessage],
    artifacts: [],
    metadata: undefined,
  });
}

/** The SDK status-update event moving `rc`'s task to `state`. */
export function sdkStatusUpdate(rc: RequestContext, state: TaskState): AgentExecutionEvent {
  return AgentEvent.statusUpdate({
    taskId: rc.taskId,
    contextId: rc.contextId,
    status: { state, message: undefined, timestamp: new Date().toISOString() },
    metadata: undefined,
  });
}

/**
 * The SDK artifact-update event carrying text: by default one whole artifact;
 * a streamed one sends its chunks with `append` after the first and
 * `lastChunk` on the last.
 */
export function sdkTextArtifact(
  rc: RequestContext,
  artifactId: string,
  text: string,
  chunk: { append: boolean; lastChunk: boolean } = { append: false, lastChunk: true },
): AgentExecutionEvent {
  return AgentEvent.artifactUpdate({
    taskId: rc.taskId,
    contextId: rc.contextId,
    artifact: {
      artifactId,
      name: '',
      description: '',
      parts: [{ content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: '' }],
      metadata: undefined,
      extensions: [],
    },
    append: chunk.append,
    lastChunk: chunk.lastChunk,
    metadata: undefined,
  });
}

/** The text of the request's first part ('' when it is not text). */
export function sdkUserText(rc: RequestContext): string {
  const c = rc.userMessage.parts[0]?.content;
  return c?.$case === 'text' ? c.value : '';
}

/** Options of {@link SdkEchoExecutor}. */
export interface SdkEchoExecutorOptions {
  /** Put before the request's text in the reply (default `echo: `). */
  readonly prefix?: string;
  /** Id of the reply artifact (default `result`). */
  readonly artifactId?: string;
  /** Sees each request before the executor answers it (what a test records of a run). */
  readonly onRun?: (rc: RequestContext) => void;
}

/**
 * The echo agent's executor, the work a Weave bench agent does per call: a
 * task, WORKING, one text artifact `<prefix><text>`, COMPLETED. Two texts
 * drive the task states the interop tests need: `slow` stays WORKING until
 * canceled; `ask` stops at INPUT_REQUIRED.
 */
export class SdkEchoExecutor implements AgentExecutor {
  readonly #cancel = new Map<string, () => void>();
  readonly #prefix: string;
  readonly #artifactId: string;
  readonly #onRun: ((rc: RequestContext) => void) | undefined;

  constructor(options: SdkEchoExecutorOptions = {}) {
    this.#prefix = options.prefix ?? 'echo: ';
    this.#artifactId = options.artifactId ?? 'result';
    this.#onRun = options.onRun;
  }

  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    this.#onRun?.(rc);
    const text = sdkUserText(rc);
    if (!rc.task) bus.publish(sdkSubmittedTask(rc));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_WORKING));
    if (text === 'slow') {
      await new Promise<void>((resolve) => this.#cancel.set(rc.taskId, resolve));
      bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_CANCELED));
    } else if (text === 'ask') {
      bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_INPUT_REQUIRED));
    } else {
      bus.publish(sdkTextArtifact(rc, this.#artifactId, `${this.#prefix}${text}`));
      bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_COMPLETED));
    }
    bus.finished();
  }

  async cancelTask(taskId: string): Promise<void> {
    this.#cancel.get(taskId)?.();
    this.#cancel.delete(taskId);
  }
}

/**
 * The SDK's agent card of an echo agent: one `echo` skill, JSON-RPC v1.0,
 * streaming. Its interface URL is empty until the server knows its port.
 */
export function sdkEchoCard(name: string, description: string): SdkAgentCard {
  return {
    name,
    description,
    supportedInterfaces: [{ url: '', protocolBinding: 'JSONRPC', protocolVersion: '1.0', tenant: '' }],
    provider: undefined,
    version: '1.0.0',
    capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: [
      {
        id: 'echo',
        name: 'Echo',
        description: 'echo',
        tags: [],
        examples: [],
        inputModes: [],
        outputModes: [],
        securityRequirements: [],
      },
    ],
    signatures: [],
  };
}

// ---- servers ------------------------------------------------------------------------

/** The SDK's HTTP bindings. */
export type SdkHttpBinding = 'JSONRPC' | 'HTTP+JSON';

/** Options of {@link startSdkHttpServer}. */
export interface SdkHttpServerOptions {
  /** Path of the JSON-RPC binding (default `/`). */
  readonly jsonRpcPath?: string;
  /** Path of the HTTP+JSON binding (default `/rest`). */
  readonly restPath?: string;
  /** Sees each request's TLS socket before the SDK does (which binding it came on). */
  readonly onRequest?: (binding: SdkHttpBinding, socket: TLSSocket) => void;
}

/** A running SDK https server: its base URL (with a trailing `/`) and a `close()`. */
export interface SdkHttpServer {
  readonly url: string;
  readonly server: https.Server;
  close(): Promise<void>;
}

/**
 * Serves `requestHandler` with the SDK's express handlers (its card under
 * `/.well-known/agent-card.json`, JSON-RPC, HTTP+JSON) on 127.0.0.1 (random
 * port) with the given TLS options.
 */
export async function startSdkHttpServer(
  tls: https.ServerOptions,
  requestHandler: A2ARequestHandler,
  options: SdkHttpServerOptions = {},
): Promise<SdkHttpServer> {
  const app = express();
  // The SDK's handlers parse JSON with express's default 100 KB limit; the
  // payload bench sends up to 1 MB, as Weave's agents accept (body limit
  // configurable). Parsed here first, the SDK's own parser sees a finished
  // body and leaves it as it is.
  app.use(express.json({ limit: '4mb' }));
  const seen =
    (binding: SdkHttpBinding): express.RequestHandler =>
    (req, _res, next) => {
      options.onRequest?.(binding, req.socket as TLSSocket);
      next();
    };
  const userBuilder = UserBuilder.noAuthentication;
  app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: requestHandler }));
  app.use(options.restPath ?? '/rest', seen('HTTP+JSON'), restHandler({ requestHandler, userBuilder }));
  app.use(options.jsonRpcPath ?? '/', seen('JSONRPC'), jsonRpcHandler({ requestHandler, userBuilder }));
  const server = https.createServer(tls, app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** TLS of the SDK's gRPC server, in PEM: the trusted roots, the SVID chain and its key. */
export interface SdkGrpcTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** A running SDK gRPC server: its `host:port` and a `close()`. */
export interface SdkGrpcServer {
  readonly target: string;
  close(): Promise<void>;
}

/**
 * Serves `requestHandler` with the SDK's `grpcService` on a grpc-js server on
 * 127.0.0.1 (random port), with grpc-js's own TLS: client certificate
 * required. `onCall` sees the peer certificate of each call.
 */
export async function startSdkGrpcServer(
  tls: SdkGrpcTls,
  requestHandler: A2ARequestHandler,
  onCall?: (cert: PeerCertificate | undefined) => void,
): Promise<SdkGrpcServer> {
  // Loaded on use: HTTP-only users never load grpc-js.
  const grpc = await import('@grpc/grpc-js');
  const { A2AService, grpcService, UserBuilder: GrpcUserBuilder } = await import('@a2a-js/sdk/server/grpc');
  const server = new grpc.Server();
  server.addService(
    A2AService,
    grpcService({
      requestHandler,
      userBuilder: onCall
        ? async (call) => {
            onCall((call as ServerUnaryCall<unknown, unknown>).getAuthContext?.()?.sslPeerCertificate);
            return GrpcUserBuilder.noAuthentication();
          }
        : GrpcUserBuilder.noAuthentication,
    }),
  );
  return listenGrpcMtls(server, tls);
}

/**
 * Binds a grpc-js server to a free loopback port with grpc-js's own mTLS
 * (client certificate required, chained to `tls.ca`): how the SDK's gRPC
 * server, and other grpc-js baselines, are served in tests and benches.
 */
export async function listenGrpcMtls(server: GrpcServer, tls: SdkGrpcTls): Promise<SdkGrpcServer> {
  const grpc = await import('@grpc/grpc-js');
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(tls.ca),
    [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    target: `127.0.0.1:${port}`,
    close: async () => server.forceShutdown(),
  };
}

/** A running SDK echo agent: its JSON-RPC URL, its HTTP+JSON base URL and a `close()`. */
export interface SdkEchoServer extends SdkHttpServer {
  /** Base URL of the SDK's HTTP+JSON binding (`restHandler` under `/rest`). */
  readonly restUrl: string;
}

/**
 * Starts the SDK echo agent over https on 127.0.0.1 (random port): JSON-RPC
 * at `/`, HTTP+JSON at `/rest`, on the SDK's in-memory task store unless
 * another is given (e.g. its PostgreSQL `DatabaseTaskStore`), running
 * {@link SdkEchoExecutor} unless another is given (e.g. a streaming one).
 */
export async function startSdkEchoServer(
  tls: https.ServerOptions,
  taskStore: TaskStore = new InMemoryTaskStore(),
  executor: AgentExecutor = new SdkEchoExecutor(),
): Promise<SdkEchoServer> {
  const card = sdkEchoCard('sdk bench', 'echo');
  const http = await startSdkHttpServer(tls, new DefaultRequestHandler(card, taskStore, executor));
  card.supportedInterfaces[0]!.url = http.url;
  // The SDK's REST handler accepts only the versions its card declares for HTTP+JSON.
  card.supportedInterfaces.push({
    url: `${http.url}rest`,
    protocolBinding: 'HTTP+JSON',
    protocolVersion: '1.0',
    tenant: '',
  });
  return { ...http, restUrl: `${http.url}rest` };
}

/** The same echo agent on the SDK's gRPC binding. */
export async function startSdkEchoGrpcServer(tls: SdkGrpcTls): Promise<SdkGrpcServer> {
  const card = sdkEchoCard('sdk bench (grpc)', 'echo');
  // The SDK's gRPC service accepts only the versions its card declares for GRPC.
  card.supportedInterfaces = [{ url: '', protocolBinding: 'GRPC', protocolVersion: '1.0', tenant: '' }];
  const grpc = await startSdkGrpcServer(
    tls,
    new DefaultRequestHandler(card, new InMemoryTaskStore(), new SdkEchoExecutor()),
  );
  card.supportedInterfaces[0]!.url = grpc.target;
  return grpc;
}
