/**
 * Stats on the wire: what a worker sends its controller every second (a delta since the last
 * one) and how the controller adds it to its totals. Histograms travel as HdrHistogram's
 * compressed encoding and merge exactly.
 */
import type { Latency } from "./histogram.ts";
import { PHASES, ROWS, Stats, type Health } from "./stats.ts";

export interface EncodedRow {
  count: number;
  failures: number;
  reasons: Record<string, number>;
  /** Histogram buckets as [index, count, ...] (Latency.toSparse). */
  h: number[];
}

export interface EncodedStats {
  rows: Record<string, EncodedRow>;
  phases: Record<string, number[]>;
  lag: number[];
  health: Health;
}

const enc = (l: Latency) => l.toSparse();

export function encodeStats(s: Stats): EncodedStats {
  const rows: Record<string, EncodedRow> = {};
  for (const name of ROWS) {
    const r = s.rows[name];
    rows[name] = { count: r.count, failures: r.failures, reasons: Object.fromEntries(r.reasons), h: enc(r.latency) };
  }
  const phases: Record<string, number[]> = {};
  for (const p of PHASES) phases[p] = enc(s.phases[p]);
  return { rows, phases, lag: enc(s.loopLag), health: { ...s.health } };
}

/** Adds an encoded delta into `into` (counters add, histograms merge). */
export function addEncoded(into: Stats, e: EncodedStats): void {
  for (const name of ROWS) {
    const r = e.rows[name];
    if (!r) continue;
    const row = into.rows[name];
    row.count += r.count;
    row.failures += r.failures;
    for (const [k, n] of Object.entries(r.reasons)) row.reasons.set(k, (row.reasons.get(k) ?? 0) + n);
    if (r.h?.length) row.latency.addSparse(r.h);
  }
  for (const p of PHASES) if (e.phases[p]?.length) into.phases[p].addSparse(e.phases[p]!);
  if (e.lag?.length) into.loopLag.addSparse(e.lag);
  for (const k of Object.keys(into.health) as (keyof Health)[]) into.health[k] += e.health[k] ?? 0;
}
