/**
 * Real SPIRE on loopback for interop tests: `spire-server` (SQLite datastore,
 * join-token node attestation, optional federation through its bundle
 * endpoint with the https_spiffe profile) and `spire-agent` (join token, disk
 * key manager so it survives a restart, unix workload attestor), both built by
 * scripts/infra/spire.sh. Everything lives in one temp dir per server.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, removeDir, startService, tempDirFor, type Components, type Service } from './infra.js';

export interface SpireServer {
  readonly trustDomain: string;
  readonly dir: string;
  readonly port: number;
  /** Port of the federation bundle endpoint (https_spiffe). */
  readonly bundleEndpointPort: number;
  readonly service: Service;
  /** Runs `spire-server <args> -socketPath <this server's API socket>` (stdin: `input`); throws on a non-zero exit. */
  cli(args: readonly string[], input?: string): string;
  /** Creates a registration entry; returns its id. */
  createEntry(e: EntrySpec): string;
  /** A one-time join token for an agent; its agent gets `spiffe://<td>/spire/agent/join_token/<token>`. */
  joinToken(): string;
  stop(): Promise<void>;
}

/** One `spire-server entry create`. */
interface EntrySpec {
  readonly parentId: string;
  readonly spiffeId: string;
  /** e.g. `unix:uid:10001` */
  readonly selectors: readonly string[];
  readonly x509SvidTtlSeconds?: number;
  readonly jwtSvidTtlSeconds?: number;
  /** Trust domains whose bundles the workload also gets (`spiffe://partner.test`). */
  readonly federatesWith?: readonly string[];
}

export interface SpireServerOptions {
  readonly bins: Components['spire'];
  readonly trustDomain: string;
  /** Other servers to federate with; their bundle endpoints are read over https_spiffe. */
  readonly federatesWith?: ReadonlyArray<{
    readonly trustDomain: string;
    readonly bundleEndpointPort: number;
  }>;
  /** Pre-chosen ports (needed when two servers federate with each other). */
  readonly port?: number;
  readonly bundleEndpointPort?: number;
}

function run(bin: string, args: readonly string[], input?: string): string {
  const r = spawnSync(bin, args, {
    encoding: 'utf8',
    timeout: 60_000,
    ...(input === undefined ? {} : { input }),
  });
  if (r.status !== 0) {
    throw new Error(
      `${bin.split('/').pop()} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`,
    );
  }
  return r.stdout;
}

/** Starts a SPIRE server and waits until its health check passes. */
export async function startSpireServer(o: SpireServerOptions): Promise<SpireServer> {
  const dir = await tempDirFor(`weave-spire-${o.trustDomain}-`);
  const port = o.port ?? (await freePort());
  const bundleEndpointPort = o.bundleEndpointPort ?? (await freePort());
  const socket = join(dir, 'server.sock');
  const federates = (o.federatesWith ?? [])
    .map(
      (f) => `
    federates_with "${f.trustDomain}" {
      bundle_endpoint_url = "https://127.0.0.1:${f.bundleEndpointPort}"
      bundle_endpoint_profile "https_spiffe" {
        endpoint_spiffe_id = "spiffe://${f.trustDomain}/spire/server"
      }
    }`,
    )
    .join('\n');
  const conf = `
server {
  bind_address = "127.0.0.1"
  bind_port = "${port}"
  socket_path = "${socket}"
  trust_domain = "${o.trustDomain}"
  data_dir = "${join(dir, 'data')}"
  log_level = "WARN"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl = "5m"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = ${bundleEndpointPort}
      refresh_hint = "5s"
    }${federates}
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "${join(dir, 'data', 'datastore.sqlite3')}"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`;
  await writeFile(join(dir, 'server.conf'), conf);
  const cli = (args: readonly string[], input?: string) =>
    run(o.bins.server, [...args, '-socketPath', socket], input);
  const service = await startService({
    name: `spire-server ${o.trustDomain}`,
    command: o.bins.server,
    args: ['run', '-config', join(dir, 'server.conf')],
    ready: () => spawnSync(o.bins.server, ['healthcheck', '-socketPath', socket, '-shallow']).status === 0,
    readyTimeoutMs: 60_000,
  });
  return {
    trustDomain: o.trustDomain,
    dir,
    port,
    bundleEndpointPort,
    service,
    cli,
    createEntry(e) {
      const args = ['entry', 'create', '-parentID', e.parentId, '-spiffeID', e.spiffeId];
      for (const s of e.selectors) args.push('-selector', s);
      if (e.x509SvidTtlSeconds) args.push('-x509SVIDTTL', String(e.x509SvidTtlSeconds));
      if (e.jwtSvidTtlSeconds) args.push('-jwtSVIDTTL', String(e.jwtSvidTtlSeconds));
      for (const td of e.federatesWith ?? []) args.push('-federatesWith', td);
      const out = cli([...args, '-output', 'json']);
      const id = (JSON.parse(out) as { results?: Array<{ entry?: { id?: string } }> }).results?.[0]?.entry
        ?.id;
      if (!id) throw new Error(`entry create printed no id: ${out}`);
      return id;
    },
    joinToken() {
      const m = /Token:\s*(\S+)/.exec(cli(['token', 'generate', '-ttl', '600']));
      if (!m) throw new Error('token generate printed no token');
      return m[1]!;
    },
    stop: async () => {
      await service.stop();
      await removeDir(dir);
    },
  };
}

