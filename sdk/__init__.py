"""Python SDK for the AgentFlow REST API.

    from agentflow.client import AgentFlow

    client = AgentFlow("http://127.0.0.1:8000", token=None)
    client.workflows.save(spec)                        # a dict or an agentflow.graph.spec.WorkflowSpec
    state = client.execute("support-triage", "Where is my order?", metadata={"customer": "alice"})

    run = client.runs.submit("support-triage", "hello", stream=True)
    for event in run.stream():                         # StepEvent, TokenEvent ..., then EndEvent
        ...
    run.trace(); run.rerun("writer", {"user_input": "shorter please"}); run.cancel()

`AsyncAgentFlow` has the same API for asyncio. Errors: `APIError(status, detail, errors)`
and its subclasses `ValidationFailed` (422), `NotFound` (404), `AuthError` (401/403),
`Conflict` (409); `RunFailed` and `RunTimeout` from execute()/Run.result().
"""

from .aio import AsyncAgentFlow, AsyncRun
from .errors import (AgentFlowError, APIError, AuthError, Conflict, NotFound, RunFailed, RunTimeout,
                     TransportError, ValidationFailed)
from .models import EndEvent, ErrorEvent, Event, StepEvent, TokenEvent
from .sync import AgentFlow, Run

__all__ = ["AgentFlow", "AsyncAgentFlow", "Run", "AsyncRun", "AgentFlowError", "APIError", "AuthError",
           "Conflict", "NotFound", "RunFailed", "RunTimeout", "TransportError", "ValidationFailed",
           "Event", "StepEvent", "TokenEvent", "EndEvent", "ErrorEvent"]
