import { fileURLToPath } from 'node:url';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/**
 * The metadata key every Workload API call must carry with the value `true`.
 * SPIRE (and Weave's dev server) answer INVALID_ARGUMENT without it.
 */
export const WORKLOAD_API_HEADER = 'workload.spiffe.io';

/** The service name; it has no package, so method paths are `/SpiffeWorkloadAPI/<Method>`. */
const WORKLOAD_API_SERVICE = 'SpiffeWorkloadAPI';

// Resolved relative to this module so it works from src/ (tsx, vitest) and dist/ alike.
const PROTO_PATH = fileURLToPath(new URL('../../proto/workload.proto', import.meta.url));

// The wire messages, as @grpc/proto-loader decodes them with the options below
// (camelCase field names, bytes as Buffer, defaults filled in). They are still
// untrusted input: the client validates them with zod before use.
interface X509SvidMessage {
  spiffeId: string;
  x509Svid: Uint8Array;
  x509SvidKey: Uint8Array;
  bundle: Uint8Array;
  hint: string;
}
export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Uint8Array[];
  federatedBundles: Record<string, Uint8Array>;
}
export interface X509BundlesResponse {
  crl: Uint8Array[];
  bundles: Record<string, Uint8Array>;
}
export interface JwtSvidRequest {
  audience: string[];
  spiffeId: string;
}
interface JwtSvidMessage {
  spiffeId: string;
  svid: string;
  hint: string;
}
export interface JwtSvidResponse {
  svids: JwtSvidMessage[];
}
export interface JwtBundlesResponse {
  bundles: Record<string, Uint8Array>;
}
export interface ValidateJwtSvidRequest {
  audience: string;
  svid: string;
}
/** google.protobuf.Value as proto-loader represents it (`kind` names the set member). */
interface StructValue {
  kind?: string;
  nullValue?: string | number;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: StructMessage;
  listValue?: { values?: StructValue[] };
}
export interface StructMessage {
  fields?: Record<string, StructValue>;
}
export interface ValidateJwtSvidResponse {
  spiffeId: string;
  claims?: StructMessage | null;
}
export type EmptyRequest = Record<string, never>;

/** Each RPC of the Workload API with its request and response types. */
export interface WorkloadApiMethods {
  FetchX509SVID: MethodDefinition<EmptyRequest, X509SvidResponse>;
  FetchX509Bundles: MethodDefinition<EmptyRequest, X509BundlesResponse>;
  FetchJWTSVID: MethodDefinition<JwtSvidRequest, JwtSvidResponse>;
  FetchJWTBundles: MethodDefinition<EmptyRequest, JwtBundlesResponse>;
  ValidateJWTSVID: MethodDefinition<ValidateJwtSvidRequest, ValidateJwtSvidResponse>;
  FetchWITSVID: MethodDefinition<{ spiffeId: string }, unknown>;
  FetchWITBundles: MethodDefinition<EmptyRequest, unknown>;
}

let cached: (WorkloadApiMethods & ServiceDefinition) | undefined;

/** The Workload API service definition, loaded once from the committed `.proto`. */
export function workloadApiService(): WorkloadApiMethods & ServiceDefinition {
  if (cached) return cached;
  const pkg = loadSync(PROTO_PATH, {
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    arrays: true,
    objects: true,
    oneofs: true,
  });
  const service = pkg[WORKLOAD_API_SERVICE];
  if (!service || 'format' in service) {
    throw new Error(`${PROTO_PATH} does not define service ${WORKLOAD_API_SERVICE}`);
  }
  cached = service as unknown as WorkloadApiMethods & ServiceDefinition;
  return cached;
}

/** JSON value carried in a google.protobuf.Struct. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Converts a decoded google.protobuf.Struct to a plain JSON object. */
export function structToJson(struct: StructMessage | null | undefined): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const [key, value] of Object.entries(struct?.fields ?? {})) out[key] = valueToJson(value);
  return out;
}

function valueToJson(value: StructValue): JsonValue {
  switch (value.kind) {
    case 'numberValue':
      return value.numberValue ?? 0;
    case 'stringValue':
      return value.stringValue ?? '';
    case 'boolValue':
      return value.boolValue ?? false;
    case 'structValue':
      return structToJson(value.structValue);
    case 'listValue':
      return (value.listValue?.values ?? []).map(valueToJson);
    default:
      return null;
  }
}

/** Converts a JSON object to a google.protobuf.Struct for encoding. */
export function jsonToStruct(json: Record<string, unknown>): StructMessage {
  const fields: Record<string, StructValue> = {};
  for (const [key, value] of Object.entries(json)) {
    if (value !== undefined) fields[key] = jsonToValue(value);
  }
  return { fields };
}

function jsonToValue(value: unknown): StructValue {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(jsonToValue) } };
  if (typeof value === 'object') return { structValue: jsonToStruct(value as Record<string, unknown>) };
  return { nullValue: 'NULL_VALUE' };
}
