// The official @a2a-js/sdk 1.3 server as a peer of Weave's client, on each of
// its bindings: JSON-RPC and HTTP+JSON (express on a node https server) and
// gRPC (its grpcService on a grpc-js server), all with the same mTLS as Weave —
// the server's dev-CA SVID, a client certificate required and verified
// against the bundle. Every caller's SPIFFE ID is recorded per binding.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import express from 'express';
import * as grpc from '@grpc/grpc-js';
import { TaskState, type AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import {
  DefaultExecutionEventBusManager,
  DefaultRequestHandler,
  InMemoryPushNotificationStore,
  InMemoryTaskStore,
  type AgentExecutor,
  type ExecutionEventBus,
  type PushNotificationSender,
  type RequestContext,
} from '@a2a-js/sdk/server';
import { UserBuilder, agentCardHandler, jsonRpcHandler, restHandler } from '@a2a-js/sdk/server/express';
import { A2AService, grpcService, UserBuilder as GrpcUserBuilder } from '@a2a-js/sdk/server/grpc';
import {
  sdkEchoCard,
  sdkStatusUpdate,
  sdkSubmittedTask,
  sdkTextArtifact,
  sdkUserText,
} from '../../bench/sdk-echo-server.js';
import { httpsOptions, spiffeIdOf, type Workload } from '@weave/test-support';

export type SdkBinding = 'JSONRPC' | 'HTTP+JSON' | 'GRPC';

export interface SdkServer {
  /** Base URL of the card (the https server). */
  readonly url: string;
  /** The card the server serves, its interfaces in the order asked for. */
  readonly card: SdkAgentCard;
  /** SPIFFE IDs of the callers seen, per binding. */
  readonly callers: Record<SdkBinding, string[]>;
  /** Serial numbers of the client certificates seen on gRPC calls, in order. */
  readonly grpcSerials: string[];
  /** One entry per push notification the server would have delivered. */
  readonly pushes: string[];
  close(): Promise<void>;
}

/**
 * The executor: a task, WORKING, an artifact `sdk echo: <text>`, COMPLETED.
 * Text `slow` waits (WORKING) until canceled; text `ask` stops at
 * INPUT_REQUIRED and finishes on the reply.
 */
class Executor implements AgentExecutor {
  readonly #cancel = new Map<string, () => void>();

  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const text = sdkUserText(rc);
    if (!rc.task) bus.publish(sdkSubmittedTask(rc));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_WORKING));
    if (text === 'slow') {
      await new Promise<void>((resolve) => this.#cancel.set(rc.taskId, resolve));
      bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_CANCELED));
      bus.finished();
      return;
    }
    if (text === 'ask') {
      bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_INPUT_REQUIRED));
      bus.finished();
      return;
    }
    bus.publish(sdkTextArtifact(rc, 'a1', `sdk echo: ${text}`));
    bus.publish(sdkStatusUpdate(rc, TaskState.TASK_STATE_COMPLETED));
    bus.finished();
  }

  async cancelTask(taskId: string): Promise<void> {
    this.#cancel.get(taskId)?.();
  }
}

/** Starts the SDK server with `bindings` in its card, in that order (first = preferred). */
export async function startSdkServer(server: Workload, bindings: readonly SdkBinding[]): Promise<SdkServer> {
  const callers: Record<SdkBinding, string[]> = { JSONRPC: [], 'HTTP+JSON': [], GRPC: [] };
  const pushes: string[] = [];
  const grpcSerials: string[] = [];
  const card = sdkEchoCard('sdk agent', 'official SDK server on every binding');
  card.capabilities = { streaming: true, pushNotifications: true, extensions: [], extendedAgentCard: false };
  // Configs are stored and listed; delivery is not what these tests are about.
  const sender: PushNotificationSender = {
    send: async () => void pushes.push('sent'),
  };
  const handler = new DefaultRequestHandler(
    card,
    new InMemoryTaskStore(),
    new Executor(),
    new DefaultExecutionEventBusManager(),
    new InMemoryPushNotificationStore(),
    sender,
  );

  const app = express();
  const record =
    (binding: SdkBinding): express.RequestHandler =>
    (req, _res, next) => {
      const id = spiffeIdOf((req.socket as TLSSocket).getPeerCertificate());
      if (id) callers[binding].push(id.toString());
      next();
    };
  app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: handler }));
  app.use(
    '/a2a/jsonrpc',
    record('JSONRPC'),
    jsonRpcHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }),
  );
  app.use(
    '/a2a/rest',
    record('HTTP+JSON'),
    restHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }),
  );
  const web = https.createServer(httpsOptions(server), app);
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(web.address() as AddressInfo).port}`;

  let grpcServer: grpc.Server | undefined;
  let grpcTarget = '';
  if (bindings.includes('GRPC')) {
    const { certChain, privateKey } = server.identity.getX509Svid().toPem();
    const roots = server.identity
      .getBundleSet()
      .allX509Authorities()
      .map((c) => c.toString('pem'))
      .join('\n');
    grpcServer = new grpc.Server();
    grpcServer.addService(
      A2AService,
      grpcService({
        requestHandler: handler,
        userBuilder: async (call) => {
          const cert = (call as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext?.()
            ?.sslPeerCertificate;
          const id = spiffeIdOf(cert);
          if (id) callers.GRPC.push(id.toString());
          if (cert?.serialNumber) grpcSerials.push(cert.serialNumber);
          return GrpcUserBuilder.noAuthentication();
        },
      }),
    );
    const creds = grpc.ServerCredentials.createSsl(
      Buffer.from(roots),
      [{ cert_chain: Buffer.from(certChain), private_key: Buffer.from(privateKey) }],
      true,
    );
    const port = await new Promise<number>((resolve, reject) =>
      grpcServer!.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    grpcTarget = `https://127.0.0.1:${port}`;
  }

  const urlOf: Record<SdkBinding, string> = {
    JSONRPC: `${url}/a2a/jsonrpc`,
    'HTTP+JSON': `${url}/a2a/rest`,
    GRPC: grpcTarget,
  };
  card.supportedInterfaces = bindings.map((b) => ({
    url: urlOf[b],
    protocolBinding: b,
    protocolVersion: '1.0',
    tenant: '',
  }));
  return {
    url,
    card,
    callers,
    grpcSerials,
    pushes,
    async close() {
      web.closeAllConnections();
      await new Promise<void>((resolve) => web.close(() => resolve()));
      grpcServer?.forceShutdown();
    },
  };
}
