/**
 * A device with poor coverage: online for a while, then offline, and back with a backlog both
 * ways. While away it keeps taking readings, and sends them all when it is back; its
 * persistent session (clean: false) makes the broker keep the commands sent to it meanwhile,
 * which arrive when it reconnects. Commands {"ts": ms} count in the custom row `command`, with
 * their age on arrival (hours, for a device that was away for hours).
 *
 * INTERMITTENT_ONLINE, INTERMITTENT_OFFLINE and INTERMITTENT_READING set the three periods
 * (default "10m", "2h" and "5m"); a test shortens them to seconds.
 */
import { defineScenario } from "cicada/scenario";

const online = process.env.INTERMITTENT_ONLINE ?? "10m";
const offline = process.env.INTERMITTENT_OFFLINE ?? "2h";
const reading = process.env.INTERMITTENT_READING ?? "5m";

interface Away {
  /** Readings taken while offline, waiting to be sent. */
  backlog: { ts: number; value: number }[];
  leftAt: number;
}

function ms(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) throw new Error(`not a time: ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
}

export default defineScenario<Away>({
  name: "intermittent",
  session: { clean: false, expiry: "24h" },
  topics: { readings: "{clientId}/attrs", commands: "{clientId}/config" },
  state: () => ({ backlog: [], leftAt: 0 }),
  onConnect(d) {
    d.subscribe("commands", { qos: 1 });
    // The readings it would have taken while away, timestamped when they were taken.
    const s = d.state;
    if (s.leftAt) for (let t = s.leftAt + ms(reading); t <= d.now(); t += ms(reading)) s.backlog.push({ ts: t, value: Math.round(d.random() * 1000) / 10 });
    s.leftAt = 0;
  },
  every: [
    {
      name: "reading",
      interval: reading,
      run: (d) => void d.state.backlog.push({ ts: d.now(), value: Math.round(d.random() * 1000) / 10 }),
    },
    {
      // Sends what is waiting, as fast as the in-flight window lets it.
      name: "flush",
      interval: "100ms",
      run(d) {
        const b = d.state.backlog;
        while (b.length && d.canPublish()) {
          const r = b.shift()!;
          d.publish("readings", { ts: r.ts, seq: d.seq(), value: r.value, late: d.now() - r.ts > 1000 }, { qos: 1 });
        }
      },
    },
    {
      name: "leave",
      start: "interval",
      interval: online,
      run(d) {
        d.state.leftAt = d.now();
        d.offline(offline);
      },
    },
  ],
  onMessage(d, _topic, payload) {
    const ts = (payload as { ts?: number })?.ts;
    d.measure("command", typeof ts === "number" ? d.now() - ts : undefined);
  },
});
