"""OpenTelemetry's cost per run (runs/telemetry.py): off (the default) must cost nothing.

Runs the triage graph with instant nodes (bench/engine_overhead.py's, so only the engine
and the hooks are measured) three ways, interleaved, medians over many repeats:

- anchor: no telemetry hooks at all (a build without them);
- off: the hooks the executors call (`run_scope`, `observe`, `end`) with
  OTEL_EXPORTER_OTLP_ENDPOINT unset;
- on: exporting every run as a trace to an OTLP receiver on 127.0.0.1 (for scale).

Target: "off" within 2% of the anchor (the hooks are a cached setting lookup a run), and
the OpenTelemetry SDK's exporter never imported while off.

    python bench/otel_overhead.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentflow.graph import build as build_mod  # noqa: E402
from agentflow.graph.runtime import CONFIG_KEY, NullObserver, RunContext  # noqa: E402
from agentflow.graph.spec import WorkflowSpec  # noqa: E402
from agentflow.graph.state import initial_state  # noqa: E402
from agentflow.runs import telemetry  # noqa: E402
from agentflow.settings import get_settings  # noqa: E402
from bench.engine_overhead import SPEC_PATH, InstantNode  # noqa: E402

import json  # noqa: E402


def graph_and_spec():
    spec = WorkflowSpec.model_validate(json.loads(SPEC_PATH.read_text()))
    build_mod.make_node = lambda node, s: InstantNode(node, s)  # instant nodes, as engine_overhead does
    build_mod.clear_cache()
    return spec, build_mod.compile_spec(spec)


def one_run(graph, spec, hooks: bool) -> float:
    started = time.perf_counter()
    if hooks:
        trace = telemetry.run_scope("bench-run", None, spec.id, "default")
        ctx = RunContext(run_id="bench-run", observer=trace.observe(NullObserver()))
    else:
        ctx = RunContext(run_id="bench-run", observer=NullObserver())
    graph.invoke(initial_state("hello", {"customer": "alice"}), config={"configurable": {CONFIG_KEY: ctx}})
    if hooks:
        trace.end("succeeded")
    return time.perf_counter() - started


def set_endpoint(url: str | None) -> None:
    if url is None:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    else:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
    get_settings.cache_clear()
    telemetry.reset()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    set_endpoint(None)
    spec, graph = graph_and_spec()
    for _ in range(30):  # warm up
        one_run(graph, spec, False)
        one_run(graph, spec, True)
    anchor, off = [], []
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        anchor.append(one_run(graph, spec, False))
        off.append(one_run(graph, spec, True))
    exporter_loaded = any(m.startswith("opentelemetry.exporter") for m in sys.modules)

    from tests.servers.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as receiver:
        set_endpoint(receiver.url)
        on = [one_run(graph, spec, True) for _ in range(args.runs)]
        telemetry.flush()
        spans = len(receiver.spans)
    set_endpoint(None)

    a, o, n = (statistics.median(x) * 1000 for x in (anchor, off, on))
    print(f"runs of the triage graph (instant nodes), median of {args.runs}:")
    print(f"  anchor, no telemetry hooks : {a:.3f} ms")
    print(f"  hooks, OTel off (default)  : {o:.3f} ms  ({(o / a - 1) * 100:+.1f}% vs anchor; target within 2%)")
    print(f"  hooks, OTel on (exporting) : {n:.3f} ms  ({(n / a - 1) * 100:+.1f}% vs anchor); "
          f"{spans} spans received")
    print(f"  OTLP exporter imported while off: {'yes' if exporter_loaded else 'no'}")
    return 0 if (o / a - 1) <= 0.02 and not exporter_loaded else 1


if __name__ == "__main__":
    sys.exit(main())
