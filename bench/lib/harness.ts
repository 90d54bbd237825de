// The harness's vocabulary: a scenario measures one thing against its
// baseline(s) in the same run and returns rows; the harness prints every row
// in one table and writes the same figures as JSON.
import { loadavg } from 'node:os';
import type { Env } from './env.js';
import type { LoadResult } from './load.js';

export type Unit = 'req/s' | 'events/s' | 'conns/s' | 'peers/s' | 'decisions/s' | 'MB' | 'ms';

/** One line of the summary table. */
export interface Row {
  scenario: string;
  /** What ran, e.g. "weave callAgent" or "bare node https". */
  case: string;
  unit: Unit;
  /** Units per second over the measured window (for `MB` and `ms`: the figure itself). */
  rate: number | null;
  /** CPU per unit on the serving side, in µs (null: not measured there). */
  serverCpuUs: number | null;
  /** CPU per unit on the calling side, in µs. */
  clientCpuUs: number | null;
  p50: number | null;
  p99: number | null;
  errors: number;
  firstError?: string;
  /** Cases of the same scenario this row is compared with (rate and CPU ratios are printed). */
  vs?: string[];
  /** A baseline that may refuse the load (e.g. a body over the SDK's limit): its errors are reported, not fatal. */
  mayFail?: boolean;
  /** 1-minute load average when the row was measured. */
  load1: number;
  /** Anything else the scenario prints (e.g. RSS, cold and warm times). */
  note?: string;
  extra?: Record<string, number>;
}

/** A target of issue 18, checked from the rows of the same run. */
export interface Check {
  scenario: string;
  target: string;
  met: boolean;
  detail: string;
}

export interface Ctx {
  env: Env;
  /** Measured window of a time-boxed load, in ms. */
  durationMs: number;
  warmupMs: number;
  /** A few seconds per scenario: must run and produce numbers, sizes reduced. */
  smoke: boolean;
  /** Bound of the called agent's in-memory task store (`call`, `payload`); unset: the store's default. */
  maxTasks?: number;
  /**
   * Rounds of `call` and `payload`: each runs its loads in turn this many times
   * and prints each case's median row (unset: 1).
   */
  rounds?: number;
  /** Calls in flight of `call`; unset: 32, where its targets are set. */
  inFlight?: number;
  log(line: string): void;
}

export interface Scenario {
  name: string;
  /** One line: what is measured against what. */
  title: string;
  run(ctx: Ctx): Promise<{ rows: Row[]; checks?: Check[] }>;
}

export const load1 = (): number => loadavg()[0]!;

/** A row from a load generator run. */
export function rowOf(
  scenario: string,
  name: string,
  unit: Unit,
  r: LoadResult,
  more: Partial<Row> = {},
): Row {
  return {
    scenario,
    case: name,
    unit,
    rate: r.units > 0 ? r.rate : null,
    serverCpuUs: r.units > 0 ? r.serverCpuUs : null,
    clientCpuUs: r.units > 0 ? r.clientCpuUs : null,
    p50: r.p50,
    p99: r.p99,
    errors: r.errors,
    ...(r.firstError ? { firstError: r.firstError } : {}),
    load1: load1(),
    ...(r.extra ? { extra: r.extra } : {}),
    ...more,
  };
}

/**
 * The rows of one case from several rounds as one: the median of each figure
 * (rate, CPU per unit of each side, p50, p99, load average), the errors of
 * all rounds, and every round's rate and CPU (both sides) in its note. The
 * loads of a scenario alternate round by round, so a machine whose speed
 * drifts during a run (a shared one does, by tens of per cent within
 * minutes) moves every case alike rather than whichever ran last.
 */
function medianRow(rounds: Row[]): Row {
  const first = rounds[0]!;
  const med = (pick: (r: Row) => number | null): number | null => {
    const xs = rounds.map(pick).filter((x): x is number => x !== null && Number.isFinite(x));
    if (xs.length === 0) return null;
    xs.sort((a, b) => a - b);
    const m = xs.length >> 1;
    return xs.length % 2 ? xs[m]! : (xs[m - 1]! + xs[m]!) / 2;
  };
  const each = rounds
    .map((r) => `${r.rate === null ? '-' : r.rate.toFixed(0)}/${cpuBoth(r)?.toFixed(0) ?? '-'}`)
    .join(' ');
  const firstError = rounds.find((r) => r.firstError)?.firstError;
  return {
    ...first,
    rate: med((r) => r.rate),
    serverCpuUs: med((r) => r.serverCpuUs),
    clientCpuUs: med((r) => r.clientCpuUs),
    p50: med((r) => r.p50),
    p99: med((r) => r.p99),
    errors: rounds.reduce((n, r) => n + r.errors, 0),
    ...(firstError ? { firstError } : {}),
    load1: med((r) => r.load1) ?? first.load1,
    note: `median of ${rounds.length} rounds; rate/CPU each: ${each}${first.note ? `; ${first.note}` : ''}`,
  };
}

