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
  wireCodec,
  type A2AGrpcServiceDefinition,
} from './proto.js';
export { a2aErrorToGrpcStatus, grpcStatusToA2AError } from './status.js';
