/**
 * A connected device's traffic: publishing on its schedule (with the in-flight window), failing
 * publishes whose ack is overdue, and keepalive. Every publish ends in exactly one counted
 * outcome: ok, or one of window_full, backpressure, receive_maximum_full and the refusals an
 * MQTT 5 CONNACK announces (over_server_maximum_packet_size, qos_over_server_maximum,
 * retain_unavailable) — these never sent — or ack_timeout, connection_lost, unacked_at_stop, or
 * a reason code the broker gave.
 */
import { PINGREQ, type PublishTemplate, type QoS } from "../mqtt/codec.ts";
import { State, type Conn, type Device } from "../mqtt/device.ts";
import { LATE_MS } from "./config.ts";
import { TICK_MS, Timer, intendedTime } from "./scheduler.ts";
import type { SwarmState } from "./state.ts";

export class Traffic {
  constructor(private readonly st: SwarmState) {}

  /**
   * CONNACK accepted: the first publish within one interval (unless a scenario publishes instead:
   * `telemetry` false), keepalive after one period. With a
   * fixed interval (--msg-rate) the first comes at a random point of it: devices that connect in
   * the same tick would otherwise publish in the same tick forever, and the broker would see
   * bursts where a steady rate was asked for (a burst of ten at once more than doubled the p50
   * round trip here, bench/latency.bench.ts). A jittered interval spreads devices by itself.
   */
  begin(dev: Device, now: number, telemetry = true): void {
    const { wheel, cfg } = this.st;
    wheel.clear(dev.index, Timer.TIMEOUT);
    if (dev.inflight.count > 0) this.resume(dev, now);
    if (telemetry && this.st.publishing.publish) {
      const [lo, hi] = this.st.publishing.intervalMs;
      dev.nextPublishAt = now + (lo === hi && !this.st.publishing.max ? Math.random() * lo : this.interval());
      wheel.set(dev.index, Timer.PUBLISH, dev.nextPublishAt);
    }
    // Keepalive 0 turns the mechanism off (§3.1.2.10); an MQTT 5 server may set it (§3.2.2.3.14).
    const ka = dev.conn?.keepaliveS ?? cfg.keepaliveS;
    if (ka > 0) wheel.set(dev.index, Timer.KEEPALIVE, now + ka * 1000);
  }

  private interval(): number {
    const [lo, hi] = this.st.publishing.intervalMs;
    return lo + Math.random() * (hi - lo);
  }

  /**
   * Publishing changed while devices run. Paused: the next timers find it paused and stop.
   * Resumed, or made more frequent: a connected device whose next publish is further off than
   * one new interval gets one within it (at a random point, so devices stay spread).
   */
  rearm(now: number): void {
    const st = this.st;
    if (!st.publishing.publish) return;
    const hi = st.publishing.intervalMs[1];
    for (const dev of st.devices) {
      if (!dev || dev.state !== State.CONNECTED || !dev.conn) continue;
      const due = st.wheel.deadline(dev.index, Timer.PUBLISH);
      if (due !== Infinity && due - now <= hi) continue;
      dev.nextPublishAt = now + Math.random() * this.interval();
      st.wheel.set(dev.index, Timer.PUBLISH, dev.nextPublishAt);
    }
  }

  /**
   * The publish timer (due at `deadline`) fired. Returns true when a publish left, so that the
   * caller may consider a renew or revoke for the device.
   */
  publish(dev: Device, deadline: number, now: number): boolean {
    const st = this.st;
    const conn = dev.conn;
    // Stopping: nothing new leaves while outstanding acks drain. Paused: nothing leaves, and no next one is armed (rearm() does that).
    if (dev.state !== State.CONNECTED || !conn || st.stopping || !st.publishing.publish) return false;
    if (st.publishing.max) return this.burst(dev, conn, now);
    const scheduled = intendedTime(deadline, st.prevTick, now);
    // The next one keeps to the schedule even when this one is late.
    let next = deadline + this.interval();
    if (next <= now) next = now + 1;
    dev.nextPublishAt = next;
    st.wheel.set(dev.index, Timer.PUBLISH, next);
    if (now - scheduled > LATE_MS) st.stats.health.late_sends++;
    const blocked = this.blocked(dev, conn, st.cfg.qos);
    if (blocked) return this.skip(blocked);
    // What the server's CONNACK said it refuses is never sent either.
    if (conn.refusal) return this.skip(conn.refusal);
    this.send(dev, conn, scheduled, now);
    return true;
  }

