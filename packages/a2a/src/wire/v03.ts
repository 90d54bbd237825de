/**
 * A2A v0.3 wire shapes (JSON-Schema flavour, `kind` discriminators, kebab-case
 * states) and their conversion to and from v1.0. Only the server needs them:
 * it answers v0.3 clients in v0.3 shape and works in v1.0 inside.
 */
import { z } from 'zod';
import type {
  AgentCard,
  Artifact,
  Message,
  Part,
  Task,
  TaskPushNotificationConfig,
  TaskState,
  TaskStatus,
  StreamResponse,
  SendMessageParams,
} from './v1.js';
import { StructSchema as Metadata, isSettled } from './v1.js';

export const V03PartSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('text'), text: z.string(), metadata: Metadata.optional() }),
  z.object({
    kind: z.literal('file'),
    file: z.union([
      z.object({ bytes: z.string(), mimeType: z.string().optional(), name: z.string().optional() }),
      z.object({ uri: z.string(), mimeType: z.string().optional(), name: z.string().optional() }),
    ]),
    metadata: Metadata.optional(),
  }),
  z.object({ kind: z.literal('data'), data: Metadata, metadata: Metadata.optional() }),
]);
export type V03Part = z.infer<typeof V03PartSchema>;

export const V03MessageSchema = z.object({
  kind: z.literal('message').optional(),
  messageId: z.string().min(1),
  role: z.enum(['user', 'agent']),
  parts: z.array(V03PartSchema),
  taskId: z.string().optional(),
  contextId: z.string().optional(),
  referenceTaskIds: z.array(z.string()).optional(),
  extensions: z.array(z.string()).optional(),
  metadata: Metadata.optional(),
});
export type V03Message = z.infer<typeof V03MessageSchema>;

const V03_STATES = [
  'submitted',
  'working',
  'input-required',
  'completed',
  'canceled',
  'failed',
  'rejected',
  'auth-required',
  'unknown',
] as const;

export const V03TaskStatusSchema = z.object({
  state: z.enum(V03_STATES),
  message: V03MessageSchema.optional(),
  timestamp: z.string().optional(),
});

export const V03ArtifactSchema = z.object({
  artifactId: z.string().min(1),
  name: z.string().optional(),
  description: z.string().optional(),
  parts: z.array(V03PartSchema),
  metadata: Metadata.optional(),
  extensions: z.array(z.string()).optional(),
});

export const V03TaskSchema = z.object({
  kind: z.literal('task'),
  id: z.string().min(1),
  contextId: z.string(),
  status: V03TaskStatusSchema,
  history: z.array(V03MessageSchema).optional(),
  artifacts: z.array(V03ArtifactSchema).optional(),
  metadata: Metadata.optional(),
});

export const V03TaskStatusUpdateEventSchema = z.object({
  kind: z.literal('status-update'),
  taskId: z.string(),
  contextId: z.string(),
  status: V03TaskStatusSchema,
  final: z.boolean(),
  metadata: Metadata.optional(),
});

export const V03TaskArtifactUpdateEventSchema = z.object({
  kind: z.literal('artifact-update'),
  taskId: z.string(),
  contextId: z.string(),
  artifact: V03ArtifactSchema,
  append: z.boolean().optional(),
  lastChunk: z.boolean().optional(),
  metadata: Metadata.optional(),
});

/** A v0.3 `message/stream` event: a Task, a Message, or a `kind`-tagged update. */
export const V03StreamEventSchema = z.union([
  V03TaskSchema,
  V03MessageSchema.extend({ kind: z.literal('message') }),
  V03TaskStatusUpdateEventSchema,
  V03TaskArtifactUpdateEventSchema,
]);

export const V03AgentSkillSchema = z.object({
  id: z.string().min(1),
  name: z.string(),
  description: z.string(),
  tags: z.array(z.string()),
  examples: z.array(z.string()).optional(),
  inputModes: z.array(z.string()).optional(),
  outputModes: z.array(z.string()).optional(),
});

/** The v0.3 agent card: one `url` + `preferredTransport`, `type`-tagged security schemes. */
export const V03AgentCardSchema = z.object({
  protocolVersion: z.string().optional(),
  name: z.string().min(1),
  description: z.string(),
  url: z.string().min(1),
  preferredTransport: z.string().optional(),
  additionalInterfaces: z.array(z.object({ url: z.string(), transport: z.string() })).optional(),
  version: z.string(),
  capabilities: z.object({
    streaming: z.boolean().optional(),
    pushNotifications: z.boolean().optional(),
    stateTransitionHistory: z.boolean().optional(),
  }),
  securitySchemes: z.record(z.string(), z.object({ type: z.string() }).catchall(z.unknown())).optional(),
  security: z.array(z.record(z.string(), z.array(z.string()))).optional(),
  defaultInputModes: z.array(z.string()),
  defaultOutputModes: z.array(z.string()),
  skills: z.array(V03AgentSkillSchema),
  supportsAuthenticatedExtendedCard: z.boolean().optional(),
});

