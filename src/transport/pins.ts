/**
 * Broker certificates already verified, per target.
 *
 * Every device has its own client certificate, so Bun builds a TLS context per connection; a
 * CA store in each of those costs ~4 KB of native memory per held connection (measured:
 * 21.4 KB per idle mTLS connection with the CA, 17.2 KB without). So only the first
 * connections to a target verify the broker's chain and host name against the CA; once one
 * succeeds, its exact certificate (DER) is pinned for that target, and later connections go
 * without a CA store and must present those same bytes. The TLS handshake itself proves the
 * broker holds that certificate's key, whatever the verify mode. A certificate that differs
 * (rotation, a load balancer in front of several brokers, an impostor) is never trusted by
 * pin: that connection is redialled with full verification, which pins it only if the CA
 * vouches for it. A pin lapses when its certificate expires.
 */

import type { TLSOptions } from "bun";
import type { X509Certificate } from "node:crypto";
import { rootCertificates } from "node:tls";
import { DEFAULT_TLS_GROUPS, tlsOfferOptions, type Target, type TlsOffer } from "./connect.ts";
import type { Link } from "./link.ts";
import { Tls13Client, anchorsOf } from "./tls13.ts";

/** Distinct certificates remembered per target (several brokers behind one address). */
const MAX_PINS = 16;

export class PinSet {
  private readonly der: Buffer[] = [];
  private readonly notAfter: number[] = [];
  /** Handshakes accepted because the broker presented a pinned certificate. */
  matched = 0;
  /** Handshakes verified against the CA (each pins its certificate). */
  verified = 0;

  /** Whether connections may skip the CA store (something is pinned). */
  get usable(): boolean {
    return this.der.length > 0;
  }

  has(der: Uint8Array, now = Date.now()): boolean {
    for (let i = 0; i < this.der.length; i++) {
      if (this.notAfter[i]! > now && this.der[i]!.equals(der)) return true;
    }
    return false;
  }

  /** Pins a certificate that has just passed full verification (expired ones are dropped). */
  add(der: Uint8Array, notAfter: number, now = Date.now()): void {
    this.verified++;
    for (let i = this.der.length - 1; i >= 0; i--) {
      if (this.notAfter[i]! <= now || this.der[i]!.equals(der)) {
        this.der.splice(i, 1);
        this.notAfter.splice(i, 1);
      }
    }
    if (!(notAfter > now)) return; // unreadable or past expiry: never pinned
    if (this.der.length === MAX_PINS) {
      this.der.shift();
      this.notAfter.shift();
    }
    this.der.push(Buffer.from(der));
    this.notAfter.push(notAfter);
  }
}

/** One PinSet per broker address (host and port), shared by all devices dialing it. */
export class ServerPins {
  private readonly sets = new Map<string, PinSet>();
  /** What every dial's ClientHello offers (--tls-version, --tls-groups). */
  private readonly offer: ReturnType<typeof tlsOfferOptions>;
  private readonly groups: string;
  /** The CA bundle's certificates, parsed once (cicada's TLS). */
  private anchors: { pem: string | undefined; certs: readonly X509Certificate[] } | null = null;

  constructor(offer: TlsOffer) {
    this.offer = tlsOfferOptions(offer);
    this.groups = offer.tlsGroups ?? DEFAULT_TLS_GROUPS;
  }

  for(host: string, port: number): PinSet {
    const key = `${host}:${port}`;
    let set = this.sets.get(key);
    if (!set) this.sets.set(key, (set = new PinSet()));
    return set;
  }

  /**
   * TLS options for one mutual-TLS dial of `link` to `target`: with the broker's CA until a
   * certificate is pinned for the target, then without a CA store (the broker must show a
   * pinned certificate). `fullVerify` forces the CA store; `insecure` verifies nothing.
   */
  tlsFor(link: Link, target: Target, ident: { cert: string; key: string }, caPem: string | undefined, insecure: boolean, fullVerify: boolean): TLSOptions {
    if (insecure) return { cert: ident.cert, key: ident.key, rejectUnauthorized: false, ...this.offer };
    return this.pin(link, target, fullVerify) ? { cert: ident.cert, key: ident.key, rejectUnauthorized: false, ...this.offer } : { cert: ident.cert, key: ident.key, ca: caPem, rejectUnauthorized: true, ...this.offer };
  }

  /**
   * cicada's TLS client for one dial of `link` to `target` (--tls-stack cicada), with the same
   * choice as tlsFor: the CA (the system's roots when none is given) until a certificate is
   * pinned for the target, then the pin.
   */
  clientFor(link: Link, target: Target, ident: { cert: string; key: string }, caPem: string | undefined, insecure: boolean, fullVerify: boolean): Tls13Client {
    const client = new Tls13Client({ cert: ident.cert, key: ident.key, host: target.host, groups: this.groups });
    if (insecure) return client;
    if (!this.pin(link, target, fullVerify)) client.anchors = this.anchorsFor(caPem);
    return client;
  }

  /** Gives `link` its target's pins; whether it goes by a pin (something is pinned, and `fullVerify` does not ask for the CA). */
  private pin(link: Link, target: Target, fullVerify: boolean): boolean {
    const pins = (link.pins = this.for(target.host, target.port));
    return (link.pinned = pins.usable && !fullVerify);
  }

  private anchorsFor(caPem: string | undefined): readonly X509Certificate[] {
    const cur = this.anchors;
    const a = cur && cur.pem === caPem ? cur : { pem: caPem, certs: anchorsOf(caPem ?? rootCertificates.join("\n")) };
    this.anchors = a;
    return a.certs;
  }

  /** Totals over all targets (for tests and benchmarks). */
  totals(): { matched: number; verified: number } {
    let matched = 0;
    let verified = 0;
    for (const s of this.sets.values()) {
      matched += s.matched;
      verified += s.verified;
    }
    return { matched, verified };
  }
}
