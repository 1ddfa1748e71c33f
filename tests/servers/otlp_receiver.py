"""An OTLP/HTTP trace receiver for tests: POST /v1/traces with a protobuf
ExportTraceServiceRequest (what opentelemetry-exporter-otlp-proto-http sends), decoded
with opentelemetry-proto; every span is kept as a `Span`.

    with OTLPReceiver() as otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp.url     # the exporter adds /v1/traces
        ... otlp.wait_for(lambda spans: ...) ...
"""

from __future__ import annotations

import gzip
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from . import RecordedCall, RecordingServer, Reply


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""
    start_ns: int = 0
    end_ns: int = 0


def _value(v) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for rs in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Span(s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                {kv.key: _value(kv.value) for kv in s.attributes}, resource,
                                s.status.code, s.status.message, s.start_time_unix_nano, s.end_time_unix_nano))
    return out


class OTLPReceiver(RecordingServer):
    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []

    def handle(self, call: RecordedCall) -> Reply:
        if call.method != "POST" or call.path != "/v1/traces":
            return Reply(404, {"error": "not found"})
        body = call.body
        encoding = call.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        spans = decode(body)
        with self._lock:
            self.spans.extend(spans)
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        return Reply(200, ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, predicate: Callable[[list[Span]], bool], timeout: float = 30.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the spans never matched; got {[(s.name, s.trace_id) for s in spans]}")
            time.sleep(0.1)
