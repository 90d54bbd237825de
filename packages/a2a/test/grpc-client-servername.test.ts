// The gRPC client sends no TLS ServerName (SNI) to a target given as an IP
// address. grpc-js sent the target's host as the ServerName, an IP too,
// which RFC 6066 forbids: Node warned (DEP0123, "Setting the TLS ServerName
// to an IP address is not permitted by RFC 6066") on the first gRPC
// connection to an IP in every process, and says it will ignore such a name
// in a future version. A host name is still sent, and the server's SPIFFE
// verification is what it was: a server with another SPIFFE ID is refused
// before any handler runs. Real mTLS on loopback; the ServerName each
// connection brought is read on the gRPC server's TLS side.
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpiffeId } from '@weave/identity';
import { PeerVerificationError } from '@weave/transport';
import { TRUST_DOMAIN, channel } from '@weave/test-support';
import {
  A2AClientError,
  buildMessage,
  grpcTransportFactory,
  type A2AGrpcServer,
  type ClientTransport,
} from '../src/index.js';
import { serveGrpc, startHarness, type Harness } from './helpers/agents.js';

let h: Harness;
let grpc: A2AGrpcServer;
let port: number;
const ran: string[] = [];

/** The ServerName of each connection the gRPC server took, as Node read it (`false`: none was sent). */
const servernames: Array<string | false | null> = [];
const warnings: Error[] = [];
const onWarning = (w: Error): void => void warnings.push(w);
const emit = TlsServer.prototype.emit;

beforeAll(async () => {
  process.on('warning', onWarning);
  // A2AGrpcServer's own TLS server is a plain tls.Server (the harness's HTTP server is not).
  TlsServer.prototype.emit = function (this: TlsServer, event: string | symbol, ...args: unknown[]) {
    if (event === 'secureConnection' && this.constructor === TlsServer) {
      servernames.push((args[0] as TLSSocket).servername);
    }
    return Reflect.apply(emit, this, [event, ...args]) as boolean;
  } as TlsServer['emit'];
  h = await startHarness((a2a) => {
    a2a.registerTaskHandler({ id: 'echo', name: 'echo', description: 'echo', tags: [] }, (ctx) => {
      ran.push(ctx.message.messageId);
      return 'echoed';
    });
  });
  grpc = await serveGrpc(h);
  port = Number((grpc.url as string).split(':').pop());
});

afterAll(async () => {
  await grpc?.close(0);
  await h?.close();
  TlsServer.prototype.emit = emit;
  process.off('warning', onWarning);
});

const transports: ClientTransport[] = [];
function transport(url: string, dispatcher = h.agent): ClientTransport {
  const t = grpcTransportFactory.create(
    { url, protocolBinding: 'GRPC', protocolVersion: '1.0' },
    { dispatcher, headers: {}, maxResponseBytes: 1 << 20, streamIdleTimeoutMs: 0 },
  );
  transports.push(t);
  return t;
}

afterAll(async () => {
  await Promise.all(transports.map((t) => t.close()));
});

/** The warnings Node emitted for an IP address as a TLS ServerName. */
const dep0123 = () => warnings.filter((w) => (w as { code?: unknown }).code === 'DEP0123');

/** Lets a warning emitted during the last call reach its listeners (Node emits it from the next tick). */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('gRPC client TLS ServerName', () => {
  it('to an IP address: none is sent, Node warns of nothing, and the verified server answers', async () => {
    const t = transport(`127.0.0.1:${port}`);
    const message = buildMessage('echo', 'over an IP');
    const result = await t.call('SendMessage', { message }, { timeoutMs: 5_000 });
    await tick();
    expect(JSON.stringify(result)).toContain('echoed');
    expect(ran).toContain(message.messageId);
    expect({ servernames, warned: dep0123().map((w) => w.message) }).toEqual({
      servernames: [false],
      warned: [],
    });
  });

  it('to an https:// URL with an IP address: none is sent either', async () => {
    servernames.length = 0;
    const t = transport(`https://127.0.0.1:${port}`);
    const result = await t.call(
      'SendMessage',
      { message: buildMessage('echo', 'over a URL') },
      { timeoutMs: 5_000 },
    );
    await tick();
    expect(JSON.stringify(result)).toContain('echoed');
    expect({ servernames, warned: dep0123().map((w) => w.message) }).toEqual({
      servernames: [false],
      warned: [],
    });
  });

  it('to a host name: it is sent, as before', async () => {
    servernames.length = 0;
    const t = transport(`localhost:${port}`);
    const result = await t.call(
      'SendMessage',
      { message: buildMessage('echo', 'over a name') },
      { timeoutMs: 5_000 },
    );
    expect(JSON.stringify(result)).toContain('echoed');
    expect(servernames).toEqual(['localhost']);
  });

  it('a server with another SPIFFE ID than the channel expects is refused as before; nothing runs', async () => {
    ran.length = 0;
    const wrongPeer = channel(h.client, SpiffeId.parse(`spiffe://${TRUST_DOMAIN}/agent/someone-else`));
    try {
      const t = transport(`127.0.0.1:${port}`, wrongPeer);
      const err = await t
        .call('SendMessage', { message: buildMessage('echo', 'to the wrong peer') }, { timeoutMs: 5_000 })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(A2AClientError);
      expect((err as A2AClientError).code).toBe('TRANSPORT_FAILED');
      expect((err as Error).cause).toBeInstanceOf(PeerVerificationError);
      expect(ran).toEqual([]);
      await tick();
      expect(dep0123()).toEqual([]);
    } finally {
      await wrongPeer.close();
    }
  });
});
