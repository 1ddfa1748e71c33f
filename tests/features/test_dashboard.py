"""Dashboard: GET /metrics/summary figures are the sums of the stored steps."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from tests.api.support import assert_error_shape, rules_spec, wait_run
from tests.helpers import triage

SOURCE_OF = {"router": "gpt", "writer": "gpt", "painter": "dalle", "orders": "shop"}


def test_summary_matches_the_stored_steps(client, triage_api):
    assert client.post("/workflows", json=triage()).status_code == 201
    assert client.post("/workflows", json=rules_spec()).status_code == 201
    ids = [client.post("/workflows/support-triage/runs",
                       json={"input": {"user_input": text, "metadata": {"customer": "alice"}}}).json()["run_id"]
           for text in ("How do I reset my password?", "Explain it and draw it too, both please")]
    ids += [client.post("/workflows/rules-demo/runs", json={"input": "hi"}).json()["run_id"]]
    runs = [wait_run(client, i, timeout=30) for i in ids]
    assert all(r["status"] == "succeeded" for r in runs), [r["error"] for r in runs]
    rerun = client.post(f"/runs/{ids[0]}/rerun", json={"from_node": "writer"}).json()["run_id"]
    runs.append(wait_run(client, rerun, timeout=30))
    assert runs[-1]["status"] == "succeeded"

    now = datetime.now(timezone.utc)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}
    r = client.get("/metrics/summary", params=window)
    assert r.status_code == 200, r.text
    m = r.json()

    # what the store holds; steps copied into a re-run ("reused") were not paid by it
    steps = [(run, s) for run in runs for s in run["steps"] if s["status"] != "reused"]
    assert any(s["status"] == "reused" for s in runs[-1]["steps"])
    assert m["runs"]["total"] == 4
    assert m["runs"]["by_status"] == {"queued": 0, "running": 0, "waiting": 0, "succeeded": 4, "failed": 0, "cancelled": 0}
    assert m["tokens"] == sum(s["tokens"] for _, s in steps) > 0
    assert m["cost"] == pytest.approx(sum(s["cost"] for _, s in steps))

    wf = {w["workflow_id"]: w for w in m["per_workflow"]}
    assert wf["support-triage"]["runs"] == 3 and wf["rules-demo"]["runs"] == 1
    assert wf["support-triage"]["tokens"] == sum(s["tokens"] for run, s in steps if run["workflow_id"] == "support-triage")
    assert wf["rules-demo"]["tokens"] == 0
    assert wf["support-triage"]["p50_ms"] > 0 and wf["support-triage"]["p95_ms"] >= wf["support-triage"]["p50_ms"]

    nodes = {(n["workflow_id"], n["node_id"]): n for n in m["per_node"]}
    expect_steps = Counter((run["workflow_id"], s["node_id"]) for run, s in steps)
    expect_tokens: dict = defaultdict(int)
    for run, s in steps:
        expect_tokens[(run["workflow_id"], s["node_id"])] += s["tokens"]
    assert {k: n["steps"] for k, n in nodes.items()} == dict(expect_steps)
    assert {k: n["tokens"] for k, n in nodes.items()} == dict(expect_tokens)
    writer = nodes[("support-triage", "writer")]
    assert writer["node_type"] == "llm" and writer["steps"] == 3                 # 2 runs + the re-run
    durations = sorted(s["duration_ms"] for run, s in steps if s["node_id"] == "writer")
    assert writer["p50_ms"] == pytest.approx(durations[1], rel=1e-3)

    sources = {x["source_id"]: x for x in m["per_source"]}
    calls = Counter(SOURCE_OF[s["node_id"]] for _, s in steps if s["node_id"] in SOURCE_OF)
    assert {k: x["calls"] for k, x in sources.items()} == dict(calls)
    assert sources["gpt"]["tokens"] == sum(s["tokens"] for _, s in steps if SOURCE_OF.get(s["node_id"]) == "gpt")
    assert sources["dalle"]["calls"] == 1 and sources["shop"]["calls"] == 2
    assert calls["gpt"] == len([c for c in triage_api.calls if c.path.endswith("/chat/completions")])

    series = m["timeseries"]
    assert m["bucket_seconds"] == 60 and 60 <= len(series) <= 62
    assert sum(b["runs"] for b in series) == 4 and sum(b["tokens"] for b in series) == m["tokens"]
    assert m["latency_ms"]["p50"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["p50"]
    assert m["queue_wait_ms"]["p50"] is not None and m["queue_wait_ms"]["p50"] >= 0

    only = client.get("/metrics/summary", params={**window, "workflow_id": "rules-demo"}).json()
    assert only["runs"]["total"] == 1 and [n["node_id"] for n in only["per_node"]] == ["final", "input", "route"]
    before = client.get("/metrics/summary", params={"to": (now - timedelta(hours=1)).isoformat()}).json()
    assert before["runs"]["total"] == 0 and before["tokens"] == 0 and before["latency_ms"]["p50"] is None
    assert_error_shape(client.get("/metrics/summary", params={"from": window["to"], "to": window["from"]}), 422)
    assert_error_shape(client.get("/metrics/summary", params={**window, "bucket_seconds": 1}), 422)

    # Prometheus counters of this process
    text = client.get("/metrics").text
    assert 'agentflow_steps_total{node_type="llm",status="succeeded"}' in text
    assert "agentflow_tokens_total" in text and "agentflow_step_duration_seconds_bucket" in text
    assert 'agentflow_runs_ended_total{status="succeeded"}' in text
