"""Studio's bundled WorkflowSpec schema (studio/lib/workflow.schema.json) is the backend's.

Studio builds its forms from `GET /schema` when the server answers and falls back to the
bundled copy; lib/types.ts is checked against the bundled copy by vitest. Regenerate it with
`studio/scripts/gen-schema.sh` after changing graph/spec.py.
"""

import json
from pathlib import Path

from agentflow.graph.spec import workflow_json_schema

BUNDLED = Path(__file__).resolve().parents[2] / "studio" / "lib" / "workflow.schema.json"


def test_bundled_schema_matches_spec_py():
    assert json.loads(BUNDLED.read_text()) == workflow_json_schema(), (
        "studio/lib/workflow.schema.json is stale: run studio/scripts/gen-schema.sh")
