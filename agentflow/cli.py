"""The `agentflow` command (contract section 2)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def _load_json(path: str):
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"agentflow: cannot read {path}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"agentflow: {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")


def cmd_validate(args) -> int:
    from .graph.validate import validate

    problems = validate(_load_json(args.file))
    if args.json:
        print(json.dumps({"valid": not problems, "errors": [p.as_dict() for p in problems]}, indent=2))
    elif problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p.path or '<spec>'}: {p.message}", file=sys.stderr)
    else:
        print(f"{args.file}: valid")
    return 1 if problems else 0


def cmd_schema(args) -> int:
    from .graph.spec import workflow_json_schema

    print(json.dumps(workflow_json_schema(), indent=2))
    return 0


class _Progress:
    """Per-node progress lines on stderr, wrapped around the recording observer."""

    def __init__(self, inner, stream: bool):
        self.inner, self.stream, self._tokens_open = inner, stream, False

    def _line(self, text: str) -> None:
        if self._tokens_open:
            sys.stderr.write("\n")
            self._tokens_open = False
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    records_input = True  # passed on to the recording observer (the run's trace)

    def step_started(self, run_id, node_id, node_type, attempt, input=None):
        if getattr(self.inner, "records_input", False):
            self.inner.step_started(run_id, node_id, node_type, attempt, input=input)
        else:
            self.inner.step_started(run_id, node_id, node_type, attempt)
        self._line(f"  > {node_id} ({node_type}) ...")

    def step_finished(self, run_id, node_id, *, update, tokens, cost, duration_ms):
        self.inner.step_finished(run_id, node_id, update=update, tokens=tokens, cost=cost, duration_ms=duration_ms)
        extra = f", {tokens} tokens, ${cost:.6f}" if tokens or cost else ""
        self._line(f"  ok {node_id} in {duration_ms:.0f} ms{extra}")

    def step_failed(self, run_id, node_id, *, error, duration_ms):
        self.inner.step_failed(run_id, node_id, error=error, duration_ms=duration_ms)
        self._line(f"  FAILED {node_id} after {duration_ms:.0f} ms: {error}")

    def token(self, run_id, node_id, delta):
        self.inner.token(run_id, node_id, delta)
        if self.stream:
            sys.stderr.write(delta)
            sys.stderr.flush()
            self._tokens_open = True


def cmd_run(args) -> int:
    from .graph.validate import validate
    from .ratelimit.factory import memory_limiter
    from .runs.embedded import EmbeddedExecutor
    from .runs.events import MemoryEventBus
    from .runs.observer import RecordingObserver
    from .settings import get_settings
    from .store.db import migrate, session_factory
    from .store.runs import RunStore

    data = _load_json(args.file)
    problems = validate(data)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p.path or '<spec>'}: {p.message}", file=sys.stderr)
        return 1
    try:
        metadata = json.loads(args.metadata) if args.metadata else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"agentflow: --metadata is not valid JSON: {exc.msg}")
    if not isinstance(metadata, dict):
        raise SystemExit("agentflow: --metadata must be a JSON object")

    settings = get_settings()
    url = settings.db_url
    migrate(url)
    store = RunStore(session_factory(url))
    bus = MemoryEventBus()
    executor = EmbeddedExecutor(store, bus, limiter=memory_limiter(), workers=1,
                                extra={"stream": True} if args.stream else None)
    run_id = store.create(data, {"user_input": args.input, "metadata": metadata}, workflow_id=data.get("id"))
    observer = RecordingObserver(store, bus)
    if sys.stderr.isatty() or args.stream or args.progress:
        print(f"run {run_id}", file=sys.stderr)
        observer = _Progress(observer, stream=args.stream)
    record = executor.execute(run_id, observer=observer)
    if record.get("status") != "succeeded":
        print(f"agentflow: run {run_id} {record.get('status')}: {record.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(record["state"], indent=2, ensure_ascii=False, default=str))
    return 0


def cmd_migrate(args) -> int:
    from .settings import get_settings
    from .store.db import migrate, safe_url

    url = get_settings().db_url
    migrate(url)
    print(f"database at {safe_url(url)} is up to date")
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from .settings import get_settings

    if args.port:
        os.environ["AGENTFLOW_PORT"] = str(args.port)
    settings = get_settings()
    port = args.port or settings.port
    host = args.host or settings.host
    mode = "distributed (Redis + Celery)" if settings.distributed else "embedded (in-process, no Redis)"
    print(f"AgentFlow {mode} on http://{host}:{port}  (API docs at /docs)", file=sys.stderr)
    uvicorn.run("agentflow.api.main:create_app", factory=True, host=host, port=port,
                log_level=args.log_level, access_log=args.access_log)
    return 0


def cmd_worker(args) -> int:
    from .workers.app import run_worker

    return run_worker(queues=args.queues, concurrency=args.concurrency, pool=args.pool,
                      loglevel=args.log_level, hostname=args.hostname)


def cmd_beat(args) -> int:
    from .workers.app import run_beat

    return run_beat(loglevel=args.log_level)


def cmd_token(args) -> int:
    from .api.auth import AuthConfigError, issue_token

    try:
        token = issue_token(tenant=args.tenant, role=args.role, ttl_seconds=args.ttl, subject=args.subject)
    except (ValueError, AuthConfigError) as exc:
        print(f"agentflow: cannot create a token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_mcp(args) -> int:
    from .api.mcp import serve_stdio

    return serve_stdio(tenant=args.tenant)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentflow", description="Validate, run and serve AgentFlow workflows.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a spec; exit 0 when valid, 1 with every problem listed")
    v.add_argument("file", help="spec file (JSON), or - for stdin")
    v.add_argument("--json", action="store_true", help="print {valid, errors} as JSON")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the WorkflowSpec JSON Schema")
    s.set_defaults(func=cmd_schema)

    r = sub.add_parser("run", help="run a spec in this process and print the final state as JSON")
    r.add_argument("file")
    r.add_argument("--input", required=True, help="the user_input text")
    r.add_argument("--metadata", help="JSON object merged into state.metadata")
    r.add_argument("--stream", action="store_true", help="print LLM tokens on stderr as they arrive")
    r.add_argument("--progress", action="store_true", help="per-node progress on stderr even when not a terminal")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("migrate", help="apply database migrations")
    m.set_defaults(func=cmd_migrate)

    sv = sub.add_parser("serve", help="REST API and Studio on one port")
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--host", default=None)
    sv.add_argument("--log-level", default="info")
    sv.add_argument("--access-log", action="store_true")
    sv.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="a Celery worker (distributed mode)")
    w.add_argument("--queues", default="runs,agentflow.llm,agentflow.image,agentflow.db,agentflow.api",
                   help="comma-separated queues to consume")
    w.add_argument("--concurrency", type=int, default=2)
    w.add_argument("--pool", default="prefork", help="prefork, threads or solo")
    w.add_argument("--hostname", default=None)
    w.add_argument("--log-level", default="info")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("beat", help="celery beat for scheduled workflows")
    b.add_argument("--log-level", default="info")
    b.set_defaults(func=cmd_beat)

    mc = sub.add_parser("mcp", help="an MCP server on stdin/stdout: the saved workflows as tools")
    mc.add_argument("--tenant", default="default", help="whose workflows (acts as that tenant's admin)")
    mc.set_defaults(func=cmd_mcp)

    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="issue a JWT")
    tc.add_argument("--tenant", default="default")
    tc.add_argument("--role", default="admin", choices=["viewer", "editor", "operator", "admin"])
    tc.add_argument("--ttl", type=int, default=3600, help="seconds")
    tc.add_argument("--subject", default="cli")
    tc.set_defaults(func=cmd_token)
    return p


def main(argv: list[str] | None = None) -> int:
    from .graph.secrets import install_log_redaction

    logging.basicConfig(level=os.environ.get("AGENTFLOW_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
