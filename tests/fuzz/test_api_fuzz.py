"""Fuzzing the API with what clients really send by mistake: raw bytes, malformed JSON,
huge bodies, deep nesting, unicode everywhere, 10,000-node specs.

Never a 5xx, never a hang (every answer within seconds), memory bounded. The schema-driven
fuzzing of every operation (schemathesis) lives in tests/security/test_schemathesis.py; this
module covers what a schema cannot describe. The app runs embedded on SQLite here, and on
PostgreSQL in the `postgres`-marked tests (PostgreSQL refuses some values SQLite keeps,
e.g. NUL characters in text).
"""

from __future__ import annotations

import base64
import json
import re
import time
import tracemalloc
from typing import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import big_spec
from tests.helpers import triage

SLOW = 5.0  # seconds: any single answer slower than this counts as a hang

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _app_client(monkeypatch, tmp_path, **env: str) -> TestClient:
    from agentflow.api.main import create_app
    from agentflow.settings import Settings

    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    base = {"AGENTFLOW_LOAD_EXAMPLES": "0", "AGENTFLOW_AUTH": "off",
            "AGENTFLOW_RATE_TENANT_PER_MINUTE": "0", "AGENTFLOW_RATE_IP_PER_MINUTE": "0"}
    for key, value in {**base, **env}.items():
        monkeypatch.setenv(key, value)
    return TestClient(create_app(Settings()), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    mp = pytest.MonkeyPatch()
    try:
        with _app_client(mp, tmp_path_factory.mktemp("fuzzapi")) as c:
            assert c.post("/workflows", json=triage()).status_code == 201
            yield c
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def pg_client(tmp_path_factory) -> Iterator[TestClient]:
    from tests.databases import fresh_database

    mp = pytest.MonkeyPatch()
    try:
        with fresh_database() as url:
            with _app_client(mp, tmp_path_factory.mktemp("fuzzpg"), DATABASE_URL=url) as c:
                assert c.post("/workflows", json=triage()).status_code == 201
                yield c
            from agentflow.store.db import get_engine

            get_engine(url).dispose()
    finally:
        mp.undo()


def check(response, started: float, what: str) -> None:
    elapsed = time.perf_counter() - started
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    assert elapsed < SLOW, f"{what}: answered after {elapsed:.1f} s"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert "detail" in body, f"{what}: error without detail: {body}"


def send(client: TestClient, method: str, path: str, content: bytes | None = None,
         headers: dict | None = None):
    t0 = time.perf_counter()
    r = client.request(method, path, content=content, headers=headers or {})
    check(r, t0, f"{method} {path} {(content or b'')[:80]!r}")
    return r


# ---------------------------------------------------------------- routes and path values

# (method, path template); the SSE stream is left out (it streams until the run ends)
JSON_ROUTES = [
    ("POST", "/workflows/validate"), ("POST", "/workflows/execute"), ("POST", "/workflows"),
    ("PUT", "/workflows/{id}"), ("POST", "/workflows/{id}/runs"), ("POST", "/runs/{id}/cancel"),
    ("POST", "/sources"), ("PUT", "/sources/{id}"), ("POST", "/schedules"), ("PUT", "/schedules/{id}"),
    ("POST", "/workflows/{id}/rollback"), ("POST", "/runs/{id}/rerun"), ("POST", "/hooks"),
    ("POST", "/webhooks"),
]
READ_ROUTES = [
    ("GET", "/workflows/{id}"), ("GET", "/workflows/{id}/versions"), ("GET", "/workflows/{id}/versions/{n}"),
    ("GET", "/workflows/{id}/runs"), ("GET", "/runs/{id}"), ("GET", "/runs/{id}/trace"),
    ("GET", "/sources/{id}"), ("GET", "/schedules/{id}"), ("DELETE", "/schedules/{id}"),
    ("DELETE", "/sources/{id}"), ("GET", "/queues/{id}"), ("GET", "/webhooks/{id}/deliveries"),
    ("GET", "/workflows/{id}/versions/{n}/diff/{n}"), ("GET", "/hooks/{id}"),
]
LIST_ROUTES = ["/workflows", "/runs", "/sources", "/schedules", "/audit", "/hooks", "/webhooks", "/queues"]

path_values = st.one_of(
    st.sampled_from(["triage", "support-triage", "x" * 300, "..", "%2e%2e", "%00", "%ff%fe", "a%2Fb",
                     "00000000-0000-0000-0000-000000000000", "-1", "0", "99999999999999999999", "1e9",
                     "%F0%9F%99%82", "null", "true", "[]", "{}", "%20"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"), min_size=1, max_size=40),
)


def fill(template: str, value: str) -> str:
    pre_encoded = re.fullmatch(r"(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+", value) is not None
    value = value if pre_encoded else quote(value, safe="")
    return template.replace("{id}", value).replace("{n}", value)


json_leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
             | st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
json_values = st.recursive(json_leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.sampled_from(["id", "name", "spec", "input", "nodes", "edges", "start_node", "type", "config", "kind",
                     "workflow_id", "cron", "interval_seconds", "url", "events", "initial_state", "metadata",
                     "user_input", "x"]) | st.text(max_size=6), c, max_size=6), max_leaves=25)

malformed = st.sampled_from([
    b"", b" ", b"{", b"}", b"[", b"{\"a\":}", b"{\"a\" 1}", b"[1,2", b"{'a': 1}", b"NaN", b"Infinity", b"-Infinity",
    b"{\"a\": NaN}", b"{\"a\": 1e999999}", b"\"\\ud800\"", b"\"\\u0000\"", b"{\"id\": \"\\u0000\"}", b"\xef\xbb\xbf{}",
    "{}".encode("utf-16"), b"\xff\xfe\xfd", b"\x00\x00\x00", b"null", b"true", b"0", b"-0", b"1" * 5000,
    b"{\"a\": " + b"9" * 5000 + b"}", b"{\"a\":1,\"a\":2}", b"[" * 100_000, b"{\"a\":" * 50_000,
    b"[" * 99 + b"]" * 99, b"{\"spec\": {\"nodes\": \"" + b"\\" * 1001 + b"\"}}", b"\"" + "é🙂".encode() * 1000 + b"\"",
])

bodies = st.one_of(malformed, st.binary(max_size=300),
                   json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
                   st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "*/*"])


@FUZZ
@given(route=st.sampled_from(JSON_ROUTES), value=path_values, body=bodies, ctype=content_types)
def test_raw_bodies_never_5xx_nor_hang(client, route, value, body, ctype):
    method, template = route
    headers = {"content-type": ctype} if ctype else {}
    send(client, method, fill(template, value), body, headers)


@FUZZ
@given(route=st.sampled_from(READ_ROUTES), value=path_values)
def test_path_values_never_5xx(client, route, value):
    method, template = route
    send(client, method, fill(template, value))


@FUZZ
@given(path=st.sampled_from(LIST_ROUTES), limit=st.one_of(st.integers(-5, 10**12).map(str), path_values),
       cursor=st.one_of(path_values, st.binary(max_size=40).map(
           lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))))
