#!/usr/bin/env bash
# The README's first command: install, build dist/cicada, make device certificates, start a
# local mutual-TLS mosquitto on a free loopback port, run a short swarm against it, print
# the report, and stop the broker again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "==> bun run build"
bun run build

DEVICES=${DEVICES:-1000}
DURATION=${DURATION:-30s}
have=$(ls cert 2>/dev/null | grep '\.crt$' | grep -vc '^ca.crt$' || true)
if [ "$have" -lt "$DEVICES" ]; then
  echo "==> dist/cicada certs create --devices $((DEVICES - have))"
  ./dist/cicada certs create --devices "$((DEVICES - have))" --certs cert
fi

echo "==> starting the test bed (mosquitto with mutual TLS, identity as username, per-device ACL, CRL)"
bun scripts/testbed.ts up --certs cert --quiet
trap 'bun scripts/testbed.ts down' EXIT
PORT=$(bun -e 'console.log(JSON.parse(require("fs").readFileSync(".testbed/state.json","utf8")).brokers[0].port)')

echo "==> dist/cicada run: $DEVICES devices for $DURATION, each publishing every 5-10 s"
./dist/cicada run --certs cert --port "$PORT" --users "$DEVICES" --rate 200 --duration "$DURATION" \
  --interval 5s..10s --report reports/quickstart.json
