// An agent built on the official @a2a-js/sdk (its express handlers, its
// DefaultRequestHandler, its executor) behind @weave/a2a/a2a-sdk, over real
// mTLS with dev-CA SVIDs on loopback: wrong peers are refused before the app
// runs, the policy decides per skill before the executor runs, the verified
// SPIFFE ID is the SDK's user, the server follows SVID rotation, and the SDK's
// client reaches Weave agents (and only them) through secureClientFactory.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import { pino } from 'pino';
import { Role, TaskState, type AgentCard as SdkAgentCard } from '@a2a-js/sdk';
import { DefaultRequestHandler, InMemoryTaskStore, ServerCallContext } from '@a2a-js/sdk/server';
import { agentCardHandler, jsonRpcHandler, restHandler } from '@a2a-js/sdk/server/express';
import { LocalPolicyEnforcer, type AuditRecord } from '@weave/authz';
import { authorizeMatching, SpiffeId } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { request } from 'undici';
import { A2AClient } from '../src/index.js';
import {
  SdkAdapterConfigError,
  secureClientFactory,
  secureSdkAgent,
  type SecureSdkAgent,
} from '../src/a2a-sdk.js';
import {
  SdkEchoExecutor,
  sdkEchoCard,
  sdkSendParams,
  sdkText,
  sdkUserText,
} from '@weave/test-support/a2a-sdk';
import { causeCodes, serveEcho, startHarness, type Harness } from './helpers/agents.js';
import { channel, createPki, type Pki, type Workload } from '@weave/test-support';

/** What the executor saw, per run: the skill stamped by the guard and the SDK's user. */
interface Run {
  skill: unknown;
  user: string | undefined;
  text: string;
}

/** The greeter: `hello <text>`, each run recorded. */
function greetExecutor(): SdkEchoExecutor & { readonly runs: Run[] } {
  const runs: Run[] = [];
  const executor = new SdkEchoExecutor({
    prefix: 'hello ',
    artifactId: 'greeting',
    onRun: (rc) =>
      runs.push({
        skill: rc.userMessage.metadata?.skill,
        user: rc.context.user?.userName,
        text: sdkUserText(rc),
      }),
  });
  return Object.assign(executor, { runs });
}

function greetCard(): SdkAgentCard {
  const card = sdkEchoCard('sdk greeter', 'an @a2a-js/sdk agent behind Weave');
  const echo = card.skills[0]!;
  card.skills = [
    { ...echo, id: 'greet', name: 'Greet', description: 'says hello' },
    { ...echo, id: 'forget', name: 'Forget', description: 'nobody may call this' },
  ];
  return card;
}

let pki: Pki;
let agent: Workload;
let caller: Workload;
let stranger: Workload;
let intruder: Workload;
let weave: SecureSdkAgent;
let server: https.Server;
let url: string;
const executor = greetExecutor();
const audit: AuditRecord[] = [];
const closers: (() => Promise<unknown>)[] = [];

function client(who: Workload, preferred?: string[]): A2AClient {
  const ch = channel(who, agent.id);
  const c = new A2AClient({ dispatcher: ch, ...(preferred ? { preferredBindings: preferred } : {}) });
  closers.push(
    () => c.close(),
    () => ch.close(),
  );
  return c;
}

