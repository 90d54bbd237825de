// destroy() ends a connection still in its TLS handshake. undici's own destroy
// leaves such a socket to its connect timeout, so a channel destroyed while
// connecting to a peer that accepts TCP and never answers kept the socket
// (and the caller that released the channel) for up to connectTimeoutMs.
import { once } from 'node:events';
import * as net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from 'undici';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { SecureChannel } from '../src/index.js';
import { makeTd, provider, removeTempDirs } from '@weave/test-support/tls-fixtures';

let clientId: DevCaIdentityProvider;
let mute: net.Server;
let url: string;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  const td = await makeTd('a.test');
  clientId = await provider(td, '/client');
  mute = net.createServer((s) => {
    s.on('error', () => undefined);
    // Read and drop the ClientHello (a paused socket would never see the FIN).
    s.resume();
  });
  mute.listen(0, '127.0.0.1');
  await once(mute, 'listening');
  url = `https://127.0.0.1:${(mute.address() as net.AddressInfo).port}/`;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => mute.close(resolve));
  await clientId.close();
  removeTempDirs();
});

it('destroy() closes a socket whose TLS handshake is pending', async () => {
  const ch = new SecureChannel(clientId, 'spiffe://a.test/server', {
    connectTimeoutMs: 120_000,
    retry: { retries: 0 },
    circuitBreaker: false,
  });
  const accepted = once(mute, 'connection') as Promise<[net.Socket]>;
  const req = request(url, { dispatcher: ch }).catch((e: unknown) => e);
  const [server] = await accepted;
  sockets.push(server);
  const serverClosed = once(server, 'close');
  await ch.destroy();
  expect(await req).toBeInstanceOf(Error);
  // Far before the connect timeout (120 s, past the test's timeout).
  await serverClosed;
  expect(server.closed).toBe(true);
}, 10_000);
