// The official @a2a-js/sdk as a benchmark baseline: an express server with the
// SDK's DefaultRequestHandler and an echo executor that does what the Weave
// bench agents do per call (task, WORKING, one text artifact, COMPLETED), on a
// node https server with the TLS options it is given (the same mTLS as Weave).
// Shared by packages/a2a/bench and packages/agent/bench so both compare
// against the same baseline.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { TaskState, type AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import {
  AgentEvent,
  DefaultRequestHandler,
  InMemoryTaskStore,
  type AgentExecutor,
  type ExecutionEventBus,
  type RequestContext,
} from '@a2a-js/sdk/server';
import { UserBuilder, jsonRpcHandler } from '@a2a-js/sdk/server/express';

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

class EchoExecutor implements AgentExecutor {
  async execute(rc: RequestContext, bus: ExecutionEventBus): Promise<void> {
    const c = rc.userMessage.parts[0]?.content;
    const text = c?.$case === 'text' ? c.value : '';
    const { taskId, contextId } = rc;
    const now = () => new Date().toISOString();
    const status = (state: TaskState) =>
      AgentEvent.statusUpdate({
        taskId,
        contextId,
        status: { state, message: undefined, timestamp: now() },
        metadata: undefined,
      });
    bus.publish(
      AgentEvent.task({
        id: taskId,
        contextId,
        status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: now() },
        history: [rc.userMessage],
        artifacts: [],
        metadata: undefined,
      }),
    );
    bus.publish(status(TaskState.TASK_STATE_WORKING));
    bus.publish(
      AgentEvent.artifactUpdate({
        taskId,
        contextId,
        artifact: {
          artifactId: 'result',
          name: '',
          description: '',
          parts: [
            {
              content: { $case: 'text', value: `echo: ${text}` },
              metadata: undefined,
              filename: '',
              mediaType: '',
            },
          ],
          metadata: undefined,
          extensions: [],
        },
        append: false,
        lastChunk: true,
        metadata: undefined,
      }),
    );
    bus.publish(status(TaskState.TASK_STATE_COMPLETED));
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

/** A running SDK echo server: its JSON-RPC URL and a `close()`. */
export interface SdkEchoServer {
  readonly url: string;
  readonly server: https.Server;
  close(): Promise<void>;
}

/** Starts the SDK echo agent on 127.0.0.1 (random port) with the given TLS options. */
export async function startSdkEchoServer(tls: https.ServerOptions): Promise<SdkEchoServer> {
  const card = sdkEchoCard('sdk bench', 'echo');
  const app = express();
  app.use(
    '/',
    jsonRpcHandler({
      requestHandler: new DefaultRequestHandler(card, new InMemoryTaskStore(), new EchoExecutor()),
      userBuilder: UserBuilder.noAuthentication,
    }),
  );
  const server = https.createServer(tls, app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  card.supportedInterfaces[0]!.url = url;
  return {
    url,
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
