"""Encryption at rest (contract section 9, store/crypto.py), against real databases.

A canary string in a run's input (direct and through a signed inbound hook) and in an LLM
step's answer (the stand-in OpenAI server) comes back from the API decrypted, and is found
nowhere in a dump of every table; values written under key A and rotated to key B read with
A gone, with no ciphertext of A left; a value whose key is not configured is a 503 naming
the key id, never garbage; without a key nothing changes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.servers.openai_server import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_AUTH", "AGENTFLOW_ENCRYPTION_KEY", "AGENTFLOW_ENCRYPTION_OLD_KEYS",
           "AGENTFLOW_MAX_BODY_BYTES")


def llm_spec() -> dict:
    return {
        "id": "secret-flow", "name": "secret flow", "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", "source": "gpt",
             "config": {"prompt": "Answer: {user_input}", "output_key": "text_result", "max_tokens": 50,
                        "max_retries": 0}},
        ],
        "edges": [{"from": "input", "to": "writer"}],
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


@pytest.fixture
def llm(monkeypatch):
    """The stand-in OpenAI server, answering with a canary of its own."""
    answer = f"ANSWER-CANARY-{uuid.uuid4().hex}"
    with OpenAIServer() as server:
        server.responder = lambda req: f"the answer is {answer}"
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        server.answer = answer
        yield server


class App:
    """An embedded-mode API on a given database with given keys (None = unset)."""

    def __init__(self, monkeypatch, home: Path, db_url: str | None, key: str | None, old: str | None = None):
        from agentflow.api.main import create_app
        from agentflow.settings import Settings, get_settings

        for name in CLEARED:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AGENTFLOW_HOME", str(home))
        monkeypatch.setenv("AGENTFLOW_LOAD_EXAMPLES", "0")
        monkeypatch.setenv("AGENTFLOW_AUTH", "off")
        for name, value in (("DATABASE_URL", db_url), ("AGENTFLOW_ENCRYPTION_KEY", key),
                            ("AGENTFLOW_ENCRYPTION_OLD_KEYS", old)):
            if value is not None:
                monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        self.client = TestClient(create_app(Settings()))
        self.client.__enter__()

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def run(self, text: str, timeout: float = 30) -> dict:
        r = self.client.post("/workflows/secret-flow/runs", json={"input": {"user_input": text,
                                                                           "metadata": {"note": text}}})
        assert r.status_code == 202, r.text
        return self.wait(r.json()["run_id"], timeout)

    def wait(self, run_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            record = self.client.get(f"/runs/{run_id}").json()
            if record.get("status") in ("succeeded", "failed", "cancelled"):
                return record
            assert time.monotonic() < deadline, record
            time.sleep(0.05)


@pytest.fixture
def apps(monkeypatch):
    from agentflow.settings import get_settings
    from agentflow.store import crypto

    opened: list[App] = []

    def make(home: Path, db_url: str | None, key: str | None, old: str | None = None) -> App:
        app = App(monkeypatch, home, db_url, key, old)
        opened.append(app)
        return app

    yield make
    for app in reversed(opened):
        app.close()
    get_settings.cache_clear()
    crypto.reset()


def sqlite_dump(path: Path) -> str:
    """Every column of every row of every table as text, sqlite3's own SQL dump, and the
    raw bytes of the database and its write-ahead log."""
    out = []
    with sqlite3.connect(path) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for row in conn.execute("SELECT " + ", ".join(f'CAST("{c}" AS TEXT)' for c in cols) + f' FROM "{table}"'):
                out.append(f"{table}: {row!r}")
        out.extend(conn.iterdump())
    for suffix in ("", "-wal"):
        raw = Path(f"{path}{suffix}")
        if raw.exists():
            out.append(raw.read_bytes().decode("latin-1"))
    return "\n".join(out)


def pg_dump(dsn: str) -> str:
    """pg_dump of the schema the DSN's search_path names (the whole test schema, data included)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(dsn)
    schema = parse_qs(parts.query)["options"][0].split("search_path=")[1]
    base = parts._replace(query="").geturl()
    out = subprocess.run(["pg_dump", "--no-owner", "--schema", schema, base], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "COPY" in out.stdout and "runs" in out.stdout  # it really dumped the tables
    return out.stdout


def stored_runs(dump_rows: str) -> None:
    assert '"enc": "v1"' in dump_rows, "nothing was stored encrypted"


def new_key() -> str:
    from agentflow.store.crypto import generate_key

    return generate_key()


def kid_of(key: str) -> str:
    from agentflow.store.crypto import key_id, parse_key

    return key_id(parse_key(key))


# ---------------------------------------------------------------- the envelope


def test_keys_and_envelopes():
    from agentflow.store.crypto import BadKey, KeyUnavailable, Keyring, is_sealed, parse_key

    a, b = parse_key(new_key()), parse_key(new_key())
    ring = Keyring(a)
    value = {"user_input": "héllo", "metadata": {"n": [1, 2.5, None, True]}}
    sealed = ring.seal(value, "runs.input")
    assert is_sealed(sealed) and sealed["kid"] == ring.kid and "héllo" not in json.dumps(sealed)
    assert ring.seal(value, "runs.input")["ct"] != sealed["ct"]  # a fresh nonce each time
    assert ring.open(sealed, "runs.input") == value
    assert ring.open(value, "runs.input") == value  # plaintext written before a key was set
    assert Keyring(b, [a]).open(sealed, "runs.input") == value  # an old key still decrypts
    with pytest.raises(KeyUnavailable, match=f"key id {ring.kid}, which is not configured"):
        Keyring(b).open(sealed, "runs.input")
    with pytest.raises(KeyUnavailable, match="fails authentication"):
        ring.open(sealed, "steps.output")  # moved to another column
    tampered = dict(sealed, ct=sealed["ct"][:-4] + ("AAAA" if not sealed["ct"].endswith("AAAA") else "BBBB"))
    with pytest.raises(KeyUnavailable, match="fails authentication"):
        ring.open(tampered, "runs.input")
    secret = "c2hvcnQ="  # base64 of 5 bytes
    with pytest.raises(BadKey, match="32 bytes") as info:
        parse_key(secret)
    assert secret not in str(info.value)
    with pytest.raises(BadKey, match="not valid base64"):
        parse_key("not base64 at all!")
    assert parse_key(new_key().replace("+", "-").replace("/", "_")) is not None  # URL-safe alphabet


# ---------------------------------------------------------------- SQLite (embedded)


def test_canary_encrypted_at_rest_on_sqlite(tmp_path, apps, llm):
    from agentflow.runs.webhooks import signed_headers

    home = tmp_path / "home"
    key = new_key()
    canary, hook_canary = f"INPUT-CANARY-{uuid.uuid4().hex}", f"HOOK-CANARY-{uuid.uuid4().hex}"
    app = apps(home, None, key)
    c = app.client
    assert c.post("/workflows", json=llm_spec()).status_code == 201
    record = app.run(f"my secret is {canary}")
    assert record["status"] == "succeeded", record
    assert canary in record["input"]["user_input"] and canary in record["state"]["user_input"]
    assert llm.answer in record["state"]["text_result"]
    trace = c.get(f"/runs/{record['run_id']}/trace").json()
    writer = next(s for s in trace["steps"] if s["node_id"] == "writer")
    assert canary in json.dumps(writer["input"]) and llm.answer in json.dumps(writer["output"])
    assert canary in trace["initial_state"]["user_input"] and llm.answer in trace["final_state"]["text_result"]
    # search on what is not secret still works
    listed = c.get("/runs", params={"limit": 10}).json()["items"]
    assert [r["run_id"] for r in listed] == [record["run_id"]] and listed[0]["tokens_used"] > 0
    # a re-run from the writer copies the earlier steps (re-encrypted) and starts from the stored state
    r = c.post(f"/runs/{record['run_id']}/rerun",
               json={"from_node": "writer", "state": {"user_input": f"again {canary}"}})
    assert r.status_code == 202, r.text
    rerun = app.wait(r.json()["run_id"])
    assert rerun["status"] == "succeeded" and f"again {canary}" in json.dumps(rerun["state"]), rerun
    retrace = c.get(f"/runs/{rerun['run_id']}/trace").json()
    assert canary in json.dumps(retrace["initial_state"]) and llm.answer in json.dumps(retrace["final_state"])

    # a signed inbound hook: its body becomes the run input, stored encrypted too
    os.environ["ENC_TEST_HOOK_KEY"] = "hook-signing-key-0123456789"
    try:
        hook = c.post("/hooks", json={"workflow_id": "secret-flow", "secret_env": "ENC_TEST_HOOK_KEY"}).json()
        body = json.dumps({"ticket": hook_canary}).encode()
        r = c.post(f"/hooks/{hook['id']}", content=body,
                   headers={"content-type": "application/json", **signed_headers("hook-signing-key-0123456789", body)})
        assert r.status_code == 202, r.text
        hooked = app.wait(r.json()["run_id"])
    finally:
        del os.environ["ENC_TEST_HOOK_KEY"]
    assert hooked["status"] == "succeeded" and hook_canary in hooked["input"]["metadata"]["webhook"]["ticket"]
    app.close()

    dump = sqlite_dump(home / "agentflow.db")
    stored_runs(dump)
    for secret in (canary, hook_canary, llm.answer):
        assert secret not in dump
    assert record["run_id"] in dump and "succeeded" in dump  # ids and status stay plain


def test_missing_key_is_a_clear_503_on_sqlite(tmp_path, apps, llm):
    home = tmp_path / "home"
    key = new_key()
    app = apps(home, None, key)
    assert app.client.post("/workflows", json=llm_spec()).status_code == 201
    run_id = app.run("something private")["run_id"]
    app.close()

    for other in (None, new_key()):  # no key at all, and another key
        app = apps(home, None, other)
        r = app.client.get(f"/runs/{run_id}")
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert detail.startswith(f"run {run_id} was encrypted with key id {kid_of(key)}, which is not configured")
        assert key not in r.text
        for path in (f"/runs/{run_id}/trace", f"/runs/{run_id}/events"):
            r = app.client.get(path)
            assert r.status_code == 503 and kid_of(key) in r.json()["detail"], r.text
        # what is not secret stays readable
        assert [x["run_id"] for x in app.client.get("/runs").json()["items"]] == [run_id]
        app.close()
    # the key back, as an old key: readable again
    app = apps(home, None, new_key(), old=key)
    assert app.client.get(f"/runs/{run_id}").json()["input"]["user_input"] == "something private"


def test_without_a_key_nothing_changes(tmp_path, apps, llm):
    home = tmp_path / "home"
    app = apps(home, None, None)
    assert app.client.post("/workflows", json=llm_spec()).status_code == 201
    record = app.run("plain as before")
    assert record["status"] == "succeeded"
    app.close()
    with sqlite3.connect(home / "agentflow.db") as conn:
        stored = json.loads(conn.execute("SELECT input FROM runs").fetchone()[0])
    assert stored == {"user_input": "plain as before", "metadata": {"note": "plain as before"}}


def test_malformed_key_stops_the_server(tmp_path, apps):
    from agentflow.store.crypto import BadKey

    with pytest.raises(BadKey, match="AGENTFLOW_ENCRYPTION_KEY must decode to 32 bytes"):
        apps(tmp_path / "home", None, "c2hvcnQ=")


# ---------------------------------------------------------------- PostgreSQL


pg = pytest.mark.postgres


def _agentflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLOW_")
            and k not in ("DATABASE_URL", "REDIS_URL")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], env=full, capture_output=True,
                          text=True, timeout=180, cwd=ROOT)


