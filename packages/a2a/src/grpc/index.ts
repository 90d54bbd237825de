/**
 * The A2A gRPC contract shared by the gRPC server binding and the gRPC client
 * transport: the spec's service definition on wire objects, and A2A errors as
 * gRPC statuses.
 */
export {
  A2A_GRPC_SERVICE,
  MAX_PROTO_DEPTH,
  ProtoConversionError,
  a2aGrpcService,
  a2aProtoRoot,
  wireCodec,
  EVENT_ID_METADATA_KEY,
  type A2AGrpcMethod,
  type A2AGrpcServiceDefinition,
  type WireCodec,
  type WireObject,
} from './proto.js';
export { GRPC_STATUS_DETAILS_KEY, a2aErrorToGrpcStatus, grpcStatusToA2AError } from './status.js';
