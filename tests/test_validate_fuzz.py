"""Property-based: random and mutated specs get a list of problems, never an exception."""

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.graph.validate import validate
from tests.helpers import triage

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

BASE = triage()


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_triage_never_raises(data):
    spec = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 4))):
        path = data.draw(st.sampled_from(ALL_PATHS))
        parent = spec
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = data.draw(st.sampled_from(["replace", "delete"]))
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    result = validate(spec)
    assert isinstance(result, list)
    for p in result:
        assert isinstance(p.path, str) and p.message
    json.dumps([p.as_dict() for p in result])


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_json_never_raises(value):
    assert isinstance(validate(value), list)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abc>-=!'\"()[] .andornotin0123_", max_size=40), min_size=1, max_size=5))
def test_random_conditions_never_raise(conds):
    spec = copy.deepcopy(BASE)
    for i, c in enumerate(conds):
        spec["edges"][i % len(spec["edges"])]["condition"] = c
    assert isinstance(validate(spec), list)


def test_deeply_nested_value_is_an_error_not_a_crash():
    deep = current = {}
    for _ in range(5000):
        current["x"] = {}
        current = current["x"]
    spec = copy.deepcopy(BASE)
    spec["nodes"][0]["config"] = {"defaults": deep}
    assert isinstance(validate(spec), list)
