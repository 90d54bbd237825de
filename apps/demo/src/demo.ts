// The Weave demo: the dev Workload API server and three SecureAgents on
// loopback, one policy file; the orchestrator runs a task that calls the other
// two (one of them streaming), then attempts a call the policy forbids.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { CallError, SecureAgent } from '@weave/agent';
import { LocalPolicyEnforcer, type AuditRecord, type ReloadEvent } from '@weave/authz';
import { SpiffeId } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import {
  addSearchCapabilities,
  addSummarizerCapabilities,
  type HandlerRuns,
  type SearchResult,
} from './capabilities.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const DEMO_DIR = here('..');
const POLICY_FILE = here('../policy.yaml');
const CLI_BIN = here('../../cli/bin/weave.mjs');

const TRUST_DOMAIN = 'demo.weave';
const AGENTS = ['orchestrator', 'search', 'summarizer'] as const;
type AgentName = (typeof AGENTS)[number];
const idOf = (name: AgentName) => SpiffeId.parse(`spiffe://${TRUST_DOMAIN}/agent/${name}`);
/** The identity `--keep-running` offers to a person using the weave CLI. */
export const CLI_USER_ID = `spiffe://${TRUST_DOMAIN}/user/cli`;

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Transcript lines. */
  readonly out: (line: string) => void;
  /** Diagnostics. */
  readonly err: (line: string) => void;
  /** Keep the agents up after the task until `stop` resolves. */
  readonly keepRunning?: boolean;
  /** Resolves when a kept-running demo should shut down (default: SIGINT/SIGTERM). */
  readonly stop?: () => Promise<unknown>;
  /** Agent logs (info and up) on stderr. */
  readonly verbose?: boolean;
  /** Pacing of the summarizer's streamed steps, in ms. */
  readonly stepDelayMs?: number;
  /** The policy file the agents load (default the demo's `policy.yaml`; tests edit a copy). */
  readonly policyFile?: string;
}

class DemoFailure extends Error {}

function expectThat(ok: boolean, what: string): void {
  if (!ok) throw new DemoFailure(`expected step failed: ${what}`);
}

const short = (id: SpiffeId | string) => String(id).replace(`spiffe://${TRUST_DOMAIN}/agent/`, '');

