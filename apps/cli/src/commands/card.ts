import type { Command } from 'commander';
import type { SpiffeId } from '@weave/identity';
import type { GlobalOptions } from '../shared.js';
import type { Io } from '../io.js';

interface CardOptions extends GlobalOptions {
  socket?: string;
  expect?: string;
  json?: boolean;
  timeout: string;
}

/** `weave card <url>`: an agent card fetched over mutual TLS. */
export function cardCommand(program: Command, io: Io): void {
  program
    .command('card')
    .summary("fetch an agent's A2A card over mutual TLS")
    .description(
      "Fetches <url>/.well-known/agent-card.json over mutual TLS, presenting this process's SVID from " +
        "the Workload API. The server's chain must verify against the bundle of its own trust domain " +
        '(and, with --expect, carry exactly that SPIFFE ID); its SPIFFE ID is printed before the card.',
    )
    .argument('<url>', 'base URL of the agent, https://host:port')
    .option('--socket <address>', 'Workload API address (default $SPIFFE_ENDPOINT_SOCKET)')
    .option('--expect <spiffe-id>', 'accept only a server with this SPIFFE ID')
    .option('--json', 'print {"peer": …, "card": …} as JSON')
    .option('--timeout <duration>', 'connect, request and Workload API timeout', '10s')
    .action(async (urlArg: string, _o: CardOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<CardOptions>();
      const { DiscoveryClient, agentSpiffeId } = await import('@weave/a2a');
      const { authorizeAny } = await import('@weave/identity');
      const { SecureChannel } = await import('@weave/transport');
      const { CliError, cliLogger, httpsUrl, openIdentity, parseDuration, parseIdArg } =
        await import('../shared.js');
      const url = httpsUrl(urlArg, 'the agent URL');
      const timeoutMs = parseDuration(opts.timeout, '--timeout');
      const expected = opts.expect !== undefined ? parseIdArg(opts.expect) : undefined;
      const identity = await openIdentity(opts.socket, timeoutMs, cliLogger(opts.debug));
      const channel = new SecureChannel(identity, expected ?? authorizeAny(), {
        connectTimeoutMs: timeoutMs,
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
            `the card claims ${claimed} but the server proved ${peer.toString()}`,
          );
        }
        if (opts.json) {
          io.out(JSON.stringify({ peer: peer.toString(), card }, null, 2));
          return;
        }
        io.out(`peer: ${peer.toString()} (mTLS verified against the bundle of ${peer.trustDomain.name})`);
        io.out(JSON.stringify(card, null, 2));
      } finally {
        await channel.close();
        await identity.close();
      }
    });
}
