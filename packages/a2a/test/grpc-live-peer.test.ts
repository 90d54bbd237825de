// The gRPC binding, both sides: a connection does not outlive its peer's
// certificate or trust. Measured before: on the server, a call over a
// connection whose caller's certificate had expired ran its task, and a
// stream to that caller went on; on the client, GrpcTransport sent calls
// over a connection whose server certificate had expired (also after the
// server had rotated to a new one) and, after a bundle update dropped the
// server's CA, kept sending calls and receiving a stream over the old
// connection. Real mTLS with dev-CA SVIDs living about a second; grpc-js
// with PEM credentials where the caller's certificate must expire.
import { createSecureContext } from 'node:tls';
import { Client, Metadata, credentials, type ServiceError } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalPolicyEnforcer } from '@weave/authz';
import { BundleSet, type Authorizer, type IdentityProvider } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel } from '@weave/transport';
import {
  SetProvider,
  expiringSvid as svid,
  makeTd,
  provider,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';
import { A2AClientError, A2AGrpcServer, A2AServer, GrpcTransport, buildMessage } from '../src/index.js';
import { a2aGrpcService } from '../src/grpc/index.js';

/** How long a short-lived certificate lives at least (1 to 2 s: certificate times are whole seconds). */
const LIFE_MS = 1000;
/** How late after its peer's certificate expired a connection may end, on a loaded machine. */
const LATE_MS = 1000;
const anyone: Authorizer = () => ({ ok: true });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits until a moment after `t` (epoch ms). */
const pastOf = (t: number) => sleep(t + 200 - Date.now());

let A: TestTd;
let B: TestTd;
/** Trust A and B (federated). */
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let a2a: A2AServer;
/** Callers of every task that ran. */
const ran: string[] = [];
const closers: Array<() => unknown> = [];

beforeAll(async () => {
  [A, B] = await Promise.all([makeTd('a.glive'), makeTd('b.glive')]);
  [serverId, clientId] = await Promise.all([
    provider(A, '/server', { federatedBundles: [B.ca.x509Bundle] }),
    provider(A, '/client', { federatedBundles: [B.ca.x509Bundle] }),
  ]);
  a2a = new A2AServer({
    card: { name: 'live peer', description: 'grpc live peer', version: '1.0.0' },
    selfId: serverId.id,
    enforcer: LocalPolicyEnforcer.fromObject({
      version: 1,
      id: 'grpc-live-peer',
      default: 'deny',
      rules: [
        {
          id: 'clients',
          effect: 'allow',
          callers: [`spiffe://${A.name}/client`, `spiffe://${B.name}/client`],
          actions: ['*'],
        },
      ],
    }),
    heartbeatMs: 0,
  });
  a2a.registerTaskHandler({ id: 'echo', name: 'Echo', description: 'echo', tags: [] }, (ctx) => {
    ran.push(ctx.caller.toString());
    return 'echo';
  });
  // Publishes a chunk every 100 ms until the call ends.
  a2a.registerTaskHandler({ id: 'tick', name: 'Tick', description: 'tick', tags: [] }, async (ctx) => {
    ran.push(ctx.caller.toString());
    for (let i = 0; i < 100 && !ctx.signal.aborted; i++) {
      ctx.publishArtifact({ artifactId: 'ticks', parts: [{ text: String(i) }] }, { append: i > 0 });
      await sleep(100);
    }
    return undefined;
  });
});
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
  // Cases that dropped B put it back.
  serverId.addFederatedBundle(B.ca.x509Bundle);
  clientId.addFederatedBundle(B.ca.x509Bundle);
});
afterAll(async () => {
  await a2a.close();
  await Promise.all([serverId.close(), clientId.close()]);
  removeTempDirs();
});

async function listen(identity: IdentityProvider): Promise<string> {
  const grpc = new A2AGrpcServer({ handler: a2a.handler, identity, authorize: anyone });
  closers.push(() => grpc.close(100));
  return (await grpc.listen()).url;
}

describe('the gRPC server: no call runs for a caller whose certificate expired or whose chain is no longer trusted', () => {
  const svc = a2aGrpcService();

  /** A raw grpc-js client presenting a `/client` SVID of `td` that lives `ms`. */
  async function caller(url: string, td: TestTd, ms: number) {
    const own = await svid(td, '/client', ms);
    const { certChain, privateKey } = own.toPem();
    const context = createSecureContext({ cert: certChain, key: privateKey, ca: A.ca.x509Bundle.toPem() });
    const client = new Client(
      url,
      credentials.createFromSecureContext(context, { checkServerIdentity: () => undefined }),
    );
    closers.push(() => client.close());
    const md = () => {
      const m = new Metadata();
      m.set('a2a-version', '1.0');
      return m;
    };
    return {
      expiresAt: own.expiresAt.getTime(),
      /** One SendMessage: undefined when it succeeded, else its error. */
      send: () =>
        new Promise<ServiceError | null>((resolve) =>
          client.makeUnaryRequest(
            svc.SendMessage.path,
            svc.SendMessage.requestSerialize,
            svc.SendMessage.responseDeserialize,
            { message: buildMessage('echo', 'hi') },
            md(),
            (err) => resolve(err),
          ),
        ),
      /** A SendStreamingMessage read until it ends or `giveUpAt` (epoch ms): when it ended. */
      stream: (giveUpAt: number) =>
        new Promise<number>((resolve) => {
          const call = client.makeServerStreamRequest(
            svc.SendStreamingMessage.path,
            svc.SendStreamingMessage.requestSerialize,
            svc.SendStreamingMessage.responseDeserialize,
            { message: buildMessage('tick', 'x') },
            md(),
          );
          const giveUp = setTimeout(() => call.cancel(), giveUpAt - Date.now());
          call.on('data', () => undefined);
          call.on('error', () => undefined);
          call.on('close', () => {
            clearTimeout(giveUp);
            resolve(Date.now());
          });
        }),
    };
  }

  it('a call on the connection after the caller certificate expired does not run', async () => {
    const url = await listen(serverId);
    const c = await caller(url, A, LIFE_MS);
    expect(await c.send()).toBeNull();
    await pastOf(c.expiresAt);
    const before = ran.length;
    expect(await c.send()).not.toBeNull();
    expect(ran.length).toBe(before);
  });

  it('a stream to a caller ends when its certificate expires; a valid caller is served', async () => {
    const url = await listen(serverId);
    const c = await caller(url, A, LIFE_MS);
    expect((await c.stream(c.expiresAt + 3000)) - c.expiresAt).toBeLessThan(LATE_MS);
    const before = ran.length;
    expect(await (await caller(url, A, 60_000)).send()).toBeNull();
    expect(ran.length).toBe(before + 1);
  });

  it('a bundle update that drops the caller CA ends its stream, and its next call does not run', async () => {
    const url = await listen(serverId);
    const c = await caller(url, B, 60_000);
    const stream = c.stream(Date.now() + 3000);
    await sleep(300);
    const dropped = Date.now();
    serverId.removeFederatedBundle(B.ca.trustDomain);
    expect((await stream) - dropped).toBeLessThan(LATE_MS);
    const before = ran.length;
    expect(await c.send()).not.toBeNull();
    expect(ran.length).toBe(before);
  });
});