const V03PushConfigSchema = z.object({
  id: z.string().optional(),
  url: z.url(),
  token: z.string().optional(),
  authentication: z.object({ schemes: z.array(z.string()), credentials: z.string().optional() }).optional(),
});

export const V03SendParamsSchema = z.object({
  message: V03MessageSchema,
  configuration: z
    .object({
      acceptedOutputModes: z.array(z.string()).optional(),
      historyLength: z.number().int().min(0).optional(),
      pushNotificationConfig: V03PushConfigSchema.optional(),
      blocking: z.boolean().optional(),
    })
    .optional(),
  metadata: Metadata.optional(),
});

export const V03TaskQuerySchema = z.object({
  id: z.string().min(1),
  historyLength: z.number().int().min(0).optional(),
  metadata: Metadata.optional(),
});
export const V03TaskIdSchema = z.object({ id: z.string().min(1), metadata: Metadata.optional() });
/** `tasks/pushNotificationConfig/*` results. */
export const V03TaskPushConfigSchema = z.object({
  taskId: z.string().min(1),
  pushNotificationConfig: V03PushConfigSchema,
});

export const V03SetPushConfigSchema = z.object({
  taskId: z.string().min(1),
  pushNotificationConfig: V03PushConfigSchema,
});
export const V03GetPushConfigSchema = z.object({
  id: z.string().min(1),
  pushNotificationConfigId: z.string().optional(),
});
export const V03DeletePushConfigSchema = z.object({
  id: z.string().min(1),
  pushNotificationConfigId: z.string().min(1),
});

/** v0.3 method name → v1.0 method name. */
export const V03_TO_V1_METHOD: Readonly<Record<string, string>> = {
  'message/send': 'SendMessage',
  'message/stream': 'SendStreamingMessage',
  'tasks/get': 'GetTask',
  'tasks/cancel': 'CancelTask',
  'tasks/resubscribe': 'SubscribeToTask',
  'tasks/pushNotificationConfig/set': 'CreateTaskPushNotificationConfig',
  'tasks/pushNotificationConfig/get': 'GetTaskPushNotificationConfig',
  'tasks/pushNotificationConfig/list': 'ListTaskPushNotificationConfigs',
  'tasks/pushNotificationConfig/delete': 'DeleteTaskPushNotificationConfig',
  'agent/getAuthenticatedExtendedCard': 'GetExtendedAgentCard',
};

// ---- v0.3 → v1.0 ----------------------------------------------------------------

function partToV1(p: V03Part): Part {
  const meta = p.metadata === undefined ? {} : { metadata: p.metadata };
  switch (p.kind) {
    case 'text':
      return { text: p.text, ...meta };
    case 'data':
      return { data: p.data, ...meta };
    case 'file': {
      const f = p.file;
      const extra = {
        ...(f.mimeType === undefined ? {} : { mediaType: f.mimeType }),
        ...(f.name === undefined ? {} : { filename: f.name }),
        ...meta,
      };
      return 'bytes' in f ? { raw: f.bytes, ...extra } : { url: f.uri, ...extra };
    }
  }
}

/** Message fields v0.3 and v1.0 share unchanged; copied only when present (no `undefined` keys on the wire). */
type SharedMessageFields = Pick<
  Message,
  'taskId' | 'contextId' | 'referenceTaskIds' | 'extensions' | 'metadata'
>;

function copySharedMessageFields(from: SharedMessageFields, to: SharedMessageFields): void {
  if (from.taskId !== undefined) to.taskId = from.taskId;
  if (from.contextId !== undefined) to.contextId = from.contextId;
  if (from.referenceTaskIds !== undefined) to.referenceTaskIds = from.referenceTaskIds;
  if (from.extensions !== undefined) to.extensions = from.extensions;
  if (from.metadata !== undefined) to.metadata = from.metadata;
}

export function messageToV1(m: V03Message): Message {
  const out: Message = {
    messageId: m.messageId,
    role: m.role === 'user' ? 'ROLE_USER' : 'ROLE_AGENT',
    parts: m.parts.map(partToV1),
  };
  copySharedMessageFields(m, out);
  return out;
}

