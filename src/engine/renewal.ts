/**
 * Renew and revoke during a run, for one device at a time (dojot's RENEW_DEVICES /
 * REVOKE_DEVICES): at a publish a device may ask for either; once granted it reconnects, with
 * its new certificate (renew) or its revoked one, which the broker must refuse (revoke).
 */
import type { LifecycleAnswer, LifecycleHooks, LifecycleKind } from "../lifecycle/types.ts";
import { Lifecycle, State, type Device } from "../mqtt/device.ts";
import type { SwarmState } from "./state.ts";

/** What renewals need of the connections: to reconnect a device now, or to take it out. */
export interface Redialer {
  redial(dev: Device): void;
  retire(dev: Device): void;
}

export class Renewals {
  /** Set once the cap answered no: this process stops asking. */
  private readonly capReached = { renew: false, revoke: false };

  constructor(
    private readonly st: SwarmState,
    private readonly hooks: LifecycleHooks,
    private readonly links: Redialer,
  ) {}

  /** At a publish: perhaps ask for a revoke, else perhaps for a renew (each by its own chance). */
  consider(dev: Device, now: number): void {
    const lc = this.st.cfg.lifecycle!;
    for (const kind of ["revoke", "renew"] as const) {
      const p = lc[kind];
      if (!p || this.capReached[kind] || now - dev.connectedAt < p.afterMs || Math.random() * 100 >= p.probability) continue;
      let cert: string;
      try {
        cert = (dev.renewed ?? this.st.identities.load(dev.index)).cert;
      } catch {
        return;
      }
      dev.lifecycleAt = now;
      const answer = this.hooks.request(kind, dev.id, cert);
      // A service that throws at once leaves the device as it was (the timer's guard counts it).
      dev.lifecycle = Lifecycle.PENDING;
      answer.then(
        (a) => this.answered(dev, kind, a),
        () => this.answered(dev, kind, { granted: true, failure: "signer_error" }),
      );
      return;
    }
  }

  private answered(dev: Device, kind: LifecycleKind, a: LifecycleAnswer): void {
    if (!a.granted) {
      this.capReached[kind] = true;
      dev.lifecycle = Lifecycle.NONE;
      return;
    }
    if (a.failure) return this.done(dev, kind, a.failure);
    if (!this.st.wanted(dev) || this.st.devices[dev.index] !== dev) return this.done(dev, kind, "stopped");
    if (kind === "renew") {
      if (!a.cert || !a.key) return this.done(dev, kind, "signer_error");
      dev.renewed = { cert: a.cert, key: a.key };
      dev.lifecycle = Lifecycle.RENEW_CONNECT;
    } else dev.lifecycle = Lifecycle.REVOKE_CHECK;
    this.links.redial(dev);
  }

  /**
   * CONNACK accepted. A renewed device's new certificate worked. A revoked one's should not
   * have: that is a finding about the platform, and the device leaves. Returns false when the
   * device left.
   */
  connected(dev: Device, now: number): boolean {
    if (dev.lifecycle === Lifecycle.RENEW_CONNECT) this.done(dev, "renew", null, now);
    else if (dev.lifecycle === Lifecycle.REVOKE_CHECK) {
      this.done(dev, "revoke", "revoked_but_accepted");
      dev.lifecycle = Lifecycle.REVOKED;
      this.links.retire(dev);
      return false;
    }
    return true;
  }

  /**
   * A connection attempt failed with `why`. A revoked certificate refused is what a revoke
   * expects (the device stays down; returns false); a renewed one refused fails the renew.
   */
  refused(dev: Device, why: string): boolean {
    if (dev.lifecycle === Lifecycle.REVOKE_CHECK) {
      this.done(dev, "revoke", null);
      dev.lifecycle = Lifecycle.REVOKED;
      dev.state = State.IDLE;
      return false;
    }
    if (dev.lifecycle === Lifecycle.RENEW_CONNECT) this.done(dev, "renew", why);
    return true;
  }

  /** Counts a renew or revoke: a success with its latency when `failure` is null. */
  private done(dev: Device, kind: LifecycleKind, failure: string | null, now = this.st.clock()): void {
    if (failure === null) this.st.stats.rows[kind].ok(now - dev.lifecycleAt);
    else this.st.stats.rows[kind].fail(failure);
    dev.lifecycle = Lifecycle.DONE;
  }
}
