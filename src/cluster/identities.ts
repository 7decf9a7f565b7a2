/**
 * Which device identities a process may use. A fleet's identities are the sorted ids of a
 * certificate directory, addressed by index. A machine holds a list of ranges of those
 * indices; its worker processes take them in turn (worker k of W takes positions k, k+W,
 * k+2W, ...), so a machine running u devices uses exactly the first u positions of its
 * ranges whatever its worker count. That makes handing identities over safe: a machine
 * told to run fewer devices frees the tail of its ranges, and one told to run more appends
 * a range — no running device ever changes identity.
 */
import type { IdentitySource } from "../engine/config.ts";
import { total, type Range } from "./ranges.ts";
import { DirIdentities, listDeviceIds } from "../store/dir.ts";
import { RedisStore, type StoreSettings } from "../store/redis.ts";


/** Every identity of a directory or a Redis store, or made-up ids for plain-TCP runs without certificates. */
export interface IdentityBase {
  readonly count: number;
  id(index: number): string;
  /** Synchronous: called as a device dials. A store base must have fetched the index first. */
  load(index: number): { cert: string; key: string };
  /** Fetches what load() will need for these indices (a store over the network). */
  prefetch?(indices: number[]): Promise<void>;
}

/** Ids for plain-TCP runs without a certificate directory: index n is n in 8 hex digits. */
export const SYNTHETIC: IdentityBase = {
  count: 2 ** 32,
  id: (index) => index.toString(16).padStart(8, "0"),
  load: () => {
    throw new Error("synthetic identities have no certificate");
  },
};

/**
 * Identities of a Redis store (`--certs redis://...`): ids listed once, keys and certificates
 * fetched ahead of use. No connection is held between fetches (a run must end by itself, and
 * fetches happen only at start and when ranges change).
 */
export class StoreIdentities implements IdentityBase {
  private readonly cache = new Map<number, { cert: string; key: string }>();

  private constructor(
    private readonly settings: StoreSettings,
    readonly ids: string[],
  ) {}

  static async open(settings: StoreSettings): Promise<StoreIdentities> {
    const ids = await withStore(settings, (store) => store.ids());
    return new StoreIdentities(settings, ids);
  }

  get count(): number {
    return this.ids.length;
  }

  id(index: number): string {
    return this.ids[index]!;
  }

  load(index: number): { cert: string; key: string } {
    const c = this.cache.get(index);
    if (!c) throw new Error(`identity ${this.ids[index]} was not fetched from the store`);
    return c;
  }

  async prefetch(indices: number[]): Promise<void> {
    const missing = indices.filter((i) => !this.cache.has(i) && i < this.ids.length);
    if (missing.length === 0) return;
    const got = await withStore(this.settings, (store) => store.get(missing.map((i) => this.ids[i]!)));
    missing.forEach((i, k) => {
      const r = got[k];
      if (r) this.cache.set(i, { cert: r.certPem, key: r.keyPem });
    });
  }
}

async function withStore<T>(s: StoreSettings, body: (store: RedisStore) => Promise<T>): Promise<T> {
  const store = await RedisStore.open(s);
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

/** The identities behind `--certs`: a Redis store (`store` given), a directory, or none (synthetic). */
export async function openIdentityBase(certs: string, synthetic: boolean, store?: StoreSettings): Promise<IdentityBase> {
  if (synthetic) return SYNTHETIC;
  if (store) return StoreIdentities.open(store);
  return new DirIdentities(certs);
}

/** The identities behind `--certs` (a store when `store` is given, else a directory), with their sorted ids for counting and for the digest machines compare. */
export async function openIdentities(certs: string, store?: StoreSettings): Promise<IdentityBase & { readonly ids: readonly string[] }> {
  return store ? StoreIdentities.open(store) : new DirIdentities(certs);
}

/** Sorted ids behind `--certs`. */
export async function listIdentities(certs: string, store?: StoreSettings): Promise<string[]> {
  if (!store) return listDeviceIds(certs);
  return (await StoreIdentities.open(store)).ids;
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

  position(index: number): number {
    return this.at(index);
  }

  /** Fetches ahead what this worker's positions need (a store base); call before the ranges are used. */
  async prefetch(): Promise<void> {
    if (!this.base.prefetch) return;
    const at: number[] = [];
    for (let i = 0, n = this.count; i < n; i++) at.push(this.at(i));
    await this.base.prefetch(at);
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