/**
 * Runs the demo and resolves with the exit code: 0 when every step did what
 * it should (the allowed calls returned, the forbidden one was refused and ran
 * nothing), 1 otherwise. Everything it started is stopped before it resolves.
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { out, err } = options;
  const policyFile = options.policyFile ?? POLICY_FILE;
  // Log records go where the demo's diagnostics go.
  const logger = pino(
    { level: options.verbose ? 'info' : 'error' },
    { write: (s: string) => err(s.trimEnd()) },
  );
  const stateDir = await mkdtemp(join(tmpdir(), 'weave-demo-'));
  const cleanup: Array<() => Promise<unknown>> = [];
  const runs: HandlerRuns = { search: 0, reindex: 0, summarize: 0 };
  const decisions: Array<{ agent: AgentName; record: AuditRecord }> = [];
  /** Policy decisions are printed from the enforcers' audit records, as they are made. */
  let showDecisions = true;
  const audit = (agent: AgentName) => ({
    record(r: AuditRecord) {
      decisions.push({ agent, record: r });
      if (!showDecisions) return;
      const verdict = r.decision === 'allow' ? 'ALLOW' : 'DENY';
      const by = r.ruleId ? ` by rule ${r.ruleId}` : ` (${r.reason})`;
      const where =
        r.direction === 'outbound'
          ? `${agent}'s outbound check, before sending`
          : `${agent}'s inbound check of ${short(r.caller)}, verified by mTLS`;
      out(`   policy: ${verdict}${by}  [${where}]`);
    },
  });

  try {
    out('Weave demo: three agents, one trust domain, one policy file, all on 127.0.0.1');
    const dev = await DevWorkloadApiServer.start({
      stateDir,
      trustDomain: TRUST_DOMAIN,
      workloads: {
        ...Object.fromEntries(AGENTS.map((a) => [a, idOf(a).toString()])),
        cli: CLI_USER_ID,
      },
      logger,
    });
    cleanup.push(() => dev.close());
    out(
      `  identity  dev Workload API server (SPIFFE gRPC, as a SPIRE agent serves it), state in ${stateDir}`,
    );
    const policyIntro = await LocalPolicyEnforcer.fromFile(policyFile, { watch: false, logger });
    out(
      `  policy    ${display(policyFile)} (${policyIntro.policyId}, ${policyIntro.ruleCount} rules, default deny)`,
    );
    await policyIntro.close();

    const policyLogger = options.verbose ? logger : logger.child({}, { level: 'fatal' });
    const agents = {} as Record<AgentName, SecureAgent>;
    for (const name of AGENTS) {
      const enforcer: LocalPolicyEnforcer = await LocalPolicyEnforcer.fromFile(policyFile, {
        // With --keep-running, editing policy.yaml takes effect at once.
        watch: options.keepRunning === true,
        audit: audit(name),
        // Unless --verbose, a reload's outcome is one line of the transcript,
        // said by the first agent (every agent reloads the same file), not
        // each agent's raw log record.
        logger: policyLogger,
        ...(name === AGENTS[0]
          ? {
              onReload: (e: ReloadEvent) => {
                if (!e.ok) {
                  out(
                    `   policy: edit of ${display(policyFile)} refused, the policy in force stays: ${e.error.code}: ${e.error.message}`,
                  );
                } else if (e.changed) {
                  out(
                    `   policy: reloaded ${display(policyFile)} (${e.policyId}, ${enforcer.ruleCount} rules)`,
                  );
                }
              },
            }
          : {}),
      });
      cleanup.push(() => enforcer.close());
      const agent = await SecureAgent.fromConfigFile(join(DEMO_DIR, 'agents', `${name}.yaml`), {
        env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: dev.address(name) },
        enforcer,
        logger,
      });
      if (name === 'search') addSearchCapabilities(agent, runs);
      if (name === 'summarizer') addSummarizerCapabilities(agent, runs, options.stepDelayMs);
      agents[name] = agent;
    }
    out('');
    out('agents (each got its X.509-SVID from its own Workload API socket, and serves A2A over mTLS)');
    for (const name of AGENTS) {
      const agent = agents[name];
      const started = await agent.start();
      cleanup.push(() => agent.stop({ drainTimeoutMs: 2_000 }));
      expectThat(started.id.equals(idOf(name)), `${name} runs as ${idOf(name).toString()}`);
      const caps = agent.capabilities.list().map((c) => c.name);
      out(
        `  ${name.padEnd(12)} ${started.id.toString().padEnd(40)} ${started.url}` +
          (caps.length ? `  capabilities: ${caps.join(', ')}` : ''),
      );
    }
    // Static discovery: each agent learns where the others listen.
    for (const a of AGENTS) for (const b of AGENTS) if (a !== b) agents[a].addPeer(idOf(b), agents[b].url);

    const orchestrator = agents.orchestrator;
    const topic = 'zero trust agents and mutual TLS';
    out('');
    out(`orchestrator runs a task: "brief me on ${topic}"`);

    // 1. search, a plain request/response call.
    const searchInput = { query: topic, limit: 3 };
    out('');
    out(`1. ${who('orchestrator')} → ${who('search')}: search ${JSON.stringify(searchInput)}`);
    const found = (await orchestrator.callAgent(idOf('search'), 'search', searchInput)) as {
      results: SearchResult[];
    };
    expectThat(Array.isArray(found?.results) && found.results.length === 3, 'search returns 3 results');
    out(`   ← ${found.results.length} results: ${found.results.map((r) => `"${r.title}"`).join(', ')}`);

    // 2. summarize, streamed: progress arrives as the summarizer works.
    const texts = found.results.map((r) => ({ title: r.title, text: r.snippet }));
    out('');
    out(
      `2. ${who('orchestrator')} → ${who('summarizer')}: summarize {"texts":[${texts.length} documents]} (streaming)`,
    );
    const progress: string[] = [];
    const summary = (await orchestrator.callAgent(
      idOf('summarizer'),
      'summarize',
      { texts },
      {
        stream: true,
        onProgress: (text) => {
          progress.push(text);
          out(`   … ${text}`);
        },
      },
    )) as { summary: string; sources: string[] };
    expectThat(progress.length === texts.length + 1, 'the summarizer streamed one progress line per step');
    expectThat(typeof summary?.summary === 'string' && summary.summary.length > 0, 'a summary came back');
    out(`   ← summary of ${summary.sources.length} sources (${summary.summary.length} chars):`);
    for (const line of wrap(summary.summary, 88)) out(`     ${line}`);

    // 3. a call the policy forbids: refused by the orchestrator itself, so nothing is sent.
    out('');
    out(`3. ${who('orchestrator')} → ${who('search')}: reindex {}   (no rule allows this)`);
    const inboundBefore = decisions.filter((d) => d.agent === 'search').length;
    let refused: CallError | undefined;
    try {
      await orchestrator.callAgent(idOf('search'), 'reindex', {});
    } catch (e) {
      if (!(e instanceof CallError)) throw e;
      refused = e;
    }
    expectThat(refused?.code === 'CALL_DENIED', 'the forbidden call is refused with CALL_DENIED');
    expectThat(refused?.deniedBy === 'caller', "the orchestrator's own policy check refused it");
    expectThat(runs.reindex === 0, "search's reindex handler did not run");
    expectThat(
      decisions.filter((d) => d.agent === 'search').length === inboundBefore,
      "no request for it reached the search agent's policy check",
    );
    out(`   ✗ ${refused!.code}: ${refused!.message}`);
    out(`     audit id ${refused!.auditId}; nothing was sent, and search's reindex handler never ran`);

    out('');
    const allowed = decisions.filter((d) => d.record.decision === 'allow').length;
    const denied = decisions.filter((d) => d.record.decision === 'deny').length;
    out(
      `done: 2 calls completed, 1 refused; ${decisions.length} policy decisions (${allowed} allow, ${denied} deny), each with its audit record`,
    );
    expectThat(runs.search === 1 && runs.summarize === 1, 'each allowed handler ran exactly once');

    if (options.keepRunning) {
      // Listening for the signal before saying so: a Ctrl-C right after the
      // last line must find the handler, not the default action (the process
      // killed with its agents and state directory left behind).
      const stopped = (options.stop ?? signalled)();
      printExploreHelp(out, agents, dev.address('cli'), policyFile);
      await stopped;
      out('');
      out('stopping…');
    }
    return 0;
  } catch (e) {
    if (e instanceof DemoFailure) err(`demo failed: ${e.message}`);
    else
      err(`demo failed: ${(e as { code?: string }).code ?? 'ERROR'}: ${(e as Error).message ?? String(e)}`);
    return 1;
  } finally {
    showDecisions = false;
    for (const c of cleanup.reverse()) await c().catch((e: unknown) => err(`cleanup: ${String(e)}`));
    await rm(stateDir, { recursive: true, force: true });
    out('agents stopped, dev Workload API server closed.');
  }
}

