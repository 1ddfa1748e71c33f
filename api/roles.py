"""Roles and the permission table: which role each API route needs, and what it audits.

Four roles, each including the one before it:

    viewer    read workflows, versions, runs, sources and schedules
    editor    + write workflows and sources, start runs (also POST /workflows/execute)
    operator  + cancel runs, manage schedules and queues, read /metrics
    admin     + audit log (and whatever the platform adds for tenants)

`PERMISSIONS` is the one table `auth.authorize` enforces, keyed by (method, route path
template). A route missing from it is admin-only (fail closed), and
tests/security/test_auth_matrix.py fails until it is added here: when you add a route,
add its line.

`Rule.action` names the audit entry a successful call writes (None: not audited; every
write must have one). `Rule.target_id` says where the target's id is: "path:<param>" or
"body:<field>" of the JSON answer.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("viewer", "editor", "operator", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
PUBLIC = "public"  # no token needed (holds no tenant data)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    role: str                       # a role of ROLES, or PUBLIC
    action: str | None = None       # audit action for a successful call
    target_type: str | None = None  # workflow, run, source, schedule ...
    target_id: str | None = None    # "path:<param>" | "body:<field>"

    @property
    def public(self) -> bool:
        return self.role == PUBLIC


def _r(role: str) -> Rule:
    return Rule(role)


def _w(role: str, action: str, target_type: str, target_id: str) -> Rule:
    return Rule(role, action, target_type, target_id)


PERMISSIONS: dict[tuple[str, str], Rule] = {
    # ---- open: liveness/readiness probes, the spec schema, Studio's local token
    ("GET", "/health"): _r(PUBLIC),
    ("GET", "/health/ready"): _r(PUBLIC),
    ("GET", "/schema"): _r(PUBLIC),
    ("GET", "/node-types"): _r("viewer"),  # names installed plugins and their load errors
    ("GET", "/auth/local-token"): _r(PUBLIC),   # checks loopback + local mode itself
    ("GET", "/auth/me"): _r("viewer"),
    ("GET", "/metrics"): _r("operator"),
    # ---- workflows
    ("POST", "/workflows/validate"): _r("viewer"),  # reads nothing, writes nothing
    ("POST", "/workflows/execute"): _w("editor", "run.execute", "run", "body:run_id"),
    ("GET", "/workflows"): _r("viewer"),
    ("POST", "/workflows"): _w("editor", "workflow.save", "workflow", "body:id"),
    ("GET", "/workflows/{workflow_id}"): _r("viewer"),
    ("PUT", "/workflows/{workflow_id}"): _w("editor", "workflow.replace", "workflow", "path:workflow_id"),
    ("DELETE", "/workflows/{workflow_id}"): _w("editor", "workflow.delete", "workflow", "path:workflow_id"),
    ("GET", "/workflows/{workflow_id}/versions"): _r("viewer"),
    ("GET", "/workflows/{workflow_id}/versions/{version}"): _r("viewer"),
    # ---- runs
    ("POST", "/workflows/{workflow_id}/runs"): _w("editor", "run.start", "run", "body:run_id"),
    ("GET", "/workflows/{workflow_id}/runs"): _r("viewer"),
    ("GET", "/runs"): _r("viewer"),
    ("GET", "/runs/{run_id}"): _r("viewer"),
    ("GET", "/runs/{run_id}/events"): _r("viewer"),
    ("POST", "/runs/{run_id}/cancel"): _w("operator", "run.cancel", "run", "path:run_id"),
    # answering a person's question is an editor's act; the audit entry names who answered
    ("POST", "/runs/{run_id}/resume"): _w("editor", "run.resume", "run", "path:run_id"),
    # ---- sources
    ("GET", "/sources"): _r("viewer"),
    ("POST", "/sources"): _w("editor", "source.create", "source", "body:id"),
    ("GET", "/sources/{source_id}"): _r("viewer"),
    ("PUT", "/sources/{source_id}"): _w("editor", "source.put", "source", "path:source_id"),
    ("DELETE", "/sources/{source_id}"): _w("editor", "source.delete", "source", "path:source_id"),
    # ---- schedules
    ("GET", "/schedules"): _r("viewer"),
    ("POST", "/schedules"): _w("operator", "schedule.create", "schedule", "body:id"),
    ("GET", "/schedules/{schedule_id}"): _r("viewer"),
    ("PUT", "/schedules/{schedule_id}"): _w("operator", "schedule.replace", "schedule", "path:schedule_id"),
    ("DELETE", "/schedules/{schedule_id}"): _w("operator", "schedule.delete", "schedule", "path:schedule_id"),
    # ---- audit
    ("GET", "/audit"): _r("admin"),
    # ---- issue 8: versions, trace + re-run, dashboard, webhooks
    ("GET", "/workflows/{workflow_id}/versions/{a}/diff/{b}"): _r("viewer"),
    ("POST", "/workflows/{workflow_id}/rollback"): _w("editor", "workflow.rollback", "workflow", "path:workflow_id"),
    ("GET", "/runs/{run_id}/trace"): _r("viewer"),
    ("POST", "/runs/{run_id}/rerun"): _w("editor", "run.rerun", "run", "body:run_id"),
    ("GET", "/metrics/summary"): _r("viewer"),
    ("GET", "/hooks"): _r("viewer"),
    ("POST", "/hooks"): _w("operator", "hook.create", "hook", "body:id"),
    ("GET", "/hooks/{hook_id}"): _r("viewer"),
    ("DELETE", "/hooks/{hook_id}"): _w("operator", "hook.delete", "hook", "path:hook_id"),
    # the trigger: no token, authenticated by the HMAC signature of its body (routes/hooks.py)
    # audited as the hook once the route names it with auth.attribute(request, tenant, "hook:<id>")
    ("POST", "/hooks/{hook_id}"): _w(PUBLIC, "run.start_hook", "run", "body:run_id"),
    ("GET", "/webhooks"): _r("viewer"),
    ("POST", "/webhooks"): _w("operator", "webhook.create", "webhook", "body:id"),
    ("GET", "/webhooks/{webhook_id}"): _r("viewer"),
    ("DELETE", "/webhooks/{webhook_id}"): _w("operator", "webhook.delete", "webhook", "path:webhook_id"),
    ("GET", "/webhooks/{webhook_id}/deliveries"): _r("viewer"),
    # ---- issue 5: queue limits of the tenant's workflows with live limiter figures (read-only)
    ("GET", "/queues"): _r("viewer"),
    ("GET", "/queues/{queue_id}"): _r("viewer"),
    # ---- issue 18: MCP over streamable HTTP (api/mcp.py). Listing tools is a read; a call
    # that starts a run checks the editor role itself. Stateless: GET answers 405, DELETE 204.
    ("GET", "/mcp"): _r("viewer"),
    ("POST", "/mcp"): Rule("viewer", "mcp.request", "mcp", None),
    ("DELETE", "/mcp"): Rule("viewer", "mcp.request", "mcp", None),
}

# WebSockets authenticate themselves when they open (api/collab.py): the role that may
# connect and watch, and the role whose edits are applied (a viewer's are refused).
SOCKETS: dict[str, tuple[str, str]] = {
    "/workflows/{workflow_id}/collab": ("viewer", "editor"),
}

# A route nobody listed: only an admin may call it, and a write is still audited.
UNLISTED = Rule("admin")


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of a route template, or None when the table does not list it."""
    method = method.upper()
    if method == "HEAD":
        method = "GET"
    return PERMISSIONS.get((method, path))


def effective_rule(method: str, path: str) -> Rule:
    rule = rule_for(method, path)
    if rule is not None:
        return rule
    if method.upper() in READ_METHODS:
        return UNLISTED
    return Rule("admin", f"{method.upper()} {path}", "route", None)


def role_allows(have: str, need: str) -> bool:
    """True when role `have` includes role `need`."""
    if need == PUBLIC:
        return True
    return RANK.get(have, -1) >= RANK.get(need, len(ROLES))


def highest_role(value) -> str | None:
    """A role claim: one role name, or a list of names (the highest known one counts)."""
    if isinstance(value, str):
        return value if value in RANK else None
    if isinstance(value, (list, tuple)):
        known = [v for v in value if isinstance(v, str) and v in RANK]
        return max(known, key=RANK.__getitem__) if known else None
    return None
