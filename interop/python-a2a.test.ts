/**
 * The official Python A2A SDK (a2a-sdk, pinned in interop/python/requirements.txt)
 * against Weave, both ways, over real mTLS with SVIDs of one dev CA:
 * - its client (httpx with the caller's SVID) calls a SecureAgent: send,
 *   stream, get, list, cancel, subscribe;
 * - Weave's A2AClient (over SecureChannel) calls an a2a-sdk server run by
 *   uvicorn that requires a client certificate: the same six operations.
 * Parameterised by binding (see WEAVE_SERVES and WEAVE_CALLS): JSON-RPC,
 * HTTP+JSON and gRPC in both directions.
 *
 * gRPC from Python: grpcio's channel TLS verifies the chain but can only
 * match the server against a DNS name, and an SVID carries a URI SAN only (no
 * hook checks a URI SAN before a call goes out). So the peer's grpcio channel
 * speaks plain HTTP/2 to an in-process relay on a unix socket in a private
 * directory, and the relay carries each of its connections over a TLS
 * connection of Python's ssl — the caller's SVID, the chain verified against
 * the CA, ALPN h2, and the agent's URI SAN compared with the expected SPIFFE ID
 * before any byte of the channel is forwarded (SpiffeRelay in a2a_peer.py).
 * The ID is checked on the very connection the calls use; a test below gives
 * only the gRPC connection a wrong expected ID and sees no handler run.
 *
 * gRPC to Python: the a2a-sdk's GrpcHandler on grpcio with
 * `ssl_server_credentials(require_client_auth=True)`; its card is on uvicorn.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import {
  A2AClient,
  A2AClientError,
  A2AError,
  buildMessage,
  grpcTransportFactory,
  type StreamEvent,
} from '@weave/a2a';
import { SecureAgent, type CapabilityContext } from '@weave/agent';
import { WorkloadApiIdentityProvider } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { SecureChannel } from '@weave/transport';
import { runHarness, startHarness, type HarnessLine } from './peer-process.js';
import { removeDir, repoRoot, requireComponent } from './infra.js';

const py = requireComponent('python-a2a');
const PEER = join(repoRoot, 'interop', 'python', 'a2a_peer.py');

/**
 * Bindings exercised in each direction: those the SecureAgent serves (the
 * a2a-sdk client is told which one to take from the agent's card), and those
 * Weave's A2AClient calls (the a2a-sdk peer serves the one it is started with;
 * the client prefers it and the test checks it was the one used).
 */
const WEAVE_SERVES = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;
const WEAVE_CALLS = ['JSONRPC', 'HTTP+JSON', 'GRPC'] as const;

const TD = 'py.interop.test';
const ID = {
  agent: `spiffe://${TD}/weave/agent`,
  weaveClient: `spiffe://${TD}/weave/client`,
  pyClient: `spiffe://${TD}/python/client`,
  pyServer: `spiffe://${TD}/python/server`,
  weaveStranger: `spiffe://${TD}/weave/stranger`,
} as const;

const POLICY = `
version: 1
id: python-interop
default: deny
rules:
  - id: python-client
    effect: allow
    callers: ['${ID.pyClient}']
    callees: ['${ID.agent}']
    actions: ['*']
`;

/** An HTTP/2 SETTINGS frame with no settings (length 0, type 4, flags 0, stream 0). */
const H2_EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

interface Files {
  cert: string;
  key: string;
  ca: string;
}

const runPython = (args: readonly string[]) => runHarness(py!.python, [PEER, ...args], { timeoutMs: 90_000 });