  /**
   * Why a publish at `qos` cannot leave now, or null: the socket's send buffer is still full,
   * or (QoS 1/2) the in-flight window is (a full window is a skipped publish, counted, never a
   * silently reused slot), or the server's Receive Maximum is reached (MQTT 5 §4.9). The
   * built-in device and a scenario's publishes both ask here.
   */
  blocked(dev: Device, conn: Conn, qos: QoS): "backpressure" | "window_full" | "receive_maximum_full" | null {
    if (conn.pending) return "backpressure";
    if (qos > 0 && dev.inflight.count >= dev.inflight.size) return "window_full";
    if (qos > 0 && dev.inflight.count >= conn.sendMax) return "receive_maximum_full";
    return null;
  }

  /** A publish that does not leave, counted by why (backpressure is also the generator's health). */
  skip(why: string): false {
    if (why === "backpressure") this.st.stats.health.backpressure_skips++;
    this.st.stats.rows.publish.fail(why);
    return false;
  }

  /**
   * QoS 1/2 publish `id` (the packet at `bytes[at, at + length)`) enters the in-flight window,
   * its bytes kept for a persistent session's resend; the first one in arms the device's ack timer.
   */
  track(dev: Device, id: number, scheduled: number, now: number, bytes: Uint8Array, at = 0, length = bytes.length): void {
    const st = this.st;
    dev.inflight.add(id, scheduled, now, st.persistent ? bytes.subarray(at, at + length) : undefined);
    // One ack timer per device, at the oldest outstanding publish's deadline.
    if (dev.inflight.count === 1) st.wheel.set(dev.index, Timer.ACK, now + st.ackTimeoutMs);
  }

  /** `n` publishes written as `bytes` go to the socket and are counted sent (QoS 0 ones succeed as they leave). */
  write(conn: Conn, bytes: Uint8Array, n: number, qos: QoS): void {
    const st = this.st;
    st.outbox.send(conn, bytes);
    st.stats.sent += n;
    st.stats.sentBytes += bytes.length;
    if (qos === 0) for (let k = 0; k < n; k++) st.stats.rows.publish.ok();
  }

  /**
   * --msg-rate max: every tick, a device fills its in-flight window (QoS 0: sends the window's
   * size); a full window or a full socket is the pace, not a failure.
   */
  private burst(dev: Device, conn: Conn, now: number): boolean {
    const st = this.st;
    dev.nextPublishAt = now + TICK_MS;
    st.wheel.set(dev.index, Timer.PUBLISH, dev.nextPublishAt);
    const w = dev.inflight;
    let n = st.cfg.qos > 0 ? Math.min(w.size, conn.sendMax) - w.count : w.size;
    if (conn.refusal) {
      st.stats.rows.publish.fail(conn.refusal);
      return true;
    }
    if (n <= 0 || conn.pending) return true;
    // The alias-setting publish differs in size from those after it: alone, then the rest together.
    if (dev.alias && conn.aliasMax > 0 && conn.aliasState === 0) {
      this.send(dev, conn, now, now);
      n--;
    }
    if (n > 0) this.send(dev, conn, now, now, n);
    return true;
  }

  /**
   * Sends `n` publishes scheduled at `scheduled` (QoS 1/2: into the in-flight window, which has
   * room), filled into one buffer: one allocation and one queued part for a whole burst.
   */
  private send(dev: Device, conn: Conn, scheduled: number, now: number, n = 1): void {
    const st = this.st;
    const qos = st.cfg.qos;
    const t = this.template(dev, conn, n);
    const bytes = new Uint8Array(t.length * n);
    const ts = Math.round(st.wallClock(scheduled));
    for (let k = 0, at = 0; k < n; k++, at += t.length) {
      let id = 0;
      if (qos > 0) {
        id = dev.packetId();
        this.track(dev, id, scheduled, now, bytes, at, t.length);
      }
      t.fill(bytes, at, id, ts, dev.nextSeq++);
    }
    this.write(conn, bytes, n, qos);
  }

