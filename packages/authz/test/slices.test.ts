// Policy loads and reloads are work in slices: these tests hold the slicing
// to what it promises — the event loop turns between slices, and compiling a
// policy yields every ITEMS_PER_YIELD rules of each pass — and the policy
// built in slices to the one built at once.
import { describe, expect, it } from 'vitest';
import { SpiffeId } from '@weave/identity';
import { CompiledPolicy, compileText } from '../src/policy.js';
import { ITEMS_PER_YIELD, runNow, runSliced, type Slices } from '../src/slices.js';
import { benchWorkload } from './helpers/random.js';

/** Steps that each keep the CPU busy for `ms`, noting how many turns the event loop had made. */
function* busySteps(n: number, ms: number, seen: number[], turns: () => number): Slices<string> {
  for (let i = 0; i < n; i++) {
    seen.push(turns());
    const until = performance.now() + ms;
    while (performance.now() < until);
    yield;
  }
  return 'done';
}

/** Counts turns of the event loop (one setImmediate after another) until stopped. */
function turnCounter(): { turns: () => number; stop: () => void } {
  let turns = 0;
  let handle = setImmediate(function tick() {
    turns++;
    handle = setImmediate(tick);
  });
  return { turns: () => turns, stop: () => clearImmediate(handle) };
}

/** Runs the work, counting its yields. */
function* counted<T>(work: Slices<T>, count: { n: number }): Slices<T> {
  for (;;) {
    const step = work.next();
    if (step.done) return step.value;
    count.n++;
    yield;
  }
}

const { rand, pick, domains, teams, agent, actions } = benchWorkload(3);

/** A policy of `n` random rules; the same rules for the same `n`, whatever `first` (rule 0's action). */
const rulesOf = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    id: `r${i}`,
    effect: i % 25 === 0 ? 'deny' : 'allow',
    callers: [
      rand() < 0.5
        ? agent(pick(domains), pick(teams), Math.floor(rand() * 50))
        : `spiffe://${pick(domains)}/${pick(teams)}/*`,
    ],
    ...(rand() < 0.7 ? { callees: [agent(pick(domains), pick(teams), Math.floor(rand() * 50))] } : {}),
    actions: [pick(actions)],
  }));

function policyText(rules: ReturnType<typeof rulesOf>, first = 'search'): string {
  const [r0, ...rest] = rules;
  return JSON.stringify({
    version: 1,
    id: `p-${first}`,
    default: 'deny',
    rules: [{ ...r0, actions: [first] }, ...rest],
  });
}

describe('work in slices', () => {
  it('runSliced lets the event loop turn before the first slice and whenever slices took 8 ms', async () => {
    const loop = turnCounter();
    try {
      const seen: number[] = [];
      const start = loop.turns();
      const t0 = performance.now();
      expect(await runSliced(busySteps(24, 1, seen, () => loop.turns() - start))).toBe('done');
      const elapsed = performance.now() - t0;
      expect(seen[0]).toBeGreaterThanOrEqual(1);
      const turns = seen[23]! - seen[0]!;
      // 24 ms of work in steps of 1 ms: a turn at least every eighth step...
      expect(turns).toBeGreaterThanOrEqual(2);
      // ...and only after 8 ms of work, not after every step: at most one turn per 8 ms that
      // passed (a busy machine that stretches the steps stretches this bound with them).
      expect(turns).toBeLessThanOrEqual(Math.floor(elapsed / 8) + 1);

      const now: number[] = [];
      const before = loop.turns();
      expect(runNow(busySteps(4, 3, now, () => loop.turns() - before))).toBe('done');
      expect(now).toEqual([0, 0, 0, 0]);
    } finally {
      loop.stop();
    }
  });

  it('runSliced with stop: drops the work between slices once it says so (its finally runs), result undefined', async () => {
    const ran: number[] = [];
    let finished = false;
    function* work(): Slices<string> {
      try {
        for (let i = 0; i < 10; i++) {
          ran.push(i);
          yield;
        }
        return 'all';
      } finally {
        finished = true;
      }
    }
    expect(await runSliced(work(), () => ran.length === 3)).toBeUndefined();
    expect(ran).toEqual([0, 1, 2]);
    expect(finished).toBe(true);
    ran.length = 0;
    expect(await runSliced(work(), () => false)).toBe('all');
    expect(ran).toHaveLength(10);
  });

  it('an error thrown in a slice rejects runSliced', async () => {
    function* failing(): Slices<never> {
      yield;
      throw new TypeError('bad slice');
    }
    await expect(runSliced(failing())).rejects.toThrow('bad slice');
  });

  it('a policy yields every ITEMS_PER_YIELD rules of each pass, and decides as one compiled at once', () => {
    const N = 3_000;
    const slices = Math.floor(N / ITEMS_PER_YIELD);
    const rules = rulesOf(N);
    const text = policyText(rules);

    const load = { n: 0 };
    const sliced = runNow(counted(compileText(text, '<test>'), load));
    // Finding unchanged rules, validating, the unique-id check, indexing: each at least `slices` times.
    expect(load.n).toBeGreaterThanOrEqual(4 * slices);
    expect(sliced.rulesCompiled).toBe(N);

    // A reload with one rule changed validates that one: the other passes still yield.
    const next = policyText(rules, 'changed');
    const reload = { n: 0 };
    const reloaded = runNow(counted(compileText(next, '<test>', sliced), reload));
    expect(reload.n).toBeGreaterThanOrEqual(3 * slices);
    expect(reloaded.rulesCompiled).toBe(1);

    const scratch = new CompiledPolicy(JSON.parse(next) as never);
    for (let i = 0; i < 2_000; i++) {
      const caller = SpiffeId.parse(agent(pick(domains), pick(teams), Math.floor(rand() * 50)));
      const callee = SpiffeId.parse(agent(pick(domains), pick(teams), Math.floor(rand() * 50)));
      const action = pick([...actions, 'changed', 'search']);
      const a = reloaded.decide(caller, callee, action);
      const b = scratch.decide(caller, callee, action);
      expect([a.deny?.id, a.allow?.id]).toEqual([b.deny?.id, b.allow?.id]);
    }
  });
});
