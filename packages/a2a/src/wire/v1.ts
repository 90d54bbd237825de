/**
 * A2A v1.0 wire types in ProtoJSON shape (`specification/a2a.proto`), as zod
 * schemas and the TypeScript types inferred from them. Unknown members are
 * dropped, as ProtoJSON parsers may do; enum values are accepted as names or
 * numbers and always written as names.
 */
import { z } from 'zod';

/** Every task state, in the order of their protobuf numbers. */
export const TASK_STATES = [
  'TASK_STATE_UNSPECIFIED',
  'TASK_STATE_SUBMITTED',
  'TASK_STATE_WORKING',
  'TASK_STATE_COMPLETED',
  'TASK_STATE_FAILED',
  'TASK_STATE_CANCELED',
  'TASK_STATE_INPUT_REQUIRED',
  'TASK_STATE_REJECTED',
  'TASK_STATE_AUTH_REQUIRED',
] as const;

/** A task's lifecycle state (ProtoJSON enum name). */
export type TaskState = (typeof TASK_STATES)[number];

const ROLES = ['ROLE_UNSPECIFIED', 'ROLE_USER', 'ROLE_AGENT'] as const;
/** Who sent a message. */
export type Role = (typeof ROLES)[number];

/** ProtoJSON lets enums travel as their number; normalise to the name. */
function protoEnum<const T extends readonly [string, ...string[]]>(names: T) {
  return z.preprocess(
    (v) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < names.length ? names[v] : v),
    z.enum(names),
  );
}

export const TaskStateSchema = protoEnum(TASK_STATES);
export const RoleSchema = protoEnum(ROLES);

/** States after which a task never changes again. */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  'TASK_STATE_COMPLETED',
  'TASK_STATE_FAILED',
  'TASK_STATE_CANCELED',
  'TASK_STATE_REJECTED',
]);
/** States in which a task waits for the client. */
export const INTERRUPTED_STATES: ReadonlySet<TaskState> = new Set<TaskState>([
  'TASK_STATE_INPUT_REQUIRED',
  'TASK_STATE_AUTH_REQUIRED',
]);

/** True for a state after which the task never changes again (see {@link TERMINAL_STATES}). */
export function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

/** True for a state in which the task waits for the client (see {@link INTERRUPTED_STATES}). */
export function isInterrupted(state: TaskState): boolean {
  return INTERRUPTED_STATES.has(state);
}

/**
 * True for a state in which a task stops on its own: finished, or waiting for
 * the client. A SendStreamingMessage stream closes here and a blocking send
 * returns here (A2A §3.1.2, §3.5); only the terminal states end a task.
 */
export function isSettled(state: TaskState): boolean {
  return TERMINAL_STATES.has(state) || INTERRUPTED_STATES.has(state);
}

export type Struct = Record<string, unknown>;

