"""Filters for Upstash Vector: from our filter model or our SQL predicates to Upstash's syntax.

The pipeline and the serving app describe rows with the small SQL subset LanceDB takes
(`shard = 'shard-003'`, `document IN ('a', 'b')`, `(page_number >= 3) AND (collection IN (..))`,
`FALSE` for "nothing"). Both that SQL and the serving filter model
(`{field: value | {"in": [..]} | {"gte": x, ..}}`) become one small expression tree, which
renders to Upstash's SQL-like filter (`field = 'x' AND n >= 3`, `field IN ('a', 'b')`) and can
also be evaluated locally on a vector's metadata (Upstash's range calls take no filter).

Strings are single-quoted with backslash escapes for `\\` and `'`; field names are plain
identifiers, never quoted user input, so a value can never change the shape of a filter.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
NEGATED = {"=": "!=", "!=": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}

Scalar = str | int | float | bool


class FilterError(ValueError):
    """A predicate Upstash cannot express (or that is malformed)."""


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # = != < <= > >=
    value: Scalar


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True)
class HasField:
    field: str
    negated: bool = False  # IS NULL: the field is absent (None values are never stored)


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Const:
    value: bool


Node = Compare | In | HasField | And | Or | Const
MATCH_ALL = Const(True)
MATCH_NONE = Const(False)


def _field(name: str) -> str:
    if not FIELD_NAME.match(name):
        raise FilterError(f"not a filterable field name: {name!r}")
    return name


def conjunction(items: Sequence[Node]) -> Node:
    kept: list[Node] = []
    for item in items:
        if item == MATCH_NONE:
            return MATCH_NONE
        if item == MATCH_ALL:
            continue
        kept.extend(item.items if isinstance(item, And) else [item])
    if not kept:
        return MATCH_ALL
    return kept[0] if len(kept) == 1 else And(tuple(kept))


def disjunction(items: Sequence[Node]) -> Node:
    kept: list[Node] = []
    for item in items:
        if item == MATCH_ALL:
            return MATCH_ALL
        if item == MATCH_NONE:
            continue
        kept.extend(item.items if isinstance(item, Or) else [item])
    if not kept:
        return MATCH_NONE
    return kept[0] if len(kept) == 1 else Or(tuple(kept))


def negate(node: Node) -> Node:
    """NOT pushed down to the leaves (Upstash has no NOT over a group)."""
    if isinstance(node, Compare):
        return Compare(node.field, NEGATED[node.op], node.value)
    if isinstance(node, In):
        return In(node.field, node.values, not node.negated)
    if isinstance(node, HasField):
        return HasField(node.field, not node.negated)
    if isinstance(node, And):
        return disjunction([negate(item) for item in node.items])
    if isinstance(node, Or):
        return conjunction([negate(item) for item in node.items])
    return Const(not node.value)


# -- rendering ----------------------------------------------------------------------------------


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise FilterError(f"not a finite number: {value!r}")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise FilterError(f"filters take strings, numbers and booleans, got {value!r}")


def render(node: Node) -> str:
    """Upstash's filter text for a node that is not a constant."""
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {literal(node.value)}"
    if isinstance(node, In):
        keyword = "NOT IN" if node.negated else "IN"
        return f"{node.field} {keyword} ({', '.join(literal(v) for v in node.values)})"
    if isinstance(node, HasField):
        return f"HAS {'NOT ' if node.negated else ''}FIELD {node.field}"
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return joiner.join(
            f"({render(item)})" if isinstance(item, And | Or) else render(item)
            for item in node.items
        )
    raise FilterError("a constant has no Upstash filter text")


@dataclass(frozen=True)
class UpstashFilter:
    """A translated predicate: `text` for Upstash, or a constant that needs no call at all."""

    node: Node

    @property
    def matches_nothing(self) -> bool:
        return self.node == MATCH_NONE

    @property
    def text(self) -> str:
        """The filter text; empty when everything matches (Upstash's "no filter")."""
        if self.node == MATCH_ALL:
            return ""
        if self.node == MATCH_NONE:
            raise FilterError("this filter matches nothing: skip the call instead")
        return render(self.node)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return evaluate(self.node, metadata)


# -- local evaluation (range scans) ------------------------------------------------------------


def _comparable(left: Any, right: Scalar) -> bool:
    if isinstance(right, bool) or isinstance(left, bool):
        return isinstance(left, bool) and isinstance(right, bool)
    if isinstance(right, int | float):
        return isinstance(left, int | float)
    return isinstance(left, str)


def evaluate(node: Node, metadata: Mapping[str, Any]) -> bool:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, And):
        return all(evaluate(item, metadata) for item in node.items)
    if isinstance(node, Or):
        return any(evaluate(item, metadata) for item in node.items)
    if isinstance(node, HasField):
        present = metadata.get(node.field) is not None
        return not present if node.negated else present
    value = metadata.get(node.field)
    if value is None:
        return False  # like SQL's NULL and Upstash's missing field: no comparison holds
    if isinstance(node, In):
        found = any(_comparable(value, v) and value == v for v in node.values)
        return not found if node.negated else found
    if not _comparable(value, node.value):
        return False
    left, right, op = value, node.value, node.op
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if isinstance(left, bool) or isinstance(right, str | bool):
        raise FilterError(f"{op} applies to numbers only ({node.field})")
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


# -- from the serving filter model -------------------------------------------------------------