@pg
def test_canary_encrypted_at_rest_on_postgres(tmp_path, apps, llm, pg_dsn):
    from agentflow.store.db import get_engine

    key = new_key()
    canary = f"INPUT-CANARY-{uuid.uuid4().hex}"
    app = apps(tmp_path / "home", pg_dsn, key)
    assert app.client.post("/workflows", json=llm_spec()).status_code == 201
    record = app.run(f"the secret is {canary}")
    assert record["status"] == "succeeded", record
    assert canary in record["input"]["user_input"] and llm.answer in record["state"]["text_result"]
    trace = app.client.get(f"/runs/{record['run_id']}/trace").json()
    assert llm.answer in json.dumps(trace["steps"]) and canary in json.dumps(trace["steps"])
    app.close()
    get_engine(pg_dsn).dispose()
    dump = pg_dump(pg_dsn)
    stored_runs(dump)
    assert canary not in dump and llm.answer not in dump
    assert record["run_id"] in dump


@pg
def test_rotate_from_key_a_to_key_b_on_postgres(tmp_path, apps, llm, pg_dsn):
    from agentflow.store.db import get_engine

    home = tmp_path / "home"
    key_a, key_b = new_key(), new_key()
    # a run from before any key (plaintext), then runs under key A
    app = apps(home, pg_dsn, None)
    assert app.client.post("/workflows", json=llm_spec()).status_code == 201
    plain_run = app.run("PLAIN-CANARY written before the key")["run_id"]
    app.close()
    app = apps(home, pg_dsn, key_a)
    runs_a = [app.run(f"A-CANARY-{i}")["run_id"] for i in range(5)]
    assert app.client.get(f"/runs/{plain_run}").json()["input"]["user_input"].startswith("PLAIN-CANARY")
    app.close()
    get_engine(pg_dsn).dispose()
    before = pg_dump(pg_dsn)
    assert f'"kid": "{kid_of(key_a)}"' in before and "PLAIN-CANARY" in before

    env = {"DATABASE_URL": pg_dsn, "AGENTFLOW_HOME": str(home)}
    missing = _agentflow({**env, "AGENTFLOW_ENCRYPTION_KEY": key_b}, "keys", "rotate")
    assert missing.returncode == 1 and f"key id {kid_of(key_a)}, which is not configured" in missing.stderr
    out = _agentflow({**env, "AGENTFLOW_ENCRYPTION_KEY": key_b, "AGENTFLOW_ENCRYPTION_OLD_KEYS": key_a},
                     "keys", "rotate", "--batch-size", "3")
    assert out.returncode == 0, out.stderr
    # 6 run inputs + 6 states + 12 step inputs + 12 outputs (minus what the first try did)
    count = int(out.stdout.split()[0])
    assert count > 0 and f"under key id {kid_of(key_b)}" in out.stdout, out.stdout
    assert "runs.input:" in out.stderr and "steps.output:" in out.stderr  # progress
    again = _agentflow({**env, "AGENTFLOW_ENCRYPTION_KEY": key_b}, "keys", "rotate")
    assert again.returncode == 0 and again.stdout.startswith("0 value(s)"), again.stdout + again.stderr

    dump = pg_dump(pg_dsn)
    assert kid_of(key_a) not in dump and "A-CANARY" not in dump and "PLAIN-CANARY" not in dump
    assert f'"kid": "{kid_of(key_b)}"' in dump
    app = apps(home, pg_dsn, key_b)  # key A is gone
    for i, run_id in enumerate(runs_a):
        record = app.client.get(f"/runs/{run_id}").json()
        assert record["input"]["user_input"] == f"A-CANARY-{i}" and llm.answer in record["state"]["text_result"]
    assert app.client.get(f"/runs/{plain_run}").json()["input"]["user_input"].startswith("PLAIN-CANARY")
    trace = app.client.get(f"/runs/{runs_a[0]}/trace").json()
    assert "A-CANARY-0" in json.dumps(trace["steps"])