export function sendParamsToV1(p: z.infer<typeof V03SendParamsSchema>): SendMessageParams {
  const out: SendMessageParams = { message: messageToV1(p.message) };
  if (p.metadata !== undefined) out.metadata = p.metadata;
  const c = p.configuration;
  if (c) {
    out.configuration = {};
    if (c.acceptedOutputModes) out.configuration.acceptedOutputModes = c.acceptedOutputModes;
    if (c.historyLength !== undefined) out.configuration.historyLength = c.historyLength;
    // v0.3 `blocking` defaulted to false in the schema but clients sent true for
    // a waiting call; absent means "wait", as in the official SDK's compat layer.
    if (c.blocking === false) out.configuration.returnImmediately = true;
    if (c.pushNotificationConfig) {
      out.configuration.taskPushNotificationConfig = pushConfigToV1(c.pushNotificationConfig);
    }
  }
  return out;
}

export function pushConfigToV1(
  c: z.infer<typeof V03PushConfigSchema>,
  taskId?: string,
): Omit<TaskPushNotificationConfig, 'taskId'> & { taskId?: string } {
  const out: Omit<TaskPushNotificationConfig, 'taskId'> & { taskId?: string } = { url: c.url };
  if (taskId !== undefined) out.taskId = taskId;
  if (c.id !== undefined) out.id = c.id;
  if (c.token !== undefined) out.token = c.token;
  const scheme = c.authentication?.schemes[0];
  if (scheme !== undefined) {
    out.authentication = { scheme };
    if (c.authentication?.credentials !== undefined) {
      out.authentication.credentials = c.authentication.credentials;
    }
  }
  return out;
}

// ---- v1.0 → v0.3 ----------------------------------------------------------------

const STATE_TO_V03: Readonly<Record<TaskState, string>> = {
  TASK_STATE_UNSPECIFIED: 'unknown',
  TASK_STATE_SUBMITTED: 'submitted',
  TASK_STATE_WORKING: 'working',
  TASK_STATE_COMPLETED: 'completed',
  TASK_STATE_FAILED: 'failed',
  TASK_STATE_CANCELED: 'canceled',
  TASK_STATE_INPUT_REQUIRED: 'input-required',
  TASK_STATE_REJECTED: 'rejected',
  TASK_STATE_AUTH_REQUIRED: 'auth-required',
};

function partToV03(p: Part): V03Part {
  const meta = p.metadata === undefined ? {} : { metadata: p.metadata };
  if (p.text !== undefined) return { kind: 'text', text: p.text, ...meta };
  if (p.data !== undefined) {
    const d = p.data;
    const obj =
      d !== null && typeof d === 'object' && !Array.isArray(d)
        ? (d as Record<string, unknown>)
        : { value: d };
    return { kind: 'data', data: obj, ...meta };
  }
  const extra = {
    ...(p.mediaType === undefined ? {} : { mimeType: p.mediaType }),
    ...(p.filename === undefined ? {} : { name: p.filename }),
  };
  if (p.raw !== undefined) return { kind: 'file', file: { bytes: p.raw, ...extra }, ...meta };
  return { kind: 'file', file: { uri: p.url ?? '', ...extra }, ...meta };
}

export function messageToV03(m: Message): V03Message & { kind: 'message' } {
  const out: V03Message & { kind: 'message' } = {
    kind: 'message',
    messageId: m.messageId,
    role: m.role === 'ROLE_USER' ? 'user' : 'agent',
    parts: m.parts.map(partToV03),
  };
  copySharedMessageFields(m, out);
  return out;
}

function statusToV03(s: TaskStatus): Record<string, unknown> {
  const out: Record<string, unknown> = { state: STATE_TO_V03[s.state] };
  if (s.message) out.message = messageToV03(s.message);
  if (s.timestamp !== undefined) out.timestamp = s.timestamp;
  return out;
}

function artifactToV03(a: Artifact): Record<string, unknown> {
  return { ...a, parts: a.parts.map(partToV03) };
}

export function taskToV03(t: Task): Record<string, unknown> {
  const out: Record<string, unknown> = {
    kind: 'task',
    id: t.id,
    contextId: t.contextId,
    status: statusToV03(t.status),
  };
  if (t.history) out.history = t.history.map(messageToV03);
  if (t.artifacts) out.artifacts = t.artifacts.map(artifactToV03);
  if (t.metadata !== undefined) out.metadata = t.metadata;
  return out;
}

/** A v1.0 SendMessage result as the bare v0.3 Task or Message. */
export function sendResultToV03(r: { task: Task } | { message: Message }): Record<string, unknown> {
  return 'task' in r ? taskToV03(r.task) : messageToV03(r.message);
}

