import type { Command } from 'commander';
import type { SpiffeId } from '@weave/identity';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface CardOptions extends GlobalOptions {
  socket?: string;
  expect?: string;
  json?: boolean;
  timeout: string;
  signature: string;
}

/** `weave card <url>`: an agent card fetched over mutual TLS. */
export function cardCommand(program: Command, io: Io): void {
  program
    .command('card')
    .summary("fetch an agent's A2A card over mutual TLS")
    .description(
      "Fetches <url>/.well-known/agent-card.json over mutual TLS, presenting this process's SVID from " +
        "the Workload API. The server's chain must verify against the bundle of its own trust domain " +
        '(and, with --expect, carry exactly that SPIFFE ID); its SPIFFE ID is printed before the card. ' +
        "The card's signature (A2A §8.4) must be made by the SVID of the SPIFFE ID the card declares, " +
        'with a chain that verifies against the trust bundle, and that ID must be the one the server proved ' +
        '(--signature if-present accepts an unsigned card but never a bad signature; off skips the check).',
    )
    .argument('<url>', 'base URL of the agent, https://host:port')
    .option('--socket <address>', 'Workload API address (default $SPIFFE_ENDPOINT_SOCKET)')
    .option('--expect <spiffe-id>', 'accept only a server with this SPIFFE ID')
    .option('--json', 'print {"peer": …, "signature": …, "card": …} as JSON')
    .option('--timeout <duration>', 'connect, request and Workload API timeout', '10s')
    .option('--signature <policy>', 'card signature policy: required, if-present or off', 'required')
    .action(async (urlArg: string, _o: CardOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<CardOptions>();
      const { CardSignaturePolicySchema, DiscoveryClient, agentSpiffeId, verifyAgentCard } =
        await import('@weave/a2a');
      const { authorizeAny } = await import('@weave/identity');
      const { SecureChannel, TRANSPORT_TIMEOUT_LIMITS_MS: limits } = await import('@weave/transport');
      const { CliError, cliLogger, httpsUrl, openIdentity, parseDuration, parseIdArg, usageError } =
        await import('../shared.js');
      const url = httpsUrl(urlArg, 'the agent URL');
      // One budget for connect and request: the request's limit bounds it, the connect limit caps its part.
      const timeoutMs = parseDuration(opts.timeout, '--timeout', limits.requestTimeoutMs);
      const expected = opts.expect !== undefined ? parseIdArg(opts.expect) : undefined;
      const policy = CardSignaturePolicySchema.safeParse(opts.signature);
      if (!policy.success) {
        throw usageError(`--signature must be required, if-present or off, got ${opts.signature}`);
      }
      const identity = await openIdentity(opts.socket, timeoutMs, cliLogger(opts.debug));
      const channel = new SecureChannel(identity, expected ?? authorizeAny(), {
        connectTimeoutMs: Math.min(timeoutMs, limits.connectTimeoutMs),
        requestTimeoutMs: timeoutMs,
        circuitBreaker: false,
        retry: { retries: 0 },
      });
      let peer: SpiffeId | undefined;
      channel.onPeerVerified((e) => {
        peer = e.peer;
      });
      try {
        const card = await new DiscoveryClient({ dispatcher: channel, timeoutMs }).discover(url);
        if (!peer) throw new CliError('PEER_UNKNOWN', 'the connection reported no verified peer');
        const claimed = agentSpiffeId(card);
        if (claimed !== undefined && claimed !== peer.toString()) {
          throw new CliError(
            'CARD_IDENTITY_MISMATCH',
            `the card claims ${printable(claimed)} but the server proved ${peer.toString()}`,
          );
        }
        // The signer must be the ID the card declares and the server proved (a replayed card fails).
        const v = await verifyAgentCard(card, { policy: policy.data, bundles: identity, tlsPeer: peer });
        const signature =
          v.status === 'verified'
            ? `verified (${v.alg}, ${v.via === 'x5c' ? `X.509-SVID of ${v.spiffeId?.toString()}` : `key ${v.kid}`})`
            : v.status === 'unsigned'
              ? 'none (accepted: --signature if-present)'
              : 'not checked (--signature off)';
        if (opts.json) {
          io.out(
            printable(JSON.stringify({ peer: peer.toString(), signature, card }, null, 2), { lines: true }),
          );
          return;
        }
        // The card is the peer's: JSON escapes its C0 controls, not C1 or bidi ones, and `kid` is its word too.
        io.out(`peer: ${peer.toString()} (mTLS verified against the bundle of ${peer.trustDomain.name})`);
        io.out(`signature: ${printable(signature)}`);
        io.out(printable(JSON.stringify(card, null, 2), { lines: true }));
      } finally {
        await channel.close();
        await identity.close();
      }
    });
}
