// Deterministic randomness for generated policies and checks (tests and benches):
// every run sees the same workload.

/** mulberry32: a small deterministic PRNG returning numbers in [0, 1). */
export function seededRandom(seed: number): { rand: () => number; pick: <T>(xs: readonly T[]) => T } {
  let s = seed;
  const rand = (): number => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return { rand, pick: <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T };
}

/** The benches' workload: the seeded PRNG and the names of trust domains, teams, agents and actions. */
export function benchWorkload(seed: number) {
  return {
    ...seededRandom(seed),
    domains: ['prod.acme', 'staging.acme', 'partner.example', 'demo.weave', 'edge.acme'],
    teams: Array.from({ length: 20 }, (_, i) => `team${i}`),
    agent: (td: string, team: string, n: number): string => `spiffe://${td}/${team}/agent${n}`,
    actions: [
      'search',
      'index',
      'summarize',
      'translate',
      'report',
      'admin.read',
      'admin.write',
      'billing.charge',
    ],
  };
}
