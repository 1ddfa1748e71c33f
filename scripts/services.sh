#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis answer; start them if this machine has them installed.
# Exits non-zero, naming what is missing, when either is still not reachable: the tests that
# need them fail rather than skip, so CI cannot go green without having run them.
# AF_SERVICES_PG_PORT / AF_SERVICES_REDIS_PORT (default 5432 / 6379) point it elsewhere.
set -u
PG_PORT="${AF_SERVICES_PG_PORT:-5432}"
REDIS_PORT="${AF_SERVICES_REDIS_PORT:-6379}"
pg_up() { (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; }
redis_up() {
  if command -v redis-cli >/dev/null; then redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG
  else (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; fi
}
missing=()

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
if pg_up; then echo "services: PostgreSQL on 127.0.0.1:$PG_PORT"
else missing+=("PostgreSQL (nothing answers on 127.0.0.1:$PG_PORT; apt-get install -y postgresql, or start it)"); fi

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis_up && break; sleep 0.3; done
  fi
fi
if redis_up; then echo "services: Redis on 127.0.0.1:$REDIS_PORT"
else missing+=("Redis (nothing answers on 127.0.0.1:$REDIS_PORT; apt-get install -y redis-server, or start it)"); fi

if [ ${#missing[@]} -gt 0 ]; then
  for m in "${missing[@]}"; do echo "services: MISSING - $m" >&2; done
  echo "services: the tests that need them would fail; 'make test-fast' runs without them" >&2
  exit 1
fi
