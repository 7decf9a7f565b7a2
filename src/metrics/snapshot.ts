/**
 * Stats on the wire: what a worker sends its controller every second (a delta since the last
 * one) and how the controller adds it to its totals. Histograms travel as HdrHistogram's
 * compressed encoding and merge exactly.
 */
import { Latency } from "./histogram.ts";
import { PHASES, ROWS, Stats, type Health } from "./stats.ts";

export interface EncodedRow {
  count: number;
  failures: number;
  reasons: Record<string, number>;
  /** Encoded histogram; empty when it holds no samples. */
  h: string;
}

export interface EncodedStats {
  rows: Record<string, EncodedRow>;
  phases: Record<string, string>;
  lag: string;
  health: Health;
}

const enc = (l: Latency) => (l.count ? l.encode() : "");
const dec = (s: string | undefined) => (s ? Latency.decode(s) : null);

export function encodeStats(s: Stats): EncodedStats {
  const rows: Record<string, EncodedRow> = {};
  for (const name of ROWS) {
    const r = s.rows[name];
    rows[name] = { count: r.count, failures: r.failures, reasons: Object.fromEntries(r.reasons), h: enc(r.latency) };
  }
  const phases: Record<string, string> = {};
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
    const h = dec(r.h);
    if (h) row.latency.add(h);
  }
  for (const p of PHASES) {
    const h = dec(e.phases[p]);
    if (h) into.phases[p].add(h);
  }
  const lag = dec(e.lag);
  if (lag) into.loopLag.add(lag);
  for (const k of Object.keys(into.health) as (keyof Health)[]) into.health[k] += e.health[k] ?? 0;
}
