#!/usr/bin/env bash
# The README's first command: install, build dist/cicada, make device certificates, start a
# local mutual-TLS mosquitto on a free loopback port, and show a device connecting.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "==> bun run build"
bun run build
DEVICES=${DEVICES:-1000}
echo "==> dist/cicada certs create --devices $DEVICES"
have=$(ls cert 2>/dev/null | grep '\.crt$' | grep -vc '^ca.crt$' || true)
if [ "$have" -lt "$DEVICES" ]; then ./dist/cicada certs create --devices "$((DEVICES - have))" --dir cert; fi
echo "==> starting the test bed (mosquitto with mutual TLS)"
bun scripts/testbed.ts up --certs cert --quiet
PORT=$(bun -e 'console.log(JSON.parse(require("fs").readFileSync(".testbed/state.json","utf8")).brokers[0].port)')
id=$(ls cert | grep '\.crt$' | grep -v '^ca.crt$' | head -1 | sed 's/\.crt$//')
echo "==> device admin:$id connects with its own certificate"
bun -e "
await Bun.connect({ hostname: '127.0.0.1', port: $PORT,
  tls: { ca: await Bun.file('cert/ca.crt').text(), cert: await Bun.file('cert/$id.crt').text(), key: await Bun.file('cert/$id.key').text() },
  socket: { open(s) { s.write(require('mqtt-packet').generate({ cmd: 'connect', clientId: 'admin:$id', protocolVersion: 4, clean: true, keepalive: 30 })); },
    data(_s, d) { console.log('broker answered CONNACK, return code', d[3]); process.exit(d[3]); }, close() { console.log('closed'); process.exit(1); } } });
setTimeout(() => { console.log('no CONNACK'); process.exit(1); }, 5000);
"
echo
echo "cicada is built: ./dist/cicada --help. The broker keeps running on 127.0.0.1:$PORT;"
echo "stop it with: bun scripts/testbed.ts down"
