/**
 * Stats on the wire: what a worker sends its controller every second (a delta since the last
 * one) and how the controller adds it to its totals. Histograms travel as HdrHistogram's
 * compressed encoding and merge exactly.
 */
import type { Latency } from "./histogram.ts";
import { CUSTOM_ROW, PHASES, ROWS, SCENARIO_ERROR_ROW, Stats, type Health } from "./stats.ts";

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
  /** Stats.sent. */
  sent: number;
  /** Stats.sentBytes (absent from older senders). */
  sent_bytes?: number;
}

const enc = (l: Latency) => l.toSparse();

export function encodeStats(s: Stats): EncodedStats {
  const rows: Record<string, EncodedRow> = {};
  for (const [name, r] of s.allRows()) rows[name] = { count: r.count, failures: r.failures, reasons: Object.fromEntries(r.reasons), h: enc(r.latency) };
  const phases: Record<string, number[]> = {};
  for (const p of PHASES) phases[p] = enc(s.phases[p]);
  return { rows, phases, lag: enc(s.loopLag), health: { ...s.health }, sent: s.sent, sent_bytes: s.sentBytes };
}

/** Adds an encoded delta into `into` (counters add, histograms merge). */
export function addEncoded(into: Stats, e: EncodedStats): void {
  for (const [name, r] of Object.entries(e.rows)) {
    if (!r) continue;
    // A name that is not built in is a scenario's row (the wire schema bounds how many).
    const row = (ROWS as readonly string[]).includes(name) ? into.rows[name as (typeof ROWS)[number]] : CUSTOM_ROW.test(name) || name === SCENARIO_ERROR_ROW ? into.customRow(name) : null;
    if (!row) continue;
    row.count += r.count;
    row.failures += r.failures;
    for (const [k, n] of Object.entries(r.reasons)) row.reasons.set(k, (row.reasons.get(k) ?? 0) + n);
    if (r.h?.length) row.latency.addSparse(r.h);
  }
  for (const p of PHASES) if (e.phases[p]?.length) into.phases[p].addSparse(e.phases[p]!);
  if (e.lag?.length) into.loopLag.addSparse(e.lag);
  into.sent += e.sent ?? 0;
  into.sentBytes += e.sent_bytes ?? 0;
  for (const k of Object.keys(into.health) as (keyof Health)[]) into.health[k] += e.health[k] ?? 0;
}

/** Sparse buckets `newer − older` (both sorted by index, as toSparse() makes them). */
function diffSparse(newer: number[], older: number[] | undefined): number[] {
  if (!older?.length) return newer;
  const out: number[] = [];
  let j = 0;
  for (let k = 0; k + 1 < newer.length; k += 2) {
    const i = newer[k]!;
    while (j + 1 < older.length && older[j]! < i) j += 2;
    const before = j + 1 < older.length && older[j] === i ? older[j + 1]! : 0;
    if (newer[k + 1]! !== before) out.push(i, newer[k + 1]! - before);
  }
  return out;
}

/**
 * What was counted between two running totals of the same source (`older` may be null: from
 * zero). Lets a receiver of running totals keep one merged Stats and add only what is new.
 */
export function diffEncoded(newer: EncodedStats, older: EncodedStats | null): EncodedStats {
  if (!older) return newer;
  const rows: Record<string, EncodedRow> = {};
  for (const [name, r] of Object.entries(newer.rows)) {
    const o = older.rows[name];
    const reasons: Record<string, number> = {};
    for (const [k, n] of Object.entries(r.reasons)) if (n !== (o?.reasons[k] ?? 0)) reasons[k] = n - (o?.reasons[k] ?? 0);
    rows[name] = { count: r.count - (o?.count ?? 0), failures: r.failures - (o?.failures ?? 0), reasons, h: diffSparse(r.h, o?.h) };
  }
  const phases: Record<string, number[]> = {};
  for (const [p, h] of Object.entries(newer.phases)) phases[p] = diffSparse(h, older.phases[p]);
  const health = { ...newer.health };
  for (const k of Object.keys(health) as (keyof Health)[]) health[k] -= older.health[k] ?? 0;
  return { rows, phases, lag: diffSparse(newer.lag, older.lag), health, sent: newer.sent - (older.sent ?? 0), sent_bytes: (newer.sent_bytes ?? 0) - (older.sent_bytes ?? 0) };
}

/** Nothing counted in it. */
export function isEmptyEncoded(e: EncodedStats): boolean {
  for (const r of Object.values(e.rows)) if (r.count || r.failures || r.h.length) return false;
  for (const h of Object.values(e.phases)) if (h.length) return false;
  if (e.lag.length) return false;
  return !e.sent && Object.values(e.health).every((v) => v === 0);
}

