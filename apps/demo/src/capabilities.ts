// What the demo agents do. The business logic is deliberately small; the point
// of the demo is everything around it (identity, mTLS, policy, A2A).
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { SecureAgent } from '@weave/agent';

/** A tiny corpus the search agent "indexes". */
const CORPUS = [
  {
    title: 'SPIFFE',
    url: 'https://spiffe.io/docs/latest/spiffe-about/overview/',
    text: 'SPIFFE gives every workload a cryptographic identity, a SPIFFE ID such as spiffe://demo.weave/agent/search, carried in short-lived X.509 certificates called SVIDs. A workload fetches its SVID from the Workload API, so no secret is ever configured by hand.',
  },
  {
    title: 'Mutual TLS',
    url: 'https://www.rfc-editor.org/rfc/rfc8446',
    text: 'Mutual TLS makes both sides of a connection prove who they are. Each agent verifies the peer certificate chain against the trust bundle of the peer trust domain and checks the SPIFFE ID before any request is sent.',
  },
  {
    title: 'Agent2Agent protocol',
    url: 'https://a2a-protocol.org',
    text: 'A2A is an open protocol for agents to discover each other through agent cards and exchange tasks over JSON-RPC, with streaming updates over server-sent events. Zero trust agents still speak plain A2A on the wire.',
  },
  {
    title: 'Policy as code',
    url: 'https://www.openpolicyagent.org/docs/latest/',
    text: 'A policy decides which caller may invoke which capability of which agent. With a default of deny, every call that no rule allows is refused, and every decision is audited.',
  },
  {
    title: 'Workload API',
    url: 'https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md',
    text: 'The SPIFFE Workload API is a local gRPC endpoint on a Unix socket. A SPIRE agent serves it in production; it attests the calling process and streams rotated SVIDs and bundles.',
  },
] as const;

export interface SearchResult {
  title: string;
  url: string;
  snippet: string;
  score: number;
}

const words = (s: string) => s.toLowerCase().match(/[a-z0-9]+/g) ?? [];

/** Ranks the corpus by the query words each document contains. */
function search(query: string, limit: number): SearchResult[] {
  const q = new Set(words(query).filter((w) => w.length > 2));
  return CORPUS.map((d) => {
    const title = new Set(words(d.title));
    const body = new Set(words(d.text));
    let score = 0;
    // A word in the title counts more than one in the text.
    for (const w of q) score += (title.has(w) ? 2 : 0) + (body.has(w) ? 1 : 0);
    return { title: d.title, url: d.url, snippet: d.text, score };
  })
    .filter((r) => r.score > 0)
    .sort((a, b) => b.score - a.score || a.title.localeCompare(b.title))
    .slice(0, limit);
}

/** Counters the demo checks: a refused call must not have run its handler. */
export interface HandlerRuns {
  search: number;
  reindex: number;
  summarize: number;
}

/** search: `search` (allowed to the orchestrator) and `reindex` (allowed to nobody). */
export function addSearchCapabilities(agent: SecureAgent, runs: HandlerRuns): void {
  agent.capability(
    'search',
    {
      description: 'Find documents about a topic',
      input: z.object({
        query: z.string().min(1).max(500),
        limit: z.number().int().min(1).max(10).default(3),
      }),
      tags: ['search'],
      examples: ['{"query":"zero trust agents"}'],
    },
    ({ query, limit }) => {
      runs.search++;
      return { results: search(query, limit) };
    },
  );
  agent.capability(
    'reindex',
    { description: 'Rebuild the index (an operator task)', input: z.object({}).strict() },
    () => {
      runs.reindex++;
      return { reindexed: CORPUS.length };
    },
  );
}

/** summarizer: `summarize`, which reports progress as it goes (the caller streams it). */
export function addSummarizerCapabilities(agent: SecureAgent, runs: HandlerRuns, stepDelayMs = 40): void {
  agent.capability(
    'summarize',
    {
      description: 'Summarize texts into a few sentences',
      input: z.object({
        texts: z
          .array(z.object({ title: z.string(), text: z.string() }))
          .min(1)
          .max(20),
      }),
    },
    async ({ texts }, ctx) => {
      runs.summarize++;
      const sentences: string[] = [];
      for (const [i, t] of texts.entries()) {
        ctx.progress(`reading ${i + 1}/${texts.length}: ${t.title}`);
        // Pacing only, so the streamed progress is visible; cancellation still applies.
        await sleep(stepDelayMs, undefined, { signal: ctx.signal });
        const first = /^[^.!?]*[.!?]/.exec(t.text)?.[0] ?? t.text;
        sentences.push(first.trim());
      }
      ctx.progress('writing the summary');
      return { summary: sentences.join(' '), sources: texts.map((t) => t.title) };
    },
  );
}
