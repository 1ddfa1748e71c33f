"""Dashboard figures (GET /metrics/summary), computed from the stored runs and steps.

The window selects runs by creation time (`from` <= created_at < `to`); every figure is
about those runs and their steps, so the totals are exactly the sums of the stored steps:

- `tokens`, `cost`: sums of the steps' tokens and cost. Steps with status `reused`
  (copied into a re-run from its parent) are left out everywhere: that run did not pay
  for them.
- `latency_ms`: run duration, started_at -> finished_at, of runs that have both.
- `per_node`: steps by (workflow, node); durations are the steps' duration_ms.
- `per_source`: steps of nodes that name a source (from the spec the run executed);
  `calls` counts steps (a step's internal retries count once).
- `timeseries`: runs by creation bucket (the size is chosen to give at most ~100 buckets,
  or `bucket_seconds`), with their steps' tokens and cost and the p50 run latency.
- `queue_wait_ms`: an approximation of how long each step waited after it became
  runnable: started_at minus the latest finished_at, at or before that moment, of
  another step of the same run; for the first step, minus the run's created_at (so the
  run's own time in the queue counts). Waiting for a rate-limit grant happens inside a
  step and counts in its duration, not here.

Percentiles interpolate linearly between the closest ranks. The rows are read and
reduced in Python (SQLite has no percentile function); a window is limited to
MAX_RUNS runs (the newest are kept).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .db import session_scope
from .models import Run, Step
from .runs import RUN_STATUSES

STATUSES = RUN_STATUSES
BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 1000
MAX_RUNS = 200_000


def percentile(values: Iterable[float], q: float) -> float | None:
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if len(data) == 1:
        return round(float(data[0]), 3)
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    value = data[lo] + (data[hi] - data[lo]) * (pos - lo)
    return round(float(value), 3)


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _ms(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds() * 1000)


def pick_bucket(start: datetime, end: datetime) -> int:
    span = max(1.0, (end - start).total_seconds())
    return next((b for b in BUCKETS if span / b <= 100), BUCKETS[-1])


def bucket_start(at: datetime, size: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % size, tz=timezone.utc)


def summary(factory: sessionmaker[Session], tenant_id: str, start: datetime, end: datetime,
            workflow_id: str | None = None, bucket_seconds: int | None = None) -> dict[str, Any]:
    start, end = _utc(start), _utc(end)
    size = bucket_seconds or pick_bucket(start, end)
    with session_scope(factory) as s:
        where = [Run.tenant_id == tenant_id, Run.created_at >= start, Run.created_at < end]
        if workflow_id is not None:
            where.append(Run.workflow_id == workflow_id)
        runs = s.execute(select(Run.id, Run.workflow_id, Run.workflow_version, Run.status, Run.created_at,
                                Run.started_at, Run.finished_at)
                         .where(*where).order_by(Run.created_at.desc()).limit(MAX_RUNS)).all()
        ids = [r.id for r in runs]
        steps = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            steps += s.execute(select(Step.run_id, Step.node_id, Step.node_type, Step.status, Step.started_at,
                                      Step.finished_at, Step.duration_ms, Step.tokens, Step.cost)
                               .where(Step.run_id.in_(chunk)).order_by(Step.id)).all()
        sources = _source_maps(s, runs)
    return _reduce(runs, steps, sources, start, end, size)


def _source_maps(s: Session, runs) -> dict[str, dict[str, str]]:
    """run id -> {node id: source id}, reading one spec per workflow version."""
    by_version: dict[tuple, dict[str, str]] = {}
    out: dict[str, dict[str, str]] = {}
    for r in runs:
        key = (r.workflow_id, r.workflow_version) if r.workflow_version is not None else ("run", r.id)
        if key not in by_version:
            spec = s.scalar(select(Run.spec).where(Run.id == r.id)) or {}
            by_version[key] = {n.get("id"): n.get("source") for n in spec.get("nodes") or []
                                if isinstance(n, dict) and n.get("source")}
        out[r.id] = by_version[key]
    return out


def _reduce(runs, steps, sources, start: datetime, end: datetime, size: int) -> dict[str, Any]:
    run_of = {r.id: r for r in runs}
    by_status = {status: 0 for status in STATUSES}
    latency: dict[str, float | None] = {}
    for r in runs:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        latency[r.id] = _ms(_utc(r.started_at), _utc(r.finished_at))

    executed = [st for st in steps if st.status != "reused"]
    run_tokens: dict[str, int] = defaultdict(int)
    run_cost: dict[str, float] = defaultdict(float)
    nodes: dict[tuple, dict[str, Any]] = {}
    srcs: dict[str, dict[str, Any]] = {}
    finishes: dict[str, list[datetime]] = defaultdict(list)
    for st in executed:
        run_tokens[st.run_id] += int(st.tokens or 0)
        run_cost[st.run_id] += float(st.cost or 0.0)
        run = run_of[st.run_id]
        node = nodes.setdefault((run.workflow_id, st.node_id), {
            "workflow_id": run.workflow_id, "node_id": st.node_id, "node_type": st.node_type,
            "steps": 0, "tokens": 0, "cost": 0.0, "_d": []})
        node["steps"] += 1
        node["tokens"] += int(st.tokens or 0)
        node["cost"] += float(st.cost or 0.0)
        if st.duration_ms is not None:
            node["_d"].append(float(st.duration_ms))
        source_id = sources.get(st.run_id, {}).get(st.node_id)
        if source_id:
            src = srcs.setdefault(source_id, {"source_id": source_id, "calls": 0, "tokens": 0, "cost": 0.0,
                                              "_d": []})
            src["calls"] += 1
            src["tokens"] += int(st.tokens or 0)
            src["cost"] += float(st.cost or 0.0)
            if st.duration_ms is not None:
                src["_d"].append(float(st.duration_ms))
        if st.finished_at is not None:
            finishes[st.run_id].append(_utc(st.finished_at))

    waits = []
    for st in executed:
        began = _utc(st.started_at)
        if began is None:
            continue
        earlier = [f for f in finishes.get(st.run_id, ()) if f <= began]
        ready = max(earlier) if earlier else _utc(run_of[st.run_id].created_at)
        waits.append(_ms(ready, began))

    per_workflow: dict[Any, dict[str, Any]] = {}
    for r in runs:
        wf = per_workflow.setdefault(r.workflow_id, {"workflow_id": r.workflow_id, "runs": 0, "tokens": 0,
                                                     "cost": 0.0, "_d": []})
        wf["runs"] += 1
        wf["tokens"] += run_tokens.get(r.id, 0)
        wf["cost"] += run_cost.get(r.id, 0.0)
        if latency[r.id] is not None:
            wf["_d"].append(latency[r.id])

    first, last = bucket_start(start, size), bucket_start(end - timedelta(microseconds=1), size)
    count = int((last - first).total_seconds() // size) + 1
    series = [{"bucket": first + timedelta(seconds=i * size), "runs": 0, "tokens": 0, "cost": 0.0, "_d": []}
              for i in range(count)]
    for r in runs:
        i = int((bucket_start(_utc(r.created_at), size) - first).total_seconds() // size)
        if 0 <= i < count:
            b = series[i]
            b["runs"] += 1
            b["tokens"] += run_tokens.get(r.id, 0)
            b["cost"] += run_cost.get(r.id, 0.0)
            if latency[r.id] is not None:
                b["_d"].append(latency[r.id])

    def figures(item: dict[str, Any], p95: bool = True) -> dict[str, Any]:
        durations = item.pop("_d")
        item["cost"] = round(item["cost"], 10)
        item["p50_ms"] = percentile(durations, 0.5)
        if p95:
            item["p95_ms"] = percentile(durations, 0.95)
        return item

    return {
        "from": start, "to": end, "bucket_seconds": size,
        "runs": {"total": len(runs), "by_status": by_status},
        "tokens": sum(run_tokens.values()),
        "cost": round(sum(run_cost.values()), 10),
        "latency_ms": _pcts([v for v in latency.values() if v is not None]),
        "per_workflow": sorted((figures(w) for w in per_workflow.values()),
                               key=lambda w: (-w["runs"], str(w["workflow_id"]))),
        "per_node": sorted((figures(n) for n in nodes.values()),
                           key=lambda n: (str(n["workflow_id"]), n["node_id"])),
        "per_source": sorted((figures(x) for x in srcs.values()), key=lambda x: x["source_id"]),
        "timeseries": [figures(b, p95=False) for b in series],
        "queue_wait_ms": _pcts([w for w in waits if w is not None]),
    }


def bucket_count(start: datetime, end: datetime, size: int) -> int:
    first, last = bucket_start(_utc(start), size), bucket_start(_utc(end) - timedelta(microseconds=1), size)
    return int((last - first).total_seconds() // size) + 1
