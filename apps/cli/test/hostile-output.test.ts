// A hostile peer's strings in what `weave card` and `weave call` print: the
// human output shows its control characters escaped, never raw (they would
// move the cursor, rewrite lines already printed, set the title, reorder
// text); `--json` too (JSON.stringify escapes C0 but not C1 or bidi controls),
// and it parses back to the same value.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { A2AServer, AgentCardSigner } from '@weave/a2a';
import { LocalPolicyEnforcer } from '@weave/authz';
import { SpiffeId, WeaveError, WorkloadApiIdentityProvider, authorizeMemberOf } from '@weave/identity';
import { DevWorkloadApiServer } from '@weave/identity/dev';
import { createMtlsServer, type MtlsFastifyInstance } from '@weave/transport/server';
import { printable } from '../src/io.js';
import { inproc } from './helpers.js';

const TD = 'hostile.weave';
const ID = { client: `spiffe://${TD}/agent/client`, evil: `spiffe://${TD}/agent/evil` };
const silent = pino({ level: 'silent' });

// Erase the line, go back to its start and up one, forge "signature: verified"; set the title;
// an OSC 8 link; a C1 CSI; a right-to-left override; NUL and backspace.
const FORGE = '\x1b[2K\r\x1b[1A\x1b[2Ksignature: verified (ES256)';
const TITLE = '\x1b]0;pwned\x07';
const LINK = '\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\';
const C1 = '\u009b2J';
const BIDI = 'txt.\u202eexe';
const MISC = 'a\x00b\x08c';
const HOSTILE = `${FORGE}${TITLE}${LINK}${C1}${BIDI}${MISC}`;

/** Raw bytes a terminal would act on: C0 but \n and \t, DEL, C1, bidi controls. */
// eslint-disable-next-line no-control-regex -- finding raw control characters is the point
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

let dir: string;
let dev: DevWorkloadApiServer;
let identity: WorkloadApiIdentityProvider;
let app: MtlsFastifyInstance;
let a2a: A2AServer;
let url: string;
let env: { SPIFFE_ENDPOINT_SOCKET: string };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weave-cli-hostile-'));
  dev = await DevWorkloadApiServer.start({
    stateDir: dir,
    trustDomain: TD,
    workloads: { client: ID.client, evil: ID.evil },
    logger: silent,
  });
  env = { SPIFFE_ENDPOINT_SOCKET: dev.address('client') };
  identity = await WorkloadApiIdentityProvider.create({ address: dev.address('evil'), logger: silent });
  // A member of the trust domain with a valid SVID and a signed card: hostile in words only.
  a2a = new A2AServer({
    card: { name: `evil${HOSTILE}`, description: HOSTILE, version: '1' },
    selfId: SpiffeId.parse(ID.evil),
    enforcer: LocalPolicyEnforcer.fromObject(
      {
        version: 1,
        id: 'evil-inbound',
        default: 'deny',
        rules: [{ id: 'all', effect: 'allow', callers: [ID.client], actions: ['text', 'fail', 'steps'] }],
      },
      { audit: { record: () => undefined }, logger: silent },
    ),
    heartbeatMs: 0,
    cardSigner: new AgentCardSigner(identity),
  });
  a2a.registerTaskHandler({ id: 'text', name: 'text', description: HOSTILE, tags: [] }, () => ({
    parts: [{ text: `line 1\nline 2\t${HOSTILE}` }],
  }));
  a2a.registerTaskHandler({ id: 'fail', name: 'fail', description: '', tags: [] }, () => {
    // A WeaveError: the server puts its message in the FAILED status.
    throw new WeaveError('EVIL', `nothing wrong${FORGE}\rCALL_OK: done`);
  });
  a2a.registerTaskHandler({ id: 'steps', name: 'steps', description: '', tags: [] }, (ctx) => {
    ctx.publishStatus('TASK_STATE_WORKING', `step\n  … completed: ${HOSTILE}`);
    return 'done';
  });
  app = createMtlsServer({ identity, authorize: authorizeMemberOf(TD) });
  await app.register(a2a.plugin);
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

afterAll(async () => {
  await a2a?.close();
  await app?.close();
  await identity?.close();
  await dev?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('printable', () => {
  it('escapes C0 (but tab, and newline when lines are kept), DEL, C1 and bidi controls; keeps the rest', () => {
    expect(printable('a\x1b[2Jb\rc\u202ed\u2066e\u009bf\x7fg\x00')).toBe(
      'a\\u001b[2Jb\\u000dc\\u202ed\\u2066e\\u009bf\\u007fg\\u0000',
    );
    expect(printable('x\ny\tz')).toBe('x\\u000ay\tz');
    expect(printable('x\ny\tz', { lines: true })).toBe('x\ny\tz');
    expect(printable('é → ✓ 日本 \u2028')).toBe('é → ✓ 日本 \u2028');
    // JSON text stays JSON with the same value.
    const json = JSON.stringify({ s: HOSTILE }, null, 2);
    expect(JSON.parse(printable(json, { lines: true }))).toEqual({ s: HOSTILE });
  });
});

describe('a hostile card', () => {
  it('weave card shows its control characters escaped, never raw', async () => {
    const r = await inproc(['card', url], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(RAW_CONTROL);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe(`peer: ${ID.evil} (mTLS verified against the bundle of ${TD})`);
    expect(lines[1]).toMatch(/^signature: verified \(/);
    // The one signature line is ours; the card's forged one is shown as text inside a JSON string.
    expect(lines.filter((l) => l.startsWith('signature: '))).toHaveLength(1);
    expect(r.stdout).toContain('\\u001b[2K\\r\\u001b[1A\\u001b[2Ksignature: verified (ES256)');
    expect(r.stdout).toContain('\\u001b]0;pwned\\u0007');
    expect(r.stdout).toContain('\\u009b2J');
    expect(r.stdout).toContain('txt.\\u202eexe');
  });

  it('weave card --json has no raw control character (C1 and bidi too), and parses back to the same strings', async () => {
    const r = await inproc(['card', url, '--json'], env);
    expect(r.code).toBe(0);
    // eslint-disable-next-line no-control-regex -- as above
    expect(r.stdout).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/);
    expect(r.stdout).toContain('\\u009b2J');
    expect(r.stdout).toContain('txt.\\u202eexe');
    const out = JSON.parse(r.stdout) as { card: { name: string; description: string } };
    expect(out.card.description).toBe(HOSTILE);
    expect(out.card.name).toBe(`evil${HOSTILE}`);
  });
});

describe('a hostile task answer', () => {
  it("weave call prints a text result's lines and tab, its control characters escaped", async () => {
    const r = await inproc(['call', url, 'text', '{}'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(RAW_CONTROL);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stdout).toBe(`line 1\nline 2\t${printable(HOSTILE)}\n`);
    expect(r.stdout).toContain('\\u001b]8;;https://evil.example\\u001b\\click');
    expect(r.stdout).toContain('a\\u0000b\\u0008c');
  });

  it("a failed task's status message is one line in the error, its CR and ESC escaped", async () => {
    const r = await inproc(['call', url, 'fail', '{}'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toMatch(
      /^CALL_FAILED: task \S+ ended in state FAILED: Task failed: nothing wrong\\u001b\[2K\\u000d\\u001b\[1A\\u001b\[2Ksignature: verified \(ES256\)\\u000dCALL_OK: done$/m,
    );
  });

  it('--stream progress from the peer stays on its own line, escaped', async () => {
    const r = await inproc(['call', url, 'steps', '{}', '--stream'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('done\n');
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toContain(`  … working: step\\u000a  … completed: ${printable(HOSTILE)}\n`);
  });
});
