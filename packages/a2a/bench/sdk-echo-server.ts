// The official @a2a-js/sdk as a benchmark baseline: an express server with the
// SDK's DefaultRequestHandler and an echo executor that does what the Weave
// bench agents do per call (task, WORKING, one text artifact, COMPLETED), on a
// node https server with the TLS options it is given (the same mTLS as Weave).
// Used by the bench harness (/bench) and the interop tests, so both compare
// against the same baseline.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { TaskState, type AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import {
  AgentEvent,
  DefaultRequestHandler,
  InMemoryTaskStore,
  type AgentExecutionEvent,
  type AgentExecutor,
  type TaskStore,
  type ExecutionEventBus,
  type RequestContext,
} from '@a2a-js/sdk/server';
import { UserBuilder, agentCardHandler, jsonRpcHandler, restHandler } from '@a2a-js/sdk/server/express';

/** The JSON-RPC SendMessage (v1.0) the HTTP load generators send to the `echo` skill. */
export const ECHO_SEND_MESSAGE_BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'SendMessage',
  params: {
    message: {
      messageId: 'bench-1',
      role: 'ROLE_USER',
      parts: [{ text: 'hello' }],
      metadata: { skill: 'echo' },
    },
  },
});

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

/** The SDK artifact-update event carrying one whole text artifact. */
export function sdkTextArtifact(rc: RequestContext, artifactId: string, text: string): AgentExecutionEvent {
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
    append: false,
    lastChunk: true,
    metadata: undefined,
  });
}

/** The text of the request's first part ('' when it is not text). */
export function sdkUserText(rc: RequestContext): string {
  const c = rc.userMessage.parts[0]?.content;
  return c?.$case === 'text' ? c.value : '';
}

class EchoExecutor implements AgentExecutor {
  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    bus.publish(sdkSubmittedTask(rc));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_WORKING));
    bus.publish(sdkTextArtifact(rc, 'result', `echo: ${sdkUserText(rc)}`));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_COMPLETED));
    bus.finished();
  }
  async cancelTask(): Promise<void> {}
}

/**
 * The SDK's agent card of an echo agent: one `echo` skill, JSON-RPC v1.0,
 * streaming. Its interface URL is empty until the server knows its port.
 * Also used by the interop test's SDK server.
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

/** A running SDK echo server: its JSON-RPC URL, its HTTP+JSON base URL and a `close()`. */
export interface SdkEchoServer {
  readonly url: string;
  /** Base URL of the SDK's HTTP+JSON binding (`restHandler` under `/rest`). */
  readonly restUrl: string;
  readonly server: https.Server;
  close(): Promise<void>;
}

/**
 * Starts the SDK echo agent on 127.0.0.1 (random port) with the given TLS
 * options, on the SDK's in-memory task store unless another is given (e.g.
 * its PostgreSQL `DatabaseTaskStore`), running the echo executor unless
 * another is given (e.g. the bench's streaming one).
 */
export async function startSdkEchoServer(
  tls: https.ServerOptions,
  taskStore: TaskStore = new InMemoryTaskStore(),
  executor: AgentExecutor = new EchoExecutor(),
): Promise<SdkEchoServer> {
  const card = sdkEchoCard('sdk bench', 'echo');
  const app = express();
  const requestHandler = new DefaultRequestHandler(card, taskStore, executor);
  // The SDK's handlers parse JSON with express's default 100 KB limit; the
  // payload bench sends up to 1 MB, as Weave's agents accept (body limit
  // configurable). Parsed here first, the SDK's own parser sees a finished
  // body and leaves it as it is.
  app.use(express.json({ limit: '4mb' }));
  // Its card, where the SDK's own client looks for it (the streaming bench's SDK client).
  app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: requestHandler }));
  app.use('/rest', restHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication }));
  app.use('/', jsonRpcHandler({ requestHandler, userBuilder: UserBuilder.noAuthentication }));
  const server = https.createServer(tls, app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  card.supportedInterfaces[0]!.url = url;
  // The SDK's REST handler accepts only the versions its card declares for HTTP+JSON.
  card.supportedInterfaces.push({
    url: `${url}rest`,
    protocolBinding: 'HTTP+JSON',
    protocolVersion: '1.0',
    tenant: '',
  });
  return {
    url,
    restUrl: `${url}rest`,
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A running SDK echo agent on the gRPC binding: its `host:port` and a `close()`. */
export interface SdkEchoGrpcServer {
  readonly target: string;
  close(): Promise<void>;
}

/**
 * The SDK's gRPC server (`grpcService` on @grpc/grpc-js) for the same echo
 * agent, with grpc-js's own TLS: the given root, SVID and key, client
 * certificate required.
 */
export async function startSdkEchoGrpcServer(tls: {
  ca: string;
  cert: string;
  key: string;
}): Promise<SdkEchoGrpcServer> {
  const grpc = await import('@grpc/grpc-js');
  const { A2AService, grpcService, UserBuilder: GrpcUserBuilder } = await import('@a2a-js/sdk/server/grpc');
  const card = sdkEchoCard('sdk bench (grpc)', 'echo');
  // The SDK's gRPC service accepts only the versions its card declares for GRPC.
  card.supportedInterfaces = [{ url: '', protocolBinding: 'GRPC', protocolVersion: '1.0', tenant: '' }];
  const server = new grpc.Server();
  server.addService(
    A2AService,
    grpcService({
      requestHandler: new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor()),
      userBuilder: GrpcUserBuilder.noAuthentication,
    }),
  );
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(tls.ca),
    [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  card.supportedInterfaces[0]!.url = `127.0.0.1:${port}`;
  return {
    target: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