@pg
def test_rotate_while_runs_are_written_on_postgres(tmp_path, apps, llm, pg_dsn):
    """Rotation in small batches next to a server that keeps starting and finishing runs:
    every run ends readable under the new key, nothing written meanwhile is lost."""
    import threading

    from agentflow.settings import Settings
    from agentflow.store import crypto
    from agentflow.store.db import get_engine

    home = tmp_path / "home"
    key_a, key_b = new_key(), new_key()
    app = apps(home, pg_dsn, key_a)
    assert app.client.post("/workflows", json=llm_spec()).status_code == 201
    early = [app.run(f"early-{i}")["run_id"] for i in range(8)]
    app.close()
    # the server now runs with B (and A to read); rotation runs at the same time
    app = apps(home, pg_dsn, key_b, old=key_a)
    ring = crypto.keyring_from(Settings())
    late: list[str] = []

    def keep_writing():
        for i in range(8):
            late.append(app.run(f"late-{i}")["run_id"])

    writer = threading.Thread(target=keep_writing)
    writer.start()
    rotated = 0
    while writer.is_alive():
        rotated += crypto.rotate(get_engine(pg_dsn), batch_size=2, ring=ring)
        time.sleep(0.05)
    writer.join()
    rotated += crypto.rotate(get_engine(pg_dsn), batch_size=2, ring=ring)
    assert rotated >= 8 * 2  # at least the early runs' inputs and states
    app.close()
    get_engine(pg_dsn).dispose()
    assert kid_of(key_a) not in pg_dump(pg_dsn)
    app = apps(home, pg_dsn, key_b)
    for i, run_id in enumerate(early):
        assert app.client.get(f"/runs/{run_id}").json()["input"]["user_input"] == f"early-{i}"
    for i, run_id in enumerate(late):
        record = app.client.get(f"/runs/{run_id}").json()
        assert record["status"] == "succeeded" and record["input"]["user_input"] == f"late-{i}", record


