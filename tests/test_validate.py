"""Every validator error class, each reported with its path, all at once."""

import json
import subprocess
import sys

import pytest

from agentflow.graph.validate import SpecInvalid, parse_valid, validate
from tests.helpers import TRIAGE_PATH, rules_spec, triage


def problems(spec):
    return {(p.path, p.message) for p in validate(spec)}


def paths(spec):
    return [p.path for p in validate(spec)]


def test_reference_spec_is_valid():
    assert validate(triage()) == []
    assert parse_valid(triage()).id == "support-triage"


def test_not_an_object():
    assert paths([1, 2]) == [""]
    assert paths("x") == [""]


def test_missing_top_level_fields_all_reported():
    got = paths({})
    assert {"id", "name", "start_node"} <= set(got)


def test_unknown_fields_everywhere():
    s = triage()
    s["colour"] = "red"
    s["nodes"][2]["config"]["temprature"] = 0.3
    s["edges"][0]["weight"] = 1
    s["queues"][0]["max_rps"] = 3
    s["sources"][0]["api_key"] = "sk-should-not-be-here"
    got = paths(s)
    for p in ["colour", "nodes[2].config.temprature", "edges[0].weight", "queues[0].max_rps", "sources[0].api_key"]:
        assert p in got, (p, got)


def test_schema_type_errors_have_paths():
    s = triage()
    s["nodes"][5]["config"]["fields"] = "intent"
    s["queues"][1]["max_messages_per_second"] = -1
    s["nodes"][2]["type"] = "llmm"
    got = paths(s)
    assert "nodes[5].config.fields" in got
    assert "queues[1].max_messages_per_second" in got
    assert any(p.startswith("nodes[2]") for p in got)


def test_duplicate_ids():
    s = triage()
    s["nodes"][3]["id"] = "writer"
    s["sources"][1]["id"] = "gpt"
    s["queues"][1]["id"] = "llm"
    got = problems(s)
    assert any(p == "nodes[3].id" and "duplicate" in m for p, m in got)
    assert any(p == "sources[1].id" and "duplicate" in m for p, m in got)
    assert any(p == "queues[1].id" and "duplicate" in m for p, m in got)


def test_dangling_edges():
    s = triage()
    s["edges"].append({"from": "ghost", "to": ["writer", "phantom"]})
    got = problems(s)
    assert ("edges[8].from", "unknown node 'ghost'") in got
    assert ("edges[8].to[1]", "unknown node 'phantom'") in got


def test_missing_start_node():
    s = triage()
    s["start_node"] = "begin"
    assert any(p == "start_node" for p, _ in problems(s))


def test_unreachable_node():
    s = triage()
    s["nodes"].append({"id": "island", "type": "aggregator", "config": {"fields": ["intent"]}})
    assert any(p == "nodes[6]" and "cannot be reached" in m for p, m in problems(s))


def test_wrong_source_kind_and_missing_source():
    s = triage()
    s["nodes"][2]["source"] = "shop"      # llm node on a db source
    s["nodes"][3].pop("source")           # image node without a source
    s["nodes"][5]["source"] = "gpt"       # aggregator takes no source
    s["nodes"][4]["source"] = "nope"
    got = problems(s)
    assert any(p == "nodes[2].source" and "needs a 'llm' source" in m for p, m in got)
    assert any(p == "nodes[3].source" and "needs a source" in m for p, m in got)
    assert any(p == "nodes[5].source" and "takes no source" in m for p, m in got)
    assert any(p == "nodes[4].source" and "unknown source" in m for p, m in got)


def test_unknown_queue_and_sub_queue():
    s = triage()
    s["nodes"][2]["queue"] = "fast"
    s["nodes"][1]["sub_queue"] = "vip"
    s["nodes"][4]["sub_queue"] = "paid"   # sub_queue without a queue
    got = problems(s)
    assert any(p == "nodes[2].queue" for p, _ in got)
    assert any(p == "nodes[1].sub_queue" and "no sub-queue 'vip'" in m for p, m in got)
    assert any(p == "nodes[4].sub_queue" for p, _ in got)


def test_conditions_that_do_not_parse_or_name_unknown_fields():
    s = triage()
    s["edges"][2]["condition"] = "intent = 'text'"
    s["edges"][3]["condition"] = "mood == 'sad'"
    s["edges"][4]["condition"] = "__import__('os').system('id')"
    got = problems(s)
    assert any(p == "edges[2].condition" and "does not parse" in m for p, m in got)
    assert any(p == "edges[3].condition" and "unknown state field 'mood'" in m for p, m in got)
    assert any(p == "edges[4].condition" and "does not parse" in m for p, m in got)


def test_custom_output_keys_are_known_fields():
    s = triage()
    s["nodes"][2]["config"]["output_key"] = "answer"
    s["nodes"][5]["config"]["fields"] = ["answer", "db_result"]
    s["edges"].append({"from": "writer", "to": "final", "condition": "answer != null"})
    assert validate(s) == []


def test_cycles_without_exit():
    s = rules_spec()
    s["edges"].append({"from": "final", "to": "route"})
    got = problems(s)
    assert any("cycle" in m and "no exit" in m for _, m in got)


