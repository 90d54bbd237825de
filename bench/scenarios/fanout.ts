// Fan-out: one caller (a SecureAgent in the load generator process) calls 50
// distinct agents (SecureAgents here, each its own SPIFFE ID) at once: the
// cold round pays discovery (agent card), a new SPIFFE-verified connection and
// the call for every peer; warm rounds reuse them. The baseline: undici with
// the same client certificate calling 50 bare node https mTLS servers, each
// with its peer's SVID. Printed: whole fan-out time cold and warm (median of 5
// warm rounds), caller RSS per peer (after a full GC, before and after the
// cold round), CPU per peer of the cold round on both sides.
import type https from 'node:https';
import { pino } from 'pino';
import { z } from 'zod';
import { SecureAgent } from '@weave/agent';
import { FANOUT_PEERS, ID, sendMessageBody, startBareEcho, type Env } from '../lib/env.js';
import { rowOf, type Check, type Row, type Scenario } from '../lib/harness.js';
import { runLoad } from '../lib/load.js';
import { allOf, withServers } from '../lib/servers.js';

async function startPeers(env: Env) {
  const peers: Array<{ id: string; url: string; stop(): Promise<void> }> = [];
  for (let i = 0; i < FANOUT_PEERS; i++) {
    const agent = new SecureAgent({
      config: {
        name: `p${i}`,
        identity: { workloadApi: { socket: env.dev.address(`peer${i}`) } },
        authz: { policyFile: env.policyFile },
        logging: { level: 'error' },
      },
      // A caller closing its kept connections at the end is logged as a warning: not news here.
      logger: pino({ level: 'error' }),
    }).capability('echo', { input: z.object({ text: z.string() }) }, ({ text }) => ({
      text: `echo: ${text}`,
    }));
    await agent.start();
    peers.push({ id: ID.peer(i), url: agent.url, stop: () => agent.stop({ drainTimeoutMs: 500 }) });
  }
  return peers;
}

/** Bare peers: node https, each with its peer's SVID, client certificates required. */
async function startBarePeers(env: Env) {
  const out: Array<{ id: string; url: string; close(): Promise<void> }> = [];
  for (let i = 0; i < FANOUT_PEERS; i++) {
    const pem = (await env.dev.ca.issueX509Svid(ID.peer(i))).toPem();
    const tls: https.ServerOptions = {
      cert: pem.certChain,
      key: pem.privateKey,
      ca: env.clientPem.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    };
    const s = await startBareEcho(tls);
    out.push({ id: ID.peer(i), ...s });
  }
  return out;
}

export const fanout: Scenario = {
  name: 'fanout',
  title: `one caller calling ${FANOUT_PEERS} distinct agents at once, cold then warm, vs undici → bare node https`,
  async run(ctx) {
    const { env } = ctx;
    const start = {
      peers: async () => {
        const list = await startPeers(env);
        return Object.assign(allOf(list.map((p) => ({ close: p.stop }))), { list });
      },
      bare: async () => {
        const list = await startBarePeers(env);
        return Object.assign(allOf(list), { list });
      },
    };
    return withServers(start, async ({ peers: { list: peers }, bare: { list: bare } }) => {
      const timing = { concurrency: 1, warmupMs: 0, durationMs: 0 };
      const w = await runLoad({
        kind: 'fanout-weave',
        ...timing,
        socket: env.dev.address('client'),
        policyFile: env.policyFile,
        peers: peers.map(({ id, url }) => ({ id, url })),
      });
      const b = await runLoad({
        kind: 'fanout-bare',
        ...timing,
        peers: bare.map(({ id, url }) => ({ id, url })),
        svid: env.clientPem,
        body: sendMessageBody('hello'),
      });
      const note = (x: typeof w) =>
        `cold ${x.extra!.coldMs!.toFixed(0)} ms, warm ${x.extra!.warmMs!.toFixed(1)} ms, caller RSS ${x.extra!.rssPerPeerKb!.toFixed(0)} KB/peer`;
      const rows: Row[] = [
        rowOf('fanout', `weave callAgent x${FANOUT_PEERS}`, 'peers/s', w, {
          vs: ['bare undici'],
          note: note(w),
        }),
        rowOf('fanout', 'bare undici', 'peers/s', b, { note: note(b) }),
      ];
      const cold = w.extra!.coldMs! / b.extra!.coldMs!;
      const warm = w.extra!.warmMs! / b.extra!.warmMs!;
      // The issue asks to print these against bare; it sets no bound, so they are reported, never "met".
      const checks: Check[] = [
        {
          scenario: 'fanout',
          target: 'cold fan-out time vs bare (printed)',
          met: true,
          detail: `${cold.toFixed(2)}x`,
        },
        {
          scenario: 'fanout',
          target: 'warm fan-out time vs bare (printed)',
          met: true,
          detail: `${warm.toFixed(2)}x`,
        },
      ];
      return { rows, checks };
    });
  },
};
