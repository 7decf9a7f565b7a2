#!/usr/bin/env bun
/**
 * What a broker's large or hostile packets cost the generator: the session's inbound path
 * (`onData`) fed one big PUBLISH in socket-sized reads, as it is in a run. One JSON line per
 * figure:
 * - `gather`: CPU per MB to gather a packet of SIZE in CHUNK reads, against the copy-on-every-
 *   read way (kept here only as the reference) — linear vs quadratic;
 * - `oversized`: a packet claiming CLAIM bytes (over --max-packet-size): bytes taken in and CPU
 *   spent before the connection is dropped, and RSS after DEVICES such connections.
 *   bun bench/inbound.bench.ts [--size 16MiB] [--chunk 65536] [--claim 96MiB] [--devices 50]
 */
import { parseArgs } from "node:util";
import { parseBytes } from "../src/sys/units.ts";
import { Conn, Device } from "../src/mqtt/device.ts";
import { PublishTemplate } from "../src/mqtt/codec.ts";
import { onData, type SessionHost } from "../src/mqtt/session.ts";
import { Stats } from "../src/metrics/stats.ts";

const { values } = parseArgs({
  options: { size: { type: "string", default: "16MiB" }, chunk: { type: "string", default: "65536" }, claim: { type: "string", default: "96MiB" }, devices: { type: "string", default: "50" } },
});
const size = parseBytes(values.size!)!;
const chunk = parseBytes(values.chunk!)!;
const claim = parseBytes(values.claim!)!;
const devices = Number(values.devices);

function emit(o: Record<string, unknown>): void {
  console.log(JSON.stringify({ bench: "inbound", ...o }));
}

/** A QoS 0 PUBLISH whose Remaining Length is `remaining`; the body is `body` bytes of it (all, unless cut short). */
function publishHeader(remaining: number): Uint8Array {
  const out = [0x30];
  let n = remaining;
  do {
    const b = n % 128;
    n = Math.floor(n / 128);
    out.push(n > 0 ? b | 0x80 : b);
  } while (n > 0);
  return new Uint8Array(out);
}

function host(maxPacketSize: number): SessionHost & { dropped: string[] } {
  const stats = new Stats();
  const dropped: string[] = [];
  return {
    stats,
    maxPacketSize,
    dropped,
    send() {},
    connected() {},
    drop(conn, reason) {
      conn.closed = true;
      dropped.push(reason);
    },
    wallClock: (t) => t,
  };
}

function conn(i = 0): Conn {
  return new Conn(new Device(i, `d${i}`, `admin:d${i}`, new PublishTemplate(`admin:d${i}/attrs`, 0, 4, 0)), 4, 0);
}

/** The packet as reads of `chunk` bytes: header + topic "t" + payload, `size` bytes of body in all. */
function reads(remaining: number, body: number): Uint8Array[] {
  const head = publishHeader(remaining);
  const topic = new Uint8Array([0, 1, 0x74]);
  const first = new Uint8Array(head.length + topic.length);
  first.set(head);
  first.set(topic, head.length);
  const out = [first];
  const block = new Uint8Array(chunk).fill(0x61);
  for (let left = body - topic.length; left > 0; left -= chunk) out.push(left >= chunk ? block : block.subarray(0, left));
  return out;
}

/** The way partial packets were kept before: the held bytes joined with each read into a new buffer. */
function copyEveryRead(parts: Uint8Array[]): number {
  let held: Uint8Array | null = null;
  for (const p of parts) {
    if (held) {
      const joined: Uint8Array = new Uint8Array(held.length + p.length);
      joined.set(held);
      joined.set(p, held.length);
      held = joined;
    } else held = p.slice();
  }
  return held!.length;
}

function cpuMs(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

// ---- gather: one packet of `size`, within the cap ---------------------------------------------
{
  const parts = reads(size, size);
  const h = host(size + 16);
  const c = conn();
  const ours = cpuMs(() => {
    for (const p of parts) onData(h, c, p, 0);
  });
  if (h.stats.rows.recv_message.count !== 1) throw new Error(`packet not received (${h.dropped.join(",")})`);
  const reference = cpuMs(() => void copyEveryRead(parts));
  const mb = size / 2 ** 20;
  emit({ figure: "gather", size_bytes: size, chunk_bytes: chunk, reads: parts.length, cpu_ms: +ours.toFixed(1), cpu_ms_per_mb: +(ours / mb).toFixed(2), copy_every_read_cpu_ms: +reference.toFixed(1), ratio: +(reference / ours).toFixed(1) });
}

// ---- oversized: claims over the cap, across many devices ---------------------------------------
{
  Bun.gc(true);
  const rss0 = process.memoryUsage().rss;
  const h = host(1024 * 1024);
  let taken = 0;
  const ms = cpuMs(() => {
    for (let d = 0; d < devices; d++) {
      const c = conn(d);
      // What arrives before the broker could send more: the header and the first read of its body.
      for (const p of reads(claim, Math.min(claim, 4 * chunk))) {
        if (c.closed) break;
        onData(h, c, p, 0);
        taken += p.length;
      }
    }
  });
  Bun.gc(true);
  emit({
    figure: "oversized",
    claim_bytes: claim,
    devices,
    dropped: h.dropped.length,
    reasons: [...new Set(h.dropped)],
    bytes_taken_per_device: Math.round(taken / devices),
    cpu_ms: +ms.toFixed(2),
    rss_growth_bytes: process.memoryUsage().rss - rss0,
  });
}