def test_cycle_with_conditional_exit_is_fine():
    s = rules_spec()
    s["nodes"].append({"id": "done", "type": "aggregator", "config": {"fields": ["intent"], "output_key": "final_output"}})
    s["edges"].append({"from": "final", "to": "route", "condition": "intent == 'again'"})
    s["edges"].append({"from": "final", "to": "done", "condition": "intent != 'again'"})
    assert validate(s) == []


def test_unconditional_cycle_with_exit_still_loops_forever():
    s = rules_spec()
    s["nodes"].append({"id": "done", "type": "aggregator", "config": {"fields": ["intent"]}})
    s["edges"].append({"from": "final", "to": "route"})
    s["edges"].append({"from": "final", "to": "done"})
    assert any("every edge inside it is unconditional" in m for _, m in problems(s))


@pytest.mark.parametrize("query", [
    "DELETE FROM orders",
    "SELECT 1; DROP TABLE orders",
    "UPDATE orders SET status = 'x'",
    "INSERT INTO orders VALUES (1)",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "SELECT * INTO newtable FROM orders",
    "DROP TABLE orders",
    "SELECT * FROM orders FOR UPDATE",
    "this is not sql at all ((",
])
def test_db_query_must_be_one_read_only_statement(query):
    s = triage()
    s["nodes"][4]["config"]["query"] = query
    s["nodes"][4]["config"]["params"] = {}
    assert any(p == "nodes[4].config.query" for p, _ in problems(s)), problems(s)


def test_db_params_must_match_placeholders():
    s = triage()
    s["nodes"][4]["config"]["params"] = {"client": "{metadata.customer}"}
    got = problems(s)
    assert any(p == "nodes[4].config.params" and ":customer" in m for p, m in got)
    assert any(p == "nodes[4].config.params.client" for p, _ in got)


def test_templates_reference_unknown_fields():
    s = triage()
    s["nodes"][2]["config"]["prompt"] = "Hi {user_name}, {metadata.anything} {{literal}}"
    s["nodes"][4]["config"]["params"]["customer"] = "{cusotmer}"
    s["nodes"][5]["config"]["fields"].append("nonsense")
    got = problems(s)
    assert ("nodes[2].config.prompt", "template references unknown state field {user_name}") in got
    assert any(p == "nodes[4].config.params.customer" for p, _ in got)
    assert any(p == "nodes[5].config.fields[4]" for p, _ in got)
    assert not any("metadata.anything" in m or "literal" in m for _, m in got)


def test_router_modes():
    s = triage()
    s["nodes"][1]["config"]["labels"] = []
    got = problems(s)
    assert any(p == "nodes[1].config.labels" for p, _ in got)
    r = rules_spec()
    r["nodes"][1]["config"]["rules"][0]["condition"] = "tier =="
    assert any(p == "nodes[1].config.rules[0].condition" for p, _ in problems(r))
    r = rules_spec()
    r["nodes"][1]["source"] = "x"
    assert any(p == "nodes[1].source" for p, _ in problems(r))


def test_queue_logic():
    s = triage()
    s["queues"].append({"id": "q", "burst_size": 3})
    s["queues"][0]["sub_queues"].append({"id": "paid", "weight": 1})
    got = problems(s)
    assert any(p == "queues[2]" for p, _ in got)
    assert any(p == "queues[0].sub_queues[2].id" for p, _ in got)


def test_every_problem_at_once():
    s = triage()
    s["nodes"][2]["config"]["bogus"] = 1       # schema
    s["nodes"][3]["source"] = "gpt"            # wrong kind
    s["edges"][3]["condition"] = "mood == 1"   # unknown field
    s["start_node"] = "nope"                   # missing start
    assert len(validate(s)) >= 4


def test_broken_node_does_not_make_its_successors_unreachable():
    s = triage()
    s["nodes"][1]["config"]["mode"] = "psychic"
    got = problems(s)
    assert not any("cannot be reached" in m for _, m in got)
    assert any(p.startswith("nodes[1].config") for p, _ in got)


def test_parse_valid_raises_with_all_errors():
    s = triage()
    s["start_node"] = "x"
    s["edges"][0]["to"] = "y"
    with pytest.raises(SpecInvalid) as info:
        parse_valid(s)
    assert {e["path"] for e in info.value.errors} >= {"start_node", "edges[0].to"}


def test_cli_validate(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate", str(TRIAGE_PATH)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = triage()
    bad["edges"][0]["to"] = "nowhere"
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate", str(f)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "edges[0].to: unknown node 'nowhere'" in res.stderr
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate", "--json", str(f)],
                         capture_output=True, text=True)
    assert json.loads(res.stdout)["errors"][0]["path"] == "edges[0].to"
    (tmp_path / "broken.json").write_text("{not json")
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "validate", str(tmp_path / "broken.json")],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "not valid JSON" in res.stderr


def test_schema_command_exports_json_schema():
    res = subprocess.run([sys.executable, "-m", "agentflow.cli", "schema"], capture_output=True, text=True)
    schema = json.loads(res.stdout)
    assert schema["title"] == "WorkflowSpec"
    assert {"nodes", "edges", "queues", "sources", "start_node"} <= set(schema["properties"])
