import { existsSync } from 'node:fs';
import { connect } from 'node:tls';
import { pino, type Logger } from 'pino';
import type { AgentConfig } from '@weave/agent';
import {
  SPIFFE_ENDPOINT_SOCKET,
  SpiffeId,
  formatKeyPath,
  lineCol,
  scanJson,
  WeaveError,
  WorkloadApiAddressError,
  parseWorkloadApiAddress,
  type IdentityProvider,
  type WorkloadApiAddress,
} from '@weave/identity';
import { EXIT } from './exit.js';

export { EXIT };

/**
 * A failure the CLI reports as `code: message`. `exitCode` 2 marks a usage
 * problem (bad argument, bad policy or ID); 1 an operation that failed or was denied.
 */
export class CliError extends WeaveError {
  readonly exitCode: number;
  constructor(code: string, message: string, exitCode: number = EXIT.failed, options?: { cause?: unknown }) {
    super(code, message, options);
    this.exitCode = exitCode;
  }
}

/** Socket errors of a connection that was never made (before any TLS). */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);

/** A bad command line. */
export function usageError(message: string, code = 'USAGE'): CliError {
  return new CliError(code, message, EXIT.usage);
}

/**
 * Runs `fn`; a WeaveError it throws or rejects with (bad ID, bad policy …)
 * becomes a usage error with the same code. With `codes`, only those codes.
 */
export function asUsage<T>(fn: () => T, codes?: readonly string[]): T {
  const convert = (err: unknown): never => {
    if (err instanceof WeaveError && !(err instanceof CliError) && (!codes || codes.includes(err.code))) {
      throw new CliError(err.code, err.message, EXIT.usage, { cause: err });
    }
    throw err;
  };
  try {
    const out = fn();
    if (out instanceof Promise) return out.catch(convert) as T;
    return out;
  } catch (err) {
    return convert(err);
  }
}

/**
 * Loads an agent config file as the agent loads it, for every command that
 * reads one (`weave validate`, `weave call --config`). A file it refuses
 * (`AGENT_CONFIG_INVALID`, an unreadable one included, or
 * `AGENT_CONFIG_INSECURE`) exits 1 with its every problem, the same in every
 * command: it is the file that is wrong, not the command line. A bad policy
 * file the config names is still a usage error, checked where it is loaded.
 */
export async function loadConfigFile(
  file: string,
  options: { readonly checkDatabaseUrl?: boolean } = {},
): Promise<AgentConfig> {
  const { loadAgentConfig, AgentConfigError } = await import('@weave/agent');
  try {
    return await loadAgentConfig(file, process.env, options);
  } catch (err) {
    if (err instanceof AgentConfigError) throw new CliError(err.code, err.message, EXIT.failed);
    throw err;
  }
}

/** Options every command sees (declared on the root program). */
export interface GlobalOptions {
  readonly debug?: boolean;
}

/** Library logs go to stderr, quiet unless `--debug`, so stdout stays parseable. */
export function cliLogger(debug: boolean | undefined): Logger {
  return pino({ level: debug ? 'debug' : 'error' }, pino.destination({ dest: 2, sync: true }));
}

/**
 * `1500ms`, `30s`, `5m`, `1h`, or a bare number of seconds → milliseconds,
 * at most `max` ms when given (a usage error above it, rather than a
 * configuration error of a layer below once the command has started).
 */
export function parseDuration(text: string, what: string, max?: number): number {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw usageError(`${what} must be a duration like 30s, 5m or 1h, got ${JSON.stringify(text)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  if (ms <= 0) throw usageError(`${what} must be greater than zero`);
  if (max !== undefined && ms > max) {
    throw usageError(`${what} must be at most ${humanDuration(max)}, got ${JSON.stringify(text)}`);
  }
  return ms;
}

/** `ms` in the largest unit {@link parseDuration} takes that divides it: `1h`, `10m`, `90s`, `1500ms`. */
function humanDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Parses a SPIFFE ID given on the command line (exit 2 when invalid). */
export function parseIdArg(text: string): SpiffeId {
  return asUsage(() => SpiffeId.parse(text));
}

/**
 * Parses the JSON given on the command line (exit 2 when invalid). A key
 * written twice in one object is refused too: `JSON.parse` alone would send
 * the last one and drop the first without a word.
 */
export function parseJsonArg(text: string, what: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw usageError(`${what} is not valid JSON: ${(err as Error).message}`, 'INVALID_JSON');
  }
  const dup = scanJson(text);
  if (dup) {
    const { line, col } = lineCol(text, dup.offset);
    throw usageError(
      `${what} has the key ${JSON.stringify(dup.key)} twice in one object, at ${formatKeyPath(dup.path)} ` +
        `(line ${line}, column ${col})`,
      'INVALID_JSON',
    );
  }
  return value;
}

/**
 * Connects to the Workload API at `socket` (default `SPIFFE_ENDPOINT_SOCKET`)
 * and waits for this process's X.509-SVID, as an agent with that socket in
 * its config would.
 */
export async function openIdentity(
  socket: string | undefined,
  timeoutMs: number,
  logger: Logger,
): Promise<IdentityProvider> {
  if (socket === undefined && !process.env[SPIFFE_ENDPOINT_SOCKET]) {
    throw usageError(
      `no Workload API socket: pass --socket unix:///path/to/api.sock or set ${SPIFFE_ENDPOINT_SOCKET}`,
      'NO_WORKLOAD_API_SOCKET',
    );
  }
  const address = socket ?? (process.env[SPIFFE_ENDPOINT_SOCKET] as string);
  let parsed: WorkloadApiAddress;
  try {
    parsed = parseWorkloadApiAddress(address);
  } catch (err) {
    if (err instanceof WorkloadApiAddressError) throw new CliError(err.code, err.message, EXIT.usage);
    throw err;
  }
  // The provider waits up to readyTimeoutMs for a Workload API that is not
  // there yet (right for an agent started before its SPIRE agent). A one-shot
  // command pointed at a path where no socket exists fails at once instead,
  // as `weave svid` does.
  if (parsed.network === 'unix' && !existsSync(parsed.path)) {
    throw new CliError(
      'WORKLOAD_API_UNAVAILABLE',
      `no Workload API socket at ${parsed.path} (nothing exists at that path; check --socket or ${SPIFFE_ENDPOINT_SOCKET})`,
    );
  }
  const { identityFromConfig } = await import('@weave/agent');
  try {
    return await identityFromConfig(
      socket === undefined ? undefined : { workloadApi: { socket, timeoutMs } },
      {
        logger,
        readyTimeoutMs: timeoutMs,
      },
    );
  } catch (err) {
    if (err instanceof WorkloadApiAddressError) throw new CliError(err.code, err.message, EXIT.usage);
    throw err;
  }
}

