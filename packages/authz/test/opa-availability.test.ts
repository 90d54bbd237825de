// `onAvailability`: how an OpaEnforcer tells its owner that OPA is away (a
// transport failure, a timeout, a 5xx) rather than answering, deny or not,
// so that an agent's /ready and metrics need not read deny reasons. Against
// the Data API stand-in, which gives the failures a real OPA does not give on
// demand; a real OPA that is down then back is in packages/agent/test/opa-readiness.test.ts.
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { SpiffeId } from '@weave/identity';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OpaEnforcer, type OpaAvailability, type OpaEnforcerOptions } from '../src/index.js';
import { startOpaStandin, type OpaStandin } from './helpers/opa-data-api-standin.js';
import { CollectingSink } from './helpers/sinks.js';

const ORCH = SpiffeId.parse('spiffe://demo.weave/agent/orchestrator');
const SEARCH = SpiffeId.parse('spiffe://demo.weave/agent/search');

/** A loopback URL where nothing listens. */
async function deadUrl(): Promise<string> {
  const srv: Server = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

describe('OpaEnforcer onAvailability', () => {
  let opa: OpaStandin;
  const enforcers: OpaEnforcer[] = [];
  let events: OpaAvailability[];

  function make(opts: Partial<OpaEnforcerOptions> = {}): OpaEnforcer {
    const e = new OpaEnforcer({
      url: opa.url,
      audit: new CollectingSink(),
      timeoutMs: 2_000,
      onAvailability: (ev) => events.push(ev),
      ...opts,
    });
    enforcers.push(e);
    return e;
  }

  beforeEach(async () => {
    events = [];
    opa = await startOpaStandin(() => undefined);
  });
  afterEach(async () => {
    await Promise.all(enforcers.splice(0).map((e) => e.close()));
    await opa.close();
  });

  it('tells "available" for every answer, a policy deny, an undefined result and a 4xx included', async () => {
    const e = make();
    opa.decide = () => ({ allow: true });
    expect((await e.checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' })).allowed).toBe(true);
    opa.decide = () => ({ allow: false, reason: 'not for you' });
    expect((await e.checkInbound({ caller: ORCH, action: 'search' })).allowed).toBe(false);
    opa.decide = () => undefined;
    expect((await e.checkInbound({ caller: ORCH, action: 'search' })).allowed).toBe(false);
    opa.reply = () => ({ status: 400, body: { code: 'invalid_parameter', message: 'bad input' } });
    expect((await e.checkInbound({ caller: ORCH, action: 'search' })).allowed).toBe(false);
    expect(events).toEqual([
      { available: true, direction: 'outbound' },
      { available: true, direction: 'inbound' },
      { available: true, direction: 'inbound' },
      { available: true, direction: 'inbound' },
    ]);
  });

  it('tells "unavailable", with the deny reason and direction, for a 5xx, a timeout and a refused connection', async () => {
    opa.reply = () => ({ status: 500, body: { code: 'internal_error', message: 'boom' } });
    const d500 = await make().checkOutbound({ caller: ORCH, callee: SEARCH, action: 'search' });
    opa.reply = () => 'hang';
    const dTimeout = await make({ timeoutMs: 100 }).checkInbound({ caller: ORCH, action: 'search' });
    const dead = await deadUrl();
    const dRefused = await make({ url: dead }).checkInbound({ caller: ORCH, action: 'search' });
    expect([d500.allowed, dTimeout.allowed, dRefused.allowed]).toEqual([false, false, false]);
    expect(events).toEqual([
      { available: false, reason: 'opa: HTTP 500: internal_error: boom', direction: 'outbound' },
      { available: false, reason: 'opa: timeout after 100 ms', direction: 'inbound' },
      { available: false, reason: `opa: connection refused (${dead})`, direction: 'inbound' },
    ]);
    expect(events.map((ev) => ev.reason)).toEqual([d500.reason, dTimeout.reason, dRefused.reason]);
  });

  it('tells the outcome of health() too, with no direction', async () => {
    const e = make();
    await e.health();
    opa.healthStatus = 500;
    await e.health({ bundles: true });
    const dead = await deadUrl();
    await make({ url: dead }).health();
    expect(events).toEqual([
      { available: true },
      { available: false, reason: 'opa health: HTTP 500' },
      { available: false, reason: `opa health: connection refused (${dead})` },
    ]);
  });

  it('tells nothing for a decision answered from the cache', async () => {
    opa.decide = () => true;
    const e = make({ cache: { ttlMs: 60_000 } });
    await e.checkInbound({ caller: ORCH, action: 'search' });
    expect(await e.checkInbound({ caller: ORCH, action: 'search' })).toMatchObject({ allowed: true });
    expect(opa.requests).toHaveLength(1);
    expect(events).toEqual([{ available: true, direction: 'inbound' }]);
  });

  it('ignores a listener that throws: an allow stays an allow', async () => {
    opa.decide = () => true;
    let told = 0;
    const e = make({
      onAvailability: () => {
        told++;
        throw new Error('listener bug');
      },
    });
    expect(await e.checkInbound({ caller: ORCH, action: 'search' })).toMatchObject({ allowed: true });
    expect((await e.health()).ok).toBe(true);
    expect(told).toBe(2);
  });
});