function isJsonObject(v: unknown): v is Struct {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** A copy of `o`'s members, as `z.record` makes one: a `__proto__` member is dropped. */
function copyStruct(o: Struct): Struct {
  const out: Struct = {};
  for (const k in o) if (k !== '__proto__') out[k] = o[k];
  return out;
}

/**
 * google.protobuf.Struct: any JSON object, copied (one level, as
 * `z.record(z.string(), z.unknown())` copies it). Checked as one plain
 * object rather than key by key: a record schema runs a key and a value
 * schema per member, and as every message's and task's `metadata` it was
 * the most expensive schema of a call on both sides (bench/, `--cpu-prof`).
 */
export const StructSchema = z
  .custom<Struct>(isJsonObject, { message: 'expected a JSON object' })
  .transform(copyStruct);

const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

export const PartSchema = z
  .object({
    text: z.string().optional(),
    raw: z.string().regex(BASE64, 'raw must be base64').optional(),
    url: z.string().min(1).optional(),
    data: z.unknown().optional(),
    mediaType: z.string().optional(),
    filename: z.string().optional(),
    metadata: StructSchema.optional(),
  })
  .refine(
    (p) =>
      (p.text !== undefined ? 1 : 0) +
        (p.raw !== undefined ? 1 : 0) +
        (p.url !== undefined ? 1 : 0) +
        (p.data !== undefined ? 1 : 0) ===
      1,
    { message: 'a Part must have exactly one of text, raw, url, data' },
  );
/** One piece of content: exactly one of `text`, `raw` (base64), `url`, `data`. */
export type Part = z.infer<typeof PartSchema>;

export const MessageSchema = z.object({
  messageId: z.string().min(1),
  role: RoleSchema,
  parts: z.array(PartSchema),
  taskId: z.string().optional(),
  contextId: z.string().optional(),
  referenceTaskIds: z.array(z.string()).optional(),
  extensions: z.array(z.string()).optional(),
  metadata: StructSchema.optional(),
});
export type Message = z.infer<typeof MessageSchema>;

export const ArtifactSchema = z.object({
  artifactId: z.string().min(1),
  name: z.string().optional(),
  description: z.string().optional(),
  parts: z.array(PartSchema),
  metadata: StructSchema.optional(),
  extensions: z.array(z.string()).optional(),
});
export type Artifact = z.infer<typeof ArtifactSchema>;

export const TaskStatusSchema = z.object({
  state: TaskStateSchema,
  message: MessageSchema.optional(),
  timestamp: z.string().optional(),
});
export type TaskStatus = z.infer<typeof TaskStatusSchema>;

export const TaskSchema = z.object({
  id: z.string().min(1),
  contextId: z.string(),
  status: TaskStatusSchema,
  artifacts: z.array(ArtifactSchema).optional(),
  history: z.array(MessageSchema).optional(),
  metadata: StructSchema.optional(),
});
export type Task = z.infer<typeof TaskSchema>;

export const TaskStatusUpdateEventSchema = z.object({
  taskId: z.string(),
  contextId: z.string(),
  status: TaskStatusSchema,
  metadata: StructSchema.optional(),
});
export type TaskStatusUpdateEvent = z.infer<typeof TaskStatusUpdateEventSchema>;

export const TaskArtifactUpdateEventSchema = z.object({
  taskId: z.string(),
  contextId: z.string(),
  artifact: ArtifactSchema,
  append: z.boolean().optional(),
  lastChunk: z.boolean().optional(),
  metadata: StructSchema.optional(),
});
export type TaskArtifactUpdateEvent = z.infer<typeof TaskArtifactUpdateEventSchema>;

/** One event of a stream: exactly one of `task`, `message`, `statusUpdate`, `artifactUpdate`. */
export type StreamResponse =
  | { task: Task }
  | { message: Message }
  | { statusUpdate: TaskStatusUpdateEvent }
  | { artifactUpdate: TaskArtifactUpdateEvent };

export const StreamResponseSchema: z.ZodType<StreamResponse> = z.union([
  z.object({ task: TaskSchema }),
  z.object({ message: MessageSchema }),
  z.object({ statusUpdate: TaskStatusUpdateEventSchema }),
  z.object({ artifactUpdate: TaskArtifactUpdateEventSchema }),
]);

/** The task state an event reports: a task's or a status update's; none for a message or an artifact update. */
export function stateOfEvent(e: StreamResponse): TaskState | undefined {
  if ('statusUpdate' in e) return e.statusUpdate.status.state;
  if ('task' in e) return e.task.status.state;
  return undefined;
}

/** True for the event that ends a task: the one reporting its terminal state. */
export function endsTask(e: StreamResponse): boolean {
  const state = stateOfEvent(e);
  return state !== undefined && isTerminal(state);
}

/**
 * Whether a SendStreamingMessage stream ends after this event: a terminal or
 * interrupted state (§3.5: the client must answer before the task goes on),
 * or a direct message.
 */
export function closesStream(e: StreamResponse): boolean {
  if ('message' in e) return true;
  const state = stateOfEvent(e);
  return state !== undefined && isSettled(state);
}

/** Result of SendMessage: a task, or a direct message. */
export type SendMessageResult = { task: Task } | { message: Message };
export const SendMessageResultSchema: z.ZodType<SendMessageResult> = z.union([
  z.object({ task: TaskSchema }),
  z.object({ message: MessageSchema }),
]);

// ---- push notifications ----------------------------------------------------

export const AuthenticationInfoSchema = z.object({
  scheme: z.string().min(1),
  credentials: z.string().optional(),
});

export const TaskPushNotificationConfigSchema = z.object({
  tenant: z.string().optional(),
  id: z.string().optional(),
  taskId: z.string().min(1),
  url: z.url(),
  token: z.string().optional(),
  authentication: AuthenticationInfoSchema.optional(),
});
export type TaskPushNotificationConfig = z.infer<typeof TaskPushNotificationConfigSchema>;

/**
 * Whether `s` holds a NUL or an unpaired UTF-16 surrogate: what no
 * PostgreSQL text column holds (a NUL is refused; a lone surrogate goes in
 * as U+FFFD, so the value read back or matched is another one).
 */
function unkeepable(s: string): boolean {
  return s.includes('\u0000') || /\p{Cs}/u.test(s);
}

/** Longest identifier a request gives (tenant, task, context, message, push config): an opaque key. */
const MAX_ID_LENGTH = 256;
/**
 * Most UTF-8 bytes of such an identifier. A tenant is a key of the btree
 * index PostgreSQL lists tasks along, (tenant, owner, status time, id),
 * whose entries hold at most 2704 bytes: with an owner of the longest
 * SPIFFE ID (2048 bytes), 256 characters of CJK (768 bytes) did not fit,
 * and the request failed -32603 there while the embedded store kept it.
 * 512 bytes fit, with room to spare; the other identifiers share the bound.
 */
const MAX_ID_BYTES = 512;

/** What an identifier of a request may be, as a -32602 message says it. */
const ID_RULE = `at most ${MAX_ID_LENGTH} characters and ${MAX_ID_BYTES} bytes of UTF-8`;

/** Whether `s` is within {@link ID_RULE}; the length first, so a long string is never measured. */
function fitsId(s: string): boolean {
  // 170 UTF-16 units are at most 510 bytes of UTF-8: a UUID is never measured.
  return s.length <= 170 || (s.length <= MAX_ID_LENGTH && Buffer.byteLength(s, 'utf8') <= MAX_ID_BYTES);
}

/**
 * Longest page token a request gives. The tokens this server issues are far
 * shorter (a position: a timestamp, an id of at most 512 bytes escaped in
 * JSON, a query hash; base64url); a longer one is no token of ours, refused
 * before it is decoded and parsed.
 */
const MAX_PAGE_TOKEN_LENGTH = 4096;

/** A page token a request gives: opaque, bounded ({@link MAX_PAGE_TOKEN_LENGTH}). */
const pageToken = z
  .string()
  .max(MAX_PAGE_TOKEN_LENGTH, { message: `at most ${MAX_PAGE_TOKEN_LENGTH} characters` })
  .optional();

/**
 * An identifier a request gives (a message id, a referenced task). Bounded
 * ({@link ID_RULE}) as a tenant is: the agent keeps it with the task and
 * repeats it in every answer and stream event (a 600 kB contextId was sent
 * back whole with each event). Only requests are bounded: schemas that read
 * an answer or a stored row take any length, as a peer or an older row may
 * hold one. Aborts on failure, so no later check reads a string that long.
 */
const id = z.string().refine(fitsId, { message: ID_RULE, abort: true });

/**
 * An {@link id} naming a task, a context or a push config in a request. Such
 * names are keys every task store keeps as they are and looks up by, so one
 * that a store cannot keep (see {@link unkeepable}) is refused here, as
 * -32602 naming the field, on every binding and store alike: accepted by
 * the embedded store, it was a generic refusal (or a lookup of another
 * name) on PostgreSQL. Content (text, metadata, message ids) is not a key
 * and keeps them.
 */
const name = id.refine((s) => !unkeepable(s), {
  message: 'must not contain NUL or an unpaired surrogate',
});

/** What a tenant may be, as a -32602 message says it. */
export const TENANT_RULE = `${ID_RULE}, no control characters or unpaired surrogates`;

/**
 * Whether `s` may name a tenant ({@link TENANT_RULE}): a task store keeps it
 * as a key, as it keeps a {@link name}, and logs and gRPC carry it as UTF-8,
 * which cannot hold an unpaired surrogate. The params' tenant is checked by
 * the schemas; a binding's (path prefix, gRPC field) by the request handler,
 * with this same rule.
 */
export function isTenant(s: string): boolean {
  return fitsId(s) && !/\p{Cc}|\p{Cs}/u.test(s);
}

const tenant = z.string().refine(isTenant, { message: TENANT_RULE }).optional();

/**
 * Longest strings of a push config an agent accepts in a request. The agent
 * keeps every config for as long as its task, so they are bounded like any
 * other retained input; the values fit any real webhook (a URL within what
 * browsers and proxies take, a token or credentials that fit an HTTP header).
 */
export const PUSH_CONFIG_LIMITS = {
  url: 2048,
  id: 256,
  token: 4096,
  scheme: 256,
  credentials: 4096,
} as const;

/**
 * A push config as a request carries it (CreateTaskPushNotificationConfig,
 * SendMessage's `configuration.taskPushNotificationConfig`): the wire shape
 * with its strings bounded by {@link PUSH_CONFIG_LIMITS}. Configs read back
 * (a reply, a stored row) use the unbounded {@link TaskPushNotificationConfigSchema},
 * so one kept before the bounds still reads.
 */
export const TaskPushNotificationConfigParamsSchema = TaskPushNotificationConfigSchema.extend({
  tenant,
  id: name.max(PUSH_CONFIG_LIMITS.id).optional(),
  taskId: name.min(1),
  url: z.url().max(PUSH_CONFIG_LIMITS.url),
  token: z.string().max(PUSH_CONFIG_LIMITS.token).optional(),
  authentication: AuthenticationInfoSchema.extend({
    scheme: z.string().min(1).max(PUSH_CONFIG_LIMITS.scheme),
    credentials: z.string().max(PUSH_CONFIG_LIMITS.credentials).optional(),
  }).optional(),
});

// ---- agent card --------------------------------------------------------------

export const AgentInterfaceSchema = z.object({
  url: z.string().min(1),
  protocolBinding: z.string().min(1),
  protocolVersion: z.string().optional(),
  tenant: z.string().optional(),
});
export type AgentInterface = z.infer<typeof AgentInterfaceSchema>;

export const AgentExtensionSchema = z.object({
  uri: z.string(),
  description: z.string().optional(),
  required: z.boolean().optional(),
  params: StructSchema.optional(),
});

export const AgentCapabilitiesSchema = z.object({
  streaming: z.boolean().optional(),
  pushNotifications: z.boolean().optional(),
  extensions: z.array(AgentExtensionSchema).optional(),
  extendedAgentCard: z.boolean().optional(),
});
export type AgentCapabilities = z.infer<typeof AgentCapabilitiesSchema>;

export const SecurityRequirementSchema = z.object({
  schemes: z.record(z.string(), z.object({ list: z.array(z.string()).optional() })),
});
export type SecurityRequirement = z.infer<typeof SecurityRequirementSchema>;

/** v1.0 names a scheme by which single member is present; Weave only needs mTLS, others pass through. */
export const SecuritySchemeSchema = z
  .object({
    mtlsSecurityScheme: z.object({ description: z.string().optional() }).optional(),
  })
  .catchall(z.unknown());
export type SecurityScheme = z.infer<typeof SecuritySchemeSchema>;

export const AgentSkillSchema = z.object({
  id: z.string().min(1),
  name: z.string().min(1),
  description: z.string(),
  tags: z.array(z.string()),
  examples: z.array(z.string()).optional(),
  inputModes: z.array(z.string()).optional(),
  outputModes: z.array(z.string()).optional(),
  securityRequirements: z.array(SecurityRequirementSchema).optional(),
});
export type AgentSkill = z.infer<typeof AgentSkillSchema>;

export const AgentCardSchema = z.object({
  name: z.string().min(1),
  description: z.string(),
  supportedInterfaces: z.array(AgentInterfaceSchema).min(1),
  provider: z.object({ url: z.string(), organization: z.string() }).optional(),
  version: z.string(),
  documentationUrl: z.string().optional(),
  capabilities: AgentCapabilitiesSchema,
  securitySchemes: z.record(z.string(), SecuritySchemeSchema).optional(),
  securityRequirements: z.array(SecurityRequirementSchema).optional(),
  defaultInputModes: z.array(z.string()),
  defaultOutputModes: z.array(z.string()),
  skills: z.array(AgentSkillSchema),
  signatures: z.array(z.unknown()).optional(),
  iconUrl: z.string().optional(),
});
export type AgentCard = z.infer<typeof AgentCardSchema>;

// ---- request params ----------------------------------------------------------

const historyLength = z.number().int().min(0).optional();

/**
 * A message as a request sends it: the task and context it names are
 * {@link name}s, its own id and the tasks it refers to {@link id}s.
 */
const RequestMessageSchema = MessageSchema.extend({
  messageId: id.min(1),
  taskId: name.optional(),
  contextId: name.optional(),
  referenceTaskIds: z.array(id).optional(),
  // Spec §5.7: a required array has at least one element (a message without content is not a message).
  parts: z.array(PartSchema).min(1, 'at least one part is required'),
});

export const SendMessageConfigurationSchema = z.object({
  acceptedOutputModes: z.array(z.string()).optional(),
  taskPushNotificationConfig: TaskPushNotificationConfigParamsSchema.partial({ taskId: true }).optional(),
  historyLength,
  returnImmediately: z.boolean().optional(),
});

export const SendMessageParamsSchema = z.object({
  tenant,
  message: RequestMessageSchema,
  configuration: SendMessageConfigurationSchema.optional(),
  metadata: StructSchema.optional(),
});
export type SendMessageParams = z.infer<typeof SendMessageParamsSchema>;

export const GetTaskParamsSchema = z.object({ tenant, id: name.min(1), historyLength });
export type GetTaskParams = z.infer<typeof GetTaskParamsSchema>;

export const ListTasksParamsSchema = z.object({
  tenant,
  // proto3 has no presence for a string: "" (what a ProtoJSON writer of defaults sends) is no filter, as on gRPC.
  contextId: name.optional().transform((v) => (v === '' ? undefined : v)),
  status: TaskStateSchema.optional(),
  pageSize: z.number().int().min(1).max(100).optional(),
  pageToken,
  historyLength,
  statusTimestampAfter: z.iso.datetime({ offset: true }).optional(),
  includeArtifacts: z.boolean().optional(),
});
export type ListTasksParams = z.infer<typeof ListTasksParamsSchema>;

export interface ListTasksResult {
  tasks: Task[];
  nextPageToken: string;
  pageSize: number;
  totalSize: number;
}

export const ListTasksResultSchema: z.ZodType<ListTasksResult> = z.object({
  tasks: z.array(TaskSchema),
  nextPageToken: z.string().default(''),
  pageSize: z.number().int().default(0),
  totalSize: z.number().int().default(0),
});

export const CancelTaskParamsSchema = z.object({
  tenant,
  id: name.min(1),
  metadata: StructSchema.optional(),
});
export type CancelTaskParams = z.infer<typeof CancelTaskParamsSchema>;

export const SubscribeToTaskParamsSchema = z.object({ tenant, id: name.min(1) });
export type SubscribeToTaskParams = z.infer<typeof SubscribeToTaskParamsSchema>;

export const TaskPushConfigRefSchema = z.object({
  tenant,
  taskId: name.min(1),
  id: name.min(1),
});

export const ListTaskPushConfigsParamsSchema = z.object({
  tenant,
  taskId: name.min(1),
  pageSize: z.number().int().min(0).optional(),
  pageToken,
});

export const GetExtendedAgentCardParamsSchema = z.object({ tenant }).optional();

/** The v1.0 JSON-RPC method names. */
export const V1_METHODS = [
  'SendMessage',
  'SendStreamingMessage',
  'GetTask',
  'ListTasks',
  'CancelTask',
  'SubscribeToTask',
  'CreateTaskPushNotificationConfig',
  'GetTaskPushNotificationConfig',
  'ListTaskPushNotificationConfigs',
  'DeleteTaskPushNotificationConfig',
  'GetExtendedAgentCard',
] as const;
export type V1Method = (typeof V1_METHODS)[number];
