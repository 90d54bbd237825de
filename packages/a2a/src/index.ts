/**
 * @weave/a2a — the Agent2Agent protocol (v1.0, with v0.3 compatibility) for
 * Weave: wire types, a Fastify server plugin, a client with a transport per
 * protocol binding, task store and discovery.
 *
 * @packageDocumentation
 */
export {
  A2AError,
  A2AErrorCode,
  A2AClientError,
  TaskCanceledError,
  TaskHandedOverError,
  FAILURE_TEXT_CHARS,
  loggableError,
  thrownText,
  grpcStatusOf,
  httpStatusOf,
  restErrorBody,
  a2aErrorFromRest,
  type ErrorInfo,
  type JsonRpcErrorObject,
  type LoggedError,
  type RestErrorBody,
} from './errors.js';
export { A2AConfigError } from './options.js';
export * from './wire/v1.js';
export { withJsonNames } from './wire/proto-names.js';
export {
  V03PartSchema,
  V03MessageSchema,
  V03TaskStatusSchema,
  V03ArtifactSchema,
  V03TaskSchema,
  V03TaskStatusUpdateEventSchema,
  V03TaskArtifactUpdateEventSchema,
  V03StreamEventSchema,
  V03AgentSkillSchema,
  V03AgentCardSchema,
  agentCardToV03,
  V03TaskPushConfigSchema,
  V03SendParamsSchema,
  type V03Part,
  type V03Message,
} from './wire/v03.js';
export {
  type TaskStore,
  type TaskRecord,
  type TaskQuery,
  type TaskPage,
  type StoredEvent,
  type PushConfigStore,
  type InMemoryTaskStoreOptions,
  InMemoryTaskStore,
  TaskStoreFullError,
  TaskStoreOverBudgetError,
  TRUNCATED_METADATA_KEY,
  approxJsonBytes,
  TaskStoreConflictError,
  TaskStoreUnavailableError,
  TaskStoreRejectedError,
  TaskLeaseLostError,
  isPushConfigStore,
  type TaskNotice,
  type TaskNotifier,
  isTaskNotifier,
  type TaskInbox,
  isTaskInbox,
  type TaskLeases,
  isTaskLeases,
  type ListCursor,
  type CreationCursor,
  type TaskScope,
  inTaskScope,
  statusTime,
  isPastCursor,
} from './store.js';
export {
  TaskManager,
  WaitTimeoutError,
  type TaskManagerOptions,
  type StoreChore,
  type ChoreOutage,
  type TaskListener,
  type NewTask,
  type Subscription,
  ORPHAN_REASON,
  ORPHAN_REASON_LIMITED,
} from './manager.js';
export {
  A2AServer,
  SPIFFE_ID_EXTENSION,
  agentSpiffeId,
  type A2AServerOptions,
  type AgentCardOptions,
  type V03CardCompat,
} from './server.js';
export {
  A2ARequestHandler,
  EXTENDED_CARD_ACTION,
  SKILL_METADATA_KEY,
  type A2AServerLimits,
  type A2APushOptions,
  type BindingName,
  type CallContext,
  type CallHeaders,
  type HandlerLogger,
  type MessageContext,
  type MessageHandler,
  type RequestHandlerOptions,
  type RequestErrorHook,
  type RequestErrorInfo,
  type RouteInfo,
  type SkillRouter,
  type SkillRouting,
  type TaskContext,
  type TaskHandler,
  type TaskHandlerOptions,
  type TaskResult,
  type ArtifactInput,
} from './handler.js';
export {
  TaskEventStream,
  MAX_QUEUED_EVENTS,
  STREAM_HIGH_WATER,
  STREAM_LOW_WATER,
  type TaskStreamEvent,
} from './event-stream.js';
export { MAX_JSON_DEPTH, unsendable } from './depth.js';
export { A2AGrpcServer, type A2AGrpcServerOptions } from './bindings/grpc.js';
export {
  A2A_GRPC_SERVICE,
  a2aGrpcService,
  a2aErrorToGrpcStatus,
  grpcStatusToA2AError,
  type A2AGrpcServiceDefinition,
} from './grpc/index.js';
export {
  A2AClient,
  buildMessage,
  isResumableStreamError,
  type A2AClientOptions,
  type CallOptions,
  type PushConfigPage,
  type StreamEvent,
  type StreamOptions,
  type TaskPayload,
  type ResumingStreamOptions,
} from './client.js';
export {
  PROTOCOL_BINDINGS,
  type ProtocolBinding,
  type ClientTransport,
  type ClientTransportFactory,
  type TransportContext,
  type TransportCallOptions,
  type TransportStreamOptions,
  type RawStreamEvent,
  type UnaryMethod,
  type StreamMethod,
} from './transports/types.js';
export { JsonRpcTransport, jsonRpcTransportFactory } from './transports/jsonrpc.js';
export { RestTransport, restTransportFactory, restErrorToA2AError } from './transports/rest.js';
export { GrpcTransport, grpcTransportFactory, grpcTarget } from './transports/grpc.js';
export {
  DiscoveryClient,
  agentCardUrl,
  type DiscoverOptions,
  type DiscoveryClientOptions,
  type DiscoveryStats,
  type DiscoveryResult,
} from './discovery.js';
export {
  PushUrlRefusedError,
  WEBHOOK_SENDER_DEFAULTS,
  checkWebhookUrl,
  createWebhookSender,
  redactPushConfig,
  redactUrl,
  type WebhookSender,
  type WebhookSenderOptions,
  type WebhookSenderStats,
  type WebhookUrlCheckOptions,
} from './push.js';
export { CallerLimits, CallerLimitsSchema, type CallerLimitsInput, type CallerLimitRule } from './limits.js';
export { Deadlines, type Deadline } from './deadlines.js';
export {
  AgentCardSignatureError,
  AgentCardSigner,
  CardSignaturePolicySchema,
  MAX_CARD_DEPTH,
  MAX_CARD_SIGNATURES,
  canonicalizeAgentCard,
  jkuKeyResolver,
  signAgentCard,
  verifyAgentCard,
  type AgentCardSignature,
  type AgentCardSignatureErrorCode,
  type CardKeyResolver,
  type CardSignaturePolicy,
  type CardVerification,
  type JkuKeyResolverOptions,
  type SignatureFailure,
  type VerifyAgentCardOptions,
} from './card-signing.js';
