/**
 * A smart meter: a reading every 15 minutes, and at midnight every meter sends its daily total
 * at once — the burst a platform must absorb. A config message {"report": "5m"} changes the
 * reading interval of that meter.
 *
 * METER_READING (default "15m") and METER_DAY (default "24h": midnight, UTC) set the two
 * periods; a test shortens them to seconds.
 */
import { defineScenario } from "cicada/scenario";

const reading = process.env.METER_READING ?? "15m";
const dayMs = parseMs(process.env.METER_DAY ?? "24h");

/** ms until the next multiple of `period` on the wall clock (midnight UTC for 24h). */
function untilNext(period: number, now: number): number {
  return period - (now % period);
}

function parseMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) throw new Error(`not a time: ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
}

interface Meter {
  kwh: number;
  today: number;
  report?: string;
}

export default defineScenario<Meter>({
  name: "meter",
  topics: { reading: "{clientId}/attrs", config: "{clientId}/config" },
  state: () => ({ kwh: 0, today: 0 }),
  onConnect(d) {
    d.subscribe("config", { qos: 1 });
  },
  every: [
    {
      name: "reading",
      interval: (d) => d.state.report ?? reading,
      run(d) {
        const used = Math.round(d.random() * 500) / 1000;
        d.state.kwh += used;
        d.state.today += used;
        d.publish("reading", { ts: d.now(), seq: d.seq(), kwh: Math.round(d.state.kwh * 1000) / 1000 }, { qos: 1 });
      },
    },
    {
      // Every meter at the same wall-clock instant: the midnight burst.
      name: "daily",
      start: "interval",
      interval: (d) => untilNext(dayMs, d.now()),
      run(d) {
        d.publish("reading", { ts: d.now(), seq: d.seq(), daily_kwh: Math.round(d.state.today * 1000) / 1000 }, { qos: 1 });
        d.state.today = 0;
      },
    },
  ],
  onMessage(d, _topic, payload) {
    const p = payload as { report?: string };
    if (typeof p?.report === "string") d.state.report = p.report;
  },
});
