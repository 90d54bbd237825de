// A dev Workload API server in a temp state directory, with Workload API
// identity providers on its sockets: the production identity path (gRPC over
// Unix sockets, SVIDs rotating on their own) for tests that need it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { WorkloadApiIdentityProvider } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';

/** A running dev Workload API server and the providers made on it. */
export interface WorkloadApiWorld<Name extends string> {
  /** The temp state directory (CA files, sockets); removed by {@link WorkloadApiWorld.close}. */
  readonly dir: string;
  readonly dev: DevWorkloadApiServer;
  /** A provider on `name`'s socket, closed by {@link WorkloadApiWorld.close}. */
  provider(name: Name): Promise<WorkloadApiIdentityProvider>;
  /** Closes the providers, then the server, then removes the directory. */
  close(): Promise<void>;
}

/**
 * Starts a dev Workload API server for `workloads` (name → SPIFFE ID, or null
 * for a socket with no identity) in a fresh temp directory.
 */
export async function startWorkloadApi<Name extends string>(options: {
  trustDomain: string;
  workloads: Record<Name, string | null>;
  /** X.509-SVID lifetime (server default when omitted). */
  ttlSeconds?: number | undefined;
  logger: Logger;
}): Promise<WorkloadApiWorld<Name>> {
  const dir = await mkdtemp(join(tmpdir(), 'weave-workload-api-'));
  const dev = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: options.trustDomain,
    workloads: options.workloads,
    ...(options.ttlSeconds ? { x509SvidTtlSeconds: options.ttlSeconds } : {}),
    logger: options.logger,
  });
  const providers: WorkloadApiIdentityProvider[] = [];
  return {
    dir,
    dev,
    async provider(name) {
      const p = await WorkloadApiIdentityProvider.create({
        address: dev.address(name),
        logger: options.logger,
      });
      providers.push(p);
      return p;
    },
    async close() {
      await Promise.all(providers.map((p) => p.close()));
      await dev.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
