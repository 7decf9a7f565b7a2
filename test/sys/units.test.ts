import { expect, test } from "bun:test";
import { parseDuration, parseRange } from "../../src/sys/units.ts";
import { checkCapacity } from "../../src/engine/limits.ts";

test("durations", () => {
  expect(parseDuration("90")).toBe(90_000);
  expect(parseDuration("1h30m")).toBe(5_400_000);
  expect(parseDuration("500ms")).toBe(500);
  expect(parseDuration("2.5s")).toBe(2500);
  expect(parseDuration("10x")).toBeUndefined();
  expect(parseDuration("")).toBeUndefined();
});

test("ranges", () => {
  expect(parseRange("29.5s..30s")).toEqual([29_500, 30_000]);
  expect(parseRange("30s")).toEqual([30_000, 30_000]);
  expect(parseRange("30s..1s")).toBeUndefined();
});

test("capacity: the open-file limit and the port range name the way out", () => {
  const files = { soft: 20_000, hard: 20_000 };
  const ok = checkCapacity({ users: 19_000, workers: 1, destinations: 2, sources: 0, files, ports: [32768, 60999] });
  expect(ok.errors).toEqual([]);
  const fd = checkCapacity({ users: 25_000, workers: 1, destinations: 4, sources: 0, files, ports: [32768, 60999] });
  expect(fd.errors.length).toBe(1);
  expect(fd.errors[0]).toContain("one process may open 20000");
  expect(fd.errors[0]).toContain("use --workers 2 or more");
  expect(checkCapacity({ users: 25_000, workers: 2, destinations: 4, sources: 0, files, ports: [32768, 60999] }).errors).toEqual([]);
  const ports = checkCapacity({ users: 19_000, workers: 1, destinations: 1, sources: 0, files: { soft: 1e6, hard: 1e6 }, ports: [50000, 60000] });
  expect(ports.errors[0]).toContain("add broker ports");
  // A source address is one port range across all brokers (bind before connect).
  const bound = checkCapacity({ users: 60_000, workers: 4, destinations: 10, sources: 2, files, ports: [32768, 60999] });
  expect(bound.errors[0]).toContain("30000 local ports per address");
  const boundSlow = checkCapacity({ users: 30_000, workers: 2, destinations: 10, sources: 2, files, ports: [32768, 60999] });
  expect(boundSlow.warnings[0]).toContain("per --source-address");
  const slow = checkCapacity({ users: 15_000, workers: 1, destinations: 1, sources: 0, files, ports: [32768, 60999] });
  expect(slow.warnings[0]).toContain("port search");
});