/** A raw JSON-RPC SendMessage of `greet`, over `tls` options of the caller's choosing. */
function rawSend(tls: https.RequestOptions): Promise<{ status?: number; body: string }> {
  const body = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'SendMessage',
    params: {
      message: {
        messageId: 'raw-1',
        role: 'ROLE_USER',
        parts: [{ text: 'raw' }],
        metadata: { skill: 'greet' },
      },
    },
  });
  const u = new URL(`${url}/a2a/jsonrpc`);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
        // The test's client trusts the agent's CA and checks nothing else: the server is under test.
        ca: agent.identity
          .getBundleSet()
          .allX509Authorities()
          .map((c) => c.toString('pem')),
        checkServerIdentity: () => undefined,
        agent: false,
        ...tls,
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8').on('data', (d: string) => (data += d));
        res.on('end', () => resolve({ status: res.statusCode, body: data }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

beforeAll(async () => {
  pki = await createPki();
  agent = await pki.workload('/agent/sdk-greeter');
  caller = await pki.workload('/agent/caller');
  stranger = await pki.workload('/agent/stranger');
  intruder = await pki.workload('/user/intruder');
  const enforcer = LocalPolicyEnforcer.fromObject(
    {
      version: 1,
      id: 'sdk-adapter-test',
      default: 'deny',
      rules: [
        {
          id: 'caller-may-greet',
          effect: 'allow',
          callers: [caller.id.toString()],
          callees: [agent.id.toString()],
          actions: ['greet'],
        },
      ],
    },
    { audit: { record: (r: AuditRecord) => audit.push(r) } },
  );
  weave = secureSdkAgent({
    identity: agent.identity,
    enforcer,
    spiffeId: agent.id,
    // Only agents may connect at all; the policy decides per skill.
    authorize: authorizeMatching((id) => id.path.startsWith('/agent/'), 'agents only'),
    logger: pino({ level: 'silent' }),
  });
  const card = greetCard();
  const requestHandler = new DefaultRequestHandler(card, new InMemoryTaskStore(), executor);
  const app = express();
  app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: requestHandler }));
  app.use(
    '/a2a/jsonrpc',
    jsonRpcHandler({ requestHandler: weave.guard(requestHandler), userBuilder: weave.userBuilder }),
  );
  app.use(
    '/a2a/rest',
    restHandler({ requestHandler: weave.guard(requestHandler), userBuilder: weave.userBuilder }),
  );
  server = weave.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  card.supportedInterfaces = [
    { url: `${url}/a2a/jsonrpc`, protocolBinding: 'JSONRPC', protocolVersion: '1.0', tenant: '' },
    { url: `${url}/a2a/rest`, protocolBinding: 'HTTP+JSON', protocolVersion: '1.0', tenant: '' },
  ];
});

afterAll(async () => {
  for (const c of closers.reverse()) await c();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  weave.close();
  await pki.close();
});

describe.each(['JSONRPC', 'HTTP+JSON'])('a Weave caller → the SDK agent over %s', (binding) => {
  it('an allowed skill runs the executor, with the skill stamped and the verified SPIFFE ID as the SDK user', async () => {
    const before = executor.runs.length;
    const task = await client(caller, [binding]).sendTask(url, 'greet', 'Ada');
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
    expect(task.artifacts?.[0]?.parts[0]?.text).toBe('hello Ada');
    expect(executor.runs.slice(before)).toEqual([
      { skill: 'greet', user: caller.id.toString(), text: 'Ada' },
    ]);
    expect(audit.at(-1)).toMatchObject({ decision: 'allow', action: 'greet', caller: caller.id.toString() });
  });

  it('a denied skill is PERMISSION_DENIED with the audit id of the decision; the executor does not run', async () => {
    const before = executor.runs.length;
    const err = await client(caller, [binding])
      .sendTask(url, 'forget', 'everything')
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PERMISSION_DENIED' });
    const denial = audit.at(-1)!;
    expect(denial).toMatchObject({ decision: 'deny', action: 'forget', caller: caller.id.toString() });
    expect(JSON.stringify((err as { data: unknown }).data)).toContain(denial.auditId);
    expect(executor.runs.length).toBe(before);
  });

  it('a caller the policy does not know is denied every skill, and cannot see another caller’s task', async () => {
    const before = executor.runs.length;
    await expect(client(stranger, [binding]).sendTask(url, 'greet', 'x')).rejects.toMatchObject({
      code: 'PERMISSION_DENIED',
    });
    expect(executor.runs.length).toBe(before);
    const mine = await client(caller, [binding]).sendTask(url, 'greet', 'mine');
    expect((await client(caller, [binding]).getTask(url, mine.id)).id).toBe(mine.id);
    // The SDK scopes tasks by its user, the verified SPIFFE ID: the SDK's own TaskNotFound, code kept.
    await expect(client(stranger, [binding]).getTask(url, mine.id)).rejects.toMatchObject({
      code: 'TASK_NOT_FOUND',
      jsonRpcCode: -32001,
    });
  });
});

describe.each(['JSONRPC', 'HTTP+JSON'])('ListTasks through the guard over %s', (binding) => {
  it('is decided and audited even when it finds no task: a caller allowed no skill is denied, not given an empty list', async () => {
    const before = executor.runs.length;
    let audited = audit.length;
    const err = await client(stranger, [binding])
      .listTasks(url)
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'PERMISSION_DENIED' });
    // One deny per skill of the card, asked in order; the error names the first.
    expect(audit.slice(audited)).toMatchObject([
      { decision: 'deny', action: 'greet', caller: stranger.id.toString() },
      { decision: 'deny', action: 'forget', caller: stranger.id.toString() },
    ]);
    expect(JSON.stringify((err as { data: unknown }).data)).toContain(audit[audited]!.auditId);
    // The caller may greet: its list (of its own tasks) is decided on that skill and answered.
    audited = audit.length;
    const page = await client(caller, [binding]).listTasks(url, { pageSize: 5 });
    expect(Array.isArray(page.tasks)).toBe(true);
    expect(audit.slice(audited).some((r) => r.decision === 'allow' && r.action === 'greet')).toBe(true);
    expect(executor.runs.length).toBe(before);
  });
});

