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


def _resolver(data):
    """The saved workflows of the local store (DATABASE_URL or AGENTFLOW_HOME), for a spec
    whose workflow or map nodes name some; None for any other spec (no store is opened)."""
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list) or not any(isinstance(n, dict) and n.get("type") in ("workflow", "map")
                                              for n in nodes):
        return None
    from .settings import get_settings
    from .store.db import migrate, session_factory
    from .store.models import DEFAULT_TENANT
    from .store.workflows import WorkflowStore

    url = get_settings().db_url
    migrate(url)
    return WorkflowStore(session_factory(url)).resolver(DEFAULT_TENANT)


def cmd_validate(args) -> int:
    from .graph.validate import validate

    data = _load_json(args.file)
    problems = validate(data, _resolver(data))
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
    problems = validate(data, _resolver(data))
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
                                extra={"stream": True} if args.stream else None,
                                checkpoints=settings.home / "checkpoints.sqlite")
    run_id = store.create(data, {"user_input": args.input, "metadata": metadata}, workflow_id=data.get("id"))
    observer = RecordingObserver(store, bus)
    if sys.stderr.isatty() or args.stream or args.progress:
        print(f"run {run_id}", file=sys.stderr)
        observer = _Progress(observer, stream=args.stream)
    record = executor.execute(run_id, observer=observer)
    return _print_outcome(run_id, record)


def _print_outcome(run_id: str, record: dict) -> int:
    if record.get("status") == "waiting":
        for wait in record.get("waiting_for") or []:
            print(f"run {run_id} waits for an answer at {wait['node']}: {wait['prompt']} "
                  f"(choices: {', '.join(wait['choices'])})", file=sys.stderr)
            print(f"  answer with: agentflow resume {run_id} --node {wait['node']} --choice {wait['choices'][0]}",
                  file=sys.stderr)
        print(json.dumps({"run_id": run_id, "status": "waiting", "waiting_for": record.get("waiting_for")}, indent=2))
        return 0
    if record.get("status") != "succeeded":
        print(f"agentflow: run {run_id} {record.get('status')}: {record.get('error')}", file=sys.stderr)
        return 1
    print(json.dumps(record["state"], indent=2, ensure_ascii=False, default=str))
    return 0


def cmd_resume(args) -> int:
    """Answer a run waiting for a person, through the API (contract section 5)."""
    from .api.auth import LOCAL_TOKEN_FILE
    from .client import AgentFlow, APIError, TransportError
    from .settings import get_settings

    settings = get_settings()
    url = args.url or settings.url or f"http://127.0.0.1:{settings.port}"
    token = args.token or settings.token
    local = settings.home / LOCAL_TOKEN_FILE
    if token is None and local.is_file():  # the local admin token of an embedded server on this machine
        token = local.read_text().strip() or None
    try:
        values = json.loads(args.values) if args.values else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"agentflow: --values is not valid JSON: {exc.msg}")
    try:
        with AgentFlow(url, token=token) as client:
            client.resume(args.run_id, args.node, args.choice, values)
    except APIError as exc:
        print(f"agentflow: {exc.detail}", file=sys.stderr)
        return 1
    except TransportError as exc:
        if args.url or settings.url:
            print(f"agentflow: cannot reach the API at {url} ({exc})", file=sys.stderr)
            return 1
        return _resume_here(args, values, settings)  # no server: the run of `agentflow run` lives here
    print(f"run {args.run_id}: {args.node} answered {args.choice!r}; the run goes on")
    return 0


