import { constants } from 'node:os';
import type { Command } from 'commander';
import type { Task } from '@weave/a2a';
import type { AuditRecord, PolicyEnforcer } from '@weave/authz';
import type { SpiffeId } from '@weave/identity';
import type { SecureChannel } from '@weave/transport';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface CallOptions extends GlobalOptions {
  socket?: string;
  policy?: string;
  config?: string;
  peer?: string[];
  stream?: boolean;
  timeout: string;
}

/** How long a CancelTask sent after SIGINT/SIGTERM may take: best effort, the user asked to stop. */
const CANCEL_TIMEOUT_MS = 2000;

/** `weave call <spiffe-id|url> <capability> <json>`: one A2A task over mutual TLS. */
export function callCommand(program: Command, io: Io): void {
  program
    .command('call')
    .summary("invoke an agent's capability over mutual TLS")
    .description(
      'Runs <capability> on an agent with <json> as input, as this process (SVID from the Workload ' +
        'API). The target is a SPIFFE ID (its URL from --peer) or an https URL (its SPIFFE ID from ' +
        "--peer, or else learned from the server's verified certificate in a TLS handshake that sends " +
        'no request). With --policy the outbound check runs before anything is sent; a denial exits 1 ' +
        'with the reason. The connection only talks to a server proving that SPIFFE ID. Prints the ' +
        'result (JSON for data, text for text) on stdout; decisions and progress go to stderr.',
    )
    .argument('<target>', 'spiffe://… ID of the agent, or its https:// URL')
    .argument('<capability>', 'the capability (A2A skill id) to invoke')
    .argument('<json>', 'input as JSON, e.g. \'{"query":"mTLS"}\'')
    .option('--socket <address>', 'Workload API address (default $SPIFFE_ENDPOINT_SOCKET)')
    .option('--policy <file>', 'check the call against this Weave policy file first')
    .option(
      '--config <agent.yaml>',
      'call as the agent this config describes: its Workload API socket, peers, policy (file or OPA) and pinned SPIFFE ID; --socket, --peer and --policy override',
    )
    .option(
      '--peer <spiffe-id=url>',
      'where an agent listens (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option('--stream', 'stream the task, printing progress on stderr')
    .option(
      '--timeout <duration>',
      'time budget of the whole command: Workload API, handshake, card, call and result',
      '30s',
    )
    .addHelpText(
      'after',
      `
Examples:
  $ weave call spiffe://demo.weave/agent/search search '{"query":"mTLS"}' \\
      --peer spiffe://demo.weave/agent/search=https://127.0.0.1:8443 --policy policy.yaml
  $ weave call https://127.0.0.1:8443 search '{"query":"mTLS"}'
  $ weave call spiffe://demo.weave/agent/summarizer summarize '{"texts":[{"title":"ping","text":"Hello."}]}' --config orchestrator.yaml`,
    )
    .action(async (target: string, capability: string, jsonArg: string, _o: CallOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<CallOptions>();
      const { A2AClient, A2AError } = await import('@weave/a2a');
      const { render, resultOf, textOf, toPayload } = await import('../task-result.js');
      const { DEADLINE_HEADER, enforcerFromConfig, injectTraceHeaders, outgoingTraceContext } =
        await import('@weave/agent');
      const { SecureChannel, TRANSPORT_TIMEOUT_LIMITS_MS: limits } = await import('@weave/transport');
      const {
        CliError,
        EXIT,
        asUsage,
        cliLogger,
        httpsUrl,
        loadConfigFile,
        openIdentity,
        parseDuration,
        parseIdArg,
        parseJsonArg,
        parsePeers,
        probePeerId,
        usageError,
      } = await import('../shared.js');
      const timeoutMs = parseDuration(opts.timeout, '--timeout', limits.requestTimeoutMs);
      // One budget for every step, so --timeout bounds what the user waits, not each step apart.
      const deadline = Date.now() + timeoutMs;
      const left = () => Math.max(1, deadline - Date.now());
      const input = parseJsonArg(jsonArg, '<json>');
      // A config file the agent would refuse exits 1, as `weave validate` of that file does.
      const config = opts.config !== undefined ? await loadConfigFile(opts.config) : undefined;
      const peers = parsePeers(opts.peer ?? []);
      for (const p of config?.peers ?? []) {
        const id = parseIdArg(p.id).toString();
        if (!peers.has(id)) peers.set(id, httpsUrl(p.url, `${opts.config} peers`));
      }
      let socket = opts.socket;
      if (socket === undefined && config?.identity) {
        if (!('workloadApi' in config.identity)) {
          throw usageError(
            `${opts.config}: the CLI takes its identity from a Workload API, not static files; pass --socket`,
            'UNSUPPORTED_IDENTITY',
          );
        }
        socket = config.identity.workloadApi.socket;
      }
      let calleeId: SpiffeId | undefined;
      let url: string;
      if (target.startsWith('spiffe://')) {
        calleeId = parseIdArg(target);
        const known = peers.get(calleeId.toString());
        if (known === undefined) {
          throw usageError(
            `no URL known for ${calleeId.toString()}: add --peer ${calleeId.toString()}=https://host:port`,
            'PEER_UNKNOWN',
          );
        }
        url = known;
      } else {
        url = httpsUrl(target, '<target>');
        for (const [id, u] of peers) if (u === url) calleeId = parseIdArg(id);
      }
      // Load the policy before touching the network: a bad file is a usage error, not a call.
      const audit: AuditRecord[] = [];
      const sink = { record: (r: AuditRecord) => void audit.push(r) };
      // A config file always has an authz section (loadAgentConfig refuses one without); --policy replaces it.
      const authz = opts.policy !== undefined ? { policyFile: opts.policy } : config?.authz;
      const enforcer: PolicyEnforcer | undefined = authz
        ? await asUsage(() =>
            enforcerFromConfig(authz, { logger: cliLogger(opts.debug), audit: sink, watch: false }),
          )
        : undefined;
      const identity = await openIdentity(socket, left(), cliLogger(opts.debug));
      let channel: SecureChannel | undefined;
      let stopListening: (() => void) | undefined;
      try {
        if (config?.spiffeId !== undefined && identity.id.toString() !== config.spiffeId) {
          throw new CliError(
            'IDENTITY_MISMATCH',
            `${opts.config} is the config of ${config.spiffeId}, but the Workload API serves ${identity.id.toString()}`,
            EXIT.failed,
          );
        }
        calleeId ??= await probePeerId(identity, url, left());
        if (enforcer) {
          const d = await enforcer.checkOutbound({
            caller: identity.id,
            callee: calleeId,
            action: capability,
          });
          const verdict = `${d.allowed ? 'ALLOW' : 'DENY'}${d.ruleId ? ` by rule ${d.ruleId}` : ''}`;
          io.err(printable(`policy: ${verdict} (${d.reason}; audit ${d.auditId})`));
          if (!d.allowed) {
            throw new CliError(
              'CALL_DENIED', // the code SecureAgent.callAgent uses for an outbound denial
              `${identity.id.toString()} may not call ${capability} on ${calleeId.toString()}: ${printable(d.reason)}`,
            );
          }
        }
        io.err(printable(`${identity.id.toString()} → ${calleeId.toString()} at ${url}: ${capability}`));
        channel = new SecureChannel(identity, calleeId, {
          connectTimeoutMs: Math.min(left(), limits.connectTimeoutMs),
          requestTimeoutMs: left(),
          circuitBreaker: false,
        });
        const client = new A2AClient({ dispatcher: channel, timeoutMs: left() });
        // The deadline and a trace context, as SecureAgent.callAgent sends them: a Weave callee
        // aborts its handler at the deadline instead of running on (up to its maxTaskMs) after
        // this command gave up, and its logs carry the trace id.
        const headers = injectTraceHeaders(outgoingTraceContext(), { [DEADLINE_HEADER]: String(deadline) });
        // Ctrl-C (or SIGTERM) stops the call rather than the process, so the callee's task can be
        // canceled: killed outright, the command would leave it running. Installed only now: before
        // this point nothing runs remotely, and the default (die at once) is what the user wants.
        const interrupt = new AbortController();
        const onSignal = (s: NodeJS.Signals): void => interrupt.abort(s);
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        stopListening = () => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        };
        const signal = AbortSignal.any([AbortSignal.timeout(left()), interrupt.signal]);
        const payload = toPayload(input);
        let task: Task;
        // The streamed task's id once an event named it: what a signal cancels.
        let taskId: string | undefined;
        try {
          if (opts.stream) {
            for await (const e of client.streamTaskUpdates(url, capability, payload, { signal, headers })) {
              if ('task' in e) taskId = e.task.id;
              if ('artifactUpdate' in e) taskId = e.artifactUpdate.taskId;
              if ('statusUpdate' in e) {
                taskId = e.statusUpdate.taskId;
                const text = textOf(e.statusUpdate.status.message?.parts ?? []);
                const state = e.statusUpdate.status.state.replace('TASK_STATE_', '').toLowerCase();
                // The peer's words, one line each: a status message must not rewrite what was printed.
                io.err(printable(`  … ${state}${text ? `: ${text}` : ''}`));
              }
              if ('message' in e) {
                io.out(printable(render(e.message.parts), { lines: true }));
                return;
              }
            }
            if (taskId === undefined)
              throw new CliError('CALL_FAILED', 'the stream ended before a task began');
            task = await client.getTask(url, taskId, undefined, { signal, headers });
          } else {
            task = await client.sendTask(url, capability, payload, { signal, headers });
          }
        } catch (err) {
          if (interrupt.signal.aborted) {
            const by = interrupt.signal.reason as NodeJS.Signals;
            // Closing the request does not cancel an A2A task (§3.1.6): say so to the callee.
            // A unary call learns its task's id only from the answer; that task ends at the deadline.
            let outcome =
              'no task id yet (a unary call learns it from the answer): a Weave callee ends the task at the deadline';
            if (taskId !== undefined) {
              outcome = await client
                .cancelTask(url, taskId, {
                  headers,
                  signal: AbortSignal.timeout(CANCEL_TIMEOUT_MS),
                  timeoutMs: CANCEL_TIMEOUT_MS,
                })
                .then(
                  (t) =>
                    `CancelTask sent: task ${taskId} is ${t.status.state.replace('TASK_STATE_', '').toLowerCase()}`,
                  (e: unknown) =>
                    `CancelTask of task ${taskId} failed: ${e instanceof Error ? e.message : String(e)}`,
                );
            }
            // 128 + the signal's number, the shell's convention for a command stopped by a signal.
            throw new CliError(
              'CALL_INTERRUPTED',
              printable(`stopped by ${by}; ${outcome}`),
              128 + constants.signals[by],
              { cause: err },
            );
          }
          // The callee's inbound policy refused (A2A PERMISSION_DENIED): reported as
          // SecureAgent.callAgent and WeaveClient report it, CALL_DENIED by the callee.
          if (err instanceof A2AError && err.code === 'PERMISSION_DENIED') {
            const auditId = err.auditId;
            throw new CliError(
              'CALL_DENIED',
              `the callee refused the call (deniedBy: callee${auditId ? `, audit ${printable(auditId)}` : ''}): ${printable(err.message)}`,
              EXIT.failed,
              { cause: err },
            );
          }
          // Any other A2A error from the callee: CALL_FAILED with the wire code, as
          // SecureAgent.callAgent and WeaveClient report it; the A2A error is the cause.
          if (err instanceof A2AError) {
            throw new CliError(
              'CALL_FAILED',
              `the callee answered ${err.jsonRpcCode}: ${printable(err.message)}`,
              EXIT.failed,
              { cause: err },
            );
          }
          throw err;
        }
        // Text or JSON the peer chose: its lines kept, its control characters shown, not obeyed.
        io.out(printable(resultOf(task), { lines: true }));
      } finally {
        stopListening?.();
        await channel?.close();
        await identity.close();
        await enforcer?.close?.();
      }
    });
}
