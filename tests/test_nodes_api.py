"""api node against the real HTTP test server: templates, auth, errors, retries, and the
private-address guard (including redirects)."""

from __future__ import annotations

import json

import pytest

from agentflow.graph import resilience
from agentflow.graph.errors import BlockedAddressError, ProviderError
from agentflow.graph.runtime import RunContext
from agentflow.graph.sources import http
from agentflow.graph.state import initial_state
from tests.fixtures_servers import make_spec, node_of
from tests.servers.http_api import HTTPAPIServer

pytestmark = pytest.mark.usefixtures("reset_resilience")
CANARY = "tok-canary-123456789"


def api_impl(base_url: str, *, allow_private: bool = True, source_extra=None, **config):
    source = {"id": "shopapi", "kind": "api", "base_url": base_url, "allow_private": allow_private,
              **(source_extra or {})}
    return node_of(make_spec([{"id": "call", "type": "api", "source": "shopapi", "config": config}], [source]))


def test_get_with_path_template(http_api):
    impl = api_impl(http_api.url, path="/orders/{metadata.customer}")
    update = impl(initial_state("x", {"customer": "alice"}), RunContext(env={}))
    assert update == {"api_result": {"status": 200, "body": [
        {"id": 1, "item": "keyboard", "status": "shipped"}, {"id": 2, "item": "mouse", "status": "processing"}]}}


def test_post_renders_query_headers_body_and_auth(http_api):
    impl = api_impl(f"{http_api.url}/echo/", method="POST", path="orders",
                    query={"q": "{user_input}", "n": "{metadata.n}"},
                    headers={"X-Customer": "{metadata.customer}"},
                    body={"customer": "{metadata.customer}", "n": "{metadata.n}", "note": "for {user_input}"},
                    output_key="echo", source_extra={"auth_env": "SHOP_TOKEN"})
    state = initial_state("hats", {"customer": "bob", "n": 3})
    update = impl(state, RunContext(env={"SHOP_TOKEN": CANARY}))
    call = http_api.calls[0]
    assert call.path == "/echo/orders" and call.query == {"q": "hats", "n": "3"}
    assert call.headers["x-customer"] == "bob"
    assert call.headers["authorization"] == f"Bearer {CANARY}"  # sent...
    assert call.json == {"customer": "bob", "n": 3, "note": "for hats"}  # typed when a whole field
    body = update["echo"]["body"]
    assert body["headers"]["authorization"] == "Bearer ***"  # ...but scrubbed from the update
    assert CANARY not in json.dumps(update)


def test_custom_auth_header_without_scheme(http_api):
    impl = api_impl(http_api.url, path="/echo",
                    source_extra={"auth_env": "SHOP_TOKEN", "auth_header": "X-Api-Key", "auth_scheme": None})
    impl(initial_state("x"), RunContext(env={"SHOP_TOKEN": CANARY}))
    assert http_api.calls[0].headers["x-api-key"] == CANARY


def test_path_values_cannot_escape_their_segment(http_api):
    impl = api_impl(http_api.url, path="/orders/{metadata.customer}")
    update = impl(initial_state("x", {"customer": "../status/500?x=1#"}), RunContext(env={}))
    assert update["api_result"] == {"status": 200, "body": []}
    assert http_api.calls[0].path == "/orders/..%2Fstatus%2F500%3Fx%3D1%23"


def test_text_body(http_api):
    update = api_impl(http_api.url, path="/text")(initial_state("x"), RunContext(env={}))
    assert update["api_result"] == {"status": 200, "body": "hello"}


def test_4xx_is_a_provider_error_not_retried(http_api):
    with pytest.raises(ProviderError) as info:
        api_impl(http_api.url, path="/status/404")(initial_state("x"), RunContext(env={}))
    assert str(info.value) == "API source 'shopapi' answered 404 Not Found: {\"status\": 404}"
    assert info.value.status == 404 and not info.value.retryable
    assert http_api.call_count == 1