function who(name: AgentName): string {
  return `${name} (${idOf(name).toString()})`;
}

/** A path as the person who ran the demo would type it (npm/pnpm set INIT_CWD to where they were). */
function display(path: string): string {
  const from = process.env.INIT_CWD ?? process.cwd();
  const rel = relative(resolve(from), path);
  return rel.startsWith('..') ? path : rel || '.';
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of text.split(/\s+/)) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines;
}

function printExploreHelp(
  out: (l: string) => void,
  agents: Record<AgentName, SecureAgent>,
  cliSocket: string,
  policyFile: string,
): void {
  const weave = `node ${display(CLI_BIN)}`;
  const search = agents.search.url;
  const summarizer = agents.summarizer.url;
  out('');
  out('The agents keep running (Ctrl-C stops them). In another terminal, from the same directory:');
  out('');
  out(`  export SPIFFE_ENDPOINT_SOCKET=${cliSocket}   # you are ${CLI_USER_ID}`);
  out(`  ${weave} svid`);
  out(`  ${weave} card ${search}`);
  out(
    `  ${weave} call ${idOf('search').toString()} search '{"query":"workload api"}' --peer ${idOf('search').toString()}=${search} --policy ${display(policyFile)}`,
  );
  out(`  ${weave} call ${summarizer} summarize '{"texts":[{"title":"t","text":"Hello. World."}]}'`);
  out('     (refused: the policy lets you search, not summarize; watch the decisions below)');
  out(
    `  ${weave} authz check ${display(policyFile)} ${CLI_USER_ID} ${idOf('summarizer').toString()} summarize`,
  );
  out(`  ${weave} validate ${display(join(DEMO_DIR, 'agents', 'search.yaml'))}`);
  out('');
  out(`Edit ${display(policyFile)} and the agents reload it. Policy decisions as they happen:`);
}

function signalled(): Promise<unknown> {
  return new Promise((resolveStop) => {
    // Stays installed: Ctrl-C reaches this process twice (from the terminal and
    // relayed by tsx), and the second must not kill it in the middle of stopping.
    const on = () => resolveStop(undefined);
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
