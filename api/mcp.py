"""AgentFlow as an MCP server (contract section 8): a tenant's saved workflows are its tools.

Each workflow is a tool named by its id, whose input is the workflow's input
(`user_input`, a string, and `metadata`, an object). A call starts a run of the current
version and answers its `final_output` once it ends; a run that does not end within
AGENTFLOW_MCP_CALL_WAIT_S seconds, or that waits (a `human` node), is answered with its
run id and status, to follow on GET /runs/{id}.

Two transports serve the same handlers (the SDK's low-level `Server`):
- `agentflow mcp`: stdio, for a local client that starts it; it acts for one tenant
  (`--tenant`, default "default") as its admin, like any local command.
- `/mcp` on the API: streamable HTTP, stateless, JSON answers. It is an ordinary API route,
  so the same `authorize` dependency authenticates the Bearer JWT, applies the tenant's
  request limit and audits the call; a call that starts a run needs the editor role, as
  POST /workflows/{id}/runs does. Stateless: any replica answers any request.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Depends, Request
from fastapi.responses import Response

from ..store.models import DEFAULT_TENANT
from ..store.runs import TERMINAL
from .auth import Principal, authorize
from .errors import ApiError
from .roles import role_allows

log = logging.getLogger("agentflow.api.mcp")
PRINCIPAL_KEY = "agentflow.mcp.principal"  # where /mcp leaves the caller for the handlers
MAX_TOOLS = 1000

INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "user_input": {"type": "string", "description": "The run's user_input."},
        "metadata": {"type": "object", "description": "The run's metadata, e.g. {\"customer\": \"alice\"}.",
                     "additionalProperties": True},
    },
    "required": ["user_input"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Caller:
    tenant: str
    role: str
    subject: str


def _caller(ctx, default: Caller | None) -> Caller | None:
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None) or {}
    principal = scope.get(PRINCIPAL_KEY)
    if principal is not None:
        return Caller(principal.tenant or DEFAULT_TENANT, principal.role, principal.subject)
    return default


def build_server(services, default: Caller | None = None):
    """The MCP server over `services` (api/deps.py Services). `default`: who a caller
    without an HTTP principal is (stdio); None refuses such calls."""
    import mcp_types as types
    from mcp.server.lowlevel import Server

    def text_result(text: str, structured: dict | None = None, error: bool = False):
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=structured,
                                    is_error=error)

    def list_workflows(tenant: str) -> list:
        tools, after = [], None
        while len(tools) < MAX_TOOLS:
            items, after = services.workflows.list(tenant, limit=200, after=after)
            for wf in items:
                description = wf.get("name") or wf["id"]
                if wf.get("description"):
                    description += f": {wf['description']}"
                tools.append(types.Tool(name=wf["id"], title=wf.get("name"), description=description[:2000],
                                        input_schema=INPUT_SCHEMA))
            if after is None:
                break
        return tools[:MAX_TOOLS]

    async def on_list_tools(ctx, params):
        caller = _caller(ctx, default)
        if caller is None:
            return types.ListToolsResult(tools=[])
        return types.ListToolsResult(tools=await anyio.to_thread.run_sync(list_workflows, caller.tenant))

    async def on_call_tool(ctx, params):
        caller = _caller(ctx, default)
        if caller is None or not role_allows(caller.role, "editor"):
            role = caller.role if caller else "none"
            return text_result(f"forbidden: role {role!r} cannot start runs (needs editor)", error=True)
        args = dict(params.arguments or {})
        problems = _check_arguments(args)
        if problems:
            return text_result(problems, error=True)
        run_input = {"user_input": args.get("user_input", ""), "metadata": args.get("metadata") or {}}
        try:
            started = await anyio.to_thread.run_sync(_start, services, caller, params.name, run_input)
        except ApiError as exc:
            return text_result(str(exc.detail), error=True)
        if started is None:
            return text_result(f"no workflow {params.name!r}", error=True)
        record = await _wait(services, started, services.settings.mcp_call_wait_s)
        return _answer(record, started, text_result)

    return Server("agentflow", version=_version(), instructions=(
        "Each tool runs one saved AgentFlow workflow with the given user_input and metadata and answers "
        "its final output, or its run id when the run takes longer or waits for a person."),
        on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentflow")
    except Exception:
        return "0"


def _check_arguments(args: dict) -> str | None:
    unknown = sorted(set(args) - {"user_input", "metadata"})
    if unknown:
        return f"unknown arguments: {', '.join(unknown)} (a workflow takes user_input and metadata)"
    if not isinstance(args.get("user_input", ""), str):
        return "user_input must be a string"
    if args.get("metadata") is not None and not isinstance(args["metadata"], dict):
        return "metadata must be an object"
    return None


def _start(services, caller: Caller, workflow_id: str, run_input: dict) -> str | None:
    """The run id, None when the tenant has no such workflow; an ApiError when it could not be queued."""
    from .routes.runs import submit_run
    from .schemas import RunCreate

    try:
        return submit_run(services, caller.tenant, workflow_id, RunCreate(input=run_input), None)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


async def _wait(services, run_id: str, bound: float) -> dict:
    """The run's record once it ends or waits, or after `bound` seconds."""
    deadline = time.monotonic() + bound
    delay = 0.05
    while True:
        status = await anyio.to_thread.run_sync(services.runs.status, run_id)
        if status in TERMINAL or status == "waiting" or time.monotonic() >= deadline:
            return await anyio.to_thread.run_sync(lambda: services.runs.get(run_id, with_steps=False) or {})
        await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def _answer(record: dict, run_id: str, text_result):
    status = record.get("status", "queued")
    if status == "succeeded":
        output = (record.get("state") or {}).get("final_output")
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
        return text_result(text, {"run_id": run_id, "status": status, "final_output": output})
    if status in ("failed", "cancelled"):
        return text_result(f"run {run_id} {status}: {record.get('error') or ''}".strip(),
                           {"run_id": run_id, "status": status, "error": record.get("error")}, error=True)
    return text_result(f"run {run_id} is {status}; follow it on GET /runs/{run_id}",
                       {"run_id": run_id, "status": status})


