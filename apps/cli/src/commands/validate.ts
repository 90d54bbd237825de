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
        'is set, and the files of identity.static (SVID, key, bundle, federated bundles) as ' +
        'start() reads them. Prints OK and a summary, or every problem (exit 1; a bad policy file ' +
        'is a usage error, exit 2).',
    )
    .argument('<config>', 'agent config file')
    .option('--json', 'print the validated config (defaults filled in) as JSON')
    .action(async (file: string, _o: ValidateOptions, cmd: Command) => {
      const opts = cmd.optsWithGlobals<ValidateOptions>();
      const { LocalPolicyEnforcer } = await import('@weave/authz');
      const { SecureAgent } = await import('@weave/agent');
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
      // The identity files as start() reads them (same code, same errors): a file the agent
      // would refuse is found here, not at the first start of a new version.
      let staticId: string | undefined;
      // A file not here yet (written at run time, by spiffe-helper or a
      // mounted Secret) is not checked, and said so; one that is here and
      // would be refused fails the validation.
      let missing: string | undefined;
      try {
        staticId = (
          await SecureAgent.checkStaticIdentity(config, { logger: cliLogger(opts.debug) })
        )?.toString();
      } catch (err) {
        if (!(err instanceof WeaveError)) throw err;
        missing = missingPath(err);
        if (missing === undefined) {
          throw new CliError(err.code, `${file}: ${err.message}`, EXIT.failed, { cause: err });
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
      say(`  spiffe id  ${describeSpiffeId(config, staticId)}`);
      if (missing !== undefined)
        say(`  WARNING    ${missing} does not exist here: the identity files are not checked`);
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

/** The path of a file that does not exist, when `err` (or an error it was caused by) is ENOENT. */
function missingPath(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 8; depth++, e = e.cause) {
    const { code, path } = e as { code?: unknown; path?: unknown };
    if (code === 'ENOENT' && typeof path === 'string') return path;
  }
  return undefined;
}

/** The SPIFFE ID the agent will have, and where it comes from. */
function describeSpiffeId(c: AgentConfig, staticId: string | undefined): string {
  if (c.identity && 'static' in c.identity) {
    // checkStaticIdentity has read it, and refused a file whose ID is not spiffeId.
    return `${staticId ?? c.spiffeId ?? '(not read)'} (from the SVID in ${c.identity.static.certFile})`;
  }
  return c.spiffeId ?? '(whatever the Workload API serves)';
}

function describeIdentity(c: AgentConfig): string {
  if (!c.identity) return 'Workload API at $SPIFFE_ENDPOINT_SOCKET';
  if ('workloadApi' in c.identity)
    return `Workload API at ${c.identity.workloadApi.socket ?? '$SPIFFE_ENDPOINT_SOCKET'}`;
  const s = c.identity.static;
  const federated = Object.entries(s.federated ?? {}).map(([td, f]) => `, federated ${td} ${f}`);
  return `static files ${s.certFile}, ${s.keyFile}, bundle ${s.bundleFile}${federated.join('')}`;
}

function describeAuthz(c: AgentConfig): string {
  // loadAgentConfig refuses a file without an authz section.
  if (!c.authz) return 'none';
  if ('policyFile' in c.authz) return `policy file ${c.authz.policyFile}`;
  if ('opa' in c.authz) return `OPA at ${c.authz.opa.url} (data.${c.authz.opa.path.replace(/\//g, '.')})`;
  return 'ALLOW-ALL (tests only; refused in production)';
}
