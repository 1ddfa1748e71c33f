"""api: one HTTP request to an API source; the answer is {"status": code, "body": json-or-text}."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ..sources import http, status_error
from ..templates import lookup, render, render_value, template_fields
from .base import NodeImpl


def render_path(template: str, state: dict) -> str:
    """Render a path template with every value percent-encoded, so a value such as
    "../admin?x=1" stays one path segment instead of changing the URL."""
    quoted: dict[str, Any] = {}
    for name in template_fields(template):
        value = lookup(state, name)
        text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
        cur = quoted
        *parents, leaf = name.split(".")
        for part in parents:
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                break
            cur = nxt
        else:
            cur[leaf] = quote(text, safe="")
    return render(template, quoted)


def _query_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, list)):
        return value
    return json.dumps(value) if isinstance(value, dict) else str(value)


def parse_body(content: bytes, content_type: str) -> Any:
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


class APINodeImpl(NodeImpl):
    calls_outside = True
    default_timeout = 10.0

    def run(self, state, ctx):
        cfg, src = self.node.config, self.source
        path = render_path(cfg.path, state) if cfg.path else ""
        url = src.base_url.rstrip("/") + ("/" + path.lstrip("/") if path else "")
        query = {k: _query_value(render_value(v, state)) for k, v in cfg.query.items()}
        query = {k: v for k, v in query.items() if v is not None}
        headers = {k: render(v, state) for k, v in cfg.headers.items()}
        body = render_value(cfg.body, state) if cfg.body is not None else None
        secret_headers = {}
        if src.auth_env:
            secret = self.secret(src.auth_env, ctx)  # read at call time, never kept
            secret_headers[src.auth_header] = f"{src.auth_scheme} {secret}" if src.auth_scheme else secret

        result = self.call_source(lambda: self._request(cfg.method, url, query, headers, body,
                                                        secret_headers))
        return {cfg.output_key: {"status": result.status,
                                 "body": parse_body(result.content, result.headers.get("content-type", ""))}}

    def _request(self, method, url, query, headers, body, secret_headers) -> http.HTTPResult:
        result = http.send(self.source.id, method, url, allow_private=self.source.allow_private,
                           params=query, headers=headers, json_body=body, timeout=self.timeout,
                           secret_headers=secret_headers)
        if not 200 <= result.status < 300:
            detail = result.content[:500].decode("utf-8", errors="replace")
            raise status_error("api", self.source.id, result.status, detail, result.headers)
        return result
