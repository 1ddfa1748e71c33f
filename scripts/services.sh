#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis answer; start them if this machine has them installed.
# Tests that need a service skip with a clear message when it is still not reachable.
set -u
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG || (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
pg_up && echo "services: PostgreSQL on 127.0.0.1:5432" || echo "services: PostgreSQL NOT reachable on 127.0.0.1:5432 - its tests will be skipped"

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis_up && break; sleep 0.3; done
  fi
fi
redis_up && echo "services: Redis on 127.0.0.1:6379" || echo "services: Redis NOT reachable on 127.0.0.1:6379 - its tests will be skipped"
exit 0