/** A v1.0 StreamResponse as a v0.3 stream event (`kind`-tagged, with `final`). */
export function streamResponseToV03(e: StreamResponse): Record<string, unknown> {
  if ('task' in e) return taskToV03(e.task);
  if ('message' in e) return messageToV03(e.message);
  if ('statusUpdate' in e) {
    const u = e.statusUpdate;
    const out: Record<string, unknown> = {
      kind: 'status-update',
      taskId: u.taskId,
      contextId: u.contextId,
      status: statusToV03(u.status),
      final: isSettled(u.status.state),
    };
    if (u.metadata !== undefined) out.metadata = u.metadata;
    return out;
  }
  const u = e.artifactUpdate;
  const out: Record<string, unknown> = {
    kind: 'artifact-update',
    taskId: u.taskId,
    contextId: u.contextId,
    artifact: artifactToV03(u.artifact),
  };
  if (u.append !== undefined) out.append = u.append;
  if (u.lastChunk !== undefined) out.lastChunk = u.lastChunk;
  if (u.metadata !== undefined) out.metadata = u.metadata;
  return out;
}

export function pushConfigToV03(c: TaskPushNotificationConfig): Record<string, unknown> {
  const cfg: Record<string, unknown> = { url: c.url };
  if (c.id !== undefined) cfg.id = c.id;
  if (c.token !== undefined) cfg.token = c.token;
  if (c.authentication) {
    cfg.authentication = {
      schemes: [c.authentication.scheme],
      ...(c.authentication.credentials === undefined ? {} : { credentials: c.authentication.credentials }),
    };
  }
  return { taskId: c.taskId, pushNotificationConfig: cfg };
}

/**
 * The agent card in v0.3 shape, for a v0.3 client (one that sends no
 * `A2A-Version`, or 0.3): `url` and `preferredTransport` of the first
 * interface speaking 0.3, the others as `additionalInterfaces`, `type`-tagged
 * security schemes. The v1.0 `supportedInterfaces` ride along, so a v1.0
 * client that reads this card finds its interfaces too (as the official
 * SDK's v0.3 compatibility serves it). Signatures are left out: they sign the
 * v1.0 card, not this one. Undefined when no interface speaks 0.3.
 */
export function agentCardToV03(card: AgentCard): Record<string, unknown> | undefined {
  const legacy = card.supportedInterfaces.filter(
    (i) => i.protocolVersion === undefined || /^0\.3(\.|$)/.test(i.protocolVersion),
  );
  const primary = legacy[0];
  if (!primary) return undefined;
  const caps = card.capabilities;
  const out: Record<string, unknown> = {
    protocolVersion: '0.3.0',
    name: card.name,
    description: card.description,
    url: primary.url,
    preferredTransport: primary.protocolBinding,
    version: card.version,
    capabilities: {
      ...(caps.streaming === undefined ? {} : { streaming: caps.streaming }),
      ...(caps.pushNotifications === undefined ? {} : { pushNotifications: caps.pushNotifications }),
      ...(caps.extensions === undefined ? {} : { extensions: caps.extensions }),
    },
    defaultInputModes: card.defaultInputModes,
    defaultOutputModes: card.defaultOutputModes,
    skills: card.skills.map(({ securityRequirements, ...skill }) =>
      securityRequirements ? { ...skill, security: securityRequirements.map(securityToV03) } : skill,
    ),
    supportedInterfaces: card.supportedInterfaces,
  };
  if (legacy.length > 1) {
    out.additionalInterfaces = legacy.slice(1).map((i) => ({ url: i.url, transport: i.protocolBinding }));
  }
  if (caps.extendedAgentCard !== undefined) out.supportsAuthenticatedExtendedCard = caps.extendedAgentCard;
  if (card.securitySchemes) {
    out.securitySchemes = Object.fromEntries(
      Object.entries(card.securitySchemes).map(([name, scheme]) => [name, securitySchemeToV03(scheme)]),
    );
  }
  if (card.securityRequirements) out.security = card.securityRequirements.map(securityToV03);
  if (card.provider) out.provider = card.provider;
  if (card.documentationUrl) out.documentationUrl = card.documentationUrl;
  if (card.iconUrl) out.iconUrl = card.iconUrl;
  return out;
}

function securityToV03(r: { schemes: Record<string, { list?: string[] }> }): Record<string, string[]> {
  return Object.fromEntries(Object.entries(r.schemes).map(([k, v]) => [k, v.list ?? []]));
}

/** v1.0 names a scheme by its one member (`mtlsSecurityScheme`); v0.3 by `type` (`mutualTLS`). */
const SCHEME_TYPES: Record<string, string> = {
  mtlsSecurityScheme: 'mutualTLS',
  apiKeySecurityScheme: 'apiKey',
  httpAuthSecurityScheme: 'http',
  oauth2SecurityScheme: 'oauth2',
  openIdConnectSecurityScheme: 'openIdConnect',
};

function securitySchemeToV03(scheme: Record<string, unknown>): Record<string, unknown> {
  for (const [member, type] of Object.entries(SCHEME_TYPES)) {
    const body = scheme[member];
    if (body && typeof body === 'object') return { type, ...(body as Record<string, unknown>) };
  }
  return scheme;
}
