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
import { total, type IdList, type Range } from "./ranges.ts";
import { DeviceFiles, DirIdentities, listDeviceIds } from "../store/dir.ts";
import { RedisStore, type StoreSettings } from "../store/redis.ts";


/** Every identity of a directory or a Redis store, or made-up ids for plain-TCP runs without certificates. */
export interface IdentityBase {
  readonly count: number;
  id(index: number): string;
  /** Synchronous: called as a device dials. A store base must have fetched the index first. */
  load(index: number): { cert: string; key: string };
  /** Fetches what load() will need for these indices (a store over the network). */
  prefetch?(indices: number[]): Promise<void>;
  /** Takes more names (a worker's base, as its users or its machine's ranges grow). */
  learn?(names: Names): void;
}

/** Ids for plain-TCP runs without a certificate directory: index n is n in 8 hex digits. */
export const SYNTHETIC: IdentityBase = {
  count: 2 ** 32,
  id: (index) => index.toString(16).padStart(8, "0"),
  load: () => {
    throw new Error("synthetic identities have no certificate");
  },
};

/** Certificates and keys by device id: a directory's files, or a Redis store's hashes fetched ahead of use. */
interface DeviceSource {
  load(id: string): { cert: string; key: string };
  prefetch?(ids: string[]): Promise<void>;
}

/**
 * A Redis store's devices by id (`--certs redis://...`), fetched ahead of use. No connection is
 * held between fetches (a run must end by itself, and fetches happen only at start and when
 * ranges change).
 */
class StoreDevices implements DeviceSource {
  private readonly cache = new Map<string, { cert: string; key: string }>();

  constructor(private readonly settings: StoreSettings) {}

  load(id: string): { cert: string; key: string } {
    const c = this.cache.get(id);
    if (!c) throw new Error(`identity ${id} was not fetched from the store`);
    return c;
  }

  async prefetch(ids: string[]): Promise<void> {
    const missing = ids.filter((id) => !this.cache.has(id));
    if (missing.length === 0) return;
    const got = await withStore(this.settings, (store) => store.get(missing));
    missing.forEach((id, k) => {
      const r = got[k];
      if (r) this.cache.set(id, { cert: r.certPem, key: r.keyPem });
    });
  }
}

/** Identities of a Redis store: its ids listed once, keys and certificates fetched ahead of use. */
export class StoreIdentities implements IdentityBase {
  private constructor(
    private readonly devices: StoreDevices,
    readonly ids: string[],
  ) {}

  static async open(settings: StoreSettings): Promise<StoreIdentities> {
    const ids = await withStore(settings, (store) => store.ids());
    return new StoreIdentities(new StoreDevices(settings), ids);
  }

  get count(): number {
    return this.ids.length;
  }

  id(index: number): string {
    return this.ids[index]!;
  }

  load(index: number): { cert: string; key: string } {
    return this.devices.load(this.ids[index]!);
  }

  async prefetch(indices: number[]): Promise<void> {
    await this.devices.prefetch(indices.filter((i) => i < this.ids.length).map((i) => this.ids[i]!));
  }
}

/** Directory indices with their ids: the part of the sorted list one worker's positions use. */
export type Names = [index: number, id: string][];

/**
 * A worker's identities as its supervisor names them: only the ids its own positions use, not the
 * whole sorted list. The supervisor lists the directory or the store once; a worker that listed
 * it again would hold all of it (400,000 ids: 2.8 s and 37 MB of RSS, in every process).
 */
export class NamedIdentities implements IdentityBase {
  private readonly names = new Map<number, string>();

  constructor(
    private readonly devices: DeviceSource,
    names: Names,
  ) {
    this.learn(names);
  }

  /** How many ids it was named: its share, not the fleet's. */
  get count(): number {
    return this.names.size;
  }

  /** Adds names (more users, or other ranges). An index always names the same id: the list is sorted once per run. */
  learn(names: Names): void {
    for (const [index, id] of names) this.names.set(index, id);
  }

  id(index: number): string {
    const id = this.names.get(index);
    if (id === undefined) throw new RangeError(`identity ${index} was not named to this process`);
    return id;
  }

  load(index: number): { cert: string; key: string } {
    return this.devices.load(this.id(index));
  }

  async prefetch(indices: number[]): Promise<void> {
    if (!this.devices.prefetch) return;
    await this.devices.prefetch(indices.filter((i) => this.names.has(i)).map((i) => this.names.get(i)!));
  }
}

/**
 * A sorted id list kept for a whole run, packed into one string: 400,000 ids of 8 characters
 * take 4.8 MB this way, where an array of strings held ~28 MB more in the supervisor.
 */
export class PackedIds implements IdList {
  private readonly text: string;
  private readonly ends: Uint32Array;

  constructor(ids: readonly string[]) {
    this.text = ids.join("");
    this.ends = new Uint32Array(ids.length);
    let end = 0;
    ids.forEach((id, i) => (this.ends[i] = end += id.length));
  }

  get length(): number {
    return this.ends.length;
  }

  at(index: number): string | undefined {
    if (!(index >= 0 && index < this.ends.length)) return undefined;
    return this.text.slice(index === 0 ? 0 : this.ends[index - 1], this.ends[index]);
  }
}

/** The names of positions `from` to `to` (exclusive) of worker `slot` of `stride` over `ranges` of the sorted `ids`. */
export function namesFor(ids: IdList, ranges: Range[], stride: number, slot: number, from = 0, to = Infinity): Names {
  const mine = new StridedIdentities({ count: ids.length, id: (i) => ids.at(i)!, load: () => ({ cert: "", key: "" }) }, ranges, stride, slot);
  const names: Names = [];
  for (let i = from, n = Math.min(to, mine.count); i < n; i++) {
    const at = mine.position(i);
    if (at < ids.length) names.push([at, ids.at(at)!]);
  }
  return names;
}

async function withStore<T>(s: StoreSettings, body: (store: RedisStore) => Promise<T>): Promise<T> {
  const store = await RedisStore.open(s);
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

/**
 * The identities behind `--certs`: a Redis store (`store` given), a directory, or none
 * (synthetic). With `names` (a worker's share, from its supervisor) nothing is listed.
 */
export async function openIdentityBase(certs: string, synthetic: boolean, store?: StoreSettings, names?: Names): Promise<IdentityBase> {
  if (synthetic) return SYNTHETIC;
  if (names) return new NamedIdentities(store ? new StoreDevices(store) : new DeviceFiles(certs), names);
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

  /** More ids, for a base that is only named the positions it runs (a worker's). */
  learn(names: Names): void {
    this.base.learn?.(names);
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
