import type { Command } from 'commander';
import type { AgentConfig } from '@weave/agent';
import type { GlobalOptions } from '../shared.js';
import { printable, type Io } from '../io.js';

interface ValidateOptions extends GlobalOptions {
  json?: boolean;
}

/** `weave validate <config>`: an agent config file, checked as the agent would load it. */
export function validateCommand(program: Command, io: Io): void {
  program
    .command('validate')
    .summary('check an agent config file')
    .description(
      'Loads an agent config file (YAML or JSON) exactly as an agent does — WEAVE_* environment ' +
        'overrides applied, every key validated, insecure settings refused — and, when it names a ' +
        'policy file, validates that too, as the database URL of store.postgres when its variable ' +
        'is set. Prints OK and a summary, or every problem (exit 1; a bad policy file is a usage ' +
        'error, exit 2).',
    )
    .argument('<config>', 'agent config file')
    .option('--json', 'print the validated config (defaults filled in) as JSON')
    .action(async (file: string, _o: ValidateOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<ValidateOptions>();
      const { LocalPolicyEnforcer } = await import('@weave/authz');
      const { WeaveError } = await import('@weave/identity');
      const { CliError, EXIT, cliLogger, loadConfigFile } = await import('../shared.js');
      // The database URL too, when this environment has it: an agent started here would read it.
      const config = await loadConfigFile(file, { checkDatabaseUrl: true });
      let policySummary = '';
      if (config.authz && 'policyFile' in config.authz) {
        try {
          const p = await LocalPolicyEnforcer.fromFile(config.authz.policyFile, {
            watch: false,
            logger: cliLogger(opts.debug),
          });
          policySummary = ` (policy ${p.policyId}, ${p.ruleCount} rule${p.ruleCount === 1 ? '' : 's'})`;
          await p.close();
        } catch (err) {
          const code = err instanceof WeaveError ? err.code : 'POLICY_INVALID';
          throw new CliError(code, `${file}: authz.policyFile: ${(err as Error).message}`, EXIT.usage);
        }
      }
      if (opts.json) {
        io.out(printable(JSON.stringify(config, null, 2), { lines: true }));
        return;
      }
      // Names, descriptions, paths and URLs are the file's (or the environment's) words: one line each.
      const say = (text: string): void => io.out(printable(text));
      say(`OK ${file}`);
      say(
        `  agent      ${config.name} ${config.version}${config.description ? ` — ${config.description}` : ''}`,
      );
      say(`  spiffe id  ${config.spiffeId ?? '(whatever the Workload API serves)'}`);
      say(
        `  listens    ${config.server.host}:${config.server.port}${config.server.publicUrl ? ` (public ${config.server.publicUrl})` : ''}`,
      );
      say(`  identity   ${describeIdentity(config)}`);
      say(`  authz      ${describeAuthz(config)}${policySummary}`);
      say(
        `  transport  TLS ≥ ${config.transport.tlsMinVersion.replace('TLSv', '')}, peer verification on, ${config.transport.retries} retries`,
      );
      io.out(
        `  peers      ${config.peers.length === 0 ? '(none)' : config.peers.map((p) => printable(`${p.id} at ${p.url}`)).join('\n             ')}`,
      );
      say(`  tasks      ${describeStore(config)}`);
      const ops = config.observability.ops;
      say(`  ops        ${ops ? `/health, /ready, /metrics on http://${ops.host}:${ops.port}` : '(none)'}`);
    });
}

function describeStore(c: AgentConfig): string {
  const pg = c.store.postgres;
  if (!pg) return 'in memory (this process only)';
  // Read at start(), from the environment only: say whether this one has it.
  const set = process.env[pg.urlEnv] ? 'set here' : 'NOT set here: start() refuses without it';
  return `PostgreSQL at $${pg.urlEnv} (${set})`;
}

function describeIdentity(c: AgentConfig): string {
  if (!c.identity) return 'Workload API at $SPIFFE_ENDPOINT_SOCKET';
  if ('workloadApi' in c.identity)
    return `Workload API at ${c.identity.workloadApi.socket ?? '$SPIFFE_ENDPOINT_SOCKET'}`;
  return `static files ${c.identity.static.certFile}, ${c.identity.static.keyFile}, bundle ${c.identity.static.bundleFile}`;
}

function describeAuthz(c: AgentConfig): string {
  // loadAgentConfig refuses a file without an authz section.
  if (!c.authz) return 'none';
  if ('policyFile' in c.authz) return `policy file ${c.authz.policyFile}`;
  if ('opa' in c.authz) return `OPA at ${c.authz.opa.url} (data.${c.authz.opa.path.replace(/\//g, '.')})`;
  return 'ALLOW-ALL (tests only; refused in production)';
}
