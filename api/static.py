"""The built Studio (a Next.js static export) served at `/`, after every API route."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.requests import Request
from starlette.types import Scope

from ..settings import Settings
from .errors import allowed_methods

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AgentFlow</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}
code{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><h1>AgentFlow</h1>
<p>Studio is not built: run <code>make studio</code>, then restart <code>agentflow serve</code>.</p>
<p>The REST API is up: <a href="/docs">API docs</a> &middot; <a href="/openapi.json">OpenAPI</a>
&middot; <a href="/health">health</a> &middot; <a href="/schema">WorkflowSpec schema</a>.</p>
</body></html>
"""


class StudioFiles(StaticFiles):
    """Studio's files; a path that is neither a file nor an API route is the Studio's
    404 page for a browser and the usual JSON error for an API client."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            # e.g. OPTIONS /workflows: the error handler lists the API's methods in Allow
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": "GET, HEAD"})
        wants_html = "text/html" in Headers(scope=scope).get("accept", "")
        response = await super().get_response(path, scope)
        if response.status_code == 404:
            if allowed_methods(Request(scope)):  # e.g. HEAD /health: an API path, another method
                raise HTTPException(405, "Method Not Allowed")
            if not wants_html:
                raise HTTPException(404, "Not Found")
        return response


def studio_dir(settings: Settings) -> Path | None:
    """The first built Studio found: AGENTFLOW_STUDIO_DIR, the packaged copy, the repo build."""
    import agentflow

    package = Path(agentflow.__file__).resolve().parent  # agentflow/ (a wheel's copy, or the checkout's)
    candidates = [settings.studio_dir, package / "static" / "studio", package.parent / "studio" / "out"]
    for path in candidates:
        if path is not None and (Path(path) / "index.html").is_file():
            return Path(path)
    return None


def mount_studio(app: FastAPI, settings: Settings) -> Path | None:
    """Call after every API route is registered: the mount at `/` catches the rest."""
    found = studio_dir(settings)
    if found is None:
        @app.get("/", include_in_schema=False, response_class=HTMLResponse)
        async def studio_not_built() -> HTMLResponse:
            return HTMLResponse(NOT_BUILT)

        return None
    app.mount("/", StudioFiles(directory=found, html=True), name="studio")
    return found
