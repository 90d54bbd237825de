/**
 * The A2A gRPC contract: `lf.a2a.v1.A2AService` loaded from the spec's
 * `a2a.proto` (copied under `packages/a2a/proto/`), and the conversion between
 * protobuf messages and Weave's ProtoJSON-shaped wire objects (`wire/v1.ts`).
 *
 * The service definition's serializers work on wire objects directly, so a
 * gRPC server or client built on it sees the same JSON shapes as the JSON-RPC
 * and HTTP+JSON bindings: a request arrives as untrusted JSON (validated with
 * zod by whoever consumes it), a response is written from a wire object.
 */
import { fileURLToPath } from 'node:url';
import { isAbsolute, join } from 'node:path';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { A2AClientError } from '../errors.js';

/** The gRPC service name; method paths are `/lf.a2a.v1.A2AService/<Method>`. */
export const A2A_GRPC_SERVICE = 'lf.a2a.v1.A2AService';

/**
 * Deepest nesting of messages, `google.protobuf.Struct` / `Value` and lists
 * the conversion follows. A deeper input is refused (it would otherwise cost a
 * deep recursion here and again wherever the value is serialized later).
 */
export const MAX_PROTO_DEPTH = 100;

// Resolved relative to this module so it works from src/ (tsx, vitest) and dist/ alike.
const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

/** A message could not be converted (too deep, or a value of the wrong type). */
export class ProtoConversionError extends A2AClientError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROTO_CONVERSION_FAILED', message, options);
  }
}

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

/** A JSON object as it travels in the JSON bindings (untrusted until validated). */
export type WireObject = Record<string, unknown>;

const STRUCT = '.google.protobuf.Struct';
const VALUE = '.google.protobuf.Value';
const LIST_VALUE = '.google.protobuf.ListValue';
const TIMESTAMP = '.google.protobuf.Timestamp';

function isRequired(field: protobuf.Field): boolean {
  const fb = field.options?.['(google.api.field_behavior)'] as unknown;
  return fb === 'REQUIRED' || (Array.isArray(fb) && fb.includes('REQUIRED'));
}

function tooDeep(): never {
  throw new ProtoConversionError(`message nested deeper than ${MAX_PROTO_DEPTH} levels`);
}

// ---- protobuf message -> wire (ProtoJSON shape) --------------------------------

/**
 * Converts a decoded message to its ProtoJSON shape: camelCase names, enums as
 * names, bytes as base64, Struct/Value as plain JSON, Timestamp as an ISO 8601
 * string. Fields absent on the wire are omitted, except fields the proto marks
 * REQUIRED and maps, which get their default (ProtoJSON readers treat absent
 * and default alike; Weave's schemas want those present).
 */
export function messageToWire(type: protobuf.Type, msg: protobuf.Message, depth = 0): WireObject {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const src = msg as unknown as Record<string, unknown>;
  const out: WireObject = {};
  for (const field of type.fieldsArray) {
    const name = field.name;
    const present = Object.prototype.hasOwnProperty.call(src, name);
    const v = src[name];
    if (field.map) {
      const m: WireObject = {};
      for (const [k, mv] of Object.entries((v as Record<string, unknown> | undefined) ?? {})) {
        m[k] = valueToWire(field, mv, depth + 1);
      }
      out[name] = m;
    } else if (field.repeated) {
      const arr = (v as unknown[] | undefined) ?? [];
      if (arr.length > 0) out[name] = arr.map((e) => valueToWire(field, e, depth + 1));
      else if (isRequired(field)) out[name] = [];
    } else if (present && v !== null && v !== undefined) {
      out[name] = valueToWire(field, v, depth + 1);
    } else if (isRequired(field) && !field.resolvedType) {
      out[name] = scalarDefault(field);
    }
  }
  return out;
}

function scalarDefault(field: protobuf.Field): unknown {
  if (field.type === 'string') return '';
  if (field.type === 'bool') return false;
  if (field.type === 'bytes') return '';
  return 0;
}

function valueToWire(field: protobuf.Field, v: unknown, depth: number): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Enum) return typeof v === 'number' ? (rt.valuesById[v] ?? v) : v;
  if (rt instanceof protobuf.Type) return typeToWire(rt, v as protobuf.Message, depth);
  if (field.type === 'bytes') return Buffer.from(v as Uint8Array).toString('base64');
  if (field.long) return Number(v);
  return v;
}

function typeToWire(type: protobuf.Type, msg: protobuf.Message, depth: number): unknown {
  switch (type.fullName) {
    case STRUCT:
      return structToJson(msg, depth);
    case VALUE:
      return valueToJson(msg, depth);
    case LIST_VALUE:
      return listToJson(msg, depth);
    case TIMESTAMP:
      return timestampToIso(msg);
    default:
      return messageToWire(type, msg, depth);
  }
}

function structToJson(msg: unknown, depth: number): WireObject {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const out: WireObject = {};
  const fields = (msg as { fields?: Record<string, unknown> }).fields ?? {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v, depth + 1);
  return out;
}

function listToJson(msg: unknown, depth: number): unknown[] {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  return ((msg as { values?: unknown[] }).values ?? []).map((v) => valueToJson(v, depth + 1));
}

