// Issue 19 item 8: with TLS 1.2 as the floor, only AEAD suites with forward
// secrecy (ECDHE + AES-GCM / ChaCha20-Poly1305) are accepted or offered, no
// renegotiation, and every handshake a server refuses leaves a rate-limited
// log line with the reason. Real TLS on loopback with dev-CA SVIDs.
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeId } from '@weave/identity';
import type { DevCaIdentityProvider } from '@weave/identity/dev';
import { logTlsRefusals, SecureChannel, TransportConfigError } from '../src/index.js';
import { createMtlsServer, type MtlsFastifyInstance } from '../src/server.js';
import {
  byteCountingTlsServer,
  devSvidPem,
  makeTd,
  portOf,
  provider,
  removeTempDirs,
  type TestTd,
} from '@weave/test-support/tls-fixtures';

/** What OpenSSL accepts by default for TLS 1.2 with an ECDSA certificate, beyond AEAD. */
const WEAK_SUITES = [
  'ECDHE-ECDSA-AES128-SHA',
  'ECDHE-ECDSA-AES256-SHA',
  'ECDHE-ECDSA-AES128-SHA256',
  'ECDHE-ECDSA-AES256-SHA384',
];
const AEAD_SUITES = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
];

let td: TestTd;
let other: TestTd;
let serverId: DevCaIdentityProvider;
let clientId: DevCaIdentityProvider;
let app: MtlsFastifyInstance;
let handled = 0;
const logLines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  [td, other] = await Promise.all([makeTd('tls12.test'), makeTd('other.test')]);
  serverId = await provider(td, '/server');
  clientId = await provider(td, '/client');
  app = createMtlsServer({
    identity: serverId,
    authorize: authorizeId(clientId.id),
    config: { minTlsVersion: 'TLSv1.2' },
    fastify: {
      logger: {
        level: 'warn',
        stream: { write: (line: string) => logLines.push(JSON.parse(line) as Record<string, unknown>) },
      },
    },
  });
  app.get('/', async () => {
    handled++;
    return { ok: true };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
});

afterAll(async () => {
  await app.close();
  await serverId.close();
  await clientId.close();
  removeTempDirs();
});

function clientCreds(): { cert: string; key: string } {
  const svid = clientId.getX509Svid().toPem();
  return { cert: svid.certChain, key: svid.privateKey };
}

type Outcome = { cipher: string; answer: string } | { error: NodeJS.ErrnoException };

