#!/usr/bin/env bash
# Servers the test suite starts on loopback, the browser and the compilers it needs (Debian
# packages). Idempotent: does nothing when they are already installed. Needs root (or sudo)
# the first time.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
# llama-cpp-python (the GGUF extra) is compiled by pip
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
# the console's browser tests drive Debian's Chromium through Playwright (no browser download)
[ -x /usr/bin/chromium ] || need+=(chromium)
# a CJK font, so the console's Chinese renders in its screenshots
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# the container tests: a private dockerd, base images made by debootstrap (no registry)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables-save >/dev/null 2>&1 || need+=(iptables)
# the monitoring kit's checks: promtool, amtool and a real Prometheus on loopback
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-system-deps: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the packages start their own services; the tests run private instances instead
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service docker stop >/dev/null 2>&1 || true
$SUDO service prometheus stop >/dev/null 2>&1 || true
$SUDO service prometheus-alertmanager stop >/dev/null 2>&1 || true