function valueToJson(msg: unknown, depth: number): unknown {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  const v = msg as Record<string, unknown>;
  // Decoded messages carry only the set member of the `kind` oneof as own property.
  if (Object.prototype.hasOwnProperty.call(v, 'stringValue')) return v.stringValue;
  if (Object.prototype.hasOwnProperty.call(v, 'numberValue')) return v.numberValue;
  if (Object.prototype.hasOwnProperty.call(v, 'boolValue')) return v.boolValue;
  if (Object.prototype.hasOwnProperty.call(v, 'structValue')) return structToJson(v.structValue, depth + 1);
  if (Object.prototype.hasOwnProperty.call(v, 'listValue')) return listToJson(v.listValue, depth + 1);
  return null;
}

function timestampToIso(msg: unknown): string {
  const t = msg as { seconds?: unknown; nanos?: number };
  const seconds = Number(t.seconds ?? 0);
  const nanos = t.nanos ?? 0;
  const d = new Date(seconds * 1000 + Math.floor(nanos / 1e6));
  if (Number.isNaN(d.getTime())) throw new ProtoConversionError('timestamp out of range');
  return d.toISOString();
}

// ---- wire (ProtoJSON shape) -> protobuf message ----------------------------------

/**
 * Converts a ProtoJSON-shaped object to the plain object `Type.fromObject`
 * takes (well-known types expanded to their message shape). Unknown members
 * are dropped, as ProtoJSON parsers may do.
 */
export function wireToObject(type: protobuf.Type, json: unknown, depth = 0): Record<string, unknown> {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ProtoConversionError(`${type.name}: object expected`);
  }
  const src = json as WireObject;
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const v = src[field.name];
    // null is a value only for google.protobuf.Value (JSON null); elsewhere it means absent.
    if (v === undefined || (v === null && field.resolvedType?.fullName !== VALUE)) continue;
    if (field.map) {
      if (typeof v !== 'object' || Array.isArray(v))
        throw new ProtoConversionError(`${field.name}: object expected`);
      const m: Record<string, unknown> = {};
      for (const [k, mv] of Object.entries(v as WireObject)) m[k] = valueToObject(field, mv, depth + 1);
      out[field.name] = m;
    } else if (field.repeated) {
      if (!Array.isArray(v)) throw new ProtoConversionError(`${field.name}: array expected`);
      out[field.name] = v.map((e) => valueToObject(field, e, depth + 1));
    } else {
      out[field.name] = valueToObject(field, v, depth + 1);
    }
  }
  return out;
}

function valueToObject(field: protobuf.Field, v: unknown, depth: number): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Type) {
    switch (rt.fullName) {
      case STRUCT:
        return jsonToStruct(v, depth);
      case VALUE:
        return jsonToValue(v, depth);
      case LIST_VALUE:
        return jsonToList(v, depth);
      case TIMESTAMP:
        return isoToTimestamp(v);
      default:
        return wireToObject(rt, v, depth);
    }
  }
  return v; // enums by name or number, base64 bytes and scalars: fromObject handles them
}

function jsonToStruct(v: unknown, depth: number): { fields: Record<string, unknown> } {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new ProtoConversionError('google.protobuf.Struct: object expected');
  }
  const fields: Record<string, unknown> = {};
  for (const [k, fv] of Object.entries(v as WireObject)) {
    if (fv !== undefined) fields[k] = jsonToValue(fv, depth + 1);
  }
  return { fields };
}

function jsonToList(v: unknown, depth: number): { values: unknown[] } {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (!Array.isArray(v)) throw new ProtoConversionError('google.protobuf.ListValue: array expected');
  return { values: v.map((e) => jsonToValue(e, depth + 1)) };
}

function jsonToValue(v: unknown, depth: number): Record<string, unknown> {
  if (depth > MAX_PROTO_DEPTH) tooDeep();
  if (v === null || v === undefined) return { nullValue: 0 };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: jsonToList(v, depth + 1) };
  if (typeof v === 'object') return { structValue: jsonToStruct(v, depth + 1) };
  throw new ProtoConversionError(`google.protobuf.Value: unsupported ${typeof v}`);
}

function isoToTimestamp(v: unknown): { seconds: number; nanos: number } {
  const ms = typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(ms)) throw new ProtoConversionError('google.protobuf.Timestamp: ISO 8601 string expected');
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1e6 };
}

// ---- codecs and the service definition -----------------------------------------

/** Binary codec of one message type, on wire objects. */
export interface WireCodec {
  readonly type: protobuf.Type;
  encode(wire: unknown): Buffer;
  decode(bytes: Uint8Array): WireObject;
}

const codecs = new Map<string, WireCodec>();

/**
 * The codec of a message type by name (e.g. `lf.a2a.v1.Task`).
 *
 * @throws {ProtoConversionError} from `encode`/`decode` for bad input.
 */
export function wireCodec(typeName: string): WireCodec {
  let codec = codecs.get(typeName);
  if (codec) return codec;
  const type = a2aProtoRoot().lookupType(typeName);
  codec = {
    type,
    encode(wire: unknown): Buffer {
      let message: protobuf.Message;
      try {
        message = type.fromObject(wireToObject(type, wire));
      } catch (err) {
        if (err instanceof ProtoConversionError) throw err;
        throw new ProtoConversionError(`cannot encode ${type.name}: ${String(err)}`, { cause: err });
      }
      return Buffer.from(type.encode(message).finish());
    },
    decode(bytes: Uint8Array): WireObject {
      let message: protobuf.Message;
      try {
        message = type.decode(bytes);
      } catch (err) {
        throw new ProtoConversionError(`cannot decode ${type.name}: ${String(err)}`, { cause: err });
      }
      return messageToWire(type, message);
    },
  };
  codecs.set(typeName, codec);
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
