"""The edge-condition language: a small whitelisted grammar, parsed by hand.

    expr    := or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | cmp
    cmp     := operand (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not' 'in') operand)?
    operand := STRING | NUMBER | true | false | null | FIELD | '[' literals ']' | '(' expr ')'
    FIELD   := name ('.' name)*        # dict lookups in GraphState only

There is no call, subscript, attribute access or name starting with '_', and Python's
`eval` is never used: the parser builds a tiny tree that `evaluate` walks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .templates import lookup


class ConditionError(ValueError):
    """A condition that does not parse; `position` is the character offset."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message if position is None else f"{message} (at character {position})")
        self.position = position


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d+)?)
      | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
      | (?P<name>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "True", "False", "None"}
_LITERALS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}
_MAX_LEN = 2000
_MAX_DEPTH = 50


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Field:
    path: str


@dataclass(frozen=True)
class ListLit:
    items: tuple


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class BoolOp:
    op: str
    operands: tuple


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].lstrip()
            raise ConditionError(f"unexpected character {bad[:1]!r}", len(text) - len(bad))
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        if kind == "name" and value in _KEYWORDS:
            kind = "kw"
        tokens.append((kind, value, start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self, offset: int = 0):
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else ("eof", "", len(self.text))

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str):
        kind, v, pos = self.take()
        if v != value or kind == "str":
            raise ConditionError(f"expected {value!r}, found {v or 'end of condition'!r}", pos)

    def parse(self):
        if not self.toks:
            raise ConditionError("empty condition")
        node = self.or_()
        kind, v, pos = self.peek()
        if kind != "eof":
            raise ConditionError(f"unexpected {v!r}", pos)
        return node

    def _nest(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ConditionError("condition nested too deeply", self.peek()[2])

    def or_(self):
        parts = [self.and_()]
        while self.peek()[:2] == ("kw", "or"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def and_(self):
        parts = [self.not_()]
        while self.peek()[:2] == ("kw", "and"):
            self.take()
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def not_(self):
        if self.peek()[:2] == ("kw", "not"):
            self.take()
            self._nest()
            node = Not(self.not_())
            self.depth -= 1
            return node
        return self.cmp()

    def cmp(self):
        left = self.operand()
        kind, v, _ = self.peek()
        if kind == "op" and v in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return Compare(v, left, self.operand())
        if (kind, v) == ("kw", "in"):
            self.take()
            return Compare("in", left, self.operand())
        if (kind, v) == ("kw", "not") and self.peek(1)[:2] == ("kw", "in"):
            self.take()
            self.take()
            return Compare("not in", left, self.operand())
        return left

    def operand(self):
        kind, v, pos = self.take()
        if kind == "num":
            return Lit(float(v) if "." in v else int(v))
        if kind == "str":
            return Lit(_unquote(v))
        if kind == "kw" and v in _LITERALS:
            return Lit(_LITERALS[v])
        if kind == "name":
            if any(part.startswith("_") for part in v.split(".")):
                raise ConditionError(f"field {v!r} may not start with '_'", pos)
            if self.peek()[1] == "(":
                raise ConditionError(f"calls are not allowed ({v}(...))", pos)
            return Field(v)
        if (kind, v) == ("op", "("):
            self._nest()
            node = self.or_()
            self.depth -= 1
            self.expect(")")
            return node
        if (kind, v) == ("op", "["):
            items = []
            if self.peek()[1] != "]":
                while True:
                    item = self.operand()
                    if not isinstance(item, Lit):
                        raise ConditionError("list items must be literals", pos)
                    items.append(item.value)
                    if self.peek()[1] == ",":
                        self.take()
                        continue
                    break
            self.expect("]")
            return ListLit(tuple(items))
        raise ConditionError(f"expected a value, found {v or 'end of condition'!r}", pos)


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def parse(text: str):
    """Parse a condition into a tree; raises ConditionError with a position."""
    if not isinstance(text, str):
        raise ConditionError("a condition must be a string")
    if len(text) > _MAX_LEN:
        raise ConditionError(f"condition longer than {_MAX_LEN} characters")
    return _Parser(text).parse()


def fields(tree) -> set[str]:
    """Every dotted field a parsed condition reads."""
    if isinstance(tree, Field):
        return {tree.path}
    if isinstance(tree, Not):
        return fields(tree.operand)
    if isinstance(tree, BoolOp):
        return set().union(*(fields(p) for p in tree.operands))
    if isinstance(tree, Compare):
        return fields(tree.left) | fields(tree.right)
    return set()


def _value(tree, state: dict) -> Any:
    if isinstance(tree, Lit):
        return tree.value
    if isinstance(tree, ListLit):
        return list(tree.items)
    if isinstance(tree, Field):
        return lookup(state, tree.path)
    return evaluate(tree, state)


def evaluate(tree, state: dict) -> bool:
    """Evaluate a parsed condition. Comparing mismatched types is False, not an error."""
    if isinstance(tree, BoolOp):
        results = (evaluate(p, state) for p in tree.operands)
        return all(results) if tree.op == "and" else any(results)
    if isinstance(tree, Not):
        return not evaluate(tree.operand, state)
    if isinstance(tree, Compare):
        left, right = _value(tree.left, state), _value(tree.right, state)
        try:
            if tree.op == "==":
                return left == right
            if tree.op == "!=":
                return left != right
            if tree.op in ("in", "not in"):
                found = right is not None and left in right
                return found if tree.op == "in" else not found
            if left is None or right is None:
                return False
            return {"<": left < right, "<=": left <= right,
                    ">": left > right, ">=": left >= right}[tree.op]
        except TypeError:
            return False
    return bool(_value(tree, state))


def compile_condition(text: str):
    """Parse once, return a predicate over a state dict."""
    tree = parse(text)
    return lambda state: evaluate(tree, state)
