/**
 * Which device identities a process may use. A fleet's identities are the sorted ids of a
 * certificate directory, addressed by index. A machine holds a list of ranges of those
 * indices; its worker processes take them in turn (worker k of W takes positions k, k+W,
 * k+2W, ...), so a machine running u devices uses exactly the first u positions of its
 * ranges whatever its worker count. That makes handing identities over safe: a machine
 * told to run fewer devices frees the tail of its ranges, and one told to run more appends
 * a range — no running device ever changes identity.
 */
import type { IdentitySource } from "../engine/swarm.ts";
import { DirIdentities } from "../store/dir.ts";

/** [first index, count] into the directory's sorted ids. */
export type Range = [first: number, count: number];

export const total = (ranges: readonly Range[]): number => ranges.reduce((a, r) => a + r[1], 0);

/** Every identity of a directory, or made-up ids for plain-TCP runs without certificates. */
export interface IdentityBase {
  readonly count: number;
  id(index: number): string;
  load(index: number): { cert: string; key: string };
}

/** Ids for plain-TCP runs without a certificate directory: index n is n in 8 hex digits. */
export const SYNTHETIC: IdentityBase = {
  count: 2 ** 32,
  id: (index) => index.toString(16).padStart(8, "0"),
  load: () => {
    throw new Error("synthetic identities have no certificate");
  },
};

export function identityBase(certDir: string, synthetic: boolean): IdentityBase {
  return synthetic ? SYNTHETIC : new DirIdentities(certDir);
}

/** Worker `offset` of `stride` over a machine's ranges: its index i is the machine's position offset + i*stride. */
export class StridedIdentities implements IdentitySource {
  private ranges: Range[] = [];
  private size = 0;

  constructor(
    private readonly base: IdentityBase,
    ranges: Range[],
    private readonly stride = 1,
    private readonly offset = 0,
  ) {
    this.setRanges(ranges);
  }

  /** Ranges may grow at the end or shrink from it; positions both old and new lists share keep their identity. */
  setRanges(ranges: Range[]): void {
    this.ranges = ranges.map(([f, c]) => [f, c]);
    this.size = total(ranges);
  }

  get count(): number {
    return Math.max(0, Math.ceil((this.size - this.offset) / this.stride));
  }

  id(index: number): string {
    return this.base.id(this.at(index));
  }

  load(index: number): { cert: string; key: string } {
    return this.base.load(this.at(index));
  }

  /** The directory index of this worker's identity `index`. */
  private at(index: number): number {
    let pos = this.offset + index * this.stride;
    for (const [first, count] of this.ranges) {
      if (pos < count) return first + pos;
      pos -= count;
    }
    throw new RangeError(`identity ${index} is outside this process's ranges`);
  }
}

/** Users of worker k when a machine runs `users` devices over `workers` processes, positions taken in turn. */
export function stridedShare(users: number, workers: number, k: number): number {
  return Math.max(0, Math.ceil((users - k) / workers));
}
