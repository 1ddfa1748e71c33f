"""api nodes, run through the API, refuse loopback, private and link-local addresses
(checked after DNS resolution, and again on every redirect) unless the source sets
allow_private. Only the name lookup is faked here; the real guard judges every address."""

from __future__ import annotations

import json
import socket

import pytest

from agentflow.graph.sources import http as guarded_http
from tests.servers.http_api import HTTPAPIServer

FAKE_NAMES = {
    "internal.test": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "split.test": ["93.184.216.34", "127.0.0.1"],  # one public, one loopback answer
    "v6.test": ["::1"],
}


@pytest.fixture
def fake_dns(monkeypatch):
    """getaddrinfo answers FAKE_NAMES; every other name goes to the real resolver."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host in FAKE_NAMES:
            out = []
            for ip in FAKE_NAMES[host]:
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                addr = (ip, port or 0, 0, 0) if family == socket.AF_INET6 else (ip, port or 0)
                out.append((family, socket.SOCK_STREAM, 6, "", addr))
            return out
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def target():
    with HTTPAPIServer() as server:
        yield server


@pytest.fixture
def api(make_api):
    return make_api(AGENTFLOW_RATE_TENANT_PER_MINUTE="0", AGENTFLOW_RATE_IP_PER_MINUTE="0")


def api_spec(base_url: str, path: str = "/echo", allow_private: bool | None = None, query=None) -> dict:
    source = {"id": "target", "kind": "api", "base_url": base_url}
    if allow_private is not None:
        source["allow_private"] = allow_private
    return {"id": "ssrf", "name": "ssrf", "start_node": "input",
            "nodes": [{"id": "input", "type": "input"},
                      {"id": "call", "type": "api", "source": "target",
                       "config": {"method": "GET", "path": path, "query": query or {}, "output_key": "api_result",
                                  "max_retries": 0}}],
            "edges": [{"from": "input", "to": "call"}],
            "sources": [source]}


def execute(api, spec: dict) -> dict:
    response = api.call("POST", "/workflows/execute", json={"spec": spec, "initial_state": {"user_input": "x"}})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("base", [
    "http://127.0.0.1:{port}", "http://localhost:{port}", "http://169.254.169.254",
    "http://[::1]:{port}", "http://[::ffff:127.0.0.1]:{port}", "http://0.0.0.0:{port}",
    "http://10.0.0.1", "http://192.168.1.1", "http://2130706433:{port}",
    "http://internal.test:{port}", "http://metadata.test", "http://split.test:{port}", "http://v6.test:{port}",
])
def test_private_targets_are_refused(api, target, fake_dns, base):
    result = execute(api, api_spec(base.format(port=target.port)))
    assert result["status"] == "failed", result
    text = json.dumps(result)
    assert "refusing to connect" in text and "allow_private" in text, text
    assert target.call_count == 0  # nothing was sent


def test_allow_private_opens_the_door_explicitly(api, target, fake_dns):
    for base in (f"http://127.0.0.1:{target.port}", f"http://internal.test:{target.port}"):
        result = execute(api, api_spec(base, allow_private=True))
        assert result["status"] == "succeeded", result
    assert target.call_count == 2
    refused = execute(api, api_spec(f"http://127.0.0.1:{target.port}", allow_private=False))
    assert refused["status"] == "failed"


@pytest.mark.parametrize("to", [
    "http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/echo", "http://internal.test:{port}/echo",
    "http://[::1]:{port}/echo", "http://10.1.2.3/admin"])
def test_redirects_to_private_targets_are_refused(api, target, fake_dns, monkeypatch, to):
    """The test server lives on 127.0.0.1: let exactly that literal address pass (standing
    in for a public API) and have it redirect elsewhere; every other address is judged
    by the real guard, on every hop."""
    real = guarded_http.blocked_reason
    monkeypatch.setattr(guarded_http, "blocked_reason", lambda ip: None if str(ip) == "127.0.0.1" else real(ip))
    # `localhost` and internal.test resolve to 127.0.0.1 too: judge those names by their answer instead
    monkeypatch.setitem(FAKE_NAMES, "internal.test", ["127.0.0.2"])
    monkeypatch.setitem(FAKE_NAMES, "localhost", ["127.0.0.2"])
    result = execute(api, api_spec(f"http://127.0.0.1:{target.port}", path="/redirect",
                                   query={"to": to.format(port=target.port)}))
    assert result["status"] == "failed", result
    assert "after a redirect: refusing to connect" in json.dumps(result)
    assert target.call_count == 1  # the first hop only


def test_a_source_cannot_smuggle_credentials_or_schemes(api):
    spec = api_spec("http://user:pass@93.184.216.34")
    r = api.call("PUT", "/sources/target", json=spec["sources"][0])
    assert r.status_code == 422 and "credentials in base_url" in r.text
    r = api.call("POST", "/workflows/validate", json=spec)  # nor a source inside a spec
    assert r.status_code == 422 and "credentials in base_url" in r.text and "pass@" not in r.text
    for base in ("file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com"):
        r = api.call("POST", "/workflows/validate", json=api_spec(base))
        assert r.status_code == 422, (base, r.text)
