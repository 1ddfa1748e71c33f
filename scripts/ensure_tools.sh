#!/usr/bin/env bash
# What the tests start besides Postgres and Redis, from Debian's packages: chromium (browser
# tests), nginx (API replicas behind a balancer), pgbouncer (Postgres behind a pooler) and
# iproute2 (worker hosts in network namespaces). Installs what is missing through apt; exits
# non-zero, naming what is MISSING, when it cannot (no apt-get, not root, no mirror).
# AGENTFLOW_CHROMIUM points at another chromium binary (default /usr/bin/chromium).
set -u
CHROMIUM="${AGENTFLOW_CHROMIUM:-/usr/bin/chromium}"
# package|binary|what needs it
TOOLS=(
  "chromium|$CHROMIUM|the browser tests"
  "nginx|/usr/sbin/nginx|the API-replica tests"
  "pgbouncer|/usr/sbin/pgbouncer|the PgBouncer tests"
  "iproute2|/usr/sbin/ip|the vanished-worker-host tests"
)
want=()
for t in "${TOOLS[@]}"; do
  IFS='|' read -r pkg bin why <<<"$t"
  if [ -x "$bin" ]; then echo "$pkg: $bin"; else want+=("$pkg|$bin|$why"); fi
done
[ ${#want[@]} -eq 0 ] && exit 0

pkgs=""
for t in "${want[@]}"; do pkgs+="${t%%|*} "; done
echo "installing Debian packages the tests need: $pkgs(apt-get install -y $pkgs)"
hint="install them yourself (or set AGENTFLOW_CHROMIUM), or run 'make test-fast' to skip the tests that need them"
if ! command -v apt-get >/dev/null; then
  for t in "${want[@]}"; do
    IFS='|' read -r pkg bin why <<<"$t"
    echo "$pkg: MISSING - $bin is not there and apt-get is not available to install it (needed by $why)" >&2
  done
  echo "$hint" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $pkgs >/dev/null; }; then
  echo "MISSING - 'apt-get install -y $pkgs' failed (root or sudo and the Debian mirror are needed); $hint" >&2
  exit 1
fi
rc=0
for t in "${want[@]}"; do
  IFS='|' read -r pkg bin why <<<"$t"
  if [ -x "$bin" ]; then echo "$pkg: installed $bin"
  else echo "$pkg: MISSING - installed the $pkg package but $bin is still not there" >&2; rc=1; fi
done
# the package starts a system nginx / pgbouncer on their default ports; the tests start their own
for svc in nginx pgbouncer; do
  case " $pkgs" in *" $svc "*) $SUDO service "$svc" stop >/dev/null 2>&1 || true ;; esac
done
exit $rc
