#!/usr/bin/env bash
# Installs what cicada needs on a Debian machine with Node and npm: Bun (from npm), mosquitto
# and redis-server (from apt), then the project's packages. `--test` adds what only the tests
# need: Debian's chromium, which the dashboard tests drive headless through playwright-core,
# websockify, which puts a WebSocket front on mosquitto for the ws/wss transport tests,
# prometheus, which scrapes a run's /metrics and answers the Grafana dashboard's queries, and
# iproute2 and procps (ip, ss, sysctl), for the test that runs machines in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION=1.4.4
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_pkgs=(mosquitto redis-server openssl ca-certificates)
[ "${1:-}" = "--test" ] && apt_pkgs+=(chromium websockify prometheus iproute2 procps)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system-wide services; cicada runs its own on free loopback ports.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now mosquitto redis-server prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi

if ! command -v bun >/dev/null 2>&1 || [ "$(bun --version)" != "$BUN_VERSION" ]; then
  echo "==> npm install -g bun@$BUN_VERSION"
  $SUDO npm install -g --silent "bun@$BUN_VERSION"
fi
echo "==> bun install"
bun install --frozen-lockfile
