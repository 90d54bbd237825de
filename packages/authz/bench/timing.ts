// Per-call timing shared by the authz benches.

/** Runs `f` `warmup` times, then `n` times over `items` in turn; returns each timed call in ns. */
export function timeEach<Q>(
  items: readonly Q[],
  n: number,
  warmup: number,
  f: (q: Q) => unknown,
): Float64Array {
  for (let i = 0; i < warmup; i++) f(items[i % items.length] as Q);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const q = items[i % items.length] as Q;
    const t0 = process.hrtime.bigint();
    f(q);
    out[i] = Number(process.hrtime.bigint() - t0);
  }
  return out;
}
