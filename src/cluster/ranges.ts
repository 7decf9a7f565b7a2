/**
 * Identity ranges: which identities (indices into the fleet's sorted ids) a machine or a
 * worker holds, and the algebra a controller hands them out with. A machine running u devices
 * uses the first u positions of its ranges, so freeing the tail and appending never changes a
 * running device's identity (identities.ts).
 */

/** [first index, count] into the directory's sorted ids. */
export type Range = [first: number, count: number];

export const total = (ranges: readonly Range[]): number => ranges.reduce((a, r) => a + r[1], 0);

/** Adds ranges to a sorted free list, merging neighbours. */
export function release(free: Range[], ranges: readonly Range[]): Range[] {
  const all = [...free, ...ranges.filter((r) => r[1] > 0).map(([f, c]): Range => [f, c])].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const r of all) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] >= r[0]) last[1] = Math.max(last[1], r[0] + r[1] - last[0]);
    else out.push(r);
  }
  return out;
}

/** Takes up to `n` identities from the front of a free list; returns what was taken and what is left. */
export function take(free: readonly Range[], n: number): { taken: Range[]; left: Range[] } {
  const taken: Range[] = [];
  const left: Range[] = [];
  for (const [f, c] of free) {
    const k = Math.min(c, n);
    if (k > 0) taken.push([f, k]);
    if (c > k) left.push([f + k, c - k]);
    n -= k;
  }
  return { taken, left };
}

/** Splits a machine's ranges after the first `keep` positions. */
export function cut(ranges: readonly Range[], keep: number): { kept: Range[]; freed: Range[] } {
  const kept: Range[] = [];
  const freed: Range[] = [];
  for (const [f, c] of ranges) {
    const k = Math.max(0, Math.min(c, keep));
    if (k > 0) kept.push([f, k]);
    if (c > k) freed.push([f + k, c - k]);
    keep -= k;
  }
  return { kept, freed };
}

/** Appends ranges, joining the last one with the next when they touch. */
export function append(ranges: readonly Range[], more: readonly Range[]): Range[] {
  const out: Range[] = ranges.map(([f, c]): Range => [f, c]);
  for (const [f, c] of more) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === f) last[1] += c;
    else out.push([f, c]);
  }
  return out;
}

/** The fleet's sorted ids by index: an array, or a list packed to be kept for a run (`PackedIds`). */
export interface IdList {
  readonly length: number;
  at(index: number): string | undefined;
}

/** The ids the ranges select from `ids` (the fleet's sorted ids). */
export function idsIn(ids: IdList, ranges: readonly Range[]): Set<string> {
  const out = new Set<string>();
  for (const [f, c] of ranges) for (let i = f; i < f + c && i < ids.length; i++) out.add(ids.at(i)!);
  return out;
}
