import pytest

from agentflow.graph.conditions import ConditionError, compile_condition, fields, parse

STATE = {"intent": "text", "tokens_used": 12, "cost": 0.5, "metadata": {"tier": "paid", "n": 3,
         "tags": ["a", "b"]}, "db_result": None}


@pytest.mark.parametrize("expr, expected", [
    ("intent == 'text'", True),
    ("intent == \"image\"", False),
    ("intent != 'image'", True),
    ("tokens_used > 10 and cost < 1", True),
    ("tokens_used >= 12 and tokens_used <= 12", True),
    ("not intent == 'text'", False),
    ("intent == 'image' or metadata.tier == 'paid'", True),
    ("intent in ['text', 'both']", True),
    ("intent not in ['text', 'both']", False),
    ("'a' in metadata.tags", True),
    ("metadata.missing == null", True),
    ("metadata.missing > 3", False),          # None compared with a number: False, not an error
    ("metadata.tier > 3", False),             # str vs int: False, not an error
    ("(intent == 'x' or intent == 'text') and not (metadata.n == 4)", True),
    ("db_result", False),
    ("metadata.n == 3.0", True),
    ("true", True),
])
def test_evaluates(expr, expected):
    assert compile_condition(expr)(STATE) is expected


@pytest.mark.parametrize("expr", [
    "__import__('os').system('id')",
    "intent.__class__",
    "metadata.__class__.__mro__",
    "open('/etc/passwd')",
    "intent.upper()",
    "len(intent) > 2",
    "intent[0] == 't'",
    "lambda: 1",
    "intent == 'text'; import os",
    "intent = 'text'",
    "intent ==",
    "",
    "   ",
    "(intent == 'text'",
    "intent == 'text')",
    "1 if intent else 2",
    "[x for x in metadata]",
    "{'a': 1}",
    "intent == `id`",
    "_private == 1",
    "metadata._x == 1",
    "not " * 100 + "true",
])
def test_rejects_injection_and_garbage(expr):
    with pytest.raises(ConditionError):
        parse(expr)


def test_error_has_position():
    with pytest.raises(ConditionError) as info:
        parse("intent == 'a' and ( ")
    assert info.value.position is not None
    assert "character" in str(info.value)


def test_fields_collects_dotted_names():
    assert fields(parse("intent == 'a' and metadata.tier in ['x'] or not cost > 1")) == {
        "intent", "metadata.tier", "cost"}


def test_strings_are_data_not_code():
    # A string literal that looks like code is compared, never executed.
    pred = compile_condition("user_input == \"__import__('os').system('echo pwned')\"")
    assert pred({"user_input": "__import__('os').system('echo pwned')"}) is True
    assert pred({"user_input": "x"}) is False


def test_long_condition_rejected():
    with pytest.raises(ConditionError):
        parse("intent == 'a' or " * 300 + "true")