function sumSparse(a: number[], b: number[]): number[] {
  if (!a.length) return b;
  if (!b.length) return a;
  const out: number[] = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]! < b[j]!)) out.push(a[i]!, a[i + 1]!), (i += 2);
    else if (i >= a.length || b[j]! < a[i]!) out.push(b[j]!, b[j + 1]!), (j += 2);
    else out.push(a[i]!, a[i + 1]! + b[j + 1]!), (i += 2), (j += 2);
  }
  return out;
}

/** a + b, bucket by bucket. */
export function sumEncoded(a: EncodedStats, b: EncodedStats): EncodedStats {
  const rows: Record<string, EncodedRow> = {};
  for (const name of new Set([...Object.keys(a.rows), ...Object.keys(b.rows)])) {
    const x = a.rows[name], y = b.rows[name];
    if (!x || !y) {
      rows[name] = (x ?? y)!;
      continue;
    }
    const reasons = { ...x.reasons };
    for (const [k, n] of Object.entries(y.reasons)) reasons[k] = (reasons[k] ?? 0) + n;
    rows[name] = { count: x.count + y.count, failures: x.failures + y.failures, reasons, h: sumSparse(x.h, y.h) };
  }
  const phases: Record<string, number[]> = {};
  for (const p of new Set([...Object.keys(a.phases), ...Object.keys(b.phases)])) phases[p] = sumSparse(a.phases[p] ?? [], b.phases[p] ?? []);
  const health = { ...a.health };
  for (const k of Object.keys(health) as (keyof typeof health)[]) health[k] += b.health[k] ?? 0;
  return { rows, phases, lag: sumSparse(a.lag, b.lag), health, sent: (a.sent ?? 0) + (b.sent ?? 0), sent_bytes: (a.sent_bytes ?? 0) + (b.sent_bytes ?? 0) };
}

// ---- compact form for running totals between machines ---------------------------------------

/** EncodedStats with every histogram packed into a string (packSparse): ~5× smaller, and parsed as one string. */
export interface PackedStats extends Omit<EncodedStats, "rows" | "phases" | "lag"> {
  rows: Record<string, Omit<EncodedRow, "h"> & { h: string }>;
  phases: Record<string, string>;
  lag: string;
}

/**
 * Sparse buckets as base64 of unsigned LEB128 varints: index gaps, then counts. Running totals
 * of a busy row hold thousands of buckets; as JSON numbers they made parsing the controller's
 * main cost.
 */
export function packSparse(pairs: number[]): string {
  const out = new Uint8Array(pairs.length * 5 + 8);
  let n = 0;
  const put = (v: number) => {
    while (v >= 128) {
      out[n++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    out[n++] = v;
  };
  let prev = 0;
  for (let k = 0; k + 1 < pairs.length; k += 2) {
    put(pairs[k]! - prev);
    put(pairs[k + 1]!);
    prev = pairs[k]!;
  }
  return Buffer.from(out.buffer, 0, n).toString("base64");
}

export function unpackSparse(s: string): number[] {
  const b = Buffer.from(s, "base64");
  const n = b.length;
  const out: number[] = [];
  let i = 0, prev = 0, odd = false;
  while (i < n) {
    let byte = b[i++]!;
    let v = byte & 127;
    for (let scale = 128; byte & 128 && i < n; scale *= 128) {
      byte = b[i++]!;
      v += (byte & 127) * scale;
    }
    if (odd) out.push(v);
    else out.push((prev += v));
    odd = !odd;
  }
  return out;
}

export function packStats(e: EncodedStats): PackedStats {
  const rows: PackedStats["rows"] = {};
  for (const [name, r] of Object.entries(e.rows)) rows[name] = { ...r, h: packSparse(r.h) };
  const phases: Record<string, string> = {};
  for (const [p, h] of Object.entries(e.phases)) phases[p] = packSparse(h);
  return { rows, phases, lag: packSparse(e.lag), health: e.health, sent: e.sent, sent_bytes: e.sent_bytes ?? 0 };
}

export function unpackStats(p: PackedStats): EncodedStats {
  const rows: Record<string, EncodedRow> = {};
  for (const [name, r] of Object.entries(p.rows)) rows[name] = { ...r, h: unpackSparse(r.h) };
  const phases: Record<string, number[]> = {};
  for (const [k, h] of Object.entries(p.phases)) phases[k] = unpackSparse(h);
  return { rows, phases, lag: unpackSparse(p.lag), health: p.health, sent: p.sent, sent_bytes: p.sent_bytes ?? 0 };
}
