import { expect, test } from "bun:test";
import { NamedIdentities, namesFor, PackedIds, SYNTHETIC, StridedIdentities, stridedShare } from "../../src/cluster/identities.ts";
import { type Range } from "../../src/cluster/ranges.ts";
import { planWorkers } from "../../src/cluster/supervisor.ts";
import { split } from "../../src/cluster/fleet.ts";
import { identitiesFor } from "../../src/cluster/worker.ts";
import { addEncoded, diffEncoded, encodeStats, packStats, unpackStats } from "../../src/metrics/snapshot.ts";
import { Stats } from "../../src/metrics/stats.ts";
import { swarmConfig } from "../helpers/swarm.ts";

test("split gives near-equal whole shares that add up", () => {
  expect(split(10, 3)).toEqual([4, 3, 3]);
  expect(split(2, 4)).toEqual([1, 1, 0, 0]);
});

test("workers take turns over the fleet's identities, users and rate split", async () => {
  const specs = planWorkers({ certDir: "c", synthetic: true, ranges: [[5, 1001]], workers: 3, swarm: swarmConfig([], { users: 900, rate: 90 }) });
  expect(specs.map((s) => [s.slot, s.stride])).toEqual([[0, 3], [1, 3], [2, 3]]);
  expect(specs.map((s) => s.swarm.users)).toEqual([300, 300, 300]);
  expect(specs.reduce((a, s) => a + s.swarm.rate, 0)).toBeCloseTo(90);
  // Worker k's first identities are the fleet's positions k, k+3, ...: 5, 8, 11 for worker 0.
  const ids = await Promise.all(specs.map((s) => identitiesFor(s)));
  expect([0, 1, 2].map((i) => ids[0]!.id(i))).toEqual(["00000005", "00000008", "0000000b"]);
  expect(ids.map((x) => x.count)).toEqual([334, 334, 333]);
});

test("a machine running u devices uses exactly the first u positions of its ranges, whatever its worker count", () => {
  const ranges: Range[] = [[100, 7], [500, 10]];
  for (const workers of [1, 2, 3, 5]) {
    for (const users of [0, 1, 6, 7, 8, 17]) {
      const used = new Set<string>();
      for (let k = 0; k < workers; k++) {
        const ids = new StridedIdentities(SYNTHETIC, ranges, workers, k);
        const u = split(users, workers)[k]!;
        expect(u).toBe(stridedShare(users, workers, k));
        for (let i = 0; i < u; i++) used.add(ids.id(i));
      }
      const expected = [...Array(7).keys()].map((i) => 100 + i).concat([...Array(10).keys()].map((i) => 500 + i)).slice(0, users);
      expect([...used].sort()).toEqual(expected.map((n) => n.toString(16).padStart(8, "0")).sort());
    }
  }
});

test("ranges that grow at the end keep every existing position's identity", () => {
  const ids = new StridedIdentities(SYNTHETIC, [[0, 4]], 2, 1);
  const before = [0, 1].map((i) => ids.id(i));
  ids.setRanges([[0, 4], [10, 4]]);
  expect([0, 1].map((i) => ids.id(i))).toEqual(before);
  expect(ids.count).toBe(4);
  expect(ids.id(2)).toBe("0000000b");
  expect(() => ids.id(4)).toThrow(RangeError);
});

test("a worker named only its positions' ids sees each position as one that listed them all", () => {
  // Ids of unequal length, as a store may hold.
  const all = Array.from({ length: 40 }, (_, i) => `dev${i}`).sort();
  const listed = { count: all.length, id: (i: number) => all[i]!, load: (i: number) => ({ cert: all[i]!, key: "" }) };
  const files = { load: (id: string) => ({ cert: id, key: "" }) };
  const ranges: Range[] = [[3, 5], [20, 12]];
  for (const k of [0, 1, 2]) {
    const whole = new StridedIdentities(listed, ranges, 3, k);
    const names = namesFor(new PackedIds(all), ranges, 3, k);
    expect(names.length).toBe(whole.count);
    const named = new StridedIdentities(new NamedIdentities(files, names), ranges, 3, k);
    for (let i = 0; i < whole.count; i++) {
      expect(named.id(i)).toBe(whole.id(i));
      expect(named.load(i).cert).toBe(whole.id(i));
    }
    // Positions it was not named stay unknown, rather than some other device's; so do indices past the list.
    expect(new PackedIds(all).at(all.length)).toBeUndefined();
    expect(() => new NamedIdentities(files, names).id(names.length ? 39 - k : 0)).toThrow(RangeError);
  }
});

test("stats deltas merged by a controller equal the stats of the union", () => {
  const workers = [new Stats(), new Stats(), new Stats()];
  const union = new Stats();
  for (let i = 0; i < 30_000; i++) {
    const ms = Math.random() < 0.9 ? Math.random() * 10 : 100 + Math.random() * 900;
    workers[i % 3]!.rows.publish.ok(ms);
    union.rows.publish.ok(ms);
    if (i % 1000 === 0) {
      workers[i % 3]!.rows.connect.fail("timeout");
      union.rows.connect.fail("timeout");
    }
  }
  const total = new Stats();
  for (const w of workers) addEncoded(total, JSON.parse(JSON.stringify(encodeStats(w))));
  expect(total.rows.publish.count).toBe(30_000);
  expect(total.rows.connect.reasons.get("timeout")).toBe(30);
  const a = total.rows.publish.latency, b = union.rows.publish.latency;
  for (const p of [50, 95, 99, 99.9]) expect(a.percentileMs(p)).toBe(b.percentileMs(p));
  expect(a.count).toBe(b.count);
});

test("running totals: adding each one's difference from the last gives the final totals", () => {
  const source = new Stats();
  const merged = new Stats();
  let last: ReturnType<typeof encodeStats> | null = null;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 2000; i++) source.rows.publish.ok(Math.random() * (round + 1) * 50);
    source.rows.connect.fail(round % 2 ? "timeout" : "econnreset");
    source.health.late_sends += round;
    const totals = JSON.parse(JSON.stringify(encodeStats(source)));
    addEncoded(merged, diffEncoded(totals, last));
    last = totals;
  }
  expect(merged.rows.publish.count).toBe(10_000);
  expect(Object.fromEntries(merged.rows.connect.reasons)).toEqual({ econnreset: 3, timeout: 2 });
  expect(merged.health.late_sends).toBe(10);
  for (const p of [50, 99, 99.9]) expect(merged.rows.publish.latency.percentileMs(p)).toBe(source.rows.publish.latency.percentileMs(p));
  expect(merged.rows.publish.latency.count).toBe(source.rows.publish.latency.count);
});

test("packed running totals unpack to the same buckets and counts", () => {
  const s = new Stats();
  for (let i = 0; i < 50_000; i++) s.rows.publish.ok(Math.random() ** 3 * 60_000);
  s.rows.publish.ok(3_600_000);
  for (let i = 0; i < 300; i++) s.rows.connect.ok(1 + i);
  const e = encodeStats(s);
  // Counts past 2^31 survive too.
  e.rows.connect.h[1] = 2 ** 40 + 3;
  const back = unpackStats(JSON.parse(JSON.stringify(packStats(e))));
  expect(back).toEqual(e);
  expect(JSON.stringify(packStats(e)).length).toBeLessThan(JSON.stringify(e).length / 2);
});
