"""The example plugin (plugins/agentflow-text-tools) installed by pip into a fresh venv,
next to a plugin whose import raises: `agentflow plugins`, `schema`, `validate`, `run`
and `serve` from that venv see it, and the broken one is reported, never fatal."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.plugins.venv import TEXT_TOOLS, embedded_env
from tests.servers.agentflow_serve import AgentflowServe

EXAMPLE = TEXT_TOOLS / "examples" / "text_report.json"
MESSAGE = "Where are orders #12 and #345? I paid twice."
STATS = {"characters": 44, "words": 9, "lines": 1, "sentences": 2, "unique_words": 9}


def test_agentflow_plugins_lists_the_plugin_and_reports_the_broken_one(plugin_venv, tmp_path):
    r = plugin_venv.agentflow("plugins", env=embedded_env(tmp_path))
    assert r.returncode == 1, r.stderr  # something failed to load
    assert "agentflow-text-tools 0.1.0: node type regex_extract (queue agentflow.api), " \
           "node type text_stats (queue agentflow.text)" in r.stdout
    assert "agentflow-broken-plugin 0.0.1: nothing loaded" in r.stdout
    assert "FAILED agentflow.nodes 'broken_node': ImportError: agentflow_broken_plugin is broken on purpose" in r.stdout

    listed = json.loads(plugin_venv.agentflow("plugins", "--json", env=embedded_env(tmp_path)).stdout)
    by_name = {p["package"]: p for p in listed["plugins"]}
    assert by_name["agentflow-text-tools"]["node_types"] == ["regex_extract", "text_stats"]
    assert [e["name"] for e in listed["errors"]] == ["broken_node"]


def test_schema_validate_and_run_embedded_from_the_venv(plugin_venv, tmp_path):
    env = embedded_env(tmp_path)
    schema = json.loads(plugin_venv.agentflow("schema", env=env).stdout)
    mapping = schema["properties"]["nodes"]["items"]["discriminator"]["mapping"]
    assert mapping["text_stats"] == "#/$defs/TextStatsNode" and "regex_extract" in mapping
    assert schema["$defs"]["RegexExtractConfig"]["required"] == ["pattern"]

    ok = plugin_venv.agentflow("validate", str(EXAMPLE), env=env)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("valid"), ok.stderr

    bad = json.loads(EXAMPLE.read_text())
    bad["nodes"][1]["config"] = {"text": "{nothing}"}
    bad["nodes"][2]["config"].update(pattern="#(\\d+", colour=1)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    r = plugin_venv.agentflow("validate", str(path), "--json", env=env)
    problems = {p["path"]: p["message"] for p in json.loads(r.stdout)["errors"]}
    assert r.returncode == 1
    assert problems["nodes[2].config.colour"] == "unknown field"
    assert problems["nodes[1].config.text"] == "template references unknown state field {nothing}"
    assert problems["nodes[2].config.pattern"].startswith("not a valid regular expression")

    run = plugin_venv.agentflow("run", str(EXAMPLE), "--input", MESSAGE, env=env)
    assert run.returncode == 0, run.stderr
    state = json.loads(run.stdout)
    assert state["text_stats"] == STATS and state["order_ids"] == ["12", "345"]
    assert state["final_output"] == {"text_stats": STATS, "order_ids": ["12", "345"]}


def test_the_project_environment_without_the_plugin_does_not_know_the_types(tmp_path):
    # the tree holds the plugin's code, but only an installed distribution registers it
    r = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate", str(EXAMPLE)], env=embedded_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Input tag 'text_stats' found using 'type' does not match" in r.stderr


@pytest.fixture(scope="module")
def server(plugin_venv, tmp_path_factory):
    home = tmp_path_factory.mktemp("plugin-serve")
    srv = AgentflowServe(embedded_env(home), home / "serve.log", timeout=90, python=plugin_venv.python).start()
    yield srv
    srv.stop()


def test_the_api_serves_node_types_and_runs_the_plugin_despite_the_broken_one(server):
    client = httpx.Client(base_url=server.url, timeout=60)  # local mode: loopback acts as the local admin
    body = client.get("/node-types").json()
    types = {t["type"]: t for t in body["node_types"]}
    assert list(types)[:3] == ["input", "router", "llm"] and types["llm"]["origin"]["kind"] == "builtin"
    stats = types["text_stats"]
    assert stats["origin"] == {"kind": "plugin", "package": "agentflow-text-tools", "version": "0.1.0"}
    assert stats["queue"] == "agentflow.text" and stats["description"].startswith("Count characters")
    assert stats["schema"]["properties"]["type"]["const"] == "text_stats"
    assert body["errors"][0]["name"] == "broken_node" and "broken on purpose" in body["errors"][0]["error"]
    assert {p["package"] for p in body["plugins"]} == {"agentflow-text-tools", "agentflow-broken-plugin"}
    assert client.get("/schema").json()["properties"]["nodes"]["items"]["discriminator"]["mapping"]["regex_extract"]

    spec = json.loads(EXAMPLE.read_text())
    assert client.post("/workflows/validate", json=spec).json()["valid"] is True
    result = client.post("/workflows/execute", json={"spec": spec, "initial_state": {"user_input": MESSAGE}})
    assert result.status_code == 200, result.text
    done = result.json()
    assert done["status"] == "succeeded" and done["state"]["text_stats"] == STATS
    trace = client.get(f"/runs/{done['run_id']}").json()
    assert {s["node_id"]: s["node_type"] for s in trace["steps"]}["stats"] == "text_stats"
    assert "broken on purpose" in server.log()  # reported in the log, and the server kept serving


def test_plugins_install_and_uninstall_wrap_pip_in_agentflows_environment(tmp_path):
    from tests.plugins.venv import fresh_venv

    venv = fresh_venv(tmp_path / "venv", with_pip=True)
    env = embedded_env(tmp_path / "home", PIP_DISABLE_PIP_VERSION_CHECK="1")
    assert "no plugins installed" in venv.agentflow("plugins", env=env).stdout

    # agentflow and pydantic, its dependencies, are already there (this project's environment)
    installed = venv.agentflow("plugins", "install", str(TEXT_TOOLS), env=env, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "Restart `agentflow serve` and every `agentflow worker`" in installed.stderr
    assert str(tmp_path / "venv") in installed.stderr  # said where it went
    listed = venv.agentflow("plugins", env=env)
    assert listed.returncode == 0 and "agentflow-text-tools 0.1.0: node type regex_extract" in listed.stdout

    removed = venv.agentflow("plugins", "uninstall", "agentflow-text-tools", env=env, timeout=300)
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert "no plugins installed" in venv.agentflow("plugins", env=env).stdout


def test_the_plugins_own_tests_pass_against_the_installed_package(plugin_venv):
    # src/ layout: from the venv, `agentflow_text_tools` is the installed copy, not the tree's
    r = subprocess.run([plugin_venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEXT_TOOLS / "tests")],
                       cwd=TEXT_TOOLS, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout
