/** Control messages: signed, bound to their channel, fresh, and checked against the schema before use. */
import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CTL, UP, type Beat, type MachineState } from "../../src/cluster/redis-protocol.ts";
import { CLUSTER_KEY_OPTION, keyIssue, MAX_SKEW_MS, readClusterKey, Seal } from "../../src/cluster/seal.ts";
import { parseCommand } from "../../src/config/options.ts";
import { parseBeat, parseState } from "../../src/cluster/wire.ts";
import { encodeStats, packStats } from "../../src/metrics/snapshot.ts";
import { Stats } from "../../src/metrics/stats.ts";
import { tempDir } from "../helpers/tmp.ts";
import { swarmConfig } from "../helpers/swarm.ts";

const KEY = "0123456789abcdef0123456789abcdef";

function beat(over: Partial<Beat> = {}): Beat {
  return {
    t: "beat",
    run: "ctl-1",
    started: Date.now(),
    seq: 1,
    at: Date.now(),
    epoch: 0,
    grace_ms: 60_000,
    stop: false,
    swarm: swarmConfig([{ host: "127.0.0.1", port: 8883 }], { lifecycle: { revoke: { max: 5, afterMs: 0, probability: 100 }, signer: "local", crlWaitMs: 0 } }),
    synthetic: false,
    assign: { m1: { v: 1, fence: 1, ranges: [[0, 5]], users: 5, rate: 10 } },
    acks: {},
    ...over,
  };
}

function state(over: Partial<MachineState> = {}): MachineState {
  const stats = new Stats();
  stats.rows.publish.ok(2);
  return {
    t: "state", machine: "m1", host: "h", pid: 1, since: 1, at: Date.now(), run: null, seq: 1, epoch: 0, v: 0, used: 0, ids: 5, digest: "abc",
    running: false, stopped: false, target: 0, active: 0, connected: 0, cpu_us: 0, rss: 0, workers: [],
    stats: { from: 0, to: 1, packed: packStats(encodeStats(stats)) }, pending: 1, dropped: 0, fenced: 0,
    ...over,
  };
}

describe("Seal", () => {
  const seal = new Seal(KEY);

  test("a signed message opens on its own channel only; any change to it is a bad MAC", () => {
    const text = seal.wrap(CTL, beat());
    expect(seal.open(CTL, text)).toMatchObject({ ok: true, value: { t: "beat", run: "ctl-1" } });
    expect(seal.open(UP, text)).toEqual({ ok: false, reason: "bad_mac" });
    const env = JSON.parse(text);
    const tampered = JSON.stringify({ ...env, msg: env.msg.replace('"users":5', '"users":50') });
    expect(seal.open(CTL, tampered)).toEqual({ ok: false, reason: "bad_mac" });
    expect(new Seal("another key of enough length").open(CTL, text)).toEqual({ ok: false, reason: "bad_mac" });
  });

  test("with a key, plain messages are unsigned; without one, signed messages are refused rather than trusted", () => {
    expect(seal.open(CTL, JSON.stringify(beat()))).toEqual({ ok: false, reason: "unsigned" });
    expect(new Seal(null).open(CTL, seal.wrap(CTL, beat()))).toEqual({ ok: false, reason: "signed_no_key" });
    expect(new Seal(null).open(CTL, new Seal(null).wrap(CTL, beat()))).toMatchObject({ ok: true });
  });

  test("signed messages from beyond the clock window are stale; junk is malformed or too large", () => {
    const text = seal.wrap(CTL, beat({ at: Date.now() - MAX_SKEW_MS - 1000 }));
    expect(seal.open(CTL, text)).toEqual({ ok: false, reason: "stale" });
    expect(seal.open(CTL, "{nope")).toEqual({ ok: false, reason: "malformed" });
    expect(seal.open(CTL, "x".repeat(9 * 1024 * 1024))).toEqual({ ok: false, reason: "too_large" });
  });

  test("the cluster key: from a file or CICADA_CLUSTER_KEY, at least 16 characters; required beyond loopback", () => {
    using tmp = tempDir();
    const file = join(tmp.path, "cluster.key");
    writeFileSync(file, `${KEY}\n`);
    chmodSync(file, 0o644);
    // Read as every command reads it: through the option spec (flag, else the environment).
    const spec = { name: "t", summary: "", usage: "", options: { "cluster-key": CLUSTER_KEY_OPTION } };
    const issues: string[] = [];
    const warnings: string[] = [];
    const read = (argv: string[], env: Record<string, string>, warn: (w: string) => void = () => {}) => {
      const o = parseCommand(spec, argv, env)!;
      const key = readClusterKey(o, warn);
      issues.push(...o.issues);
      return key;
    };
    expect(read(["--cluster-key", file], {}, (w) => warnings.push(w))).toBe(KEY);
    expect(warnings[0]).toContain("chmod 600");
    expect(read([], { CICADA_CLUSTER_KEY: KEY })).toBe(KEY);
    expect(read(["--cluster-key", file], { CICADA_CLUSTER_KEY: "the flag wins over this" })).toBe(KEY);
    expect(read([], {})).toBeNull();
    expect(read([], { CICADA_CLUSTER_KEY: "short" })).toBeNull();
    expect(read(["--cluster-key", join(tmp.path, "missing")], {})).toBeNull();
    expect(issues).toEqual([
      "CICADA_CLUSTER_KEY must hold at least 16 characters (got 5); make one with: openssl rand -hex 32 > cluster.key",
      `--cluster-key: cannot read ${join(tmp.path, "missing")} (ENOENT)`,
    ]);
    expect(keyIssue("redis://127.0.0.1:6379", null, "--redis")).toBeUndefined();
    expect(keyIssue("redis://[::1]:6379", null, "--redis")).toBeUndefined();
    expect(keyIssue("redis://:pw@10.0.0.1:6379", null, "--redis")).toContain("--redis redis://:***@10.0.0.1:6379 is reachable beyond this machine");
    expect(keyIssue("redis://10.0.0.1:6379", KEY, "--redis")).toBeUndefined();
  });
});

describe("wire schemas", () => {
  test("a beat carrying anything that acts on a machine (hook, CA directory, password) is invalid", () => {
    expect(parseBeat(beat())).not.toBeNull();
    const evil = beat();
    (evil.swarm.lifecycle as unknown as Record<string, unknown>).crlHook = "id > proof.txt";
    expect(parseBeat(evil)).toBeNull();
    const withDojot = beat();
    (withDojot.swarm.lifecycle as unknown as Record<string, unknown>).dojot = { url: "http://x", user: "admin", passwd: "secret" };
    expect(parseBeat(withDojot)).toBeNull();
    expect(parseBeat({ ...beat(), extra: 1 })).toBeNull();
    expect(parseBeat({ ...beat(), grace_ms: "60000" })).toBeNull();
  });

  test("a state with non-numeric counts or impossible histogram buckets is invalid", () => {
    expect(parseState(state())).not.toBeNull();
    expect(parseState({ ...state(), connected: "<script>alert(1)</script>" })).toBeNull();
    expect(parseState({ ...state(), seq: -1 })).toBeNull();
    const bad = state();
    bad.stats!.packed.rows.publish!.h = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f, 1]).toString("base64");
    expect(parseState(bad)).toBeNull();
  });
});
