"""OpenTelemetry traces of runs (contract section 8), exported over OTLP/HTTP.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; then each run is
one trace: a root span `agentflow.run`, a child span `agentflow.step <node id>` per step
(an llm node's tool calls are children of its step), GenAI semantic-convention attributes
on model calls, and an `agentflow.submit` span from the API that started the run.

The run may cross processes (API -> run driver -> node tasks), so the run span's identity
is decided when the run is created and travels as a W3C `traceparent` in the run's
`options["trace"]` (the driver reads it with the run) and in the node tasks' `meta`.
The process that ends the run emits `agentflow.run` under that very span id (a preset id
generator), so spans exported earlier by other processes already point at it.

Costs nothing when off: `enabled()` is a cached setting; every hook returns its argument
or a shared no-op at once, and the OpenTelemetry SDK is never imported. Attributes carry
ids, types, counts and the redacted error text: never a state, a prompt, an input or a
secret (states may hold encrypted payloads too).
"""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
import threading
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

TRACE_KEY = "trace"  # in a run's options: {"traceparent": ..., "parent": caller's traceparent or None}
_state: dict[str, Any] = {}
_lock = threading.Lock()
_preset: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("af_otel_preset", default=None)


def enabled() -> bool:
    from ..settings import get_settings

    settings = get_settings()
    return bool(settings.otel_endpoint or settings.otel_traces_endpoint)


# ---------------------------------------------------------------- traceparent


def make_traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def parse_traceparent(value: str | None) -> tuple[int, int] | None:
    """(trace id, span id) of a W3C traceparent, None when it is not one."""
    if not value or not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return (trace_id, span_id) if trace_id and span_id else None


def new_run_trace(caller: str | None = None) -> dict | None:
    """The trace a new run will have: a fresh span id for its `agentflow.run`, in the
    caller's trace when the request carried a traceparent. None when tracing is off."""
    if not enabled():
        return None
    parsed = parse_traceparent(caller)
    trace_id = parsed[0] if parsed else int.from_bytes(secrets.token_bytes(16), "big") or 1
    span_id = int.from_bytes(secrets.token_bytes(8), "big") or 1
    return {"traceparent": make_traceparent(trace_id, span_id), "parent": caller if parsed else None}


def with_run_trace(options: dict | None, caller: str | None = None) -> dict | None:
    """A new run's options with its trace added (unchanged when tracing is off)."""
    trace = new_run_trace(caller)
    if trace is None:
        return options
    return {**(options or {}), TRACE_KEY: trace}


# ---------------------------------------------------------------- the SDK, lazily


def _tracer():
    """The tracer of this process (built on first use, after any fork), or None."""
    tracer = _state.get("tracer")
    if tracer is not None or _state.get("failed"):
        return tracer
    with _lock:
        if "tracer" in _state or _state.get("failed"):
            return _state.get("tracer")
        try:
            _state["tracer"] = _build_tracer()
        except ImportError:
            log.error("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed "
                      "(pip install 'agentflow[otel]'); runs are not traced")
            _state["failed"] = True
        except Exception:  # a broken exporter setup must never fail a run
            log.exception("OpenTelemetry could not be set up; runs are not traced")
            _state["failed"] = True
        return _state.get("tracer")


def _build_tracer():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    from ..settings import get_settings

    class PresetIds(RandomIdGenerator):
        """Ids from `_preset` when set: the run span gets the ids its run was given."""

        def generate_trace_id(self) -> int:
            preset = _preset.get()
            return preset[0] if preset else super().generate_trace_id()

        def generate_span_id(self) -> int:
            preset = _preset.get()
            return preset[1] if preset else super().generate_span_id()

    settings = get_settings()
    # The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint + /v1/traces, headers,
    # timeout); a provider of our own, not the global one, so only runs are exported.
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name,
                                                        "process.pid": os.getpid()}),
                              id_generator=PresetIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _state["provider"] = provider
    return provider.get_tracer("agentflow")


def flush(timeout_ms: int = 5000) -> None:
    provider = _state.get("provider")
    if provider is not None:
        provider.force_flush(timeout_ms)


def reset() -> None:
    """Export what is pending and forget the tracer: the next run builds one from the
    settings of that moment (tests switch the endpoint)."""
    with _lock:
        provider = _state.pop("provider", None)
        _state.clear()
    if provider is not None:
        provider.shutdown()


