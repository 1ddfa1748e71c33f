#!/usr/bin/env bash
# The browser tests drive Debian's chromium: install it through apt when it is missing.
# Exits non-zero, saying so, when it cannot (no apt-get, not root, no network).
# AGENTFLOW_CHROMIUM points at another binary (default /usr/bin/chromium).
set -u
CHROMIUM="${AGENTFLOW_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && { echo "chromium: $CHROMIUM"; exit 0; }

echo "chromium: $CHROMIUM is missing; installing Debian's chromium (apt-get install -y chromium)"
if ! command -v apt-get >/dev/null; then
  echo "chromium: MISSING - $CHROMIUM is not there and apt-get is not available to install it;" \
       "install chromium yourself (or set AGENTFLOW_CHROMIUM), or run 'make test-fast' to skip the browser tests" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "chromium: MISSING - 'apt-get install -y chromium' failed (root or sudo and the Debian mirror are needed);" \
       "install it yourself, or run 'make test-fast' to skip the browser tests" >&2
  exit 1
fi
[ -x "$CHROMIUM" ] || { echo "chromium: MISSING - installed the chromium package but $CHROMIUM is still not there" >&2; exit 1; }
echo "chromium: installed $CHROMIUM"