describe.skipIf(!py)('a2a-sdk (Python) ↔ Weave', () => {
  let dir: string;
  let dev: DevWorkloadApiServer;
  const files = {} as Record<'pyClient' | 'pyServer' | 'stranger', Files>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'weave-py-'));
    dev = await DevWorkloadApiServer.start({
      stateDir: dir,
      trustDomain: TD,
      workloads: { agent: ID.agent, weaveClient: ID.weaveClient, weaveStranger: ID.weaveStranger },
    });
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, dev.ca.certificate.toString('pem'));
    const issue = async (name: keyof typeof files, id: string) => {
      const pem = (await dev.ca.issueX509Svid(id)).toPem();
      files[name] = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`), ca: caFile };
      await writeFile(files[name].cert, pem.certChain);
      await writeFile(files[name].key, pem.privateKey, { mode: 0o600 });
    };
    await issue('pyClient', ID.pyClient);
    await issue('pyServer', ID.pyServer);
    await issue('stranger', `spiffe://${TD}/python/stranger`);
  });

  afterAll(async () => {
    await dev?.close();
    await removeDir(dir);
  });

  describe.each(WEAVE_SERVES)('binding %s', (binding) => {
    describe('a2a-sdk client → SecureAgent', () => {
      let agent: SecureAgent;
      const calls: Array<{ skill: string; caller: string }> = [];
      const aborted: string[] = [];

      beforeAll(async () => {
        const policyFile = join(dir, 'policy.yaml');
        await writeFile(policyFile, POLICY);
        agent = new SecureAgent({
          config: {
            name: 'python-interop-agent',
            spiffeId: ID.agent,
            identity: { workloadApi: { socket: dev.address('agent') } },
            authz: { policyFile },
          },
        })
          .capability(
            'echo',
            { input: z.object({ text: z.string() }) },
            (input: { text: string }, ctx: CapabilityContext) => {
              calls.push({ skill: 'echo', caller: ctx.caller.toString() });
              return { echoed: input.text };
            },
          )
          .capability(
            'slow',
            { input: z.object({ ms: z.number().int() }) },
            async (input: { ms: number }, ctx: CapabilityContext) => {
              calls.push({ skill: 'slow', caller: ctx.caller.toString() });
              await new Promise<void>((resolve) => {
                const t = setTimeout(resolve, input.ms);
                ctx.signal.addEventListener('abort', () => {
                  clearTimeout(t);
                  aborted.push('slow');
                  resolve();
                });
              });
              return { slept: input.ms };
            },
          );
        await agent.start();
      });
      afterAll(() => agent?.stop());
      /** The a2a-sdk client's six operations against the agent, with the SVID in `f`. */
      const pyClient = (f: Files, expectId: string, grpcExpectId?: string) =>
        runPython([
          'client',
          ...['--url', agent.url, '--expect-id', expectId, '--binding', binding],
          ...['--cert', f.cert, '--key', f.key, '--ca', f.ca],
          ...(grpcExpectId ? ['--grpc-expect-id', grpcExpectId] : []),
        ]);

      it('send, stream, get, list, cancel and subscribe, all with the caller’s SVID', async () => {
        const run = await pyClient(files.pyClient, ID.agent);
        expect(run.code, `${run.stderr}\n${JSON.stringify(run.lines)}`).toBe(0);
        const step = (type: string) => run.lines.find((l) => l.type === type)!;
        expect(step('send')).toMatchObject({ state: 'TASK_STATE_COMPLETED' });
        expect(JSON.stringify(step('send').artifact)).toContain('from python');
        const stream = step('stream');
        expect((stream.states as string[]).at(-1)).toBe('TASK_STATE_COMPLETED');
        expect((stream.kinds as string[])[0]).toBe('task');
        expect(step('get')).toMatchObject({ id: step('send').id, state: 'TASK_STATE_COMPLETED' });
        expect(step('list').ids).toEqual(expect.arrayContaining([step('send').id, stream.id]));
        expect(step('cancel')).toMatchObject({ state: 'TASK_STATE_CANCELED' });
        expect((step('subscribe').states as string[]).at(-1)).toBe('TASK_STATE_CANCELED');
        expect(step('peers').ids).toEqual([ID.agent]);
        if (binding === 'GRPC') {
          // Every gRPC call went over a relayed connection whose server ID was checked.
          expect(step('relay').connections).toBeGreaterThanOrEqual(1);
          expect(step('relay').ids).toEqual([ID.agent]);
        } else {
          expect(run.lines.some((l) => l.type === 'relay')).toBe(false);
        }
        // The agent saw the Python client's SPIFFE ID on every call; both slow tasks were aborted.
        expect(calls.length).toBeGreaterThanOrEqual(4);
        expect(calls.every((c) => c.caller === ID.pyClient)).toBe(true);
        expect(aborted).toEqual(['slow', 'slow']);
      });

      it('an SVID the policy does not allow runs nothing', async () => {
        const before = calls.length;
        const run = await pyClient(files.stranger, ID.agent);
        expect(run.code).toBe(1);
        expect(run.lines.at(-1)).toMatchObject({ type: 'error' });
        // Refused by the policy (HTTP 403 on JSON-RPC and HTTP+JSON, PERMISSION_DENIED on gRPC), not by TLS.
        expect(run.lines.at(-1)!.error).toMatch(binding === 'GRPC' ? /PERMISSION_DENIED/ : /HTTP Error 403/);
        expect(calls.length).toBe(before);
      });

      it('the Python client refuses an agent whose SPIFFE ID is not the expected one', async () => {
        const before = calls.length;
        const run = await pyClient(files.pyClient, `spiffe://${TD}/weave/other`);
        expect(run.code).toBe(1);
        expect(run.lines.at(-1)!.error).toMatch(/is not/);
        expect(calls.length).toBe(before);
      });

      // Only gRPC has a connection of its own to refuse (registered for it alone: no skipped entries).
      if (binding === 'GRPC')
        it('the Python gRPC channel refuses the agent on the gRPC connection itself', async () => {
          // The card comes over HTTPS from the right ID; only the gRPC connection expects another.
          const before = calls.length;
          const run = await pyClient(files.pyClient, ID.agent, `spiffe://${TD}/weave/other`);
          expect(run.code, JSON.stringify(run.lines)).toBe(1);
          expect(run.lines.map((l) => l.type)).toEqual(['card', 'error']);
          expect(run.lines.at(-1)!.error).toMatch(
            new RegExp(`gRPC server SPIFFE ID '${ID.agent}' is not 'spiffe://${TD}/weave/other'`),
          );
          expect(calls.length).toBe(before);
        });
    });
  });

  describe.each(WEAVE_CALLS)('binding %s', (binding) => {
    describe('Weave A2AClient → a2a-sdk server (client certificate required)', () => {
      let server: ReturnType<typeof startHarness>;
      let url: string;
      /** The interface the card lists: a URL under `url`, or `host:port` of the gRPC port. */
      let iface: string;
      let provider: WorkloadApiIdentityProvider;
      let channel: SecureChannel;
      let client: A2AClient;

      beforeAll(async () => {
        const f = files.pyServer;
        server = startHarness(py!.python, [
          PEER,
          'server',
          '--cert',
          f.cert,
          '--key',
          f.key,
          '--ca',
          f.ca,
          '--binding',
          binding,
          '--allow-id',
          ID.weaveClient,
        ]);
        const listening = await server.waitFor((l) => l.type === 'listening', 'the python server');
        url = listening.url as string;
        iface = listening.interface as string;
        provider = await WorkloadApiIdentityProvider.create({ address: dev.address('weaveClient') });
        channel = new SecureChannel(provider, ID.pyServer);
        client = new A2AClient({ dispatcher: channel, preferredBindings: [binding] });
      });
      afterAll(async () => {
        await client?.close();
        await channel?.close();
        await provider?.close();
        await server?.stop();
      });

      it('discovers, sends, gets and lists', async () => {
        const card = await client.discoverAgent(`${url}/`);
        expect(card.name).toBe('python sdk agent');
        const transport = await client.transportFor(url);
        expect([transport.protocolBinding, transport.url]).toEqual([binding, iface]);
        const task = await client.sendTask(url, 'echo', 'hello python');
        expect(task.status.state).toBe('TASK_STATE_COMPLETED');
        expect(task.artifacts?.[0]?.parts[0]?.text).toBe('python echo: hello python');
        expect((await client.getTask(url, task.id)).status.state).toBe('TASK_STATE_COMPLETED');
        const list = await client.listTasks(url, { pageSize: 20 });
        expect(list.tasks.map((t) => t.id)).toContain(task.id);
      });

      it('streams, subscribes and cancels', async () => {
        const kinds: string[] = [];
        let taskId = '';
        for await (const e of client.sendStreamingMessage(url, {
          message: buildMessage('echo', 'slow please'),
        })) {
          kinds.push(Object.keys(e).find((k) => k !== 'eventId')!);
          if ('task' in e) taskId = e.task.id;
          if ('statusUpdate' in e && e.statusUpdate.status.state === 'TASK_STATE_WORKING') break;
        }
        expect(taskId).not.toBe('');
        const sub = client.subscribeToTask(url, taskId);
        const first = await sub.next();
        expect(first.done).toBe(false);
        const canceled = await client.cancelTask(url, taskId);
        expect(canceled.status.state).toBe('TASK_STATE_CANCELED');
        const rest: StreamEvent[] = [];
        for await (const e of sub) rest.push(e);
        expect(
          [first.value as StreamEvent, ...rest].some(
            (e) =>
              ('statusUpdate' in e && e.statusUpdate.status.state === 'TASK_STATE_CANCELED') ||
              ('task' in e && e.task.status.state === 'TASK_STATE_CANCELED'),
          ),
        ).toBe(true);
        // A completed streaming call ends COMPLETED.
        const done: StreamEvent[] = [];
        for await (const e of client.sendStreamingMessage(url, { message: buildMessage('echo', 'quick') }))
          done.push(e);
        const last = done.at(-1)!;
        expect(
          'statusUpdate' in last
            ? last.statusUpdate.status.state
            : 'task' in last
              ? last.task.status.state
              : '',
        ).toBe('TASK_STATE_COMPLETED');
      });

      /** Lines the Python server printed for requests that reached it (uvicorn's app or grpcio's handler). */
      const requests = (via: 'uvicorn' | 'grpcio') =>
        server.lines().filter((l) => l.type === 'request' && l.via === via);

      it('the server saw the calls, each with the Weave client’s SPIFFE ID', () => {
        // send, get, list, stream, subscribe, cancel, stream: seven A2A calls besides the card.
        const isCard = (l: HarnessLine) => String(l.path).startsWith('/.well-known/');
        if (binding === 'GRPC') {
          const grpcCalls = requests('grpcio');
          expect(grpcCalls.length).toBeGreaterThanOrEqual(7);
          expect(new Set(grpcCalls.map((l) => l.caller))).toEqual(new Set([ID.weaveClient]));
          // Over HTTPS only the card was asked for.
          expect(requests('uvicorn').every(isCard)).toBe(true);
        } else {
          const httpCalls = requests('uvicorn').filter((l) => !isCard(l));
          expect(httpCalls.length).toBeGreaterThanOrEqual(7);
          expect(new Set(httpCalls.map((l) => l.caller))).toEqual(new Set([ID.weaveClient]));
          expect(requests('grpcio')).toEqual([]);
        }
      });

      /**
       * Opens TLS to `hostPort` (server verified against the dev CA; the
       * URI-only name check is left out, it is not what is tested) and sends a
       * request: HTTP/1.1 to uvicorn, the HTTP/2 preface and SETTINGS to grpcio.
       * Resolves with every byte the server sent back.
       */
      const probe = (hostPort: string, h2: boolean, cert?: Files) =>
        new Promise<Buffer>((resolve) => {
          const chunks: Buffer[] = [];
          const [host, port] = [
            hostPort.slice(0, hostPort.lastIndexOf(':')),
            hostPort.slice(hostPort.lastIndexOf(':') + 1),
          ];
          const s = connect({
            host,
            port: Number(port),
            ca: dev.ca.certificate.toString('pem'),
            checkServerIdentity: () => undefined,
            ALPNProtocols: [h2 ? 'h2' : 'http/1.1'],
            ...(cert ? { cert: readFileSync(cert.cert), key: readFileSync(cert.key) } : {}),
          });
          s.setTimeout(10_000, () => s.destroy());
          s.on('secureConnect', () =>
            s.write(
              h2
                ? Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), H2_EMPTY_SETTINGS])
                : 'GET /.well-known/agent-card.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
            ),
          );
          s.on('data', (d: Buffer) => {
            chunks.push(d);
            // A server that answers has made its point; grpcio would keep the connection open.
            if (h2) s.destroy();
          });
          s.on('error', () => resolve(Buffer.concat(chunks)));
          s.on('close', () => resolve(Buffer.concat(chunks)));
        });

      it('the a2a-sdk server answers nothing to a caller without a client certificate', async () => {
        const ports: Array<[string, boolean]> = [[new URL(url).host, false]];
        if (binding === 'GRPC') ports.push([iface, true]);
        for (const [hostPort, h2] of ports) {
          const before = server.lines().filter((l) => l.type === 'request').length;
          // The same probe with a client certificate gets an answer: the refusal is the certificate's absence.
          const answered = await probe(hostPort, h2, files.pyClient);
          if (h2) expect(answered.length, hostPort).toBeGreaterThan(0);
          else expect(answered.toString()).toContain('python sdk agent');
          const answer = await probe(hostPort, h2);
          expect(answer.length, `${hostPort} answered ${answer.toString()}`).toBe(0);
          // Only the probe with a certificate reached the server (uvicorn's app; grpcio saw no call at all).
          const after = server.lines().filter((l) => l.type === 'request').length;
          expect(after - before, hostPort).toBe(h2 ? 0 : 1);
        }
      });

      it('the Python server refuses a caller ID it does not allow; its executor does not run', async () => {
        const executed = server.lines().filter((l) => l.type === 'execute').length;
        const strangerProvider = await WorkloadApiIdentityProvider.create({
          address: dev.address('weaveStranger'),
        });
        const strangerChannel = new SecureChannel(strangerProvider, ID.pyServer);
        const stranger = new A2AClient({ dispatcher: strangerChannel, preferredBindings: [binding] });
        try {
          const err = await stranger.sendTask(url, 'echo', 'let me in').then(
            () => undefined,
            (e: unknown) => e,
          );
          // No ErrorInfo from the peer: grpcio sends a bare PERMISSION_DENIED status, uvicorn a 403 with a
          // google.rpc.Status (HTTP+JSON) or an Invalid Request error (JSON-RPC). Weave reads each as a refusal.
          expect(err).toBeInstanceOf(A2AError);
          expect([(err as A2AError).code, (err as A2AError).message]).toEqual([
            'PERMISSION_DENIED',
            `${ID.weaveStranger} may not call this agent`,
          ]);
        } finally {
          await stranger.close();
          await strangerChannel.close();
          await strangerProvider.close();
        }
        // The server logs the refusal on its stdout, which can reach this process after the refusal itself.
        await vi.waitFor(
          () =>
            expect(server.lines().filter((l) => l.type === 'refused')).toEqual([
              { type: 'refused', via: binding === 'GRPC' ? 'grpcio' : 'uvicorn', caller: ID.weaveStranger },
            ]),
          { timeout: 5000 },
        );
        expect(server.lines().filter((l) => l.type === 'execute').length).toBe(executed);
      });

      it('refuses the Python server when its SPIFFE ID is not the expected one', async () => {
        const wrong = new SecureChannel(provider, `spiffe://${TD}/python/impostor`, {
          retry: { retries: 0 },
        });
        const before = server.lines().filter((l) => l.type === 'request').length;
        try {
          const other = new A2AClient({ dispatcher: wrong, preferredBindings: [binding] });
          await expect(other.sendTask(url, 'echo', 'x')).rejects.toThrow(/SPIFFE|peer|verif/i);
          if (binding === 'GRPC') {
            // The card fetch above is refused on HTTPS; the gRPC connection itself is refused too.
            const grpcOnly = grpcTransportFactory.create(
              { url: iface, protocolBinding: 'GRPC', protocolVersion: '1.0' },
              { dispatcher: wrong, headers: {}, maxResponseBytes: 1 << 20 },
            );
            try {
              const err = await grpcOnly.call('GetTask', { id: 'x' }, { timeoutMs: 15_000 }).then(
                () => undefined,
                (e: unknown) => e as Error,
              );
              expect(err).toBeInstanceOf(A2AClientError);
              expect(String((err as Error & { cause?: unknown }).cause)).toMatch(/SPIFFE|peer|verif/i);
            } finally {
              await grpcOnly.close();
            }
          }
        } finally {
          await wrong.close();
        }
        expect(server.lines().filter((l) => l.type === 'request').length).toBe(before);
      });
    });
  });
});
