/**
 * A GPS tracker: while moving it reports its position every 5 s, while parked every 10 min;
 * about 30 % of trackers move at a time, and each may start or stop every minute. It answers
 * {"op":"ping"} on its command topic with a pong on its events topic.
 *
 * TRACKER_MOVING / TRACKER_PARKED set the two intervals (default "5s" and "10m").
 */
import { defineScenario } from "cicada/scenario";

const moving = process.env.TRACKER_MOVING ?? "5s";
const parked = process.env.TRACKER_PARKED ?? "10m";

interface Tracker {
  moving: boolean;
  lat: number;
  lon: number;
}

export default defineScenario<Tracker>({
  name: "tracker",
  topics: { gps: "{clientId}/attrs", commands: "{clientId}/config", events: "{clientId}/attrs" },
  state: (d) => ({ moving: d.random() < 0.3, lat: -22.9 + d.random(), lon: -47.1 + d.random() }),
  onConnect(d) {
    d.subscribe("commands", { qos: 1 });
  },
  every: [
    {
      name: "gps",
      interval: (d) => (d.state.moving ? moving : parked),
      run(d) {
        const s = d.state;
        if (s.moving) {
          s.lat += (d.random() - 0.5) / 1000;
          s.lon += (d.random() - 0.5) / 1000;
        }
        d.publish("gps", { ts: d.now(), seq: d.seq(), lat: Math.round(s.lat * 1e6) / 1e6, lon: Math.round(s.lon * 1e6) / 1e6, moving: s.moving }, { qos: 1 });
      },
    },
    {
      name: "trip",
      interval: "1m",
      run(d) {
        // Start or stop, keeping about 30 % of the fleet on the move.
        d.state.moving = d.state.moving ? d.random() >= 0.2 : d.random() < 0.086;
      },
    },
  ],
  onMessage(d, _topic, payload) {
    if ((payload as { op?: string })?.op === "ping") d.publish("events", { pong: d.now(), seq: d.seq() }, { qos: 1 });
  },
});
