// The official @a2a-js/sdk 1.3 server as a peer of Weave's client, on each of
// its bindings: JSON-RPC and HTTP+JSON (express on a node https server) and
// gRPC (its grpcService on a grpc-js server), all with the same mTLS as Weave —
// the server's dev-CA SVID, a client certificate required and verified
// against the bundle. Every caller's SPIFFE ID is recorded per binding.
import type { AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import {
  DefaultExecutionEventBusManager,
  DefaultRequestHandler,
  InMemoryPushNotificationStore,
  InMemoryTaskStore,
  type PushNotificationSender,
} from '@a2a-js/sdk/server';
import { httpsOptions, spiffeIdOf, type Workload } from '@weave/test-support';
import {
  SdkEchoExecutor,
  sdkEchoCard,
  startSdkGrpcServer,
  startSdkHttpServer,
  type SdkGrpcServer,
} from '@weave/test-support/a2a-sdk';

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
 * Starts the SDK server with `bindings` in its card, in that order (first =
 * preferred). Its executor answers `sdk echo: <text>` (see `SdkEchoExecutor`
 * for `slow` and `ask`).
 */
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
    new SdkEchoExecutor({ prefix: 'sdk echo: ', artifactId: 'a1' }),
    new DefaultExecutionEventBusManager(),
    new InMemoryPushNotificationStore(),
    sender,
  );

  const web = await startSdkHttpServer(httpsOptions(server), handler, {
    jsonRpcPath: '/a2a/jsonrpc',
    restPath: '/a2a/rest',
    onRequest: (binding, socket) => {
      const id = spiffeIdOf(socket.getPeerCertificate());
      if (id) callers[binding].push(id.toString());
    },
  });
  const url = web.url.replace(/\/$/, '');

  let grpc: SdkGrpcServer | undefined;
  if (bindings.includes('GRPC')) {
    const { certChain, privateKey } = server.identity.getX509Svid().toPem();
    const ca = server.identity
      .getBundleSet()
      .allX509Authorities()
      .map((c) => c.toString('pem'))
      .join('\n');
    grpc = await startSdkGrpcServer({ ca, cert: certChain, key: privateKey }, handler, (cert) => {
      const id = spiffeIdOf(cert);
      if (id) callers.GRPC.push(id.toString());
      if (cert?.serialNumber) grpcSerials.push(cert.serialNumber);
    });
  }

  const urlOf: Record<SdkBinding, string> = {
    JSONRPC: `${url}/a2a/jsonrpc`,
    'HTTP+JSON': `${url}/a2a/rest`,
    GRPC: grpc ? `https://${grpc.target}` : '',
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
      await web.close();
      await grpc?.close();
    },
  };
}
