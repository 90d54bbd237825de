import { isIPv4, isIPv6 } from 'node:net';
import { WorkloadApiAddressError } from './errors.js';

/** The environment variable that holds the default Workload API address. */
export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

/** Linux `sun_path` holds 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;

/** A validated Workload API endpoint. */
export type WorkloadApiAddress =
  | {
      readonly network: 'unix';
      /** The address as given, e.g. `unix:///tmp/spire-agent/public/api.sock`. */
      readonly uri: string;
      /** The absolute socket path. */
      readonly path: string;
      /** The target string to hand to @grpc/grpc-js. */
      readonly grpcTarget: string;
    }
  | {
      readonly network: 'tcp';
      readonly uri: string;
      /** The IP address (IPv6 without brackets). */
      readonly host: string;
      readonly port: number;
      readonly grpcTarget: string;
    };

function fail(address: string, reason: string): never {
  throw new WorkloadApiAddressError(address, reason);
}

/**
 * Parses a Workload API address. Only `unix:///absolute/path` and
 * `tcp://IP:PORT` are accepted (as go-spiffe does; no host names, user info,
 * query, fragment or path on tcp). grpc-js has no `tcp` scheme, so a tcp
 * address becomes an `ipv4:`/`ipv6:` target, which also avoids any DNS lookup.
 *
 * @throws {WorkloadApiAddressError} naming what is wrong.
 */
export function parseWorkloadApiAddress(address: string): WorkloadApiAddress {
  if (typeof address !== 'string' || address.length === 0) fail(String(address ?? ''), 'address is empty');
  // Whitespace or control characters would otherwise reach the socket path verbatim.
  if ([...address].some((ch) => ch.charCodeAt(0) <= 0x20 || ch.charCodeAt(0) === 0x7f || /\s/.test(ch))) {
    fail(address, 'must not contain whitespace or control characters');
  }
  const colon = address.indexOf(':');
  if (colon <= 0) fail(address, 'must be a URI with a "unix" or "tcp" scheme');
  const scheme = address.slice(0, colon);
  if (scheme !== 'unix' && scheme !== 'tcp') {
    fail(address, `scheme ${JSON.stringify(scheme)} is not supported; use "unix" or "tcp"`);
  }
  if (!address.startsWith(`${scheme}://`)) {
    fail(address, `${scheme} address must start with "${scheme}://" (opaque URIs are not accepted)`);
  }
  if (address.includes('?')) fail(address, `${scheme} address must not include query values`);
  if (address.includes('#')) fail(address, `${scheme} address must not include a fragment`);
  if (address.includes('%')) fail(address, `${scheme} address must not be percent-encoded`);
  const rest = address.slice(scheme.length + 3);

  if (scheme === 'unix') {
    if (!rest.startsWith('/')) {
      fail(
        address,
        'unix address must have an empty host and an absolute path, e.g. unix:///run/spire/api.sock',
      );
    }
    if (rest === '/' || rest.endsWith('/'))
      fail(address, 'unix address must name a socket file, not a directory');
    if (Buffer.byteLength(rest) > MAX_UNIX_PATH_BYTES) {
      fail(address, `unix socket path is longer than ${MAX_UNIX_PATH_BYTES} bytes`);
    }
    return { network: 'unix', uri: address, path: rest, grpcTarget: `unix://${rest}` };
  }

  if (rest.length === 0) fail(address, 'tcp address must include a host');
  if (rest.includes('@')) fail(address, 'tcp address must not include user info');
  if (rest.includes('/')) fail(address, 'tcp address must not include a path');
  let host: string;
  let portText: string;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close === -1) fail(address, 'tcp address has an unterminated IPv6 literal');
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (!after.startsWith(':')) fail(address, 'tcp address host component must include a port');
    portText = after.slice(1);
    if (!isIPv6(host)) fail(address, 'tcp address host component must be an IP:port');
  } else {
    const last = rest.lastIndexOf(':');
    if (last === -1) {
      if (!isIPv4(rest)) fail(address, 'tcp address host component must be an IP:port');
      fail(address, 'tcp address host component must include a port');
    }
    host = rest.slice(0, last);
    portText = rest.slice(last + 1);
    if (!isIPv4(host))
      fail(address, 'tcp address host component must be an IP:port (host names are not accepted)');
  }
  if (!/^[0-9]{1,5}$/.test(portText)) fail(address, 'tcp address host component must include a numeric port');
  const port = Number(portText);
  if (port < 1 || port > 65535) fail(address, 'tcp port must be between 1 and 65535');
  const grpcTarget = isIPv6(host) ? `ipv6:[${host}]:${port}` : `ipv4:${host}:${port}`;
  return { network: 'tcp', uri: address, host, port, grpcTarget };
}

/**
 * Picks the Workload API address: the explicit option if given, else
 * `SPIFFE_ENDPOINT_SOCKET` from `env`.
 *
 * @throws {WorkloadApiAddressError} when neither is set or the value is malformed.
 */
export function resolveWorkloadApiAddress(
  address?: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
): WorkloadApiAddress {
  const chosen = address ?? env[SPIFFE_ENDPOINT_SOCKET];
  if (chosen === undefined) {
    throw new WorkloadApiAddressError(
      '',
      `no Workload API address: pass the "address" option or set ${SPIFFE_ENDPOINT_SOCKET}`,
    );
  }
  return parseWorkloadApiAddress(chosen);
}