describe('the denial on the wire', () => {
  async function send(path: string, body: object) {
    const ch = channel(caller, agent.id);
    try {
      const res = await request(`${url}${path}`, {
        method: 'POST',
        dispatcher: ch,
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
        body: JSON.stringify(body),
      });
      return { status: res.statusCode, body: (await res.body.json()) as unknown };
    } finally {
      await ch.close();
    }
  }
  const message = {
    messageId: 'w-1',
    role: 'ROLE_USER',
    parts: [{ text: 'x' }],
    metadata: { skill: 'forget' },
  };

  it('JSON-RPC: an error carrying ErrorInfo PERMISSION_DENIED and the audit id; HTTP+JSON: 403 with the same', async () => {
    const before = executor.runs.length;
    const rpc = await send('/a2a/jsonrpc', {
      jsonrpc: '2.0',
      id: 7,
      method: 'SendMessage',
      params: { message },
    });
    expect(rpc.body).toMatchObject({
      id: 7,
      error: { data: [{ reason: 'PERMISSION_DENIED', metadata: { auditId: audit.at(-1)!.auditId } }] },
    });
    const rest = await send('/a2a/rest/message:send', { message });
    expect(rest.status).toBe(403);
    expect(rest.body).toMatchObject({
      error: {
        code: 403,
        details: [{ reason: 'PERMISSION_DENIED', metadata: { auditId: audit.at(-1)!.auditId } }],
      },
    });
    expect(executor.runs.length).toBe(before);
  });
});

describe('peers refused before the express app runs', () => {
  it('a verified SPIFFE ID the authorizer refuses: 403 PEER_NOT_AUTHORIZED', async () => {
    const before = executor.runs.length;
    const ch = channel(intruder, agent.id);
    try {
      const res = await request(`${url}/a2a/jsonrpc`, {
        method: 'POST',
        dispatcher: ch,
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.statusCode).toBe(403);
      expect(await res.body.json()).toMatchObject({ error: { code: 'PEER_NOT_AUTHORIZED' } });
    } finally {
      await ch.close();
    }
    expect(executor.runs.length).toBe(before);
  });

  it('a foreign trust domain’s SVID fails the handshake', async () => {
    const before = executor.runs.length;
    const evilCa = await DevCertificateAuthority.create({ trustDomain: 'evil.weave' });
    const evil = await DevCaIdentityProvider.create({
      ca: evilCa,
      id: SpiffeId.parse('spiffe://evil.weave/agent/caller'),
      logger: pino({ level: 'silent' }),
    });
    try {
      const { certChain, privateKey } = evil.getX509Svid().toPem();
      await expect(rawSend({ cert: certChain, key: privateKey })).rejects.toThrow();
    } finally {
      await evil.close();
    }
    expect(executor.runs.length).toBe(before);
  });

  it('no client certificate fails the handshake', async () => {
    const before = executor.runs.length;
    await expect(rawSend({})).rejects.toThrow();
    expect(executor.runs.length).toBe(before);
  });

  it('the same app on a plain http server: the userBuilder refuses, the SDK runs nothing', async () => {
    const before = executor.runs.length;
    const app = express();
    const handler = new DefaultRequestHandler(greetCard(), new InMemoryTaskStore(), executor);
    app.use('/', jsonRpcHandler({ requestHandler: weave.guard(handler), userBuilder: weave.userBuilder }));
    const plain = http.createServer(app);
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      const res = await request(`http://127.0.0.1:${(plain.address() as AddressInfo).port}/`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'a2a-version': '1.0' },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'SendMessage',
          params: { message: { messageId: 'p', role: 'ROLE_USER', parts: [{ text: 'x' }] } },
        }),
      });
      expect(await res.body.json()).toMatchObject({ error: { code: -32603 } });
    } finally {
      plain.closeAllConnections();
      await new Promise<void>((resolve) => plain.close(() => resolve()));
    }
    expect(executor.runs.length).toBe(before);
  });

  it('the guard refuses a context whose user is not a verified SPIFFE ID (another userBuilder)', async () => {
    const before = executor.runs.length;
    const handler = new DefaultRequestHandler(greetCard(), new InMemoryTaskStore(), executor);
    const message = sdkText('x', { metadata: { skill: 'greet' } });
    await expect(
      weave.guard(handler).sendMessage(sdkSendParams(message), new ServerCallContext()),
    ).rejects.toMatchObject({ reason: 'PERMISSION_DENIED' });
    expect(executor.runs.length).toBe(before);
  });
});