def _resume_here(args, values: dict, settings) -> int:
    """Answer in this process against the local store, and advance the run to its next pause."""
    import getpass

    from .ratelimit.factory import memory_limiter
    from .runs.embedded import EmbeddedExecutor
    from .runs.events import MemoryEventBus
    from .runs.resume import ResumeRefused, answer_run
    from .store.db import migrate, session_factory
    from .store.runs import RunStore

    migrate(settings.db_url)
    store = RunStore(session_factory(settings.db_url))
    try:
        answer_run(store, args.run_id, args.node, args.choice, values, by=f"cli:{getpass.getuser()}")
    except ResumeRefused as exc:
        print(f"agentflow: {exc}", file=sys.stderr)
        return 1
    executor = EmbeddedExecutor(store, MemoryEventBus(), limiter=memory_limiter(), workers=1,
                                checkpoints=settings.home / "checkpoints.sqlite")
    return _print_outcome(args.run_id, executor.execute(args.run_id))


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
    # proxy_headers off: uvicorn would trust X-Forwarded-For from 127.0.0.1 by default; the
    # app trusts exactly AGENTFLOW_TRUSTED_PROXIES (api/main.py)
    uvicorn.run("agentflow.api.main:create_app", factory=True, host=host, port=port,
                log_level=args.log_level, access_log=args.access_log, proxy_headers=False)
    return 0


def cmd_worker(args) -> int:
    from .settings import get_settings
    from .store import crypto
    from .workers.app import DEFAULT_QUEUES, run_worker

    crypto.configure(get_settings())  # a malformed key stops the worker here, not at its first run

    return run_worker(queues=args.queues or DEFAULT_QUEUES, concurrency=args.concurrency, pool=args.pool,
                      loglevel=args.log_level, hostname=args.hostname)


def cmd_beat(args) -> int:
    from .settings import get_settings
    from .store import crypto
    from .workers.app import run_beat

    crypto.configure(get_settings())  # a malformed key stops beat here

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


def cmd_plugins(args) -> int:
    """List installed plugins (and any that failed to load); install/uninstall wrap pip."""
    import subprocess

    if args.plugins_command in ("install", "uninstall"):
        # the interpreter running agentflow, so the plugin lands where serve/worker import from
        argv = [sys.executable, "-m", "pip", args.plugins_command, *(["-y"] if args.plugins_command == "uninstall" else []),
                *args.packages]
        code = subprocess.call(argv)
        if code == 0:
            print(f"{args.plugins_command}ed {' '.join(args.packages)} in {sys.prefix}. Restart `agentflow serve` and "
                  "every `agentflow worker` (on every machine) to load the change.", file=sys.stderr)
        return code

    from .graph import registry

    reg = registry.get()
    plugins = reg.plugins()
    if args.json:
        print(json.dumps({"plugins": plugins, "errors": [e.as_dict() for e in reg.errors]}, indent=2))
        return 1 if reg.errors else 0
    if not plugins:
        print("no plugins installed (a plugin is a package declaring the `agentflow.nodes` entry point)")
    for p in plugins:
        adds = [f"node type {t} (queue {reg.nodes[t].queue})" for t in p["node_types"]]
        adds += [f"source kind {k}" for k in p["source_kinds"]]
        print(f"{p['package']} {p['version'] or '?'}: {', '.join(adds) or 'nothing loaded'}")
        for e in p["errors"]:
            print(f"  FAILED {e['group']} {e['name']!r}: {e['error']}")
    for e in reg.errors:
        if e.package == "agentflow":  # our own entry points: only a broken install gets here
            print(f"agentflow: FAILED {e.group} {e.name!r}: {e.error}", file=sys.stderr)
    return 1 if reg.errors else 0


def cmd_keys_generate(args) -> int:
    from .store.crypto import generate_key, key_id, parse_key

    key = generate_key()
    print(key)
    print(f"key id {key_id(parse_key(key))}: set it as AGENTFLOW_ENCRYPTION_KEY; keep the previous key in "
          "AGENTFLOW_ENCRYPTION_OLD_KEYS until `agentflow keys rotate` has run", file=sys.stderr)
    return 0