def test_5xx_and_429_are_retried_honouring_retry_after(http_api, monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(resilience, "sleep", waited.append)
    http_api.fail_next(1, status=429, retry_after=2)
    http_api.fail_next(1, status=503)
    update = api_impl(http_api.url, path="/orders/bob")(initial_state("x"), RunContext(env={}))
    assert update["api_result"]["status"] == 200
    assert http_api.call_count == 3
    assert waited[0] == pytest.approx(2)


def test_exhausted_retries_are_readable(http_api, monkeypatch):
    monkeypatch.setattr(resilience, "sleep", lambda s: None)
    with pytest.raises(ProviderError) as info:
        api_impl(http_api.url, path="/status/502", max_retries=2)(initial_state("x"), RunContext(env={}))
    assert str(info.value).startswith("API source 'shopapi' answered 502 Bad Gateway")
    assert str(info.value).endswith("(after 3 attempts)")


def test_timeout(http_api):
    impl = api_impl(http_api.url, path="/slow", query={"s": "2"}, timeout_seconds=0.3, max_retries=0)
    with pytest.raises(ProviderError, match=r"API source 'shopapi' did not answer within 0.3 s") as info:
        impl(initial_state("x"), RunContext(env={}))
    assert info.value.retryable


def test_secret_not_in_error_when_api_echoes_it(monkeypatch, caplog):
    caplog.set_level("DEBUG")
    monkeypatch.setenv("SHOP_TOKEN", CANARY)
    with HTTPAPIServer(require_token="the-right-token") as api:
        impl = api_impl(api.url, path="/orders/bob", source_extra={"auth_env": "SHOP_TOKEN"})
        with pytest.raises(ProviderError) as info:
            impl(initial_state("x"), RunContext())
    assert "401 Unauthorized" in str(info.value) and "Bearer ***" in str(info.value)
    assert CANARY not in str(info.value) and CANARY not in caplog.text


def test_missing_auth_variable(http_api):
    impl = api_impl(http_api.url, source_extra={"auth_env": "NOPE_TOKEN"})
    with pytest.raises(Exception, match="needs the environment variable NOPE_TOKEN"):
        impl(initial_state("x"), RunContext(env={}))
    assert http_api.call_count == 0


# ---------------------------------------------------------------- address guard


@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:{port}", "http://localhost:{port}", "http://169.254.169.254",
    "http://[::ffff:127.0.0.1]:{port}", "http://10.0.0.1", "http://0.0.0.0:{port}", "http://[::1]:{port}",
])
def test_private_targets_refused_without_allow_private(http_api, base_url):
    impl = api_impl(base_url.format(port=http_api.port) + "/echo", allow_private=False)
    with pytest.raises(BlockedAddressError, match="set allow_private on the source") as info:
        impl(initial_state("x"), RunContext(env={}))
    assert not info.value.retryable and info.value.node_id == "call"
    assert http_api.call_count == 0  # nothing was sent


def test_guard_applies_to_redirect_targets(http_api, monkeypatch):
    """The test server lives on 127.0.0.1, so we let *exactly* that address pass the guard
    (standing in for a public API) and have it redirect to private addresses. The real
    guard still judges every other address, on every hop."""
    real = http.blocked_reason
    monkeypatch.setattr(http, "blocked_reason",
                        lambda ip: None if str(ip) == "127.0.0.1" else real(ip))
    ok = api_impl(http_api.url, allow_private=False, path="/orders/bob")
    assert ok(initial_state("x"), RunContext(env={}))["api_result"]["status"] == 200

    for target in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/admin",
                   "http://[::1]:8080/"):
        http_api.reset()
        impl = api_impl(http_api.url, allow_private=False, path="/redirect", query={"to": target})
        with pytest.raises(BlockedAddressError, match="after a redirect: refusing to connect to"):
            impl(initial_state("x"), RunContext(env={}))
        assert http_api.call_count == 1  # the first hop only


def test_redirect_followed_when_allowed_and_auth_stays_home(http_api):
    with HTTPAPIServer() as other:
        impl = api_impl(http_api.url, path="/redirect", query={"to": f"{other.url}/echo"},
                        source_extra={"auth_env": "SHOP_TOKEN"})
        update = impl(initial_state("x"), RunContext(env={"SHOP_TOKEN": CANARY}))
        assert update["api_result"]["status"] == 200
        assert http_api.calls[0].headers["authorization"] == f"Bearer {CANARY}"
        assert "authorization" not in other.calls[0].headers  # not sent to another origin

        same = api_impl(http_api.url, path="/redirect", query={"to": "/echo"},
                        source_extra={"auth_env": "SHOP_TOKEN"})
        same(initial_state("x"), RunContext(env={"SHOP_TOKEN": CANARY}))
        assert http_api.calls[-1].headers["authorization"] == f"Bearer {CANARY}"