  /**
   * Publishes still in flight from the device's last connection (persistent sessions only): on a
   * session the broker kept, sent again with DUP and their packet ids (§4.4), their latency still
   * counted from when they were scheduled; on one it lost, they end as session_lost.
   */
  private resume(dev: Device, now: number): void {
    const st = this.st;
    const conn = dev.conn;
    if (conn?.sessionPresent) {
      dev.inflight.resend(now, (bytes) => st.outbox.send(conn, bytes));
      st.wheel.set(dev.index, Timer.ACK, now + st.ackTimeoutMs);
      return;
    }
    for (let n = dev.inflight.clear(); n > 0; n--) st.stats.rows.publish.fail("session_lost");
  }

  /**
   * The device's PUBLISH for the next `n` on this connection: with --topic-alias, topic and alias
   * for the first (sent alone), then the alias alone (§3.3.2.3.4).
   */
  private template(dev: Device, conn: Conn, n: number): PublishTemplate {
    const a = dev.alias;
    if (!a || conn.aliasMax < 1) return dev.publish;
    if (conn.aliasState === 0) {
      conn.aliasState = 1;
      return a.first;
    }
    // Saved: the topic's bytes less the alias's, each time; the first aliased publish also pays
    // back what setting the alias cost (aliasesFor makes sure it can), so the count never falls.
    let saved = (dev.publish.length - a.next.length) * n;
    if (conn.aliasState === 1) saved -= a.first.length - dev.publish.length;
    this.st.stats.health.topic_alias_bytes_saved += saved;
    conn.aliasState = 2;
    return a.next;
  }

  /**
   * Keepalive (§3.1.2.10), right whatever the QoS: a PINGREQ when nothing was sent for a
   * keepalive period (the server's rule) or nothing was received for one (a QoS 0 device that
   * publishes often hears nothing back); the link is dead only when a PINGRESP is overdue, half
   * a keepalive after its PINGREQ with nothing received since. Returns false when it is dead.
   */
  keepalive(dev: Device, now: number): boolean {
    const conn = dev.conn;
    if (dev.state !== State.CONNECTED || !conn) return true;
    const ka = conn.keepaliveS * 1000;
    if (conn.pingOutstanding && now - conn.pingSentAt >= ka / 2) {
      // Overdue. Not a byte since the PINGREQ: dead. Heard from since: alive (a broker busy with acks), ping again when due.
      if (conn.lastRx < conn.pingSentAt) return false;
      conn.pingOutstanding = false;
    }
    if (!conn.pingOutstanding && (now - conn.lastTx >= ka || now - conn.lastRx >= ka)) {
      conn.pingOutstanding = true;
      conn.pingSentAt = now;
      this.st.outbox.send(conn, PINGREQ);
    }
    const next = conn.pingOutstanding ? conn.pingSentAt + ka / 2 : Math.min(conn.lastTx, conn.lastRx) + ka;
    this.st.wheel.set(dev.index, Timer.KEEPALIVE, Math.max(next, now + TICK_MS));
    return true;
  }

  /** Fails the publishes whose ack is overdue (ack_timeout); re-arms for the next deadline. */
  expireAcks(dev: Device, now: number): void {
    const w = dev.inflight;
    const timeout = this.st.ackTimeoutMs;
    for (let n = w.expire(now - timeout); n > 0; n--) this.st.stats.rows.publish.fail("ack_timeout");
    if (w.oldestSent < Infinity) this.st.wheel.set(dev.index, Timer.ACK, w.oldestSent + timeout);
  }

  /** Stop: every publish still in flight fails as unacked_at_stop. */
  abandonAll(): void {
    const fail = this.st.stats.rows.publish;
    for (const d of this.st.devices) if (d) for (let n = d.inflight.clear(); n > 0; n--) fail.fail("unacked_at_stop");
  }

  /** QoS 1/2 publishes awaiting their ack, over every device. */
  inflightNow(): number {
    let n = 0;
    for (const d of this.st.devices) if (d) n += d.inflight.count;
    return n;
  }
}