/** A raw TLS 1.2 client: handshake with `ciphers`, then one GET. */
function getOver(ciphers: string, creds: { cert?: string; key?: string } = clientCreds()): Promise<Outcome> {
  return new Promise((resolve) => {
    const sock = tls.connect({
      host: '127.0.0.1',
      port: portOf(app.server),
      ...creds,
      ca: td.ca.x509Bundle.toPem(),
      checkServerIdentity: () => undefined,
      maxVersion: 'TLSv1.2',
      ciphers,
    });
    let answer = '';
    // Read while connected: Node 20's getCipher() on a socket whose handshake failed segfaults.
    let cipher = '';
    sock.on('secureConnect', () => {
      cipher = sock.getCipher().name;
      sock.write('GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    });
    sock.on('data', (d: Buffer) => (answer += d.toString()));
    sock.on('error', (error) => resolve({ error }));
    sock.on('close', () => resolve({ cipher, answer }));
  });
}

describe('server with a TLS 1.2 floor', () => {
  for (const suite of WEAK_SUITES) {
    it(`refuses ${suite} (no AEAD) in the handshake; no route runs`, async () => {
      const before = handled;
      const out = await getOver(suite);
      // OpenSSL 3.0 (Node 20) names the alert SSLV3, later OpenSSL (Node 22, 24) SSL/TLS.
      expect('error' in out && out.error.code).toMatch(/^ERR_SSL_SSL(V3|\/TLS)_ALERT_HANDSHAKE_FAILURE$/);
      expect(handled).toBe(before);
    });
  }

  for (const suite of AEAD_SUITES) {
    it(`accepts ${suite}`, async () => {
      const before = handled;
      const out = await getOver(suite);
      expect(out).toMatchObject({ cipher: suite, answer: expect.stringMatching(/^HTTP\/1\.1 200 /) });
      expect(handled).toBe(before + 1);
    });
  }

  it('refuses a renegotiation on an established TLS 1.2 connection', async () => {
    const err = await new Promise<Error | null>((resolve) => {
      const sock = tls.connect({
        host: '127.0.0.1',
        port: portOf(app.server),
        ...clientCreds(),
        ca: td.ca.x509Bundle.toPem(),
        checkServerIdentity: () => undefined,
        maxVersion: 'TLSv1.2',
      });
      sock.on('error', (e) => resolve(e));
      sock.on('secureConnect', () => {
        sock.renegotiate({}, (e) => {
          // Without the refusal the renegotiation completes and the callback has no error.
          resolve(e ?? null);
          sock.destroy();
        });
      });
    });
    expect(err).toMatchObject({ code: 'ERR_SSL_NO_RENEGOTIATION' });
  });
});

describe('client with a TLS 1.2 floor', () => {
  async function callServerWith(ciphers: string) {
    const svid = serverId.getX509Svid().toPem();
    const srv = await byteCountingTlsServer({
      cert: svid.certChain,
      key: svid.privateKey,
      ca: td.ca.x509Bundle.toPem(),
      requestCert: true,
      rejectUnauthorized: true,
      maxVersion: 'TLSv1.2',
      ciphers,
    });
    const ch = new SecureChannel(clientId, serverId.id, {
      minTlsVersion: 'TLSv1.2',
      retry: { retries: 0 },
      requestTimeoutMs: 1000,
    });
    try {
      const err = await ch.get(`${srv.url}/`).then(
        () => undefined,
        (e: unknown) => e,
      );
      return { err, bytes: srv.bytes() };
    } finally {
      await ch.close();
      await srv.close();
    }
  }

  it('does not connect to a server that offers only a CBC suite: no request byte is sent', async () => {
    const { err, bytes } = await callServerWith('ECDHE-ECDSA-AES128-SHA');
    expect(err).toBeInstanceOf(Error);
    expect(bytes).toBe(0);
  });

  it('sends its request to a server that offers an AEAD suite (control)', async () => {
    const { bytes } = await callServerWith('ECDHE-ECDSA-AES128-GCM-SHA256');
    expect(bytes).toBeGreaterThan(0);
  });
});

describe('refused handshakes are logged with the reason, rate-limited', () => {
  function refusalLines() {
    return logLines.filter((l) => l.msg === 'TLS handshake refused');
  }

  it('names the reason of each refusal (createMtlsServer)', async () => {
    logLines.length = 0;
    // No client certificate.
    await getOver(AEAD_SUITES[0]!, {});
    // A certificate of a CA the server does not trust.
    const foreign = (await other.ca.issueX509Svid('spiffe://other.test/client')).toPem();
    await getOver(AEAD_SUITES[0]!, { cert: foreign.certChain, key: foreign.privateKey });
    // An expired certificate of the right CA.
    const expired = await devSvidPem(td, '/client', {
      notBefore: new Date(Date.now() - 7_200_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    await getOver(AEAD_SUITES[0]!, expired);
    // A weak suite.
    await getOver(WEAK_SUITES[0]!);
    await expect.poll(() => refusalLines().length).toBe(4);
    const [none, untrusted, old, weak] = refusalLines();
    expect(none).toMatchObject({ level: 40, reason: 'peer did not return a certificate' });
    expect(untrusted).toMatchObject({
      reason: 'client certificate refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
    expect(old).toMatchObject({
      reason: 'client certificate refused: CERT_HAS_EXPIRED',
    });
    expect(weak).toMatchObject({ reason: 'no shared cipher', code: 'ERR_SSL_NO_SHARED_CIPHER' });
    expect(none).toHaveProperty('remoteAddress', '127.0.0.1');
  });

  it('refuses a rate whose max or windowMs is not a whole number of at least 1, naming it', () => {
    const server = tls.createServer();
    const log = { warn: () => undefined };
    const bad: [{ max: number; windowMs: number }, string][] = [
      // NaN max: no limit; -1 or 0: every line hidden.
      [{ max: Number.NaN, windowMs: 60_000 }, 'rate.max: must be a whole number of lines, at least 1'],
      [{ max: -1, windowMs: 60_000 }, 'rate.max: must be a whole number of lines, at least 1'],
      [{ max: 0, windowMs: 60_000 }, 'rate.max: must be a whole number of lines, at least 1'],
      [{ max: 1.5, windowMs: 60_000 }, 'rate.max: must be a whole number of lines, at least 1'],
      // NaN window: silent for good after `max` lines; 0 or -1: no limit.
      [
        { max: 10, windowMs: Number.NaN },
        'rate.windowMs: must be a whole number of milliseconds, at least 1, got NaN',
      ],
      [{ max: 10, windowMs: 0 }, 'rate.windowMs: must be a whole number of milliseconds, at least 1, got 0'],
      [
        { max: 10, windowMs: -1 },
        'rate.windowMs: must be a whole number of milliseconds, at least 1, got -1',
      ],
      [
        { max: 10, windowMs: Infinity },
        'rate.windowMs: must be a whole number of milliseconds, at least 1, got Infinity',
      ],
    ];
    for (const [rate, message] of bad) {
      let err: unknown;
      try {
        logTlsRefusals(server, log, rate);
      } catch (e) {
        err = e;
      }
      expect(err, `max ${rate.max}, windowMs ${rate.windowMs}`).toBeInstanceOf(TransportConfigError);
      expect(err).toMatchObject({ code: 'INVALID_TRANSPORT_CONFIG' });
      expect((err as Error).message).toContain(message);
    }
    // Not an object at all: named as rate itself.
    expect(() => logTlsRefusals(server, log, null as never)).toThrow(/invalid transport config: rate: /);
    // Nothing was installed by the refused calls; a good rate is, with whatever else its object carries.
    expect(server.listenerCount('tlsClientError')).toBe(0);
    const stop = logTlsRefusals(server, log, { max: 1, windowMs: 1, note: 'kept' } as never);
    expect(server.listenerCount('tlsClientError')).toBe(1);
    stop();
  });

  it('writes at most the configured lines per window, then says how many it dropped', async () => {
    const svid = serverId.getX509Svid().toPem();
    const server = tls.createServer({
      cert: svid.certChain,
      key: svid.privateKey,
      ca: td.ca.x509Bundle.toPem(),
      requestCert: true,
      rejectUnauthorized: true,
    });
    const lines: Array<Record<string, unknown>> = [];
    const stop = logTlsRefusals(
      server,
      { warn: (obj) => lines.push(obj as Record<string, unknown>) },
      { max: 2, windowMs: 2000 },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const refusedOnce = () =>
      new Promise<void>((resolve) => {
        const refused = () => {
          server.off('tlsClientError', refused);
          resolve();
        };
        server.on('tlsClientError', refused);
        const s = tls.connect({
          host: '127.0.0.1',
          port: portOf(server),
          ca: td.ca.x509Bundle.toPem(),
          checkServerIdentity: () => undefined,
        });
        s.on('error', () => undefined);
      });
    try {
      const started = Date.now();
      for (let i = 0; i < 5; i++) await refusedOnce();
      // On a very slow machine the five may straddle windows; the count is then not the point.
      if (Date.now() - started < 2000) expect(lines).toHaveLength(2);
      await new Promise((r) => setTimeout(r, 2100));
      await refusedOnce();
      expect(lines.at(-1)).toMatchObject({ reason: 'peer did not return a certificate' });
      if (Date.now() - started < 4000) expect(lines.at(-1)).toMatchObject({ suppressed: 3 });
    } finally {
      stop();
      server.close();
    }
  });
});