def use_keys(monkeypatch, key: str | None, old: str | None = None) -> None:
    from agentflow.settings import get_settings
    from agentflow.store import crypto

    for name, value in (("AGENTFLOW_ENCRYPTION_KEY", key), ("AGENTFLOW_ENCRYPTION_OLD_KEYS", old)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    crypto.reset()


@pg
def test_checkpoints_encrypted_resumed_and_rotated_on_postgres(pg_dsn, apps, monkeypatch):
    """The run driver's checkpointer (sealed HoldingPostgresSaver): a graph interrupted
    before its last node leaves no plaintext string in the LangGraph tables and resumes from
    what was stored; checkpoints written before the key was set (strings inline in the
    JSONB) and under key A are rotated to key B and still resume with A gone."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from agentflow.store import crypto
    from agentflow.store.db import get_engine, migrate
    from agentflow.workers.checkpoints import HoldingPostgresSaver

    class State(TypedDict):
        text: str
        trail: list

    def build(saver):
        g = StateGraph(State)
        g.add_node("a", lambda s: {"text": s["text"] + " CKPT-A", "trail": s["trail"] + ["a"]})
        g.add_node("b", lambda s: {"text": s["text"] + " CKPT-B", "trail": s["trail"] + ["b"]})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        return g.compile(checkpointer=saver, interrupt_before=["b"])

    def saver(pool):
        return crypto.sealed_saver(HoldingPostgresSaver)(pool, serde=crypto.CheckpointSerde())

    def tables_text(pool, thread: str = "%") -> str:
        with pool.connection() as conn:
            rows = [str(r) for t in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
                    for r in conn.execute(f"SELECT * FROM {t} WHERE thread_id LIKE %s", (thread,)).fetchall()]
        return "\n".join(rows)

    migrate(pg_dsn)  # the store's tables, which rotation walks too
    key_a, key_b = new_key(), new_key()
    with ConnectionPool(pg_dsn, min_size=1, max_size=4, kwargs={"autocommit": True, "prepare_threshold": 0,
                                                                 "row_factory": dict_row}) as pool:
        saver(pool).setup()
        threads = {}
        for label, key in (("plain", None), ("under-a", key_a)):
            use_keys(monkeypatch, key)
            thread = {"configurable": {"thread_id": label}}
            build(saver(pool)).invoke({"text": f"CKPT-SECRET-{label}", "trail": []}, thread)
            threads[label] = thread
            if key is not None:
                text = tables_text(pool, label)
                assert "CKPT-SECRET" not in text and "CKPT-A" not in text, text
                assert f"+af1.{kid_of(key_a)}" in text
        assert "CKPT-SECRET-plain" in tables_text(pool)  # written before any key: plain, as the stock saver

        use_keys(monkeypatch, key_b, old=key_a)
        count = crypto.rotate(get_engine(pg_dsn), batch_size=2)
        assert count > 0
        text = tables_text(pool)
        assert "CKPT-SECRET" not in text and kid_of(key_a) not in text, text[:2000]

        use_keys(monkeypatch, key_b)  # A is gone
        for label, thread in threads.items():
            resumed = build(saver(pool))
            assert resumed.get_state(thread).next == ("b",)
            out = resumed.invoke(None, thread)
            assert out["text"] == f"CKPT-SECRET-{label} CKPT-A CKPT-B" and out["trail"] == ["a", "b"]
        use_keys(monkeypatch, None)  # no key at all: a clear error, not garbage
        with pytest.raises(crypto.KeyUnavailable, match=f"key id {kid_of(key_b)}, which is not configured"):
            build(saver(pool)).get_state(threads["under-a"])


def test_a_run_whose_key_is_missing_fails_with_the_reason(tmp_path, apps, monkeypatch):
    """An executor without the run's key ends the run `failed`, its error naming the key id
    (not stuck `running`, not run on garbage)."""
    from agentflow.runs.embedded import EmbeddedExecutor
    from agentflow.settings import get_settings
    from agentflow.store.crypto import KeyUnavailable
    from agentflow.store.db import migrate, session_factory
    from agentflow.store.runs import RunStore
    from tests.helpers import rules_spec

    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    key = new_key()
    use_keys(monkeypatch, key)
    url = get_settings().db_url
    migrate(url)
    store = RunStore(session_factory(url))
    run_id = store.create(rules_spec(), {"user_input": "queued under the key"})
    use_keys(monkeypatch, None)
    executor = EmbeddedExecutor(store, workers=1)
    try:
        with pytest.raises(KeyUnavailable, match=f"key id {kid_of(key)}"):
            executor.execute(run_id)  # its record cannot be shown without the key either
    finally:
        executor.shutdown()
    with sqlite3.connect(tmp_path / "home" / "agentflow.db") as conn:
        status, error = conn.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert status == "failed" and error.startswith(f"run {run_id} was encrypted with key id {kid_of(key)}")
    use_keys(monkeypatch, None, old=key)
    assert store.get(run_id)["input"] == {"user_input": "queued under the key"}
