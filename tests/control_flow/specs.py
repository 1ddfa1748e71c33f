"""Specs shared by the control-flow tests (workflow and map nodes, on_error edges, retry)."""

from __future__ import annotations


def child(workflow_id: str = "cf-child", prefix: str = "child saw") -> dict:
    """user_input -> final_output = '<prefix> <user_input>' (no source: nothing to pay)."""
    return {"id": workflow_id, "name": "child", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "out", "type": "aggregator",
                       "config": {"fields": ["user_input"], "template": f"{prefix} {{user_input}}"}}],
            "edges": [{"from": "in", "to": "out"}]}


def api_child(workflow_id: str, base_url: str, path: str = "/echo/{user_input}") -> dict:
    """A child whose one call goes to the stand-in HTTP API; final_output = the reply."""
    return {"id": workflow_id, "name": "api child", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "call", "type": "api", "source": "svc",
                       "config": {"path": path, "output_key": "api_result", "max_retries": 0}},
                      {"id": "out", "type": "aggregator", "config": {"fields": ["api_result"]}}],
            "edges": [{"from": "in", "to": "call"}, {"from": "call", "to": "out"}],
            "sources": [{"id": "svc", "kind": "api", "base_url": base_url, "allow_private": True}]}


def parent(workflow_id: str = "cf-parent", child_id: str = "cf-child", version: int | None = None) -> dict:
    cfg = {"workflow": child_id, "input": "hello {metadata.who}", "output_key": "child_answer"}
    if version is not None:
        cfg["version"] = version
    return {"id": workflow_id, "name": "parent", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "sub", "type": "workflow", "config": cfg},
                      {"id": "out", "type": "aggregator", "config": {"fields": ["child_answer"]}}],
            "edges": [{"from": "in", "to": "sub"}, {"from": "sub", "to": "out"}]}


def mapper(workflow_id: str = "cf-map", child_id: str = "cf-child", max_items: int = 1000) -> dict:
    """Maps the child over metadata.items ({"n": ...} objects)."""
    return {"id": workflow_id, "name": "map", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "each", "type": "map",
                       "config": {"over": "metadata.items", "workflow": child_id, "input": "{item.n}",
                                  "output_key": "answers", "max_items": max_items}},
                      {"id": "out", "type": "aggregator", "config": {"fields": ["answers"]}}],
            "edges": [{"from": "in", "to": "each"}, {"from": "each", "to": "out"}]}


def caught(workflow_id: str, child_id: str) -> dict:
    """A workflow node whose failure an on_error edge catches: `handle` gets state.error."""
    return {"id": workflow_id, "name": "caught", "start_node": "in",
            "nodes": [{"id": "in", "type": "input"},
                      {"id": "sub", "type": "workflow", "config": {"workflow": child_id, "output_key": "child_answer"}},
                      {"id": "ok", "type": "aggregator", "config": {"fields": ["child_answer"]}},
                      {"id": "handle", "type": "aggregator",
                       "config": {"fields": ["error"], "template": "recovered from {error.node}: {error.message}"}}],
            "edges": [{"from": "in", "to": "sub"}, {"from": "sub", "to": "ok"},
                      {"from": "sub", "to": "handle", "on_error": True}]}
