import type { Command } from 'commander';
import type { AuditRecord, AuthzDecision } from '@weave/authz';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface CheckOptions extends GlobalOptions {
  direction: string;
  json?: boolean;
}

/** `weave authz check <policy> <caller> <callee> <action>`: one decision of a policy file. */
export function authzCommand(program: Command, io: Io, setExitCode: (code: number) => void): void {
  const authz = program.command('authz').summary('work with Weave policy files');
  authz
    .command('check')
    .summary('decide one call against a policy file')
    .description(
      'Asks a Weave policy file (YAML or JSON, default deny) whether <caller> may invoke <action> ' +
        'on <callee>, exactly as an agent would before calling (outbound) or on receipt (inbound). ' +
        'Prints ALLOW or DENY with the deciding rule and reason.\n\n' +
        'Exit codes: 0 allow, 1 deny, 2 invalid policy file, SPIFFE ID or arguments.',
    )
    .argument('<policy>', 'policy file')
    .argument('<caller>', 'SPIFFE ID of the caller')
    .argument('<callee>', 'SPIFFE ID of the agent being called')
    .argument('<action>', 'the capability (A2A skill id)')
    .option('--direction <dir>', 'outbound (the caller checks) or inbound (the callee checks)', 'outbound')
    .option('--json', 'print the decision as JSON')
    .action(
      async (
        policy: string,
        callerArg: string,
        calleeArg: string,
        action: string,
        _o: CheckOptions,
        cmd: Command,
      ) => {
        const opts = cmd.optsWithGlobals<CheckOptions>();
        const { LocalPolicyEnforcer } = await import('@weave/authz');
        const { asUsage, cliLogger, parseIdArg, usageError } = await import('../shared.js');
        if (opts.direction !== 'outbound' && opts.direction !== 'inbound') {
          throw usageError(`--direction must be outbound or inbound, got ${JSON.stringify(opts.direction)}`);
        }
        if (action.trim() === '') throw usageError('<action> must not be empty');
        const caller = parseIdArg(callerArg);
        const callee = parseIdArg(calleeArg);
        const records: AuditRecord[] = [];
        const enforcer = await asUsage(() =>
          LocalPolicyEnforcer.fromFile(policy, {
            watch: false,
            audit: { record: (r) => void records.push(r) },
            logger: cliLogger(opts.debug),
          }),
        );
        let d: AuthzDecision;
        try {
          d =
            opts.direction === 'outbound'
              ? await enforcer.checkOutbound({ caller, callee, action })
              : await enforcer.checkInbound({ caller, callee, action });
        } finally {
          await enforcer.close();
        }
        if (opts.json) {
          io.out(
            printable(
              JSON.stringify(
                {
                  decision: d.allowed ? 'allow' : 'deny',
                  ruleId: d.ruleId ?? null,
                  reason: d.reason,
                  policyId: d.policyId ?? null,
                  direction: opts.direction,
                  caller: caller.toString(),
                  callee: callee.toString(),
                  action,
                  auditId: d.auditId,
                },
                null,
                2,
              ),
              { lines: true },
            ),
          );
        } else {
          io.out(
            printable(
              `${d.allowed ? 'ALLOW' : 'DENY'}  ${caller.toString()} → ${callee.toString()}  ${action}`,
            ),
          );
          // Rule ids, reasons and policy ids are the policy file's (or OPA's) words.
          io.out(printable(`  rule:    ${d.ruleId ?? '(none)'}`));
          io.out(printable(`  reason:  ${d.reason}`));
          io.out(printable(`  policy:  ${d.policyId ?? '(unknown)'} (${opts.direction})`));
        }
        setExitCode(d.allowed ? 0 : 1);
      },
    );
}
