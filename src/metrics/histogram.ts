/**
 * Latency histograms: HdrHistogram (hdr-histogram-js) in microseconds, 3 significant digits,
 * up to one hour. Recording is a few integer operations; merging is exact (`add`), so
 * percentiles of merged workers equal percentiles of the union of their samples.
 */
import * as hdr from "hdr-histogram-js";

const HIGHEST_US = 3_600_000_000;

export interface LatencySummary {
  count: number;
  min_ms: number;
  p50_ms: number;
  p95_ms: number;
  p99_ms: number;
  max_ms: number;
  mean_ms: number;
}

export class Latency {
  private h: hdr.Histogram;

  constructor() {
    this.h = hdr.build({ bitBucketSize: 32, numberOfSignificantValueDigits: 3, lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, autoResize: false });
  }

  /** Records one sample in milliseconds (fractions kept to the microsecond). */
  recordMs(ms: number): void {
    let us = Math.round(ms * 1000);
    if (us < 1) us = 1;
    else if (us > HIGHEST_US) us = HIGHEST_US;
    this.h.recordValue(us);
  }

  get count(): number {
    return this.h.totalCount;
  }

  /** Adds every sample of `other` (exact merge). */
  add(other: Latency): void {
    this.h.add(other.h);
  }

  reset(): void {
    this.h.reset();
  }

  percentileMs(p: number): number {
    const h = this.h;
    return h.totalCount ? Math.min(h.maxValue, Math.max(h.minNonZeroValue, h.getValueAtPercentile(p))) / 1000 : 0;
  }

  summary(): LatencySummary {
    const h = this.h;
    const n = h.totalCount;
    const ms = (us: number) => (n ? Math.round(us) / 1000 : 0);
    // A percentile is its bucket's highest equivalent value, which can lie past the largest sample:
    // clamp to what was observed, so no row shows a p99 above its max.
    const at = (p: number) => ms(Math.min(h.maxValue, Math.max(h.minNonZeroValue, h.getValueAtPercentile(p))));
    return {
      count: n,
      min_ms: ms(h.minNonZeroValue),
      p50_ms: at(50),
      p95_ms: at(95),
      p99_ms: at(99),
      max_ms: ms(h.maxValue),
      mean_ms: ms(h.mean),
    };
  }

  /**
   * The non-empty buckets as [index, count, index, count, ...], for shipping to a controller.
   * Every Latency has the same bucket layout, so this merges exactly (addSparse). It replaces
   * HdrHistogram's compressed encoding, whose decoder allocates a full counts array (~90 KB)
   * per histogram per message: with 10 workers that was most of the supervisor's CPU.
   */
  toSparse(): number[] {
    const h = this.h as hdr.JsHistogram;
    const out: number[] = [];
    if (h.totalCount === 0) return out;
    for (let i = 0, n = h.countsArrayLength; i < n; i++) {
      const c = h.getCountAtIndex(i);
      if (c !== 0) out.push(i, c);
    }
    return out;
  }

  /**
   * The samples recorded since `earlier` (a toSparse() of this histogram, taken before);
   * `now` is its toSparse() as of now, when the caller has it already.
   */
  since(earlier: number[], now: number[] = this.toSparse()): Latency {
    const before = new Map<number, number>();
    for (let k = 0; k + 1 < earlier.length; k += 2) before.set(earlier[k]!, earlier[k + 1]!);
    const out = new Latency();
    const h = out.h as hdr.JsHistogram;
    for (let k = 0; k + 1 < now.length; k += 2) {
      const n = now[k + 1]! - (before.get(now[k]!) ?? 0);
      if (n > 0) h.recordValueWithCount(h.valueFromIndex(now[k]!), n);
    }
    return out;
  }

  /**
   * Prometheus-style cumulative bucket counts: for each upper bound (ms, ascending), how many
   * samples are at or below it; plus the sum of all samples in ms.
   */
  cumulative(boundsMs: readonly number[]): { counts: number[]; sumMs: number } {
    const h = this.h as hdr.JsHistogram;
    const counts = new Array<number>(boundsMs.length).fill(0);
    const pairs = this.toSparse();
    for (let k = 0; k + 1 < pairs.length; k += 2) {
      // A bucket's samples are equivalent to its highest value: counted under a bound only when all of them are.
      const ms = h.highestEquivalentValue(h.valueFromIndex(pairs[k]!)) / 1000;
      for (let b = 0; b < boundsMs.length; b++) if (ms <= boundsMs[b]!) counts[b]! += pairs[k + 1]!;
    }
    return { counts, sumMs: (h.mean * h.totalCount) / 1000 };
  }

  /** Adds buckets produced by toSparse() (of any Latency). */
  /** Buckets every Latency has (they share one layout). */
  static readonly BUCKETS = (new Latency().h as hdr.JsHistogram).countsArrayLength;

  /** True when `pairs` is a well-formed toSparse(): ascending bucket indices that exist, whole non-negative counts. */
  static isSparse(pairs: number[]): boolean {
    if (pairs.length % 2) return false;
    let prev = -1;
    for (let k = 0; k < pairs.length; k += 2) {
      const i = pairs[k]!;
      const n = pairs[k + 1]!;
      if (!Number.isInteger(i) || i <= prev || i >= Latency.BUCKETS || !Number.isSafeInteger(n) || n < 0) return false;
      prev = i;
    }
    return true;
  }

  addSparse(pairs: number[]): void {
    const h = this.h as hdr.JsHistogram;
    for (let k = 0; k + 1 < pairs.length; k += 2) h.recordValueWithCount(h.valueFromIndex(pairs[k]!), pairs[k + 1]!);
  }
}