describe('the gRPC client: a connection whose server certificate expired or is no longer trusted carries nothing more', () => {
  /** A gRPC server whose own SVID (of `td`) lives `ms`, and a GrpcTransport to it. */
  async function shortLivedServer(td: TestTd, ms: number) {
    const identity = new SetProvider();
    const own = await svid(td, '/server', ms);
    identity.set(own, BundleSet.of(A.ca.x509Bundle, B.ca.x509Bundle));
    closers.push(() => identity.close());
    const url = await listen(identity);
    const channel = new SecureChannel(clientId, `spiffe://${td.name}/server`, { circuitBreaker: false });
    closers.push(() => channel.destroy());
    const serials: string[] = [];
    channel.onPeerVerified((e) => serials.push(e.serialNumber));
    const transport = new GrpcTransport(
      { url, protocolBinding: 'GRPC' },
      { dispatcher: channel, headers: {}, maxResponseBytes: 1 << 20 },
    );
    closers.push(() => transport.close());
    return { identity, transport, serials, expiresAt: own.expiresAt.getTime() };
  }

  /** One SendMessage: undefined when it succeeded, else its error. */
  async function send(t: GrpcTransport): Promise<unknown> {
    try {
      await t.call('SendMessage', { message: buildMessage('echo', 'hi') }, { timeoutMs: 5000 });
      return undefined;
    } catch (err) {
      return err;
    }
  }

  /** A SendStreamingMessage read until it fails (its error) or `giveUpMs` passes (undefined). */
  async function readStream(t: GrpcTransport, giveUpMs: number): Promise<unknown> {
    const signal = AbortSignal.timeout(giveUpMs);
    try {
      const events = t.stream(
        'SendStreamingMessage',
        { message: buildMessage('tick', 'x') },
        { timeoutMs: 5000, signal },
      );
      for await (const _ of events);
      return undefined;
    } catch (err) {
      return signal.aborted ? undefined : err;
    }
  }

  function expectPeerRefusal(err: unknown, reason: string): void {
    expect(err).toBeInstanceOf(A2AClientError);
    expect((err as A2AClientError).code).toBe('TRANSPORT_FAILED');
    expect((err as Error).cause).toBeInstanceOf(PeerVerificationError);
    expect((err as Error).message).toContain(reason);
  }

  it('no call goes to a server whose certificate expired; no task ran', async () => {
    const { transport, expiresAt } = await shortLivedServer(A, LIFE_MS);
    expect(await send(transport)).toBeUndefined();
    await pastOf(expiresAt);
    const before = ran.length;
    const err = await send(transport);
    expect(err).toBeInstanceOf(A2AClientError);
    expect((err as A2AClientError).code).toBe('TRANSPORT_FAILED');
    expect(ran.length).toBe(before);
  });

  it('after the server rotated, the call goes over a new connection that presents its new certificate', async () => {
    const { identity, transport, serials, expiresAt } = await shortLivedServer(A, LIFE_MS);
    expect(await send(transport)).toBeUndefined();
    identity.set(await svid(A, '/server', 60_000), BundleSet.of(A.ca.x509Bundle, B.ca.x509Bundle));
    await pastOf(expiresAt);
    expect(await send(transport)).toBeUndefined();
    expect(new Set(serials).size).toBe(2);
  });

  it('a stream from a server whose certificate expires ends with TRANSPORT_FAILED caused by PeerVerificationError', async () => {
    const { transport, expiresAt } = await shortLivedServer(A, LIFE_MS);
    expectPeerRefusal(await readStream(transport, expiresAt + 3000 - Date.now()), 'expired');
  });

  it('a bundle update that drops the server CA ends a stream from it and refuses the next call; no task ran', async () => {
    const { transport } = await shortLivedServer(B, 60_000);
    const stream = readStream(transport, 3000);
    await sleep(300);
    clientId.removeFederatedBundle(B.ca.trustDomain);
    expectPeerRefusal(await stream, B.name);
    const before = ran.length;
    expectPeerRefusal(await send(transport), B.name);
    expect(ran.length).toBe(before);
  });
});
