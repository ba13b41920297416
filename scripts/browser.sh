#!/usr/bin/env bash
# Installs the headless browser used by tests/web.rs: Debian's Chromium and ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent: does nothing when both are there.
set -euo pipefail

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "browser.sh: installing chromium and chromium-driver" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

for bin in /usr/bin/chromium /usr/bin/chromedriver; do
  if [ ! -x "$bin" ]; then
    echo "browser.sh: $bin is still missing after the install" >&2
    exit 1
  fi
done
echo "chromium: /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
echo "chromedriver: /usr/bin/chromedriver ($(/usr/bin/chromedriver --version 2>/dev/null || echo 'version unknown'))"
