// Signed agent cards (§8.4): Weave signs with the SVID key and x5c; a verifier
// checks the chain against the trust bundle and the card's SPIFFE ID; foreign
// cards verify with a caller-supplied key; both directions interoperate with
// @a2a-js/sdk 1.3's generateAgentCardSignature / verifyAgentCardSignature.
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as jose from 'jose';
import { pino } from 'pino';
import {
  canonicalizeAgentCard as sdkCanonicalize,
  generateAgentCardSignature,
  verifyAgentCardSignature,
} from '@a2a-js/sdk';
import { DevCaIdentityProvider, DevCertificateAuthority } from '@weave/identity/dev';
import { LocalPolicyEnforcer } from '@weave/authz';
import type { SecureChannel } from '@weave/transport';
import type { MtlsFastifyInstance } from '@weave/transport/server';
import {
  A2AServer,
  AgentCardSignatureError,
  AgentCardSigner,
  canonicalizeAgentCard,
  jkuKeyResolver,
  signAgentCard,
  verifyAgentCard,
  type AgentCard,
  type AgentCardSignatureErrorCode,
} from '../src/index.js';
import { baseUrl, channel, createPki, mtlsServer, type Pki, type Workload } from '@weave/test-support';

type SdkCard = Parameters<ReturnType<typeof generateAgentCardSignature>>[0];

let pki: Pki;
let server: Workload;
let other: Workload;
let card: AgentCard;

beforeAll(async () => {
  pki = await createPki();
  server = await pki.workload('/agent/server');
  other = await pki.workload('/agent/other');
  const a2a = new A2AServer({
    card: { name: 'signer', description: 'signs its card', version: '1.0.0' },
    selfId: server.id,
    enforcer: LocalPolicyEnforcer.fromObject({ version: 1, id: 'none', default: 'deny', rules: [] }),
    push: { enabled: true, send: () => Promise.resolve() },
  });
  a2a.registerTaskHandler(
    { id: 'search', name: 'Search', description: 'Searches the web', tags: ['web'], examples: ['q'] },
    () => 'ok',
  );
  card = a2a.agentCard('https://127.0.0.1:8443/');
});
afterAll(async () => {
  await pki.close();
});

async function rejects(
  p: Promise<unknown>,
  code: AgentCardSignatureErrorCode,
): Promise<AgentCardSignatureError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentCardSignatureError);
  expect((err as AgentCardSignatureError).code).toBe(code);
  return err as AgentCardSignatureError;
}

function protectedHeader(c: AgentCard, i = 0): Record<string, unknown> {
  return jose.decodeProtectedHeader(c.signatures?.[i] as { protected: string }) as Record<string, unknown>;
}

describe('signing with the SVID', () => {
  it('puts alg, kid, typ JOSE and the SVID chain (x5c) in the protected header', async () => {
    const svid = server.identity.getX509Svid();
    const signed = await signAgentCard(card, svid);
    expect(signed.signatures).toHaveLength(1);
    const h = protectedHeader(signed);
    expect(h).toMatchObject({ alg: 'ES256', typ: 'JOSE' });
    expect(typeof h.kid).toBe('string');
    const x5c = h.x5c as string[];
    expect(x5c[0]).toBe(Buffer.from(svid.certificates[0]!.rawData).toString('base64'));
    // The body of the card is unchanged: only `signatures` is added.
    expect({ ...signed, signatures: undefined }).toEqual({ ...card, signatures: undefined });
  });

  it('verifies against the trust bundle, naming the signer', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    const v = await verifyAgentCard(signed, {
      policy: 'required',
      bundles: other.identity,
      tlsPeer: server.id,
    });
    expect(v).toMatchObject({ status: 'verified', via: 'x5c', alg: 'ES256' });
    expect(v.status === 'verified' && v.spiffeId?.toString()).toBe(server.id.toString());
  });

  it('survives a JSON round trip with reordered members (RFC 8785)', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    const reordered = JSON.parse(
      JSON.stringify(Object.fromEntries(Object.entries(signed).reverse())),
    ) as AgentCard;
    await expect(
      verifyAgentCard(reordered, { policy: 'required', bundles: other.identity }),
    ).resolves.toMatchObject({ status: 'verified' });
  });
});

