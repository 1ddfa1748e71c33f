"""The y-websocket endpoint /workflows/{id}/collab against a real `agentflow serve`:
edits merge, the document survives a restart, viewers watch only, and bad clients are
closed with a code and reason while the others in the room carry on."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from pycrdt import Map

from agentflow.api.collab_doc import read_spec, roots
from tests.collab.client import close_of, closed_with, eventually, raw_socket, shared_doc
from tests.collab.conftest import SECRET, save, token
from tests.helpers import rules_spec, run_coroutine

MAX_DOC = 60_000
MAX_MESSAGE = 40_000


@pytest.fixture(scope="module")
def server(serve_factory, tmp_path_factory):
    db = tmp_path_factory.mktemp("collab-db") / "agentflow.db"  # kept across the restart
    env = dict(AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET, DATABASE_URL=f"sqlite:///{db}",
               AGENTFLOW_COLLAB_MAX_DOC_BYTES=str(MAX_DOC), AGENTFLOW_COLLAB_MAX_MESSAGE_BYTES=str(MAX_MESSAGE))
    return {"start": lambda: serve_factory(**env), "served": serve_factory(**env)}


def _set_name(doc, name: str) -> None:
    roots(doc)["meta"]["name"] = json.dumps(name)


def _add_node(doc, node: dict) -> None:
    r = roots(doc)
    with doc.transaction():
        r["nodes"][node["id"]] = Map({k: json.dumps(v) for k, v in node.items()})
        r["order"].append(node["id"])


def _names(doc) -> list[str]:
    return [n["id"] for n in read_spec(doc)["nodes"]]


@asynccontextmanager
async def alice_and_bob(url: str, workflow_id: str):
    """Two editors' documents on one workflow."""
    async with shared_doc(url, workflow_id, token(subject="alice")) as (a, _), \
            shared_doc(url, workflow_id, token(subject="bob")) as (b, _):
        yield a, b


def test_two_clients_see_each_others_edits_and_concurrent_edits_merge(server):
    url = server["served"].url
    save(url, rules_spec(id="merge"), token())

    async def main():
        async with alice_and_bob(url, "merge") as (a, b):
            assert read_spec(a)["name"] == read_spec(b)["name"] == rules_spec()["name"]
            _set_name(a, "Renamed by Alice")
            await eventually(lambda: read_spec(b)["name"] == "Renamed by Alice", timeout=1)
            # at the same moment: Alice adds a node, Bob changes another node's config
            _add_node(a, {"id": "extra", "type": "aggregator", "config": {"fields": ["x"]}})
            first = read_spec(b)["nodes"][0]["id"]
            roots(b)["nodes"][first]["config"] = json.dumps({"set": {"by": "bob"}})
            for doc in (a, b):
                await eventually(lambda doc=doc: "extra" in _names(doc)
                                 and read_spec(doc)["nodes"][0].get("config") == {"set": {"by": "bob"}})
            assert read_spec(a) == read_spec(b)

    run_coroutine(main)


def test_the_document_survives_a_restart_and_versions_name_who_edited(server):
    url = server["served"].url
    save(url, rules_spec(id="durable"), token())

    async def edit():
        async with alice_and_bob(url, "durable") as (a, b):
            _add_node(a, {"id": "kept", "type": "aggregator", "config": {"fields": ["intent"]}})
            roots(a)["edges"].append(json.dumps({"from": "final", "to": "kept"}))
            _set_name(b, "Kept across restarts")
            await eventually(lambda: "kept" in _names(b) and read_spec(a)["name"] == "Kept across restarts")

    run_coroutine(edit)
    old = server["served"]
    old.proc.terminate()
    old.proc.wait(timeout=15)
    served = server["served"] = server["start"]()  # the same database

    async def reopen():
        async with shared_doc(served.url, "durable", token(subject="carol")) as (c, _):
            spec = read_spec(c)
            assert "kept" in _names(c) and spec["name"] == "Kept across restarts"
            return spec

    spec = run_coroutine(reopen)
    saved = httpx.post(served.url + "/workflows", json=spec, timeout=10,
                       headers={"Authorization": f"Bearer {token(subject='carol')}"})
    assert saved.status_code == 201, saved.text
    versions = httpx.get(served.url + "/workflows/durable/versions", timeout=10,
                         headers={"Authorization": f"Bearer {token()}"}).json()["items"]
    assert versions[0]["version"] == 2 and versions[0]["author"] == "carol"
    assert versions[0]["editors"] == ["alice", "bob"]
    assert versions[1]["author"] == "alice" and versions[1]["editors"] == []