def cmd_keys_rotate(args) -> int:
    from .settings import get_settings
    from .store import crypto
    from .store.db import get_engine, migrate, safe_url

    settings = get_settings()
    ring = crypto.configure(settings)
    if not ring.enabled:
        print("agentflow: set AGENTFLOW_ENCRYPTION_KEY to the key to rotate to "
              "(and AGENTFLOW_ENCRYPTION_OLD_KEYS to the keys it replaces)", file=sys.stderr)
        return 2
    url = settings.db_url
    migrate(url)
    print(f"re-encrypting under key id {ring.kid} in {safe_url(url)}, {args.batch_size} rows a batch",
          file=sys.stderr)
    try:
        count = crypto.rotate(get_engine(url), batch_size=args.batch_size,
                              progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    except crypto.KeyUnavailable as exc:
        print(f"agentflow: {exc}; what was done so far is kept, run again once the key is set",
              file=sys.stderr)
        return 1
    print(f"{count} value(s) re-encrypted under key id {ring.kid}")
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

    rs = sub.add_parser("resume", help="answer a run that waits for a person (a human node)")
    rs.add_argument("run_id")
    rs.add_argument("--node", required=True, help="the waiting human node")
    rs.add_argument("--choice", required=True, help="one of its choices, e.g. approve")
    rs.add_argument("--values", default=None, help="optional JSON object of values the person gives")
    rs.add_argument("--url", default=None, help="the API (default AGENTFLOW_URL, else http://127.0.0.1:AGENTFLOW_PORT)")
    rs.add_argument("--token", default=None, help="an API token (default AGENTFLOW_TOKEN, else the local admin token)")
    rs.set_defaults(func=cmd_resume)

    w = sub.add_parser("worker", help="a Celery worker (distributed mode)")
    w.add_argument("--queues", default=None,
                   help="comma-separated queues to consume (default: every queue; any layout finishes every run)")
    w.add_argument("--concurrency", type=int, default=2)
    w.add_argument("--pool", default="prefork", help="prefork, threads or solo")
    w.add_argument("--hostname", default=None)
    w.add_argument("--log-level", default="info")
    w.set_defaults(func=cmd_worker)

    b = sub.add_parser("beat", help="celery beat for scheduled workflows")
    b.add_argument("--log-level", default="info")
    b.set_defaults(func=cmd_beat)

    pl = sub.add_parser("plugins", help="list installed node plugins; install or uninstall one with pip")
    pl.add_argument("--json", action="store_true", help="print {plugins, errors} as JSON")
    pl.set_defaults(func=cmd_plugins, plugins_command="list")
    plsub = pl.add_subparsers(dest="plugins_command")
    for verb in ("install", "uninstall"):
        pv = plsub.add_parser(verb, help=f"pip {verb} into this agentflow's environment (restart servers and workers)")
        pv.add_argument("packages", nargs="+", metavar="NAME", help="distribution name (or pip requirement)")
    plsub.add_parser("list", help="the default: installed plugins, versions and load errors")
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

    k = sub.add_parser("keys", help="encryption keys of data at rest (AGENTFLOW_ENCRYPTION_KEY)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kg = ksub.add_parser("generate", help="print a fresh key (base64 of 32 random bytes)")
    kg.set_defaults(func=cmd_keys_generate)
    kr = ksub.add_parser("rotate", help="re-encrypt every stored value under AGENTFLOW_ENCRYPTION_KEY, "
                                        "in batches, while the system runs")
    kr.add_argument("--batch-size", type=int, default=200, help="rows a transaction (default 200)")
    kr.set_defaults(func=cmd_keys_rotate)
    return p


def main(argv: list[str] | None = None) -> int:
    from .graph.secrets import install_log_redaction

    logging.basicConfig(level=os.environ.get("AGENTFLOW_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    args = build_parser().parse_args(argv)
    from .store.crypto import BadKey

    try:
        return int(args.func(args) or 0)
    except BadKey as exc:  # a malformed AGENTFLOW_ENCRYPTION_KEY: say which, never quote it
        print(f"agentflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