describe('canonical form (RFC 8785)', () => {
  it('serialises numbers, strings and member order as the RFC 8785 example does', () => {
    // The values of RFC 8785 §3.2.2's example; `null` is dropped, as every empty value is.
    const params = {
      numbers: [Number('333333333.33333329'), 1e30, 4.5, 2e-3, 0.000000000000000000000000001],
      string: '€$\u000f\nA\'B"\\\\"/',
      literals: [null, true, false],
    };
    const c = { ...card, capabilities: { extensions: [{ uri: 'u', params }] } };
    expect(canonicalizeAgentCard(c)).toContain(
      String.raw`"params":{"literals":[true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
    );
  });

  it('a string with a lone surrogate has no canonical form: CARD_INVALID, to sign and to verify', async () => {
    const lone = { ...card, description: 'half of \u{1F600}: \uD83D' };
    expect(() => canonicalizeAgentCard(lone)).toThrow(AgentCardSignatureError);
    expect(() => canonicalizeAgentCard(lone)).toThrow(/lone surrogate/i);
    await rejects(signAgentCard(lone, server.identity.getX509Svid()), 'CARD_INVALID');
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    await rejects(
      verifyAgentCard(
        { ...signed, description: lone.description },
        { policy: 'required', bundles: other.identity },
      ),
      'CARD_INVALID',
    );
  });
});

describe('refused signatures', () => {
  it('a card changed by one byte of a skill fails', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    const skill = signed.skills[0]!;
    const tampered: AgentCard = {
      ...signed,
      skills: [{ ...skill, description: skill.description.replace('S', 'T') }],
    };
    expect(tampered.skills[0]!.description).not.toBe(skill.description);
    await rejects(
      verifyAgentCard(tampered, { policy: 'required', bundles: other.identity }),
      'CARD_SIGNATURE_INVALID',
    );
  });

  it('a card signed by the SVID of another SPIFFE ID fails', async () => {
    // `other` holds a perfectly valid SVID of the same trust domain, but the card says /agent/server.
    const forged = await signAgentCard(card, other.identity.getX509Svid());
    const err = await rejects(
      verifyAgentCard(forged, { policy: 'required', bundles: server.identity }),
      'CARD_SIGNER_MISMATCH',
    );
    expect(err.message).toContain('/agent/other');
  });

  it('a card signed by an SVID from a CA outside the bundle fails', async () => {
    // A rogue CA that names itself after our trust domain and issues /agent/server.
    const rogue = await DevCertificateAuthority.create({ trustDomain: 'test.weave' });
    const rogueId = await DevCaIdentityProvider.create({
      ca: rogue,
      id: server.id,
      logger: pino({ level: 'silent' }),
    });
    try {
      const forged = await signAgentCard(card, rogueId.getX509Svid());
      const err = await rejects(
        verifyAgentCard(forged, { policy: 'required', bundles: server.identity }),
        'CARD_SIGNER_UNTRUSTED',
      );
      expect(err.message).toContain('SVID_UNTRUSTED');
    } finally {
      await rogueId.close();
    }
  });

  it('a signed card served by another agent (TLS-proven ID differs) is refused', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    await rejects(
      verifyAgentCard(signed, { policy: 'required', bundles: server.identity, tlsPeer: other.id }),
      'CARD_TLS_PEER_MISMATCH',
    );
  });

  it('x5c is worthless without the bundles to check it against', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    await rejects(verifyAgentCard(signed, { policy: 'required' }), 'CARD_SIGNER_UNTRUSTED');
  });

  it('an HMAC "signature" with x5c, and an unsigned-alg header, are refused', async () => {
    const x5c = [Buffer.from(server.identity.getX509Svid().certificates[0]!.rawData).toString('base64')];
    const payload = new TextEncoder().encode(canonicalizeAgentCard(card));
    const hs = await new jose.FlattenedSign(payload)
      .setProtectedHeader({ alg: 'HS256', kid: 'k', typ: 'JOSE', x5c })
      .sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef'));
    await rejects(
      verifyAgentCard(
        { ...card, signatures: [{ protected: hs.protected, signature: hs.signature }] },
        { policy: 'required', bundles: server.identity },
      ),
      'CARD_SIGNATURE_ALG',
    );
    const none = Buffer.from(JSON.stringify({ alg: 'none', kid: 'k', typ: 'JOSE' })).toString('base64url');
    await rejects(
      verifyAgentCard(
        { ...card, signatures: [{ protected: none, signature: 'AA' }] },
        { policy: 'required', bundles: server.identity, keys: { keys: [] } },
      ),
      'CARD_SIGNATURE_ALG',
    );
  });

  it('malformed entries are typed errors, and every signature is reported', async () => {
    const signed = await signAgentCard(card, other.identity.getX509Svid());
    const err = await rejects(
      verifyAgentCard(
        { ...card, signatures: [{ protected: '!!!', signature: 'x' }, ...(signed.signatures ?? [])] },
        { policy: 'required', bundles: server.identity },
      ),
      'CARD_SIGNATURE_MALFORMED',
    );
    expect(err.failures.map((f) => f.code)).toEqual(['CARD_SIGNATURE_MALFORMED', 'CARD_SIGNER_MISMATCH']);
  });
});

describe('policy', () => {
  it('required refuses an unsigned card; if-present accepts it; off does not look', async () => {
    await rejects(verifyAgentCard(card, { policy: 'required', bundles: server.identity }), 'CARD_UNSIGNED');
    await expect(verifyAgentCard(card, { policy: 'if-present' })).resolves.toEqual({ status: 'unsigned' });
    await expect(verifyAgentCard(card, { policy: 'off' })).resolves.toEqual({ status: 'not-checked' });
  });

  it('if-present never downgrades a bad signature to "unsigned"', async () => {
    const forged = await signAgentCard(card, other.identity.getX509Svid());
    await rejects(
      verifyAgentCard(forged, { policy: 'if-present', bundles: server.identity }),
      'CARD_SIGNER_MISMATCH',
    );
  });

  it('an unknown policy is refused rather than read as off', async () => {
    await expect(
      verifyAgentCard(card, { policy: 'none' as unknown as 'off', bundles: server.identity }),
    ).rejects.toThrow();
  });
});

describe('rotation', () => {
  it('AgentCardSigner signs with the current SVID and re-signs after a rotation', async () => {
    const identity = server.identity as DevCaIdentityProvider;
    const signer = new AgentCardSigner(identity);
    try {
      const before = await signer.sign(card);
      expect(await signer.sign(card)).toBe(before); // cached while the SVID is the same
      const oldLeaf = (protectedHeader(before).x5c as string[])[0];
      await identity.rotate();
      const after = await signer.sign(card);
      const newLeaf = (protectedHeader(after).x5c as string[])[0];
      expect(newLeaf).not.toBe(oldLeaf);
      expect(newLeaf).toBe(Buffer.from(identity.getX509Svid().certificates[0]!.rawData).toString('base64'));
      await expect(verifyAgentCard(after, { policy: 'required', bundles: identity })).resolves.toMatchObject({
        status: 'verified',
      });
    } finally {
      signer.close();
    }
  });
});

describe('interop with @a2a-js/sdk 1.3', () => {
  it('canonicalizes cards exactly as the SDK does', () => {
    const rich: AgentCard = {
      ...card,
      provider: { url: 'https://example.org', organization: 'Example' },
      documentationUrl: 'https://example.org/docs',
      skills: [
        ...card.skills,
        { id: 'e', name: 'E', description: '', tags: [], examples: [], inputModes: ['text/plain'] },
      ],
      capabilities: {
        ...card.capabilities,
        extensions: [
          ...(card.capabilities.extensions ?? []),
          { uri: 'urn:x', required: true, params: { n: 1.5, s: 'ü€', empty: '', nested: { a: [] } } },
        ],
      },
    };
    for (const c of [card, rich]) {
      expect(canonicalizeAgentCard(c)).toBe(sdkCanonicalize(c as unknown as SdkCard));
    }
  });

  /** Edge cases of proto field presence and JCS on which the two canonical forms agree. */
  const agreeing: Record<string, (c: AgentCard) => unknown> = {
    'unknown members (top level, skill)': (c) => ({ ...c, foo: 'bar', skills: [{ ...c.skills[0], foo: 1 }] }),
    'optional bools set to false': (c) => ({
      ...c,
      capabilities: { streaming: false, pushNotifications: false, extendedAgentCard: false },
    }),
    'extension required: false (a plain proto3 bool)': (c) => ({
      ...c,
      capabilities: { extensions: [{ uri: 'u', required: false }] },
    }),
    'Struct params: false, 0, null, {}, [], "" and number forms': (c) => ({
      ...c,
      capabilities: {
        extensions: [
          {
            uri: 'u',
            params: { f: false, z: 0, n: null, e: {}, a: [], s: '', big: 1e21, small: 1e-7, neg: -0 },
          },
        ],
      },
    }),
    'key order by UTF-16 code units': (c) => ({
      ...c,
      capabilities: { extensions: [{ uri: 'u', params: { é: 1, e: 2, Z: 3, '€': 4, '\u{1F600}': 5 } }] },
    }),
    'empty strings and lists': (c) => ({
      ...c,
      provider: { url: '', organization: '' },
      supportedInterfaces: [{ ...c.supportedInterfaces[0], tenant: '' }],
      securityRequirements: [{ schemes: { mtls: { list: [] } } }, { schemes: {} }],
    }),
    'well-formed schemes of every kind': (c) => ({
      ...c,
      securitySchemes: {
        m: { mtlsSecurityScheme: { description: 'm' } },
        k: { apiKeySecurityScheme: { location: 'header', name: 'X', description: 'd' } },
        h: { httpAuthSecurityScheme: { scheme: 'Bearer', bearerFormat: 'JWT' } },
        o: {
          oauth2SecurityScheme: {
            flows: { clientCredentials: { tokenUrl: 'https://t', scopes: { a: 'b' } } },
          },
        },
        i: { openIdConnectSecurityScheme: { openIdConnectUrl: 'https://o' } },
      },
    }),
    'v0.3 top-level fields (not in v1.0)': (c) => ({
      ...c,
      url: 'https://x/',
      preferredTransport: 'JSONRPC',
    }),
  };
  it.each(Object.entries(agreeing))('canonical form equals the SDK’s: %s', (_name, make) => {
    const c = make(card);
    expect(canonicalizeAgentCard(c as AgentCard)).toBe(sdkCanonicalize(c as unknown as SdkCard));
  });

  /**
   * Where the two differ (README "Signed agent cards"): inside `securitySchemes`
   * Weave keeps what it does not model (its schema passes schemes through),
   * the SDK's proto round trip drops it. Weave's form covers everything Weave
   * keeps of the card, so such a card signed by one does not verify with the
   * other: it fails closed, never verifies with unsigned content.
   */
  const differing: Record<string, Record<string, unknown>> = {
    'an unknown member inside a scheme': {
      k: { apiKeySecurityScheme: { location: 'header', name: 'X', extra: 1 } },
    },
    'a scheme of an unknown kind': { k: { fooSecurityScheme: { a: 1 } } },
    'a scheme with two kinds set (a proto oneof)': {
      k: { mtlsSecurityScheme: { description: 'a' }, httpAuthSecurityScheme: { scheme: 'bearer' } },
    },
  };
  it.each(Object.entries(differing))(
    'canonical form differs from the SDK’s, and an SDK-signed card fails closed: %s',
    async (_name, securitySchemes) => {
      const c = { ...card, capabilities: { ...card.capabilities, extensions: [] }, securitySchemes };
      const ours = canonicalizeAgentCard(c as AgentCard);
      const theirs = sdkCanonicalize(c as unknown as SdkCard);
      expect(ours).not.toBe(theirs);
      expect(ours.length).toBeGreaterThan(theirs.length); // the SDK dropped what Weave keeps
      const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
      const sign = generateAgentCardSignature(privateKey, { alg: 'ES256', kid: 'k1', typ: 'JOSE' });
      const signed = (await sign(c as unknown as SdkCard)) as unknown as AgentCard;
      await rejects(
        verifyAgentCard(signed, { policy: 'required', keys: { keys: [jwk] } }),
        'CARD_SIGNATURE_INVALID',
      );
    },
  );

  it('a card signed by the SDK (any JWK key) verifies with Weave when the caller supplies the JWKS', async () => {
    const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'foreign-1', alg: 'ES256' };
    const foreign = { ...card, capabilities: { ...card.capabilities, extensions: [] } };
    const sign = generateAgentCardSignature(privateKey, { alg: 'ES256', kid: 'foreign-1', typ: 'JOSE' });
    const signed = (await sign(foreign as unknown as SdkCard)) as unknown as AgentCard;
    await expect(verifyAgentCard(signed, { policy: 'required', keys: { keys: [jwk] } })).resolves.toEqual({
      status: 'verified',
      via: 'key',
      kid: 'foreign-1',
      alg: 'ES256',
    });
    // Without the key there is nothing to trust it by.
    await rejects(verifyAgentCard(signed, { policy: 'required' }), 'CARD_KEY_UNKNOWN');
    // Another key under the same kid does not verify it.
    const stranger = await jose.exportJWK(
      (await jose.generateKeyPair('ES256', { extractable: true })).publicKey,
    );
    await rejects(
      verifyAgentCard(signed, { policy: 'required', keys: { keys: [{ ...stranger, kid: 'foreign-1' }] } }),
      'CARD_SIGNATURE_INVALID',
    );
  });

  it('a Weave-signed card verifies with the SDK verifier (key from the x5c leaf)', async () => {
    const signed = await signAgentCard(card, server.identity.getX509Svid());
    const verify = verifyAgentCardSignature(async () => {
      const leaf = (protectedHeader(signed).x5c as string[])[0]!;
      return new X509Certificate(Buffer.from(leaf, 'base64')).publicKey;
    });
    await expect(verify(signed as unknown as SdkCard)).resolves.toBeUndefined();
    const tampered = { ...signed, name: 'signer!' };
    // The SDK logs each failed entry with console.debug.
    const debug = vi.spyOn(console, 'debug').mockImplementation(() => undefined);
    try {
      await expect(verify(tampered as unknown as SdkCard)).rejects.toThrow(/No valid signatures/);
      expect(debug).toHaveBeenCalled();
    } finally {
      debug.mockRestore();
    }
  });

  describe('jku', () => {
    let jwksServer: MtlsFastifyInstance;
    let toJwks: SecureChannel;
    let fetches = 0;
    let jwksUrl: string;
    let signed: AgentCard;

    beforeAll(async () => {
      const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'jku-1' };
      const keyHost = await pki.workload('/keys');
      jwksServer = mtlsServer(keyHost);
      jwksServer.get('/jwks.json', async () => {
        fetches++;
        return { keys: [jwk] };
      });
      await jwksServer.listen({ port: 0, host: '127.0.0.1' });
      jwksUrl = `${baseUrl(jwksServer)}/jwks.json`;
      toJwks = channel(other, keyHost.id);
      const sign = generateAgentCardSignature(privateKey, {
        alg: 'ES256',
        kid: 'jku-1',
        typ: 'JOSE',
        jku: jwksUrl,
      });
      signed = (await sign(card as unknown as SdkCard)) as unknown as AgentCard;
    });
    afterAll(async () => {
      await toJwks.close();
      await jwksServer.close();
    });

    it('a card whose jku the caller allows verifies with the key fetched from there', async () => {
      const keys = jkuKeyResolver({ allow: [jwksUrl], dispatcher: toJwks });
      await expect(verifyAgentCard(signed, { policy: 'required', keys })).resolves.toMatchObject({
        status: 'verified',
        via: 'key',
        kid: 'jku-1',
      });
      expect(fetches).toBe(1);
    });

    it('a jku that is not allow-listed is never fetched', async () => {
      const before = fetches;
      const keys = jkuKeyResolver({ allow: ['https://127.0.0.1:1/other.json'], dispatcher: toJwks });
      const err = await rejects(verifyAgentCard(signed, { policy: 'required', keys }), 'CARD_KEY_UNKNOWN');
      expect(err.message).toContain('not among the allowed');
      expect(fetches).toBe(before);
    });
  });
});