def _context_of(traceparent: str | None, parent_span: Any = None):
    from opentelemetry import trace

    if parent_span is not None:
        return trace.set_span_in_context(parent_span)
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    ctx = trace.SpanContext(parsed[0], parsed[1], is_remote=True,
                            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


# ---------------------------------------------------------------- the run span


class _Off:
    """The run scope when tracing is off: every hook does nothing."""

    traceparent = None

    def observe(self, observer):
        return observer

    def end(self, status: str, error: str | None = None) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


OFF = _Off()


class RunScope:
    """`agentflow.run` of one run in the process that drives it. `end(status)` exports it;
    a scope left without `end` (the driver was interrupted and the run resumes elsewhere)
    exports nothing, so the run keeps one run span."""

    def __init__(self, run_id: str, options: dict | None, workflow_id: str | None, tenant_id: str | None,
                 started_at: datetime | None = None):
        trace = (options or {}).get(TRACE_KEY) or {}
        parsed = parse_traceparent(trace.get("traceparent"))
        if parsed is None:  # a run created without a trace (tracing was off, a schedule ...)
            fresh = new_run_trace()
            parsed = parse_traceparent(fresh["traceparent"]) if fresh else None
        self.traceparent = make_traceparent(*parsed) if parsed else None
        self.span = None
        tracer = _tracer()
        if tracer is None or parsed is None:
            return
        from opentelemetry.trace import SpanKind

        caller = parse_traceparent(trace.get("parent"))
        parent = _context_of(trace.get("parent")) if caller and caller[0] == parsed[0] else None
        attributes = {"agentflow.run.id": run_id}
        if workflow_id:
            attributes["agentflow.workflow.id"] = workflow_id
        if tenant_id:
            attributes["agentflow.tenant.id"] = tenant_id
        token = _preset.set(parsed)
        try:
            # a run that waited is driven by several advances, maybe in several processes: its
            # span starts when the run first did, not when this last advance began
            if started_at is not None and started_at.tzinfo is None:
                started_at = started_at.replace(tzinfo=timezone.utc)  # SQLite's datetimes are naive UTC
            start = int(started_at.timestamp() * 1e9) if started_at is not None else None
            self.span = tracer.start_span("agentflow.run", context=parent, kind=SpanKind.INTERNAL,
                                          attributes=attributes, start_time=start)
        finally:
            _preset.reset(token)

    def observe(self, observer):
        return observe(observer, self.traceparent)

    def end(self, status: str, error: str | None = None) -> None:
        if self.span is None or status not in ("succeeded", "failed", "cancelled"):
            return  # a run that waits is ended by the driver that finishes it
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("agentflow.run.status", status)
        if status == "failed":
            self.span.set_status(Status(StatusCode.ERROR, _short(error)))
        elif status == "succeeded":
            self.span.set_status(Status(StatusCode.OK))
        self.span.end()
        self.span = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def run_scope(run_id: str, options: dict | None = None, workflow_id: str | None = None,
              tenant_id: str | None = None, started_at: datetime | None = None):
    """The run span of a run this process drives (OFF when tracing is off)."""
    if not enabled():
        return OFF
    return RunScope(run_id, options, workflow_id, tenant_id, started_at)


def submitted(options: dict | None, run_id: str, workflow_id: str | None = None) -> None:
    """The API's part of a run's trace: an `agentflow.submit` span under the run span."""
    trace = (options or {}).get(TRACE_KEY)
    if not trace:
        return
    tracer = _tracer()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind

    attributes = {"agentflow.run.id": run_id}
    if workflow_id:
        attributes["agentflow.workflow.id"] = workflow_id
    tracer.start_span("agentflow.submit", context=_context_of(trace.get("traceparent")), kind=SpanKind.SERVER,
                      attributes=attributes).end()


def _short(text: str | None, limit: int = 500) -> str | None:
    if text is None:
        return None
    from ..graph.secrets import redact

    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- step spans


def observe(observer, traceparent: str | None):
    """`observer` with a span for each step under the run span `traceparent` names; the
    observer itself when tracing is off or the run has no trace."""
    if traceparent is None or not enabled():
        return observer
    tracer = _tracer()
    if tracer is None:
        return observer
    return TracingObserver(observer, tracer, traceparent)


class TracingObserver:
    """Wraps a step observer (runs/observer.py): spans for steps, GenAI attributes for
    model calls (`model_call`, reported by llm nodes); everything else is the wrapped
    observer's."""

    def __init__(self, inner, tracer, traceparent: str):
        self._inner = inner
        self._tracer = tracer
        self._parent = _context_of(traceparent)
        self._spans: dict[str, Any] = {}
        self._usage: dict[str, list[int]] = {}

    def __getattr__(self, name: str) -> Any:  # records_input, step_key ... of the inner observer
        return getattr(self._inner, name)

    def step_started(self, run_id, node_id, node_type, attempt, **kwargs):
        self._inner.step_started(run_id, node_id, node_type, attempt, **kwargs)
        owner = node_id.split(".tool:", 1)[0] if ".tool:" in node_id else None
        parent = _context_of(None, self._spans[owner]) if owner in self._spans else self._parent
        attributes = {"agentflow.run.id": run_id, "agentflow.node.id": node_id, "agentflow.node.type": node_type,
                      "agentflow.step.attempt": attempt}
        if owner is not None:
            attributes.update({"gen_ai.operation.name": "execute_tool",
                               "gen_ai.tool.name": node_id.split(".tool:", 1)[1]})
        self._spans[node_id] = self._tracer.start_span(f"agentflow.step {node_id}", context=parent,
                                                       attributes=attributes)

    def model_call(self, run_id, node_id, *, system, model, response_model=None, input_tokens=None,
                   output_tokens=None):
        span = self._spans.get(node_id)
        if span is None:
            return
        usage = self._usage.setdefault(node_id, [0, 0])
        usage[0] += input_tokens or 0
        usage[1] += output_tokens or 0
        span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.system": system,
                             "gen_ai.provider.name": system, "gen_ai.request.model": model,
                             "gen_ai.usage.input_tokens": usage[0], "gen_ai.usage.output_tokens": usage[1]})
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)

    def _end(self, node_id: str, ok: bool, error: str | None = None, **attributes) -> None:
        self._usage.pop(node_id, None)
        span = self._spans.pop(node_id, None)
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, _short(error)))
        span.end()

    def step_finished(self, run_id, node_id, *, update, tokens, cost, duration_ms):
        try:
            self._inner.step_finished(run_id, node_id, update=update, tokens=tokens, cost=cost,
                                      duration_ms=duration_ms)
        finally:
            self._end(node_id, True, **{"agentflow.step.tokens": int(tokens or 0),
                                        "agentflow.step.cost": float(cost or 0.0)})

    def step_failed(self, run_id, node_id, *, error, duration_ms):
        try:
            self._inner.step_failed(run_id, node_id, error=error, duration_ms=duration_ms)
        finally:
            self._end(node_id, False, error)

    def token(self, run_id, node_id, delta):
        self._inner.token(run_id, node_id, delta)
