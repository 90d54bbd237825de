// A crafted Workload API: a real gRPC server on a Unix socket whose methods
// are the test's own (a hostile, stuck, frozen or malformed server), for the
// client behaviours the dev server cannot be made to show.
import * as grpc from '@grpc/grpc-js';
import { workloadApiService } from '../../src/workload/proto.js';

/**
 * Serves the Workload API with `handlers` at `unix://<path>`; the caller
 * shuts the returned server down (`forceShutdown()`) after the test.
 */
export async function craftedWorkloadApi(
  path: string,
  handlers: grpc.UntypedServiceImplementation,
): Promise<grpc.Server> {
  const srv = new grpc.Server();
  srv.addService(workloadApiService(), handlers);
  await new Promise<void>((ok, fail) =>
    srv.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? fail(e) : ok())),
  );
  return srv;
}
