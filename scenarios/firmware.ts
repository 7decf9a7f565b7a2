/**
 * Firmware download: the platform publishes, retained, a manifest on firmware/manifest
 * ({"version", "chunks", "size", "sha256"}) and the image in chunks on
 * firmware/<version>/<n>. A device that sees a version newer than its own subscribes to the
 * chunks, puts them together, checks size and SHA-256, and reports progress on its attrs topic
 * at every quarter. The custom row `firmware_download` times each download from the manifest
 * to the checked image; `firmware` counts failures (checksum, size).
 */
import { createHash } from "node:crypto";
import { defineScenario } from "cicada/scenario";

interface Manifest {
  version: string;
  chunks: number;
  size: number;
  sha256: string;
}

interface Download {
  version: string;
  parts: (Uint8Array | undefined)[];
  got: number;
  started: number;
  reported: number;
  installed: string;
}

export default defineScenario<Download>({
  name: "firmware",
  topics: { manifest: "firmware/manifest", progress: "{clientId}/attrs" },
  state: () => ({ version: "", parts: [], got: 0, started: 0, reported: 0, installed: "1.0.0" }),
  onConnect(d) {
    d.subscribe("manifest", { qos: 1 });
  },
  onMessage(d, topic, payload, message) {
    const s = d.state;
    if (topic === "firmware/manifest") {
      const m = payload as Manifest;
      if (!m?.version || m.version === s.installed || m.version === s.version) return;
      Object.assign(s, { version: m.version, parts: new Array(m.chunks), got: 0, started: d.now(), reported: 0 });
      (s as Download & { manifest?: Manifest }).manifest = m;
      d.subscribe(`firmware/${m.version}/+`, { qos: 1 });
      return;
    }
    const m = (s as Download & { manifest?: Manifest }).manifest;
    const n = Number(topic.slice(topic.lastIndexOf("/") + 1));
    if (!m || !topic.startsWith(`firmware/${s.version}/`) || !Number.isInteger(n) || n < 0 || n >= m.chunks || s.parts[n]) return;
    s.parts[n] = message.bytes.slice();
    s.got++;
    const quarter = Math.floor((s.got * 4) / m.chunks);
    if (quarter > s.reported) {
      s.reported = quarter;
      d.publish("progress", { ts: d.now(), seq: d.seq(), firmware: m.version, progress: quarter * 25 }, { qos: 1 });
    }
    if (s.got < m.chunks) return;
    const image = Buffer.concat(s.parts as Uint8Array[]);
    s.parts = [];
    if (image.length !== m.size) return d.fail("firmware", "size");
    if (createHash("sha256").update(image).digest("hex") !== m.sha256) return d.fail("firmware", "checksum");
    s.installed = m.version;
    d.measure("firmware_download", d.now() - s.started);
  },
});
