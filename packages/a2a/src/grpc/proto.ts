/**
 * The A2A gRPC contract: `lf.a2a.v1.A2AService` loaded from the spec's
 * `a2a.proto` (copied under `packages/a2a/proto/`), and the conversion between
 * protobuf messages and Weave's ProtoJSON-shaped wire objects (`wire/v1.ts`).
 *
 * The service definition's serializers work on wire objects directly (a
 * codec compiled once per message type, `codec.ts`), so a gRPC server or
 * client built on it sees the same JSON shapes as the JSON-RPC and HTTP+JSON
 * bindings: a request arrives as untrusted JSON (validated with zod by
 * whoever consumes it), a response is written from a wire object.
 */
import { fileURLToPath } from 'node:url';
import { isAbsolute, join } from 'node:path';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
// protobufjs stays on major 7 although 8 supports Node 20.19 (and this codec passes
// its tests on 8.8): @grpc/proto-loader 0.8, which @weave/identity's Workload API
// client loads, depends on protobufjs ^7, so 8 here would install a second copy
// (4 MB) in every agent. Move together with proto-loader.
import protobuf from 'protobufjs';
import { compileCodec, type WireCodec, type WireObject } from './codec.js';

export { MAX_PROTO_DEPTH, ProtoConversionError, type WireCodec, type WireObject } from './codec.js';

/** The gRPC service name; method paths are `/lf.a2a.v1.A2AService/<Method>`. */
export const A2A_GRPC_SERVICE = 'lf.a2a.v1.A2AService';

// Resolved relative to this module so it works from src/ (tsx, vitest) and dist/ alike.
const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

let cachedRoot: protobuf.Root | undefined;

/** The protobufjs root holding `lf.a2a.v1`, `google.rpc.Status` and `google.rpc.ErrorInfo`. */
export function a2aProtoRoot(): protobuf.Root {
  if (cachedRoot) return cachedRoot;
  const root = new protobuf.Root();
  // Imports resolve inside proto/; google/protobuf/* come from protobufjs's bundled common types.
  root.resolvePath = (_origin, target) => (isAbsolute(target) ? target : join(PROTO_DIR, target));
  root.loadSync(['a2a.proto', 'google/rpc/status.proto', 'google/rpc/error_details.proto'], {
    keepCase: false,
  });
  root.resolveAll();
  cachedRoot = root;
  return root;
}

const codecs = new Map<string, WireCodec>();

/**
 * The codec of a message type by name (e.g. `lf.a2a.v1.Task`).
 *
 * @throws {ProtoConversionError} from `encode`/`decode` for bad input.
 */
export function wireCodec(typeName: string): WireCodec {
  let codec = codecs.get(typeName);
  if (!codec) {
    codec = compileCodec(a2aProtoRoot().lookupType(typeName));
    codecs.set(typeName, codec);
  }
  return codec;
}

/** The A2A service's methods, with wire objects as requests and responses. */
export type A2AGrpcMethod =
  | 'SendMessage'
  | 'SendStreamingMessage'
  | 'GetTask'
  | 'ListTasks'
  | 'CancelTask'
  | 'SubscribeToTask'
  | 'CreateTaskPushNotificationConfig'
  | 'GetTaskPushNotificationConfig'
  | 'ListTaskPushNotificationConfigs'
  | 'GetExtendedAgentCard'
  | 'DeleteTaskPushNotificationConfig';

/** grpc-js service definition of `lf.a2a.v1.A2AService` on wire objects. */
export type A2AGrpcServiceDefinition = ServiceDefinition &
  Record<A2AGrpcMethod, MethodDefinition<WireObject, WireObject>>;

let cachedService: A2AGrpcServiceDefinition | undefined;

/**
 * The grpc-js service definition of `lf.a2a.v1.A2AService`. Its serializers
 * take and give wire objects; a serializer throws {@link ProtoConversionError}
 * for input it cannot convert (grpc-js turns that into an error status).
 */
export function a2aGrpcService(): A2AGrpcServiceDefinition {
  if (cachedService) return cachedService;
  const service = a2aProtoRoot().lookupService(A2A_GRPC_SERVICE);
  const def: Record<string, MethodDefinition<WireObject, WireObject>> = {};
  for (const method of service.methodsArray) {
    const req = wireCodec(method.resolvedRequestType!.fullName.slice(1));
    const res = wireCodec(method.resolvedResponseType!.fullName.slice(1));
    def[method.name] = {
      path: `/${A2A_GRPC_SERVICE}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: (v) => req.encode(v),
      requestDeserialize: (b) => req.decode(b),
      responseSerialize: (v) => res.encode(v),
      responseDeserialize: (b) => res.decode(b),
      originalName: method.name,
    };
  }
  cachedService = def as A2AGrpcServiceDefinition;
  return cachedService;
}

/**
 * Metadata key that carries a stream event's sequence number on gRPC. The
 * HTTP bindings send it as the SSE `id:`; a gRPC message has no such field, so
 * the event's own metadata carries it and the client takes it out again, so
 * a broken gRPC stream resumes after the last event (`last-event-id`) with no
 * gap or duplicate, as on the other bindings.
 */
const EVENT_ID_METADATA_KEY = 'weave.dev/event-id';

/** The StreamResponse members that can carry metadata (all of them). */
const STREAM_MEMBERS = ['task', 'message', 'statusUpdate', 'artifactUpdate'] as const;

/** A copy of `event` whose payload's metadata names its sequence number (the event itself is shared: never mutated). */
export function withEventId(event: object, seq: number): WireObject {
  const e = event as WireObject;
  for (const k of STREAM_MEMBERS) {
    const inner = e[k] as WireObject | undefined;
    if (inner === undefined) continue;
    const metadata = { ...(inner.metadata as WireObject | undefined), [EVENT_ID_METADATA_KEY]: String(seq) };
    return { [k]: { ...inner, metadata } };
  }
  return e;
}

/**
 * The event id a Weave server put in a decoded StreamResponse, removed from
 * it (metadata that held only the id goes too); `undefined` from other servers.
 */
export function takeEventId(event: WireObject): string | undefined {
  for (const k of STREAM_MEMBERS) {
    const inner = event[k] as WireObject | undefined;
    if (inner === undefined || inner === null) continue;
    const metadata = inner.metadata as WireObject | undefined;
    const id = metadata?.[EVENT_ID_METADATA_KEY];
    if (typeof id !== 'string' || !/^\d{1,15}$/.test(id)) return undefined;
    delete metadata![EVENT_ID_METADATA_KEY];
    if (Object.keys(metadata!).length === 0) delete inner.metadata;
    return id;
  }
  return undefined;
}
