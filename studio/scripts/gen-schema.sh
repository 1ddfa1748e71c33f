#!/usr/bin/env bash
# Regenerate lib/workflow.schema.json from the backend's pydantic models
# (graph/spec.py). Studio builds its property forms from this file, and
# tests/schema-types.test.ts checks lib/types.ts against it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python="python3"
cd "$repo"
"$python" -c "import json; from agentflow.graph.spec import workflow_json_schema; print(json.dumps(workflow_json_schema(), indent=1))" \
  > "$here/lib/workflow.schema.json"
echo "wrote $here/lib/workflow.schema.json"
