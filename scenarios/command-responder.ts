/**
 * A device that answers commands, MQTT 5 request/response: it subscribes to {clientId}/req and
 * answers each request on the request's Response Topic, with its Correlation Data, so the
 * sender can match the answer to its request. A request {"op": …, "ts": ms} is counted in the
 * custom row `command` with its age when it arrived; one without "op" fails as bad_request.
 */
import { defineScenario } from "cicada/scenario";

export default defineScenario<{ answered: number }>({
  name: "command-responder",
  mqtt: "5",
  topics: { requests: "{clientId}/req" },
  state: () => ({ answered: 0 }),
  onConnect(d) {
    d.subscribe("requests", { qos: 1 });
  },
  onMessage(d, _topic, payload, message) {
    const req = payload as { op?: string; ts?: number };
    if (typeof req?.op !== "string") return d.fail("command", "bad_request");
    if (typeof req.ts === "number") d.measure("command", d.now() - req.ts);
    else d.measure("command");
    d.state.answered++;
    if (!d.reply(message, { op: req.op, ok: true, answered: d.state.answered }, { qos: 1, contentType: "application/json" })) d.fail("command", "no_response_topic");
  },
});