def from_filter_model(
    filters: Mapping[str, Any] | None,
    collections: Sequence[str] | None,
    filterable: Mapping[str, type] | None = None,
) -> UpstashFilter:
    """`{field: value | {"in": [...]} | {"gte": x, "lt": y, ...}}` plus collection scoping.

    The same model serving/search.py turns into SQL; `filterable` (field → str or int) checks
    field names and value types the same way when given.
    """

    def checked(field: str, value: Any) -> Scalar:
        expected = (filterable or {}).get(field)
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise FilterError(f"filter on {field!r} takes integers, got {value!r}")
        if expected is str and not isinstance(value, str):
            raise FilterError(f"filter on {field!r} takes strings, got {value!r}")
        if not isinstance(value, str | int | float | bool):
            raise FilterError(f"filter on {field!r} takes scalars, got {value!r}")
        return value

    clauses: list[Node] = []
    for field, condition in (filters or {}).items():
        if filterable is not None and field not in filterable:
            raise FilterError(
                f"cannot filter on {field!r}; filterable fields: {', '.join(sorted(filterable))}"
            )
        _field(field)
        if isinstance(condition, Mapping):
            if not condition:
                raise FilterError(f"empty condition for {field!r}")
            for operator, operand in condition.items():
                if operator == "in":
                    if not isinstance(operand, list) or not operand:
                        raise FilterError(f"'in' on {field!r} takes a non-empty list")
                    clauses.append(In(field, tuple(checked(field, v) for v in operand)))
                elif operator in RANGE_OPERATORS:
                    value = checked(field, operand)
                    if isinstance(value, str | bool):
                        raise FilterError(f"{operator!r} on {field!r} takes a number")
                    clauses.append(Compare(field, RANGE_OPERATORS[operator], value))
                else:
                    raise FilterError(
                        f"unknown operator {operator!r} on {field!r}; use in, gt, gte, lt, lte"
                    )
        else:
            clauses.append(Compare(field, "=", checked(field, condition)))
    if collections is not None:
        clauses.append(In("collection", tuple(collections)) if collections else MATCH_NONE)
    return UpstashFilter(conjunction(clauses))


# -- from our SQL predicates -------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<quoted>"[A-Za-z_][A-Za-z0-9_]*")
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "TRUE", "FALSE", "IS", "NULL"}


def _tokens(sql: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    text = sql.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise FilterError(f"cannot translate the predicate near {text[position:][:30]!r}")
        position = match.end()
        kind = match.lastgroup
        raw = match.group(kind or "")
        if kind == "string":
            tokens.append(("value", raw[1:-1].replace("''", "'")))
        elif kind == "number":
            tokens.append(("value", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind == "op":
            tokens.append(("op", "!=" if raw == "<>" else raw))
        elif kind == "punct":
            tokens.append((raw, raw))
        elif kind == "quoted":
            tokens.append(("field", raw[1:-1]))
        elif raw.upper() in _KEYWORDS:
            tokens.append((raw.upper(), raw.upper()))
        else:
            tokens.append(("field", raw))
    return tokens


class _Parser:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.tokens = _tokens(sql)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self, kind: str) -> Any:
        if self.peek() != kind:
            found = self.tokens[self.position][1] if self.peek() else "the end"
            raise FilterError(f"expected {kind} but found {found!r} in {self.sql!r}")
        self.position += 1
        return self.tokens[self.position - 1][1]

    def parse(self) -> Node:
        node = self.disjunction()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.tokens[self.position][1]!r} in {self.sql!r}")
        return node

    def disjunction(self) -> Node:
        items = [self.conjunction()]
        while self.peek() == "OR":
            self.take("OR")
            items.append(self.conjunction())
        return disjunction(items)

    def conjunction(self) -> Node:
        items = [self.negation()]
        while self.peek() == "AND":
            self.take("AND")
            items.append(self.negation())
        return conjunction(items)

    def negation(self) -> Node:
        if self.peek() == "NOT":
            self.take("NOT")
            return negate(self.negation())
        return self.primary()

    def primary(self) -> Node:
        kind = self.peek()
        if kind == "(":
            self.take("(")
            node = self.disjunction()
            self.take(")")
            return node
        if kind in ("TRUE", "FALSE"):
            return Const(self.take(kind) == "TRUE")
        field = _field(self.take("field"))
        kind = self.peek()
        if kind == "op":
            op = self.take("op")
            if self.peek() in ("TRUE", "FALSE"):
                return Compare(field, op, self.take(str(self.peek())) == "TRUE")
            return Compare(field, op, self.take("value"))
        if kind == "IS":
            self.take("IS")
            negated = self.peek() == "NOT"
            if negated:
                self.take("NOT")
            self.take("NULL")
            return HasField(field, negated=not negated)
        negated = kind == "NOT"
        if negated:
            self.take("NOT")
        self.take("IN")
        self.take("(")
        values = [self.take("value")]
        while self.peek() == ",":
            self.take(",")
            values.append(self.take("value"))
        self.take(")")
        return In(field, tuple(values), negated)


def from_sql(where: str | None) -> UpstashFilter:
    """Our LanceDB-dialect predicate (as built with sql_string/sql_in/filter_sql) for Upstash."""
    if where is None or not where.strip():
        return UpstashFilter(MATCH_ALL)
    return UpstashFilter(_Parser(where).parse())
