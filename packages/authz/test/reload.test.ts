import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SpiffeId } from '@weave/identity';
import { describe, expect, it, vi } from 'vitest';
import { AuthzConfigError, LocalPolicyEnforcer, PolicyError, type ReloadEvent } from '../src/index.js';
import { CALLER, policyDirEachTest, policyText } from './helpers/policy-text.js';
import { CollectingSink, memoryLogger } from './helpers/sinks.js';

describe('LocalPolicyEnforcer.fromFile', () => {
  const scratch = policyDirEachTest();

  /** Resolves with the next reload event that satisfies `pred`. */
  function nextReload(
    events: ReloadEvent[],
    pred: (e: ReloadEvent) => boolean,
    signal: { wake?: () => void },
  ) {
    return new Promise<ReloadEvent>((resolve) => {
      const check = () => {
        const hit = events.find(pred);
        if (hit) resolve(hit);
        else signal.wake = check;
      };
      check();
    });
  }

  async function load(file: string, extra: { watch?: boolean; debounceMs?: number } = {}) {
    const events: ReloadEvent[] = [];
    const signal: { wake?: () => void } = {};
    const log = memoryLogger();
    scratch.enforcer = await LocalPolicyEnforcer.fromFile(file, {
      audit: new CollectingSink(),
      logger: log.logger,
      debounceMs: 20,
      onReload: (e) => {
        events.push(e);
        signal.wake?.();
      },
      ...extra,
    });
    return { e: scratch.enforcer, events, signal, log };
  }

  it('refuses a debounceMs that is not a whole number of ms from 0 to 2147483647, naming it', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    for (const debounceMs of [Number.NaN, -1, 1.5, Infinity, 2_147_483_648]) {
      const err = await LocalPolicyEnforcer.fromFile(file, { debounceMs }).catch((e: unknown) => e);
      expect(err, `debounceMs ${debounceMs}`).toBeInstanceOf(AuthzConfigError);
      expect(err).toMatchObject({ code: 'LOCAL_POLICY_CONFIG_INVALID' });
      expect((err as Error).message).toContain(
        `debounceMs: must be a whole number of milliseconds from 0 to 2147483647, got ${debounceMs}`,
      );
    }
    // 0: no quiet period, and a change is still read.
    const { events, signal } = await load(file, { debounceMs: 0 });
    const changed = nextReload(events, (e) => e.ok && e.changed, signal);
    await writeFile(join(scratch.dir, 'next.yaml'), policyText('v2', 'search'));
    await rename(join(scratch.dir, 'next.yaml'), file);
    expect(await changed).toMatchObject({ ok: true, policyId: 'v2' });
  });

  it('loads a file and refuses an invalid one at start with a located error', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e } = await load(file, { watch: false });
    expect(e.policyId).toBe('v1');
    expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(true);

    const bad = join(scratch.dir, 'bad.yaml');
    await writeFile(bad, policyText('v1', 'search').replace('default: deny', 'default: allow'));
    await expect(LocalPolicyEnforcer.fromFile(bad, { watch: false })).rejects.toThrow(
      /line 3, default: default must be "deny"/,
    );
    await expect(
      LocalPolicyEnforcer.fromFile(join(scratch.dir, 'missing.yaml'), { watch: false }),
    ).rejects.toMatchObject({
      code: 'POLICY_UNREADABLE',
    });
  });

  it('hot-reloads when the file changes', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e, events, signal } = await load(file);
    expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(false);

    await writeFile(file, policyText('v2', 'write'));
    await nextReload(events, (ev) => ev.ok && ev.policyId === 'v2', signal);
    expect(e.policyId).toBe('v2');
    const d = await e.checkInbound({ caller: CALLER, action: 'write' });
    expect(d).toMatchObject({ allowed: true, policyId: 'v2', ruleId: 'allow-write' });
    expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(false);
  });

  it('survives atomic replacement by rename', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e, events, signal } = await load(file);
    const tmp = join(scratch.dir, '.policy.yaml.tmp');
    await writeFile(tmp, policyText('v2', 'write'));
    await rename(tmp, file);
    await nextReload(events, (ev) => ev.ok && ev.policyId === 'v2', signal);
    expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(true);
  });

  it('keeps the last good policy when the new file is bad, and logs why', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e, events, signal, log } = await load(file);

    await writeFile(file, policyText('v2', 'write').replace('effect: allow', 'effect: maybe'));
    const ev = await nextReload(events, (x) => !x.ok, signal);
    expect(ev.ok).toBe(false);
    if (!ev.ok) {
      expect(ev.error).toBeInstanceOf(PolicyError);
      expect(ev.error.message).toMatch(/line 6, rules\[0\]\.effect: effect must be "allow" or "deny"/);
    }
    expect(e.policyId).toBe('v1');
    expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(true);
    expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(false);
    const logged = log.lines().find((l) => l.msg === 'policy reload rejected; keeping the last good policy');
    expect(logged).toMatchObject({ level: 50, file, policyId: 'v1' });
    expect(JSON.stringify(logged)).toContain('rules[0].effect');

    // A later good file is picked up again.
    await writeFile(file, policyText('v3', 'write'));
    await nextReload(events, (x) => x.ok && x.policyId === 'v3', signal);
    expect((await e.checkInbound({ caller: CALLER, action: 'write' })).allowed).toBe(true);
  });

  it('keeps the last good policy when the file disappears', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e } = await load(file, { watch: false });
    await rm(file);
    const ev = await e.reload();
    expect(ev.ok).toBe(false);
    if (!ev.ok) expect(ev.error.code).toBe('POLICY_UNREADABLE');
    expect((await e.checkInbound({ caller: CALLER, action: 'search' })).allowed).toBe(true);
  });

  it('does not swap policies when the content is unchanged', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e } = await load(file, { watch: false });
    expect(await e.reload()).toMatchObject({ ok: true, changed: false, policyId: 'v1', rulesCompiled: 0 });
  });

  it('stops watching after close()', async () => {
    const file = join(scratch.dir, 'policy.yaml');
    await writeFile(file, policyText('v1', 'search'));
    const { e, events } = await load(file);
    await e.close();
    await writeFile(file, policyText('v2', 'write'));
    // Give a watcher that was (wrongly) still running ample time to fire and debounce.
    await new Promise((r) => setTimeout(r, 300));
    expect(events).toHaveLength(0);
    expect(e.policyId).toBe('v1');
  });

  describe('a JSON policy, reloaded incrementally', () => {
    const SEARCH = SpiffeId.parse('spiffe://demo.weave/agent/search');
    // Enough rules for one caller that its list is indexed (exact callee × action pairs).
    const rules = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        id: `r${i}`,
        effect: 'allow',
        callers: [CALLER.toString()],
        callees: [`spiffe://demo.weave/agent/a${i}`],
        actions: [`act${i}`],
      }));
    const doc = (id: string, list: unknown[]) =>
      JSON.stringify({ version: 1, id, default: 'deny', rules: list }, null, 2);
    const check = (e: LocalPolicyEnforcer, callee: string, action: string) =>
      e.checkOutbound({ caller: CALLER, callee: SpiffeId.parse(callee), action });

    it('applies a changed rule, drops a removed one and keeps the rest deciding', async () => {
      const file = join(scratch.dir, 'policy.json');
      const list = [
        ...rules(40),
        {
          id: 'search',
          effect: 'allow',
          callers: [CALLER.toString()],
          callees: [SEARCH.toString()],
          actions: ['search'],
        },
      ];
      await writeFile(file, doc('v1', list));
      const { e } = await load(file, { watch: false });
      expect(await check(e, SEARCH.toString(), 'search')).toMatchObject({ allowed: true, ruleId: 'search' });
      expect((await check(e, 'spiffe://demo.weave/agent/a3', 'act3')).allowed).toBe(true);

      // r3 now allows another action; r7 is removed; "search" becomes a deny.
      const next = list
        .filter((r) => r.id !== 'r7')
        .map((r) =>
          r.id === 'r3' ? { ...r, actions: ['other'] } : r.id === 'search' ? { ...r, effect: 'deny' } : r,
        );
      await writeFile(file, doc('v2', next));
      expect(await e.reload()).toMatchObject({ ok: true, changed: true, policyId: 'v2' });

      expect(await check(e, 'spiffe://demo.weave/agent/a3', 'other')).toMatchObject({
        allowed: true,
        ruleId: 'r3',
      });
      expect((await check(e, 'spiffe://demo.weave/agent/a3', 'act3')).allowed).toBe(false);
      expect(await check(e, 'spiffe://demo.weave/agent/a7', 'act7')).toMatchObject({
        allowed: false,
        reason: 'no rule matched: default deny',
      });
      expect(await check(e, SEARCH.toString(), 'search')).toMatchObject({ allowed: false, ruleId: 'search' });
      // Unchanged rules, before and after the removed one, still decide.
      expect(await check(e, 'spiffe://demo.weave/agent/a2', 'act2')).toMatchObject({
        allowed: true,
        ruleId: 'r2',
      });
      expect(await check(e, 'spiffe://demo.weave/agent/a39', 'act39')).toMatchObject({
        allowed: true,
        ruleId: 'r39',
      });
    });

    /**
     * An enforcer on a 20 000-rule file (v1) that has since changed one rule
     * (v2, not reloaded yet), and a JSON.parse spy: `parsed()` is true once
     * the new text was parsed, from when the reload validates and compiles.
     */
    async function largeFileChanged() {
      const file = join(scratch.dir, 'policy.json');
      const list = rules(20_000);
      await writeFile(file, doc('v1', list));
      const loaded = await load(file, { watch: false });
      await writeFile(file, doc('v2', [{ ...list[0], actions: ['changed'] }, ...list.slice(1)]));
      let parsed = false;
      const parse = JSON.parse;
      const spy = vi
        .spyOn(JSON, 'parse')
        .mockImplementation((text: string, reviver?: Parameters<typeof parse>[1]) => {
          const value: unknown = parse(text, reviver);
          if (text.length > 1_000_000) parsed = true;
          return value;
        });
      return { ...loaded, parsed: () => parsed, spy };
    }

    it('keeps answering decisions, with the policy in force, while a large file is compiled', async () => {
      const { e, parsed, spy } = await largeFileChanged();
      const answered: string[] = [];
      let done = false;
      let afterParse = 0;
      const reloading = e.reload().finally(() => (done = true));
      try {
        // One decision per turn of the event loop until the reload ends.
        while (!done) {
          await new Promise<void>((r) => setImmediate(r));
          const d = await check(e, 'spiffe://demo.weave/agent/a5', 'act5');
          answered.push(d.policyId ?? '');
          if (parsed() && !done) afterParse++;
        }
      } finally {
        spy.mockRestore();
      }
      expect(await reloading).toMatchObject({ ok: true, changed: true, policyId: 'v2', rulesCompiled: 1 });
      // Compiled in slices: decisions were answered between them (none, when compiled at once)...
      expect(afterParse).toBeGreaterThan(1);
      // ...by the policy in force, until the new one took over whole.
      const firstNew = answered.indexOf('v2');
      expect(answered.slice(0, firstNew === -1 ? undefined : firstNew).every((id) => id === 'v1')).toBe(true);
      expect(answered.slice(firstNew === -1 ? answered.length : firstNew).every((id) => id === 'v2')).toBe(
        true,
      );
      expect(await check(e, 'spiffe://demo.weave/agent/a0', 'changed')).toMatchObject({
        allowed: true,
        policyId: 'v2',
      });
    });

    it('close() during a reload of a large file stops its compile at the next slice; the policy stays', async () => {
      const { e, events, parsed, spy } = await largeFileChanged();
      try {
        const reloading = e.reload();
        while (!parsed()) await new Promise<void>((r) => setImmediate(r));
        // Compiling now: close, and count the turns of the event loop until close() is done.
        let closed = false;
        const closing = e.close().then(() => (closed = true));
        let turns = 0;
        while (!closed) {
          await new Promise<void>((r) => setImmediate(r));
          turns++;
        }
        await closing;
        // The compile stopped at its next slice: a turn or two, not the rest of the compile.
        expect(turns).toBeLessThanOrEqual(2);
        expect(await reloading).toMatchObject({ ok: true, changed: false, policyId: 'v1', rulesCompiled: 0 });
        expect(e.policyId).toBe('v1');
        expect(events).toEqual([]);
      } finally {
        spy.mockRestore();
      }
    });

    it('compiles only the rule that changed, and every rule whose position moved', async () => {
      const file = join(scratch.dir, 'policy.json');
      const list = rules(1000);
      await writeFile(file, doc('v1', list));
      const { e } = await load(file, { watch: false });
      /** Who decides agent `callee` doing `action`: "allow r3", "deny head", "deny -" (default deny). */
      const verdicts = (...checks: [callee: string, action: string][]) =>
        Promise.all(
          checks.map(async ([callee, action]) => {
            const d = await check(e, `spiffe://demo.weave/agent/${callee}`, action);
            return `${d.allowed ? 'allow' : 'deny'} ${d.ruleId ?? '-'}`;
          }),
        );
      expect(await verdicts(['a500', 'act500'], ['a500', 'other'])).toEqual(['allow r500', 'deny -']);

      // One rule's actions edited in place: that rule alone is compiled; the other 999 are reused.
      const edited = list.map((r) => (r.id === 'r500' ? { ...r, actions: ['other'] } : r));
      await writeFile(file, doc('v2', edited));
      expect(await e.reload()).toMatchObject({ ok: true, changed: true, rulesCompiled: 1 });
      expect(await verdicts(['a500', 'act500'], ['a500', 'other'])).toEqual(['deny -', 'allow r500']);

      // A rule appended at the end moves none: it alone is compiled.
      const tail = {
        ...list[0]!,
        id: 'tail',
        callees: ['spiffe://demo.weave/agent/tail'],
        actions: ['tail'],
      };
      await writeFile(file, doc('v3', [...edited, tail]));
      expect(await e.reload()).toMatchObject({ ok: true, changed: true, rulesCompiled: 1 });

      // A rule inserted at the front shifts every index. A compiled rule is reused only at the
      // position it had, since its index is its precedence (the earliest matching rule of each
      // effect decides), so all 1 002 rules are compiled again.
      const head = { ...tail, id: 'head', effect: 'deny', actions: ['act3'] };
      await writeFile(file, doc('v4', [head, ...edited, tail]));
      expect(await e.reload()).toMatchObject({ ok: true, changed: true, rulesCompiled: 1002 });
      expect(await verdicts(['a3', 'act3'], ['tail', 'act3'], ['tail', 'tail'], ['a500', 'other'])).toEqual([
        'allow r3',
        'deny head',
        'allow tail',
        'allow r500',
      ]);
    });

    it('refuses a bad JSON file with a located error and keeps deciding with the policy in force', async () => {
      const file = join(scratch.dir, 'policy.json');
      await writeFile(file, doc('v1', rules(20)));
      const { e } = await load(file, { watch: false });
      const good = rules(20);
      const bad: { text: string; line: number; message: RegExp }[] = [
        // A second "effect" must not quietly win, as JSON.parse alone would let it.
        {
          text: doc('v2', good).replace('"effect": "allow",', '"effect": "allow", "effect": "deny",'),
          line: 8,
          message: /rules\[0\]\.effect: duplicate key "effect"/,
        },
        {
          text: doc(
            'v2',
            good.map((r, i) => (i === 2 ? { ...r, effect: 'maybe' } : r)),
          ),
          line: 34,
          message: /rules\[2\]\.effect: effect must be "allow" or "deny"/,
        },
        {
          text: doc(
            'v2',
            good.map((r, i) => (i === 1 ? { ...r, callers: ['spiffe://Demo/x'] } : r)),
          ),
          line: 23,
          message: /rules\[1\]\.callers\[0\]: invalid SPIFFE ID "spiffe:\/\/Demo\/x"/,
        },
        // Rules equal to the ones in force skip zod; a changed one is checked, across all ids too.
        {
          text: doc(
            'v2',
            good.map((r, i) => (i === 5 ? { ...r, id: 'r1' } : r)),
          ),
          line: 72,
          message: /rules\[5\]\.id: duplicate rule id "r1" \(first used by rules\[1\]\)/,
        },
        {
          text: doc(
            'v2',
            good.map((r, i) => (i === 0 ? { ...r, extra: 1 } : r)),
          ),
          line: 18,
          message: /rules\[0\]\.extra: unknown key "extra"/,
        },
        // Not JSON (a brace missing): located by the YAML parser, which also reads flow-style YAML.
        {
          text: doc('v2', good).replace('"act0"\n      ]', '"act0"\n      '),
          line: 18,
          message: /must be sufficiently indented and end with a \]/,
        },
      ];
      for (const b of bad) {
        await writeFile(file, b.text);
        const ev = await e.reload();
        expect(ev.ok).toBe(false);
        if (!ev.ok) {
          expect(ev.error).toBeInstanceOf(PolicyError);
          expect(ev.error.message).toContain(`line ${b.line}`);
          expect(ev.error.message).toMatch(b.message);
        }
        expect(e.policyId).toBe('v1');
        expect(await check(e, 'spiffe://demo.weave/agent/a0', 'act0')).toMatchObject({
          allowed: true,
          ruleId: 'r0',
        });
        expect((await check(e, 'spiffe://demo.weave/agent/a2', 'act2')).allowed).toBe(true);
      }
    });
  });

  it('reload() on an enforcer built from an object says it is not file-backed', async () => {
    const e = LocalPolicyEnforcer.fromObject(
      { version: 1, id: 'o', default: 'deny', rules: [] },
      { audit: new CollectingSink() },
    );
    const ev = await e.reload();
    expect(ev.ok).toBe(false);
    if (!ev.ok) expect(ev.error.code).toBe('POLICY_NOT_FILE_BACKED');
  });
});
