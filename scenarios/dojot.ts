/**
 * dojot's device, as a scenario: what `cicada run` does without --scenario, written with the
 * scenario API. It subscribes to its config topic and publishes {"timestamp","seq"} on its
 * attrs topic every 29.5-30 s (DOJOT_INTERVAL changes that, e.g. "1s" or "5s..10s").
 * bench/scenario.bench.ts runs it beside the built-in device to weigh what a script costs.
 */
import { defineScenario } from "cicada/scenario";

const interval = process.env.DOJOT_INTERVAL ?? "29.5s..30s";

export default defineScenario({
  name: "dojot",
  topics: { attrs: "{clientId}/attrs", config: "{clientId}/config" },
  onConnect(d) {
    d.subscribe("config");
  },
  every: [{ name: "attrs", interval, run: (d) => void d.publish("attrs", { timestamp: d.now(), seq: d.seq() }) }],
});
