import { expect, test } from "bun:test";
import { planWorkers, split } from "../../src/cluster/supervisor.ts";
import { addEncoded, encodeStats } from "../../src/metrics/snapshot.ts";
import { Stats } from "../../src/metrics/stats.ts";
import { swarmConfig } from "../helpers/swarm.ts";

test("split gives near-equal whole shares that add up", () => {
  expect(split(10, 3)).toEqual([4, 3, 3]);
  expect(split(2, 4)).toEqual([1, 1, 0, 0]);
});

test("workers get disjoint identity segments covering the fleet, users and rate split", () => {
  const specs = planWorkers({ certDir: "c", synthetic: false, first: 5, identities: 1001, workers: 3, swarm: swarmConfig([], { users: 900, rate: 90 }) });
  expect(specs.map((s) => [s.first, s.count])).toEqual([[5, 334], [339, 334], [673, 333]]);
  expect(specs.map((s) => s.swarm.users)).toEqual([300, 300, 300]);
  expect(specs.reduce((a, s) => a + s.swarm.rate, 0)).toBeCloseTo(90);
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