describe('the server follows SVID rotation', () => {
  function servedSerial(): Promise<string> {
    const { certChain, privateKey } = caller.identity.getX509Svid().toPem();
    const port = (server.address() as AddressInfo).port;
    return new Promise((resolve, reject) => {
      const s = tlsConnect(
        {
          host: '127.0.0.1',
          port,
          cert: certChain,
          key: privateKey,
          ca: agent.identity
            .getBundleSet()
            .allX509Authorities()
            .map((c) => c.toString('pem')),
          checkServerIdentity: () => undefined,
        },
        () => {
          const cert: PeerCertificate = s.getPeerCertificate();
          s.end();
          resolve(cert.serialNumber);
        },
      );
      s.on('error', reject);
    });
  }

  it('a new connection gets the rotated SVID, and calls go on, without a restart', async () => {
    const serial = (s: string) => s.toLowerCase().replace(/^0+/, '');
    const current = () => serial(agent.identity.getX509Svid().certificates[0]!.serialNumber);
    const before = serial(await servedSerial());
    expect(before).toBe(current());
    await (agent.identity as DevCaIdentityProvider).rotate();
    const after = serial(await servedSerial());
    expect(after).not.toBe(before);
    expect(after).toBe(current());
    const task = await client(caller).sendTask(url, 'greet', 'after rotation');
    expect(task.status.state).toBe('TASK_STATE_COMPLETED');
  });
});

describe('the SDK client with secureClientFactory', () => {
  let h: Harness;
  const ran: string[] = [];
  beforeAll(async () => {
    h = await startHarness((a2a) => serveEcho(a2a, ran));
  });
  afterAll(async () => h.close());

  it('calls a Weave agent as its verified SPIFFE ID', async () => {
    const sdk = await secureClientFactory(h.agent).createFromUrl(h.url);
    const result = await sdk.sendMessage(sdkSendParams(sdkText('hi', { metadata: { skill: 'echo' } })));
    expect('id' in result && result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    expect(ran).toEqual([h.clientId.toString()]);
  });

  it('calls the SDK agent behind the adapter', async () => {
    const before = executor.runs.length;
    const ch = channel(caller, agent.id);
    try {
      const sdk = await secureClientFactory(ch).createFromUrl(url);
      const message = { ...sdkText('from the sdk'), role: Role.ROLE_USER, metadata: { skill: 'greet' } };
      const result = await sdk.sendMessage(sdkSendParams(message));
      expect('id' in result && result.status?.state).toBe(TaskState.TASK_STATE_COMPLETED);
    } finally {
      await ch.close();
    }
    expect(executor.runs.slice(before)).toEqual([
      { skill: 'greet', user: caller.id.toString(), text: 'from the sdk' },
    ]);
  });

  it('refuses an impostor server (another SPIFFE ID) before anything is sent', async () => {
    const before = ran.length;
    const wrong = channel(h.client, h.strangerId); // the server at h.url proves h.serverId
    try {
      const err = await secureClientFactory(wrong)
        .createFromUrl(h.url)
        .catch((e: unknown) => e);
      expect(causeCodes(err)).toContain('PEER_VERIFICATION_FAILED');
    } finally {
      await wrong.close();
    }
    expect(ran.length).toBe(before);
  });
});

describe('options', () => {
  it('bad options are a typed error naming each problem', () => {
    const err = (() => {
      try {
        secureSdkAgent({ spiffeId: 'not-an-id' } as never);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(SdkAdapterConfigError);
    expect((err as SdkAdapterConfigError).issues.join('\n')).toMatch(/identity[\s\S]*enforcer/);
  });

  it('an SVID that does not carry spiffeId: no server', () => {
    const other = secureSdkAgent({
      identity: agent.identity,
      enforcer: LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] }),
      spiffeId: caller.id,
    });
    try {
      expect(() => other.createServer(express())).toThrow(SdkAdapterConfigError);
    } finally {
      other.close();
    }
  });
});
