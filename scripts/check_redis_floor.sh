#!/usr/bin/env bash
# The redis-py floor in pyproject.toml is tested, not guessed: install exactly that version
# beside the venv (a --target dir put first on PYTHONPATH, so subprocesses use it too) and
# run every test that talks to Redis through redis-py: the limiter, the event bus, the
# abuse limits, the webhook replay guard (two distributed API processes) and the chaos
# regressions around kombu's Redis transport. Needs the local Redis and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
floor=$(sed -n 's/^ *"redis\[hiredis\]>=\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "redis-floor: no redis[hiredis]>=X line in pyproject.toml" >&2; exit 1; }
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
$PY -m pip install -q --no-deps --target "$target" "redis==$floor"
got=$(PYTHONPATH="$target" $PY -c "import redis; print(redis.__version__)")
echo "redis-floor: testing with redis-py $got (pyproject floor $floor)"
[ "$got" = "$floor" ]
PYTHONPATH="$target" AGENTFLOW_TEST_ALLOW_SKIP=0 $PY -m pytest -q -p no:cacheprovider \
  tests/ratelimit/test_limiter.py tests/ratelimit/test_properties.py tests/ratelimit/test_resp.py \
  tests/ratelimit/test_integration_points.py tests/api/test_runs_api.py::test_sse_over_redis_bus \
  tests/security/test_abuse.py tests/security/test_hook_replay.py tests/chaos/test_regressions.py