def test_list_queries_never_5xx(client, path, limit, cursor):
    send(client, "GET", f"{path}?limit={quote(limit, safe='')}&cursor={quote(cursor, safe='')}")


# ---------------------------------------------------------------- specific shapes


def test_body_over_the_limit_is_413_without_reading_it_all(client):
    big = b'{"description": "' + b"x" * 3_000_000 + b'"}'
    r = send(client, "POST", "/workflows/validate", big, {"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_chunked_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"[" + b"1," * 50_000 + b"1]"

    t0 = time.perf_counter()
    r = client.post("/workflows/validate", content=chunks(), headers={"content-type": "application/json"})
    check(r, t0, "chunked 4 MB")
    assert r.status_code == 413


def test_a_big_body_under_the_limit_is_answered(client):
    spec = triage()
    spec["description"] = "é🙂" * 200_000  # 1.2 MB of multi-byte text
    r = send(client, "POST", "/workflows/validate", json.dumps(spec, ensure_ascii=False).encode(),
             {"content-type": "application/json"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_a_422(client, opener, closer):
    for depth in (101, 1_000, 200_000):
        body = (opener * depth + "1" + closer * depth).encode()
        r = send(client, "POST", "/workflows/validate", body, {"content-type": "application/json"})
        assert r.status_code in (413, 422), (depth, r.status_code)


def test_deep_nesting_inside_a_spec_value_is_a_422(client):
    spec = triage()
    deep: dict = {}
    cur = deep
    for _ in range(150):
        cur["x"] = {}
        cur = cur["x"]
    spec["nodes"][0]["config"] = {"defaults": deep}
    r = send(client, "POST", "/workflows", json.dumps(spec).encode(), {"content-type": "application/json"})
    assert r.status_code == 422


UNICODE_SAMPLES = ["é", "🙂", "\u202eevil", "a\u0301", "\u0000", "\ufeff", "\u2028", "𝔘𝔫𝔦", "\U0010ffff",
                   "日本語", "\x1b[31m", "' OR 1=1 --", "{user_input}", "{{", "%s%n"]


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_unicode_in_names_prompts_and_inputs(client, text):
    _unicode_round_trip(client, text)


def _unicode_round_trip(client, text: str) -> None:
    spec = triage()
    spec["id"] = "uni"
    spec["name"] = f"name {text}"
    spec["description"] = f"description {text}"
    writer = next(n for n in spec["nodes"] if n["id"] == "writer")
    writer["config"]["prompt"] = f"Answer {text}: {{user_input}}"
    r = send(client, "PUT", "/workflows/uni", json.dumps(spec, ensure_ascii=False).encode(),
             {"content-type": "application/json"})
    assert r.status_code in (200, 201, 422), r.text
    if r.status_code != 422:
        got = send(client, "GET", "/workflows/uni").json()
        assert got["name"] == spec["name"] and got["spec"]["nodes"] == json.loads(json.dumps(spec))["nodes"]
        send(client, "GET", "/workflows?q=" + quote(text))
    bad_id = dict(spec, id=f"id{text}")
    r = send(client, "POST", "/workflows", json.dumps(bad_id, ensure_ascii=False).encode(),
             {"content-type": "application/json"})
    assert r.status_code == 422  # ids are [A-Za-z_][A-Za-z0-9_-]*
    r = send(client, "POST", "/workflows/support-triage/runs",
             json.dumps({"input": {"user_input": text, "metadata": {text: text}}}, ensure_ascii=False).encode(),
             {"content-type": "application/json"})
    assert r.status_code in (202, 404, 422)


# ---------------------------------------------------------------- 10,000-node specs


def test_ten_thousand_node_spec_through_the_api(client):
    spec = big_spec(10_000)
    body = json.dumps(spec).encode()
    assert len(body) < 2_000_000, len(body)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        r = client.post("/workflows/validate", content=body, headers={"content-type": "application/json"})
        valid_s = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["valid"], r.text[:500]
        spec["edges"].append({"from": "n1", "to": "missing"})
        spec["nodes"][3]["config"]["fields"] = []
        t0 = time.perf_counter()
        r = client.post("/workflows/validate", json=spec)
        invalid_s = time.perf_counter() - t0
        assert r.status_code == 422 and len(r.json()["errors"]) == 2, r.text[:500]
        t0 = time.perf_counter()
        spec["edges"].pop()
        spec["nodes"][3]["config"]["fields"] = ["user_input"]
        r = client.post("/workflows", json=spec)
        save_s = time.perf_counter() - t0
        assert r.status_code == 201, r.text[:500]
        t0 = time.perf_counter()
        r = client.get("/workflows/big")
        get_s = time.perf_counter() - t0
        assert r.status_code == 200 and len(r.json()["spec"]["nodes"]) == 10_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for what, seconds in (("validate", valid_s), ("validate (invalid)", invalid_s), ("save", save_s), ("get", get_s)):
        assert seconds < 20, f"{what} of a 10k-node spec took {seconds:.1f} s (under tracemalloc)"
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_unicode_on_postgres(pg_client, text):
    _unicode_round_trip(pg_client, text)


@pytest.mark.postgres
@FUZZ
@given(route=st.sampled_from([r for r in JSON_ROUTES if r[1] != "/workflows/execute"]), value=path_values,
       body=st.one_of(malformed, json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode())))
def test_raw_bodies_on_postgres(pg_client, route, value, body):
    method, template = route
    send(pg_client, method, fill(template, value), body, {"content-type": "application/json"})


@pytest.mark.postgres
@FUZZ
@given(route=st.sampled_from(READ_ROUTES), value=path_values)
def test_path_values_on_postgres(pg_client, route, value):
    method, template = route
    send(pg_client, method, fill(template, value))


@pytest.mark.postgres
def test_nul_is_a_422_not_a_database_outage(pg_client, client):
    """Regression: a NUL character in a JSON body or a path reached PostgreSQL, which refused
    it, and the API answered 503 "database unavailable"."""
    for c in (pg_client, client):
        spec = dict(triage(), name="a\u0000b")
        r = send(c, "POST", "/workflows", json.dumps(spec).encode(), {"content-type": "application/json"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        r = send(c, "POST", "/workflows/support-triage/runs", b'{"input": {"user_input": "x\\u0000"}}',
                 {"content-type": "application/json"})
        assert r.status_code == 422, r.text
    for path in ("/workflows/a%00b", "/runs/a%00b", "/sources/a%00b", "/workflows?cursor=&q=a%00b"):
        r = send(pg_client, "GET", path)
        assert r.status_code in (404, 422), (path, r.status_code, r.text)
