// Smoke test of the published packages: identity + transport only, no server
// framework. A dev CA issues two identities; a plain node:https server with
// Weave's mTLS options answers a SecureChannel that expects exactly its SPIFFE
// ID; a server holding another ID of the same CA is refused before any
// request byte reaches it. Exits non-zero on any deviation.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:https';
import { createRequire } from 'node:module';
import { SpiffeId } from '@weave/identity';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { PeerVerificationError, SecureChannel, createMtlsServerOptions } from '@weave/transport';

// require() of the ESM packages works on Node ≥ 20.19 (the `default` export condition).
const require = createRequire(import.meta.url);
assert.equal(typeof require('@weave/identity').SpiffeId, 'function');
assert.equal(typeof require('@weave/identity/dev').DevCertificateAuthority, 'function');
assert.equal(typeof require('@weave/transport').SecureChannel, 'function');

const ca = await DevCertificateAuthority.create({ trustDomain: 'smoke.test' });
const serverId = 'spiffe://smoke.test/server';
const server = await DevCaIdentityProvider.create({ ca, id: serverId });
const impostor = await DevCaIdentityProvider.create({ ca, id: 'spiffe://smoke.test/impostor' });
const client = await DevCaIdentityProvider.create({ ca, id: 'spiffe://smoke.test/client' });

let handled = 0;
async function listen(identity) {
  const srv = createServer(createMtlsServerOptions(identity), (req, res) => {
    handled++;
    const san = req.socket.getPeerX509Certificate()?.subjectAltName;
    res.end(JSON.stringify({ authorized: req.socket.authorized, san }));
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return { srv, url: `https://127.0.0.1:${srv.address().port}/` };
}

const good = await listen(server);
const bad = await listen(impostor);
const channel = new SecureChannel(client, serverId);
try {
  const res = await channel.get(good.url);
  const body = await res.body.json();
  assert.equal(res.statusCode, 200);
  assert.equal(body.authorized, true);
  assert.match(body.san, /URI:spiffe:\/\/smoke\.test\/client/);
  assert.equal(SpiffeId.parse('spiffe://smoke.test/client').trustDomain.name, 'smoke.test');
  console.log(`ok: mTLS call to ${serverId} answered; the server saw ${body.san}`);

  const before = handled;
  await assert.rejects(channel.get(bad.url), (err) => {
    assert.ok(err instanceof PeerVerificationError, `expected PeerVerificationError, got ${err}`);
    assert.equal(err.code, 'PEER_VERIFICATION_FAILED');
    return true;
  });
  assert.equal(handled, before, 'the impostor server must not receive the request');
  console.log('ok: a server presenting spiffe://smoke.test/impostor was refused before the request was sent');
} finally {
  await channel.close();
  good.srv.close();
  bad.srv.close();
  await Promise.all([server.close(), impostor.close(), client.close()]);
}
