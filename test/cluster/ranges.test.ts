import { expect, test } from "bun:test";
import { append, cut, release, take } from "../../src/cluster/ranges.ts";
import { total, type Range } from "../../src/cluster/ranges.ts";

test("take hands out the lowest free identities, across gaps", () => {
  expect(take([[0, 5], [10, 5]], 7)).toEqual({ taken: [[0, 5], [10, 2]], left: [[12, 3]] });
  expect(take([[0, 5]], 9)).toEqual({ taken: [[0, 5]], left: [] });
});

test("release merges neighbours and overlaps into a sorted free list", () => {
  expect(release([[10, 5]], [[0, 5], [5, 5], [20, 1]])).toEqual([[0, 15], [20, 1]]);
});

test("cut keeps the first positions and frees the tail; append joins touching ranges", () => {
  expect(cut([[0, 5], [10, 5]], 7)).toEqual({ kept: [[0, 5], [10, 2]], freed: [[12, 3]] });
  expect(cut([[0, 5]], 0)).toEqual({ kept: [], freed: [[0, 5]] });
  expect(append([[0, 5]], [[5, 3], [20, 2]])).toEqual([[0, 8], [20, 2]]);
});

test("shares handed out and given back never overlap and lose nothing", () => {
  const space: Range = [100, 1000];
  let free: Range[] = [space];
  const held: Range[][] = [[], [], []];
  for (let round = 0; round < 200; round++) {
    const i = round % 3;
    const want = Math.floor(Math.random() * 500);
    const have = total(held[i]!);
    if (want < have) {
      const { kept, freed } = cut(held[i]!, want);
      held[i] = kept;
      free = release(free, freed);
    } else {
      const { taken, left } = take(free, want - have);
      held[i] = append(held[i]!, taken);
      free = left;
    }
    const ids = [...held.flat(), ...free].flatMap(([f, c]) => Array.from({ length: c }, (_, k) => f + k));
    expect(ids.length).toBe(1000);
    expect(new Set(ids).size).toBe(1000);
    expect(Math.min(...ids)).toBe(100);
  }
});