/**
 * Gives `a` the bundle of `b` and vice versa (`bundle show` | `bundle set`):
 * the https_spiffe profile needs the peer's bundle once, later refreshes come
 * from the bundle endpoints.
 */
export function exchangeBundles(a: SpireServer, b: SpireServer): void {
  for (const [from, to] of [
    [a, b],
    [b, a],
  ] as const) {
    const bundle = from.cli(['bundle', 'show', '-format', 'spiffe']);
    to.cli(['bundle', 'set', '-format', 'spiffe', '-id', `spiffe://${from.trustDomain}`], bundle);
  }
}

export interface SpireAgent {
  /** The Workload API address, `unix:///…/api.sock`. */
  readonly address: string;
  /** `spiffe://<td>/spire/agent/join_token/<token>`: the parent ID of its workloads' entries. */
  readonly agentId: string;
  readonly service: Service;
  stop(): Promise<void>;
}

/**
 * Starts a SPIRE agent attested to `server` with a fresh join token. The disk
 * key manager keeps the agent's own SVID in its data dir, so `service.restart()`
 * comes back without a new token (tokens are single use).
 */
export async function startSpireAgent(
  bins: Components['spire'],
  server: SpireServer,
  name = 'agent',
): Promise<SpireAgent> {
  const token = server.joinToken();
  const dir = join(server.dir, name);
  const socketDir = join(dir, 'public');
  await mkdir(socketDir, { recursive: true });
  // Workloads under other uids must reach the socket.
  await chmod(dir, 0o755);
  await chmod(socketDir, 0o755);
  const bootstrap = join(dir, 'bootstrap.pem');
  await writeFile(bootstrap, server.cli(['bundle', 'show']));
  const socket = join(socketDir, 'api.sock');
  const conf = `
agent {
  data_dir = "${join(dir, 'data')}"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "${server.port}"
  socket_path = "${socket}"
  trust_bundle_path = "${bootstrap}"
  trust_domain = "${server.trustDomain}"
  join_token = "${token}"
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = "${join(dir, 'data')}"
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`;
  await writeFile(join(dir, 'agent.conf'), conf);
  const service = await startService({
    name: `spire-agent ${server.trustDomain}`,
    command: bins.agent,
    args: ['run', '-config', join(dir, 'agent.conf')],
    ready: () => spawnSync(bins.agent, ['healthcheck', '-socketPath', socket]).status === 0,
    readyTimeoutMs: 60_000,
  });
  return {
    address: `unix://${socket}`,
    agentId: `spiffe://${server.trustDomain}/spire/agent/join_token/${token}`,
    service,
    stop: () => service.stop(),
  };
}
