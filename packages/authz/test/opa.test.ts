/**
 * OpaEnforcer against a stand-in HTTP server that implements OPA's REST Data
 * API contract (helpers/opa-data-api-standin.ts), for the answers a real OPA
 * does not give on demand: malformed bodies, stalls, 4xx/5xx, wrong shapes.
 * A real OPA is exercised by golden.test.ts and interop/opa/.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { SpiffeId } from '@weave/identity';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthzConfigError, OpaEnforcer, PinoAuditSink } from '../src/index.js';
import { startOpaStandin, type OpaStandin } from './helpers/opa-data-api-standin.js';
import { CollectingSink, memoryLogger } from './helpers/sinks.js';

const ORCH = SpiffeId.parse('spiffe://demo.weave/agent/orchestrator');
const SEARCH = SpiffeId.parse('spiffe://demo.weave/agent/search');

describe('OpaEnforcer', () => {
  let opa: OpaStandin;
  const enforcers: OpaEnforcer[] = [];
  let sink: CollectingSink;

  function make(opts: Partial<ConstructorParameters<typeof OpaEnforcer>[0]> = {}): OpaEnforcer {
    const e = new OpaEnforcer({ url: opa.url, audit: sink, timeoutMs: 2_000, ...opts });
    enforcers.push(e);
    return e;
  }

  beforeEach(async () => {
    sink = new CollectingSink();
    opa = await startOpaStandin(() => undefined);
  });
  afterEach(async () => {
    await Promise.all(enforcers.splice(0).map((e) => e.close()));
    await opa.close();
  });

  it('posts the documented input shape to the Data API path', async () => {
    opa.decide = () => true;
    const e = make({ path: 'acme/authz/allow' });
    await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search', context: { traceId: 'abc' } });
    await e.checkInbound({ caller: ORCH, action: 'ping' });
    expect(opa.requests).toHaveLength(2);
    expect(opa.requests[0]).toEqual({
      path: 'acme/authz/allow',
      body: {
        input: {
          caller: { spiffe_id: ORCH.toString(), trust_domain: 'demo.weave' },
          callee: { spiffe_id: SEARCH.toString(), trust_domain: 'demo.weave' },
          action: 'search',
          direction: 'outbound',
          context: { traceId: 'abc' },
        },
      },
    });
    expect(opa.requests[1]?.body).toEqual({
      input: {
        caller: { spiffe_id: ORCH.toString(), trust_domain: 'demo.weave' },
        action: 'ping',
        direction: 'inbound',
        context: {},
      },
    });
  });

  it('allows on result true and denies on result false', async () => {
    opa.decide = (_p, input) => (input as { action: string }).action === 'search';
    const e = make();
    expect(await e.checkInbound({ caller: ORCH, action: 'search' })).toMatchObject({
      allowed: true,
      reason: 'opa: allowed',
    });
    expect(await e.checkInbound({ caller: ORCH, action: 'delete' })).toMatchObject({
      allowed: false,
      reason: 'opa: denied',
    });
  });

  it('uses { allow, reason, rule_id, policy_id } results', async () => {
    opa.decide = () => ({ allow: false, reason: 'denied by rule "x"', rule_id: 'x', policy_id: 'p' });
    const d = await make().checkInbound({ caller: ORCH, action: 'search' });
    expect(d).toMatchObject({
      allowed: false,
      reason: 'opa: denied by rule "x"',
      ruleId: 'x',
      policyId: 'p',
    });
    expect(Object.isFrozen(d)).toBe(true);
  });

  it('denies with its own reason when the result is undefined', async () => {
    opa.decide = () => undefined;
    const d = await make().checkInbound({ caller: ORCH, action: 'search' });
    expect(d.allowed).toBe(false);
    expect(d.reason).toBe(
      'opa: result undefined for data.weave.authz.decision (no such rule or no policy loaded)',
    );
  });

  it('denies a result of the wrong shape', async () => {
    for (const result of ['yes', 1, { allowed: true }, { allow: 'true' }, null]) {
      opa.decide = () => result;
      const d = await make().checkInbound({ caller: ORCH, action: 'search' });
      expect({ result, allowed: d.allowed, reason: d.reason }).toEqual({
        result,
        allowed: false,
        reason: 'opa: invalid result: expected true/false or { allow, reason }',
      });
    }
  });

  it('denies on HTTP 500 and 400 with the status and OPA error in the reason', async () => {
    opa.reply = () => ({
      status: 500,
      body: {
        code: 'internal_error',
        message: 'eval_conflict_error: functions must not produce multiple outputs',
      },
    });
    const d500 = await make().checkInbound({ caller: ORCH, action: 'search' });
    expect(d500).toMatchObject({
      allowed: false,
      reason:
        'opa: HTTP 500: internal_error: eval_conflict_error: functions must not produce multiple outputs',
    });
    opa.reply = () => ({ status: 400, body: { code: 'invalid_parameter', message: 'bad input' } });
    const d400 = await make().checkInbound({ caller: ORCH, action: 'search' });
    expect(d400).toMatchObject({ allowed: false, reason: 'opa: HTTP 400: invalid_parameter: bad input' });
  });

  it('denies on timeout with a reason distinct from other failures', async () => {
    opa.reply = () => 'hang';
    const d = await make({ timeoutMs: 100 }).checkInbound({ caller: ORCH, action: 'search' });
    expect(d).toMatchObject({ allowed: false, reason: 'opa: timeout after 100 ms' });
  });

  it('denies on a refused connection with its own reason', async () => {
    // Reserve a port, then close it so nothing listens there.
    const srv: Server = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const e = make({ url: `http://127.0.0.1:${port}` });
    const d = await e.checkInbound({ caller: ORCH, action: 'search' });
    expect(d).toMatchObject({ allowed: false, reason: `opa: connection refused (http://127.0.0.1:${port})` });
    expect(await e.health()).toEqual({
      ok: false,
      reason: `opa health: connection refused (http://127.0.0.1:${port})`,
    });
  });

  it('denies when the body is not JSON', async () => {
    opa.reply = () => ({ status: 200, body: 'not an object' });
    const d = await make().checkInbound({ caller: ORCH, action: 'search' });
    expect(d).toMatchObject({ allowed: false, reason: 'opa: invalid response: body is not a JSON object' });
  });

  describe('decision cache', () => {
    it('hits on the same caller, callee and action, whatever the context', async () => {
      opa.decide = () => ({ allow: true, reason: 'ok', rule_id: 'r1' });
      let now = 1_000;
      const e = make({ cache: { ttlMs: 5_000 }, now: () => now });
      const first = await e.checkOutbound({
        caller: ORCH,
        callee: SEARCH,
        action: 'search',
        context: { requestId: '1' },
      });
      const second = await e.checkOutbound({
        caller: ORCH,
        callee: SEARCH,
        action: 'search',
        context: { requestId: '2' },
      });
      expect(opa.requests).toHaveLength(1);
      expect(first).toMatchObject({ allowed: true, ruleId: 'r1' });
      expect(second).toMatchObject({ allowed: true, ruleId: 'r1' });
      expect(second.auditId).not.toBe(first.auditId);
      expect(sink.records.map((r) => r.cached ?? false)).toEqual([false, true]);

      // Miss: another action, callee or direction.
      await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'index' });
      await e.checkOutbound({ caller: ORCH, callee: ORCH, action: 'search' });
      await e.checkInbound({ caller: ORCH, callee: SEARCH, action: 'search' });
      expect(opa.requests).toHaveLength(4);

      // Expiry.
      now += 4_999;
      await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
      expect(opa.requests).toHaveLength(4);
      now += 2;
      await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
      expect(opa.requests).toHaveLength(5);
    });

    it('keys the cache by tenant too: a tenant’s allow is never served to another tenant', async () => {
      opa.decide = (_path, input) => {
        const tenant = (input as { context?: { tenant?: string } }).context?.tenant;
        return { allow: tenant === 'acme', reason: `tenant ${tenant}` };
      };
      const e = make({ cache: { ttlMs: 60_000 } });
      const check = (tenant?: string) =>
        e.checkInbound({ caller: ORCH, action: 'GetTask', context: tenant ? { tenant } : {} });
      expect((await check('acme')).allowed).toBe(true);
      expect((await check('globex')).allowed).toBe(false);
      expect((await check()).allowed).toBe(false);
      expect((await check('acme')).allowed).toBe(true);
      expect(opa.requests).toHaveLength(3);
      expect(sink.records.map((r) => [r.tenant, r.cached ?? false])).toEqual([
        ['acme', false],
        ['globex', false],
        [undefined, false],
        ['acme', true],
      ]);
    });

    it('keys the cache by the full tenant: two long tenants sharing a prefix are apart', async () => {
      const acme = `acme-${'x'.repeat(255)}`;
      const other = `${acme.slice(0, 256)}-other`;
      expect(other.slice(0, 256)).toBe(acme.slice(0, 256));
      opa.decide = (_path, input) => (input as { context: { tenant?: string } }).context.tenant === acme;
      const e = make({ cache: { ttlMs: 60_000 } });
      const check = (tenant: string) =>
        e.checkInbound({ caller: ORCH, action: 'GetTask', context: { tenant } });
      expect((await check(acme)).allowed).toBe(true);
      expect(await check(other)).toMatchObject({ allowed: false, reason: 'opa: denied' });
      expect(opa.requests).toHaveLength(2);
      // The audit record keeps the shortened tenant, with its length.
      expect(sink.records.map((r) => r.tenant)).toEqual([
        `${acme.slice(0, 256)}… (${acme.length} characters)`,
        `${other.slice(0, 256)}… (${other.length} characters)`,
      ]);
    });

    it('reads a context once: a tenant getter cannot key the cache as one tenant and be decided as another', async () => {
      opa.decide = (_path, input) => (input as { context: { tenant?: string } }).context.tenant === 'good';
      const e = make({ cache: { ttlMs: 60_000 } });
      // Each read gives the next value: "evil" to whoever reads first, "good" after.
      const seq = ['evil', 'good', 'good', 'good', 'good'];
      const context = {
        get tenant() {
          return seq.shift() ?? 'good';
        },
      };
      const first = await e.checkInbound({ caller: ORCH, action: 'GetTask', context });
      // Whatever tenant OPA decided on is the one audited and cached.
      const seen = (opa.requests[0]?.body as { input: { context: { tenant: string } } }).input.context.tenant;
      expect(sink.records[0]?.tenant).toBe(seen);
      expect(first.allowed).toBe(seen === 'good');
      // "evil" itself is never served an allow from the cache.
      const evil = await e.checkInbound({ caller: ORCH, action: 'GetTask', context: { tenant: 'evil' } });
      expect(evil.allowed).toBe(false);
    });

    it('keys the cache unambiguously: no action and tenant pair passes for another', async () => {
      opa.decide = (_path, input) => {
        const { action, context } = input as { action: string; context: { tenant?: unknown } };
        return action === 'read' && context.tenant === 't1\n';
      };
      const e = make({ cache: { ttlMs: 60_000 } });
      expect(
        (await e.checkInbound({ caller: ORCH, action: 'read', context: { tenant: 't1\n' } })).allowed,
      ).toBe(true);
      expect(await e.checkInbound({ caller: ORCH, action: 'read\nt1' })).toMatchObject({
        allowed: false,
        reason: 'opa: denied',
      });
      expect(opa.requests).toHaveLength(2);
    });

    it('tells an absent tenant from an empty or non-string one', async () => {
      opa.decide = (_path, input) => !('tenant' in (input as { context: object }).context);
      const e = make({ cache: { ttlMs: 60_000 } });
      expect((await e.checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(true);
      for (const tenant of ['', 5, null, false, { id: 'x' }]) {
        const d = await e.checkInbound({ caller: ORCH, action: 'a', context: { tenant } });
        expect({ tenant, allowed: d.allowed, cached: sink.records.at(-1)?.cached }).toEqual({
          tenant,
          allowed: false,
          cached: undefined,
        });
      }
      expect(opa.requests).toHaveLength(6);
      // The same values again: primitives hit, an object tenant is never cached.
      for (const tenant of ['', 5, null, false]) {
        await e.checkInbound({ caller: ORCH, action: 'a', context: { tenant } });
      }
      await e.checkInbound({ caller: ORCH, action: 'a', context: { tenant: { id: 'x' } } });
      expect(opa.requests).toHaveLength(7);
    });

    it('never caches failures or undefined results', async () => {
      const e = make({ cache: { ttlMs: 60_000 } });
      opa.reply = () => ({ status: 500, body: { code: 'internal_error', message: 'boom' } });
      expect((await e.checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(false);
      opa.reply = undefined;
      opa.decide = () => undefined;
      expect((await e.checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(false);
      opa.decide = () => true;
      expect((await e.checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(true);
      expect(opa.requests).toHaveLength(3);
    });

    it('evicts the oldest entry beyond maxEntries', async () => {
      opa.decide = () => true;
      const e = make({ cache: { ttlMs: 60_000, maxEntries: 2 } });
      for (const action of ['a', 'b', 'c', 'c', 'b', 'a']) await e.checkInbound({ caller: ORCH, action });
      // a, b, c miss; c, b hit; a was evicted when c came in.
      expect(opa.requests.map((r) => (r.body as { input: { action: string } }).input.action)).toEqual([
        'a',
        'b',
        'c',
        'a',
      ]);
    });
  });

  it('probes health', async () => {
    const e = make();
    expect(await e.health()).toEqual({ ok: true, status: 200 });
    opa.healthStatus = 500;
    expect(await e.health({ bundles: true })).toEqual({
      ok: false,
      status: 500,
      reason: 'opa health: HTTP 500',
    });
  });

  it("records one audit record per decision, with OPA's decision_id when present", async () => {
    opa.reply = () => ({ status: 200, body: { result: true, decision_id: 'dec-42' } });
    const { logger, lines } = memoryLogger();
    const e = make({ audit: new PinoAuditSink(logger) });
    const d = await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
    const out = lines();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      auditId: d.auditId,
      engine: 'opa',
      decision: 'allow',
      opaDecisionId: 'dec-42',
      direction: 'outbound',
    });
  });

  it('rejects bad options with a typed error', () => {
    expect(() => new OpaEnforcer({ url: 'ftp://x' })).toThrow(
      expect.objectContaining({ code: 'OPA_CONFIG_INVALID' }),
    );
    expect(() => new OpaEnforcer({ url: 'http://127.0.0.1:8181', path: '../secret' })).toThrow(
      /path must look like/,
    );
    expect(() => new OpaEnforcer({ url: 'http://127.0.0.1:8181', timeoutMs: 0 })).toThrow(/timeoutMs/);
  });

  it('refuses an OPA URL with a query, a fragment, user info or another scheme', () => {
    for (const url of [
      'http://127.0.0.1:1#f',
      'http://127.0.0.1:1/#',
      'http://127.0.0.1:1?x=1',
      'http://127.0.0.1:1?',
      'http://user:s3cret@127.0.0.1:8181',
      'http://user@127.0.0.1:8181',
      'ftp://127.0.0.1',
      'file:///run/opa.sock',
      'ws://127.0.0.1:8181',
    ]) {
      let err: unknown;
      try {
        new OpaEnforcer({ url });
      } catch (e) {
        err = e;
      }
      expect(err, url).toBeInstanceOf(AuthzConfigError);
      expect((err as AuthzConfigError).code, url).toBe('OPA_CONFIG_INVALID');
      expect((err as Error).message, url).toMatch(/^invalid OpaEnforcer options: url: /);
      expect((err as Error).message, url).not.toContain('s3cret');
    }
  });

  it('takes a base URL with a path prefix and a trailing slash', async () => {
    opa.decide = () => true;
    const e = make({ url: `${opa.url}/` });
    expect((await e.checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(true);
    expect(opa.requests).toHaveLength(1);
    expect(() => new OpaEnforcer({ url: 'https://opa.internal:8181/prefix/' })).not.toThrow();
  });

  describe('response size', () => {
    const servers: { close(): Promise<void> }[] = [];
    afterEach(async () => {
      await Promise.all(servers.splice(0).map((s) => s.close()));
    });

    /** A server answering every decision with `onRequest`; resolves to its URL. */
    async function serve(onRequest: (res: ServerResponse) => void): Promise<string> {
      const server = createHttpServer((req, res) => {
        req.resume();
        req.on('end', () => onRequest(res));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      servers.push({
        close: () => {
          server.closeAllConnections();
          return new Promise<void>((r) => server.close(() => r()));
        },
      });
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    }

    it('denies an answer over 1 MiB and stops reading it there', async () => {
      const total = 32 * 1024 * 1024;
      let written = 0;
      let closed!: Promise<unknown>;
      // A valid allow, padded out: read in full it would be taken.
      const url = await serve((res) => {
        closed = once(res, 'close');
        res.writeHead(200, { 'content-type': 'application/json' });
        const head = '{"result":true,"pad":"';
        res.write(head);
        written = head.length;
        const chunk = 'x'.repeat(64 * 1024);
        const pump = (): void => {
          while (written < total) {
            written += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end('"}');
        };
        pump();
      });
      const e = make({ url, timeoutMs: 10_000 });
      const d = await e.checkInbound({ caller: ORCH, action: 'a' });
      expect(d).toMatchObject({ allowed: false, reason: 'opa: answer over 1048576 bytes' });
      await closed;
      expect(written).toBeLessThan(total);
      expect(sink.records).toHaveLength(1);
    });

    it('denies a declared content-length over the bound without waiting for the body', async () => {
      let closed!: Promise<unknown>;
      const url = await serve((res) => {
        closed = once(res, 'close');
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2048 });
        res.write('{"result":true');
      });
      const e = make({ url, maxResponseBytes: 1024, timeoutMs: 10_000 });
      expect(await e.checkInbound({ caller: ORCH, action: 'a' })).toMatchObject({
        allowed: false,
        reason: 'opa: answer over 1024 bytes',
      });
      await closed;
    });

    it('bounds error answers too, and takes answers up to the bound', async () => {
      opa.reply = () => ({ status: 500, body: { code: 'internal_error', message: 'm'.repeat(200) } });
      expect(await make({ maxResponseBytes: 100 }).checkInbound({ caller: ORCH, action: 'a' })).toMatchObject(
        {
          allowed: false,
          reason: 'opa: HTTP 500: answer over 100 bytes',
        },
      );
      opa.reply = () => ({ status: 200, body: { result: true } });
      // '{"result":true}' is 15 bytes.
      expect((await make({ maxResponseBytes: 15 }).checkInbound({ caller: ORCH, action: 'a' })).allowed).toBe(
        true,
      );
      expect(await make({ maxResponseBytes: 14 }).checkInbound({ caller: ORCH, action: 'a' })).toMatchObject({
        allowed: false,
        reason: 'opa: answer over 14 bytes',
      });
    });

    it('refuses a maxResponseBytes that is not a whole number from 1 to 64 MiB', () => {
      for (const maxResponseBytes of [0, -1, 1.5, Number.NaN, 64 * 1024 * 1024 + 1]) {
        expect(() => new OpaEnforcer({ url: 'http://127.0.0.1:8181', maxResponseBytes })).toThrow(
          expect.objectContaining({
            code: 'OPA_CONFIG_INVALID',
            message: expect.stringMatching(/maxResponseBytes/),
          }),
        );
      }
      expect(
        () => new OpaEnforcer({ url: 'http://127.0.0.1:8181', maxResponseBytes: 64 * 1024 * 1024 }),
      ).not.toThrow();
    });
  });

  it('denies, audited once, a context that cannot be sent to OPA', async () => {
    opa.decide = () => true;
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const contexts: [Record<string, unknown>, RegExp][] = [
      [
        {
          get secret(): string {
            throw new Error('getter boom');
          },
        },
        /^opa: context cannot be serialized: getter boom$/,
      ],
      [{ n: 10n }, /^opa: context cannot be serialized: .*BigInt/],
      [{ nested: cycle }, /^opa: context cannot be serialized: .*circular/],
      [
        {
          toJSON(): never {
            throw undefined; // eslint-disable-line no-throw-literal
          },
        },
        /^opa: context cannot be serialized: undefined$/,
      ],
      [
        {
          get odd(): string {
            // A thrown value that cannot even be printed.
            throw Object.create(null);
          },
        },
        /^opa: context cannot be serialized: <unprintable>$/,
      ],
    ];
    for (const cache of [undefined, { ttlMs: 60_000 }]) {
      const e = make(cache ? { cache } : {});
      for (const [context, reason] of contexts) {
        sink.records.length = 0;
        const d = await e.checkInbound({ caller: ORCH, action: 'a', context });
        expect(d.allowed).toBe(false);
        expect(d.reason).toMatch(reason);
        expect(sink.records).toHaveLength(1);
        expect(sink.records[0]).toMatchObject({ decision: 'deny', auditId: d.auditId });
      }
    }
    expect(opa.requests).toHaveLength(0);
  });

  it('denies, never rejects, whatever a failing part of the client throws', async () => {
    opa.decide = () => true;
    const e = make({
      cache: { ttlMs: 60_000 },
      now: () => {
        throw undefined; // eslint-disable-line no-throw-literal
      },
    });
    const d = await e.checkInbound({ caller: ORCH, action: 'a' });
    expect(d).toMatchObject({ allowed: false, reason: 'opa: client error: undefined' });
    expect(sink.records).toHaveLength(1);
  });

  it('denies malformed checks without asking OPA', async () => {
    opa.decide = () => true;
    const d = await make().checkInbound({ caller: 'nope', action: 'x' } as never);
    expect(d).toMatchObject({ allowed: false, reason: 'invalid check: caller is not a valid SPIFFE ID' });
    expect(opa.requests).toHaveLength(0);
  });
});