def test_a_viewer_watches_but_cannot_change_the_document(server):
    url = server["served"].url
    save(url, rules_spec(id="watched"), token())

    async def main():
        async with shared_doc(url, "watched", token(subject="ed")) as (editor, _), \
                shared_doc(url, "watched", token(role="viewer", subject="vic")) as (viewer, _):
            _set_name(viewer, "Viewer was here")
            _add_node(viewer, {"id": "sneaky", "type": "aggregator", "config": {}})
            await anyio.sleep(0.5)
            _set_name(editor, "Editor's name")
            _add_node(editor, {"id": "seen", "type": "aggregator", "config": {}})
            await eventually(lambda: "seen" in _names(viewer), timeout=2)  # the viewer watches
            assert "sneaky" not in _names(editor) and read_spec(editor)["name"] == "Editor's name"
        async with shared_doc(url, "watched", token(subject="late")) as (late, _):
            assert "sneaky" not in _names(late) and read_spec(late)["name"] == "Editor's name"

    run_coroutine(main)


@pytest.mark.parametrize("message, code", [
    (b"\x00\x02\x05garba", 4400),                    # an update that does not decode
    (b"\x00\x02" + bytes([0x7f]) + b"\x01" * 10, 4400),  # its length runs past the end
    (b"\x01\x0c\x01\x05\x01\x05{bad}", 4400),      # awareness with a state that is not JSON
    (b"\x07\x00", 4400),                             # an unknown message type
    (b"\x00" * (MAX_MESSAGE + 1), 1009),             # a message over the limit
])
def test_a_bad_message_closes_only_its_sender(server, message, code):
    url = server["served"].url
    wid = f"bad-{code}-{len(message)}-{message[:3].hex()}"
    save(url, rules_spec(id=wid), token())

    async def main():
        async with shared_doc(url, wid, token(subject="good")) as (good, _), \
                shared_doc(url, wid, token(subject="other")) as (other, _):
            async with raw_socket(url, wid, token(subject="mallory")) as bad:
                await bad.send(message)
                got, reason = await closed_with(bad)
                assert got == code and reason, (got, reason)
            before = read_spec(other)
            _set_name(good, "still fine")
            await eventually(lambda: read_spec(other)["name"] == "still fine", timeout=2)
            assert read_spec(other)["nodes"] == before["nodes"]

    run_coroutine(main)


def test_an_edit_past_the_document_limit_is_refused_and_the_room_keeps_its_document(server):
    url = server["served"].url
    save(url, rules_spec(id="big"), token())

    async def main():
        async with shared_doc(url, "big", token(subject="watcher")) as (watcher, _):
            async with shared_doc(url, "big", token(subject="bulk")) as (bulk, ws):
                for i in range(4):  # each message is under the message limit; together over the document's
                    _add_node(bulk, {"id": f"n{i}", "type": "aggregator", "config": {"blob": "x" * 25_000}})
                got, reason = await close_of(ws)
                assert got == 1009 and "AGENTFLOW_COLLAB_MAX_DOC_BYTES" in reason
            names = _names(watcher)
            assert "n3" not in names and len(names) >= len(rules_spec()["nodes"])
            _set_name(watcher, "after the flood")
        async with shared_doc(url, "big", token(subject="late")) as (late, _):
            assert read_spec(late)["name"] == "after the flood" and "n3" not in _names(late)

    run_coroutine(main)


@pytest.mark.parametrize("who, code", [
    ("foreign", 4404),    # another tenant's workflow is not found, as in the REST API
    ("nobody", 4401),     # no token
    ("forged", 4401),     # a token signed with another key
])
def test_who_may_not_open_the_document_is_closed_with_a_reason(server, who, code):
    url = server["served"].url
    save(url, rules_spec(id="private"), token(tenant="t1"))
    tok = {"foreign": token(tenant="t2"), "nobody": None,
           "forged": token().rsplit(".", 1)[0] + ".c2lnbmF0dXJl"}[who]

    async def main():
        async with raw_socket(url, "private", tok) as ws:
            got, reason = await closed_with(ws)
            assert got == code and reason, (got, reason)

    run_coroutine(main)


def test_a_text_frame_is_refused(server):
    url = server["served"].url
    save(url, rules_spec(id="texty"), token())

    async def main():
        async with raw_socket(url, "texty", token()) as ws:
            await ws.send("hello")
            assert (await closed_with(ws))[0] == 1003

    run_coroutine(main)


def test_opening_sockets_counts_against_the_request_limits(serve_factory, tmp_path):
    limited = serve_factory(AGENTFLOW_AUTH="required", AGENTFLOW_JWT_SECRET=SECRET,
                            DATABASE_URL=f"sqlite:///{tmp_path / 'limited.db'}",
                            AGENTFLOW_RATE_TENANT_PER_MINUTE="6", AGENTFLOW_RATE_TENANT_BURST="3")
    save(limited.url, rules_spec(id="busy"), token(tenant="busy"))  # one request of the burst

    async def main():
        codes = []
        for _ in range(4):
            async with raw_socket(limited.url, "busy", token(tenant="busy")) as ws:
                try:
                    with anyio.fail_after(1):
                        await ws.recv()  # a socket let in gets the room's first sync message
                    codes.append("open")
                except TimeoutError:
                    codes.append("silent")
                except Exception:
                    codes.append((await closed_with(ws))[0])
        return codes

    codes = run_coroutine(main)
    assert codes[:2] == ["open", "open"] and 1013 in codes[2:], codes