# ---------------------------------------------------------------- /mcp on the API


class MCPEndpoint:
    """The streamable-HTTP side: started and stopped with the API (`run()` in its lifespan)."""

    def __init__(self, services):
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        self.server = build_server(services)
        # the API's own Host/Origin rules and auth apply; stateless + JSON: no session to pin
        self.manager = StreamableHTTPSessionManager(app=self.server, json_response=True, stateless=True,
                                                    security_settings=None)

    def run(self):
        return self.manager.run()

    async def handle(self, scope, receive, send, principal) -> None:
        scope = dict(scope)
        scope[PRINCIPAL_KEY] = principal
        await self.manager.asgi_app(scope, receive, send)


def install(app, services) -> MCPEndpoint:
    """Add /mcp to the API as an ordinary route (auth, limits, audit, errors as for any)."""
    endpoint = MCPEndpoint(services)

    class Delegate(Response):
        """Lets the MCP transport write the answer itself."""

        def __init__(self, principal: Principal):
            super().__init__()
            self.principal = principal

        async def __call__(self, scope, receive, send) -> None:
            await endpoint.handle(scope, receive, send, self.principal)

    async def mcp(request: Request, principal: Principal = Depends(authorize)) -> Response:
        # Stateless: answered here, or the Studio mount at "/" would take these methods.
        if request.method == "DELETE":
            return Response(status_code=204)  # ending a session: there is none, so nothing to do
        if request.method != "POST":
            # no session to resume: GET would hold an idle event stream open
            raise ApiError(405, "the MCP endpoint is stateless: send JSON-RPC messages with POST",
                           headers={"Allow": "POST, DELETE"})
        return Delegate(principal)

    app.add_api_route("/mcp", mcp, methods=["GET", "POST", "DELETE"], include_in_schema=True,
                      summary="MCP (streamable HTTP): the tenant's workflows as tools",
                      response_class=Response)
    return endpoint


# ---------------------------------------------------------------- agentflow mcp (stdio)


def serve_stdio(tenant: str = DEFAULT_TENANT) -> int:
    from mcp.server.stdio import stdio_server

    from ..api.deps import Services
    from ..settings import get_settings
    from ..store.db import migrate

    settings = get_settings()
    migrate(settings.db_url)
    services = Services.build(settings)
    server = build_server(services, default=Caller(tenant, "admin", "local-mcp"))

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        services.close()
    return 0