/**
 * Runs `round` (the same loads, same cases, same order, each time) `ctx.rounds`
 * times, one after the other, and gives each case as {@link medianRow}.
 */
export async function inRounds(ctx: Ctx, round: () => Promise<Row[]>): Promise<Row[]> {
  const rounds: Row[][] = [];
  for (let i = 0; i < (ctx.rounds ?? 1); i++) rounds.push(await round());
  return rounds.length === 1 ? rounds[0]! : rounds[0]!.map((_, i) => medianRow(rounds.map((x) => x[i]!)));
}

/**
 * A row that is one figure rather than a load (a size, a time, a floor
 * measured another way): no CPU per side, no latencies, measured now.
 */
export function figureRow(
  scenario: string,
  name: string,
  unit: Unit,
  value: number | null,
  more: Partial<Row> = {},
): Row {
  return {
    scenario,
    case: name,
    unit,
    rate: value,
    serverCpuUs: null,
    clientCpuUs: null,
    p50: null,
    p99: null,
    errors: 0,
    load1: load1(),
    ...more,
  };
}

/** CPU per unit of both sides (null when a side is missing). */
const cpuBoth = (r: Row): number | null =>
  r.serverCpuUs === null && r.clientCpuUs === null ? null : (r.serverCpuUs ?? 0) + (r.clientCpuUs ?? 0);

/** The row `name` of `rows` (throws: a scenario that lost its baseline is a bug). */
export function find(rows: Row[], name: string): Row {
  const r = rows.find((x) => x.case === name);
  if (!r) throw new Error(`no row ${name}`);
  return r;
}

const ratio = (a: number | null, b: number | null): number | null =>
  a === null || b === null || b === 0 ? null : a / b;

/** Rate and CPU (both sides) of `a` over `b`. */
function ratios(a: Row, b: Row): { rate: number | null; cpu: number | null; p99: number | null } {
  return { rate: ratio(a.rate, b.rate), cpu: ratio(cpuBoth(a), cpuBoth(b)), p99: ratio(a.p99, b.p99) };
}

/** A check "a/b >= min" (or "<= max") on one of the ratios. */
export function ratioCheck(
  scenario: string,
  rows: Row[],
  a: string,
  b: string,
  what: 'rate' | 'cpu' | 'p99',
  bound: { min?: number; max?: number },
  label: string,
): Check {
  const r = ratios(find(rows, a), find(rows, b))[what];
  const met =
    r !== null && (bound.min === undefined || r >= bound.min) && (bound.max === undefined || r <= bound.max);
  const want = bound.min !== undefined ? `>= ${bound.min}` : `<= ${bound.max}`;
  return { scenario, target: label, met, detail: `${r === null ? 'n/a' : r.toFixed(2)}x (target ${want})` };
}

const f = (x: number | null, digits = 0): string =>
  x === null || !Number.isFinite(x) ? '-' : x.toFixed(digits);

/** A latency in ms: two decimals, or four below 0.1 ms (policy decisions take microseconds). */
const latency = (x: number | null): string => f(x, x !== null && x < 0.1 ? 4 : 2);

/** The summary table, one line per row, ratios against each row's baselines. */
export function table(rows: Row[]): string {
  const head = [
    'scenario',
    'case',
    'rate',
    'unit',
    'srv µs/u',
    'cli µs/u',
    'p50 ms',
    'p99 ms',
    'vs baseline (rate; CPU both sides)',
    'load',
    'err',
    'note',
  ];
  const lines = rows.map((r) => {
    const vs = (r.vs ?? [])
      .map((b) => {
        const base = rows.find((x) => x.scenario === r.scenario && x.case === b);
        if (!base) return `${b}: -`;
        const q = ratios(r, base);
        return `${f(q.rate, 2)}x; ${f(q.cpu, 2)}x ${b}`;
      })
      .join(' | ');
    return [
      r.scenario,
      r.case,
      f(r.rate),
      r.unit,
      f(r.serverCpuUs, 1),
      f(r.clientCpuUs, 1),
      latency(r.p50),
      latency(r.p99),
      vs || '(baseline)',
      r.load1.toFixed(2),
      String(r.errors),
      r.note ?? '',
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) =>
    cells
      .map((c, i) => (i === 2 || (i >= 4 && i <= 7) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [fmt(head), ...lines.map(fmt)].join('\n');
}