/** `--peer id=url`, repeatable: the static address book of `weave call`. */
export function parsePeers(values: readonly string[]): Map<string, string> {
  const peers = new Map<string, string>();
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw usageError(`--peer ${JSON.stringify(v)} must be SPIFFE_ID=URL`);
    const id = parseIdArg(v.slice(0, eq)).toString();
    peers.set(id, httpsUrl(v.slice(eq + 1), '--peer URL'));
  }
  return peers;
}

/** Accepts only https URLs: every Weave connection is mutual TLS. */
export function httpsUrl(text: string, what: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw usageError(`${what} ${JSON.stringify(text)} is not a URL`, 'INVALID_URL');
  }
  if (url.protocol !== 'https:') {
    throw usageError(`${what} must be https:// (Weave only speaks mutual TLS), got ${text}`, 'INSECURE_URL');
  }
  return url.toString();
}

/**
 * Learns who serves `url` from a TLS handshake alone, made with the TLS
 * settings and SPIFFE verification of a `SecureChannel` that accepts any
 * peer whose chain verifies against the bundle of its own trust domain. No
 * request byte is sent, so an outbound policy check can run on the verified
 * ID before the call.
 */
export async function probePeerId(
  identity: IdentityProvider,
  url: string,
  timeoutMs: number,
): Promise<SpiffeId> {
  const { SecureChannel, TRANSPORT_TIMEOUT_LIMITS_MS } = await import('@weave/transport');
  const u = new URL(url);
  const channel = new SecureChannel(identity, () => ({ ok: true }), {
    connectTimeoutMs: Math.min(timeoutMs, TRANSPORT_TIMEOUT_LIMITS_MS.connectTimeoutMs),
    retry: { retries: 0 },
    circuitBreaker: false,
  });
  let verified: SpiffeId | undefined;
  channel.onPeerVerified((e) => {
    verified = e.peer;
  });
  try {
    const tlsOptions = channel.tlsClientOptions();
    return await new Promise<SpiffeId>((resolve, reject) => {
      const socket = connect({
        ...tlsOptions,
        host: u.hostname.replace(/^\[|\]$/g, ''),
        port: Number(u.port || 443),
        ALPNProtocols: ['http/1.1'],
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new CliError('PEER_PROBE_TIMEOUT', `no TLS handshake with ${url} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        // Closed, not destroyed: the agent's side of a TLS 1.3 handshake ends after ours, and a
        // reset now would reach it first, logged there as a refused handshake. A peer that does
        // not close its side in a second is cut.
        socket.end();
        setTimeout(() => socket.destroy(), 1000).unref();
        // The channel's check ran during the handshake and reported the verified peer.
        if (verified) resolve(verified);
        else reject(new CliError('PEER_VERIFICATION_FAILED', `TLS handshake with ${url} verified no peer`));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        // No connection at all (nothing listening, no route, no such host) is not a
        // peer that failed verification: an agent that is down must not read as an impostor.
        if (err.code !== undefined && UNREACHABLE.has(err.code)) {
          reject(
            new CliError('AGENT_UNREACHABLE', `cannot connect to ${url}: ${err.message}`, EXIT.failed, {
              cause: err,
            }),
          );
          return;
        }
        // OpenSSL's words for a server that answered in plain text.
        const notTls = /wrong version number|packet length too long|http request/i.test(err.message);
        reject(
          new CliError(
            'PEER_VERIFICATION_FAILED',
            notTls
              ? `${url} does not speak TLS (a plain http server?): ${err.message}`
              : `TLS handshake with ${url} failed: ${err.message}`,
            EXIT.failed,
            { cause: err },
          ),
        );
      });
    });
  } finally {
    await channel.close();
  }
}
