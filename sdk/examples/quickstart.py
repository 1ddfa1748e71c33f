"""Save the reference workflow, run it, read its trace, re-run its last LLM step.

    agentflow serve &                       # embedded mode on :8000
    OPENAI_API_KEY=... SHOP_DSN=... python sdk/examples/quickstart.py
"""

import json
import sys
from pathlib import Path

from agentflow.client import AgentFlow, RunFailed

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
SPEC = Path(__file__).resolve().parents[2] / "examples" / "triage.json"

with AgentFlow(URL) as client:
    saved = client.workflows.save(json.loads(SPEC.read_text()))
    print(f"saved {saved.id} version {saved.version}")

    run = client.runs.submit(saved.id, "How do I reset my password?", metadata={"customer": "alice"})
    try:
        state = run.result(timeout=120)
    except RunFailed as exc:
        sys.exit(f"run failed: {exc.error}")
    print("answer:", state["final_output"])

    for step in run.trace().steps:
        print(f"{step.index} {step.node_id:8} {step.status:9} {step.duration_ms or 0:7.1f} ms "
              f"{step.tokens or 0:5} tokens  wrote {sorted((step.output or {}).keys())}")

    again = run.rerun("writer", {"user_input": "Answer in one short sentence."})
    print("re-run:", again.result(timeout=120)["text_result"])
