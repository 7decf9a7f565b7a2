import { expect, test } from "bun:test";
import { Latency } from "../../src/metrics/histogram.ts";

test("merged percentiles equal the percentiles of the union of samples", () => {
  const a = new Latency(), b = new Latency(), all = new Latency();
  for (let i = 0; i < 20_000; i++) {
    const x = Math.random() < 0.5 ? Math.random() * 5 : 50 + Math.random() * 500;
    (i % 3 ? a : b).recordMs(x);
    all.recordMs(x);
  }
  const merged = new Latency();
  merged.addSparse(JSON.parse(JSON.stringify(a.toSparse())));
  merged.addSparse(b.toSparse());
  const { max_ms: mergedMax, ...m } = merged.summary();
  const { max_ms: allMax, ...u } = all.summary();
  expect(m).toEqual(u);
  // A merged max is its bucket's value: equal within the 3 significant digits kept.
  expect(Math.abs(mergedMax - allMax) / allMax).toBeLessThan(0.001);
});

test("summary in milliseconds within HdrHistogram's 3-digit precision", () => {
  const h = new Latency();
  for (let i = 1; i <= 1000; i++) h.recordMs(i);
  const s = h.summary();
  expect(s.count).toBe(1000);
  expect(s.min_ms).toBe(1);
  expect(Math.abs(s.p50_ms - 500) / 500).toBeLessThan(0.002);
  expect(Math.abs(s.p99_ms - 990) / 990).toBeLessThan(0.002);
  expect(Math.abs(s.max_ms - 1000) / 1000).toBeLessThan(0.002);
});

test("quantiles never lie outside the samples: p99 ≤ max, p50 ≥ min", () => {
  // A few samples: the 99th percentile is the largest one's bucket, whose upper edge lies past it.
  for (const samples of [[1.2345], [3.7, 12.3456, 2049.77], [0.5, 0.5, 999.999]]) {
    const l = new Latency();
    for (const ms of samples) l.recordMs(ms);
    const s = l.summary();
    expect(s.p99_ms).toBeLessThanOrEqual(s.max_ms);
    expect(s.p95_ms).toBeLessThanOrEqual(s.max_ms);
    expect(s.p50_ms).toBeGreaterThanOrEqual(s.min_ms);
    expect(l.percentileMs(99)).toBeLessThanOrEqual(s.max_ms);
  }
});
