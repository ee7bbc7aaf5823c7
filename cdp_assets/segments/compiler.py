"""The segment rule language: parse `config/segments/<name>.yaml`, check it, compile it to DuckDB or Spark SQL.

A definition::

    name: cart_abandoners          # required, must equal the file name; letters, digits, _
    description: free text         # optional
    refresh: hourly                # hourly | daily (default daily)
    where: <condition>             # required

Conditions
----------
``all: [c, ...]`` / ``any: [c, ...]``   every / at least one of the (non-empty) list
``not: c``                              the opposite of c
``segment: <name>``                     a member of another segment (read from ``cdp.segment_membership``)
``trait: <column>, op: <op>, value: v`` a test on a column of ``cdp.profiles``
``event: <name>`` plus options          has done an event (``core.person_events.event_name``)::

    event: order_completed
    within: 30d                   # only events in [now - 30d, now]; N followed by m, h or d
    where:                        # property tests on the event's JSON properties: a list (all must hold)
      - {property: currency, op: eq, value: EUR}
      - any:                      #   ... or a tree of all / any / not
          - {property: coupon, op: is_set}
          - {property: revenue, op: gte, value: 100}
    count: {gte: 3}               # how many such events (default: at least one); several keys are ANDed
    sum: {property: revenue, gte: 500}   # the sum of a numeric property over those events (none: 0)

``count`` and ``sum`` take the comparisons ``eq neq gt gte lt lte between`` (``between: [lo, hi]``).
``count: {lt: 1}`` or ``count: {eq: 0}`` also matches persons without any such event.
``property: a.b`` reads the nested key ``b`` of object ``a``.

"Did A, then not B within T"::

    event: product_added
    within: 1d
    not_followed_by:
      event: order_completed
      within: 2h                  # required
      where: [...]                # optional property tests on B

counts the A events that happened at least T ago (the follow-up window is over) and after which no B
happened in ``(A.occurred_at, A.occurred_at + T]``. ``count``/``sum`` then apply to those A events. The
event's own ``within`` must be longer than T (otherwise no A event could qualify).

Operators (one table, ``OPERATORS``)
-------------------------------------
string    eq neq in not_in contains not_contains starts_with ends_with   (case-sensitive)
number    eq neq gt gte lt lte between                                   (between is inclusive)
datetime  before after between within_last not_within_last               (ISO dates / date-times in UTC;
          a date-only upper bound of between covers the whole day; within_last takes a duration: 30d)
boolean   is_true is_false
list      contains_any contains_all contains_none                        (value: a list)
any type  is_set is_not_set           (set: not missing, and for a list not empty; for an event property:
                                      present, not JSON null and not [] whatever its type)

``in``/``not_in``/list operators take a non-empty list; ``between`` a list of two; ``is_*`` no value.

Missing values: positive operators never match a missing (NULL) value; the negative operators ``neq
not_in not_contains contains_none not_within_last`` do (``gender neq male`` includes unknown gender),
and so does ``not`` around a positive test. For event properties "missing" means absent, JSON null or
not readable as the type (``TRY_CAST``); a numeric string counts as a number.

Types: trait types come from the ``cdp.profiles`` column types; an event property's type comes from the
catalog (inferred from sampled events) when the event is known there, else from the operator and value.
Unquoted YAML scalars are taken as written for string tests (``value: no`` is the string "no").

Errors: every problem is a ``SegmentError`` whose message is ``<file>:<line>: <what is wrong>``.

Safety: values, event names, segment names and JSON paths are bound ``?`` parameters; column names are
checked against the catalog and quoted; ``now`` is a parameter (no CURRENT_TIMESTAMP), so a result
depends only on the data and ``now``.

Engines: ``compile_segment(..., dialect="spark")`` writes Spark SQL for the same rule (run it with
``session.sql(sql, args=params)``: Spark binds positional ``?`` markers too). Where the engines' SQL differs
(JSON, lists, casts, quoting) one dialect class says it (``DuckDBDialect``, ``SparkDialect``, below); the
rest of the compiler is shared, so both engines read the same rule with the same missing-value semantics
(tests/test_spark_segments.py compares their memberships).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Union

import duckdb
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cdp_assets.config import ConfigError, compose_yaml

PROFILES_TABLE = "cdp.profiles"
EVENTS_TABLE = "core.person_events"
MEMBERSHIP_TABLE = "cdp.segment_membership"
REFRESH_CHOICES = ("hourly", "daily")
DEFAULT_REFRESH = "daily"
MAX_DEPTH = 32
MAX_SEGMENT_BYTES = 256 * 1024  # a definition is a few hundred bytes; anything near this is not one

NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
DURATION_RE = re.compile(r"^([1-9][0-9]*)([mhd])$")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
DURATION_SECONDS = {"m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_DAYS = 36_600  # about a century: the longest window a rule may name (dates stay in range)
MAX_WHOLE = 2**63 - 1  # counts are BIGINT
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
# An ISO date-time string ending in Z or a UTC offset (converted to UTC; others are read as UTC).
TZ_SUFFIX_RE = r"[0-9]:[0-9]{2}(:[0-9]{2}([.,][0-9]*)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)$"


class SegmentError(ValueError):
    """A problem in a segment definition: the message is '<file>:<line>: <what is wrong>'."""


def parse_duration(value) -> timedelta:
    """`30m`, `2h`, `7d` as a timedelta; ValueError saying what is wrong (not a duration, or longer than
    MAX_WINDOW_DAYS: a window reaching before year 1 cannot be computed)."""
    match = DURATION_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"a duration like 30m, 2h or 7d, not {value!r}")
    amount, unit = match.groups()
    if len(amount) > 15 or int(amount) * DURATION_SECONDS[unit] > MAX_WINDOW_DAYS * 86400:
        raise ValueError(f"a duration of at most {MAX_WINDOW_DAYS}d (about a century), not {value!r}")
    return timedelta(**{DURATION_UNITS[unit]: int(amount)})


# --------------------------------------------------------------------------------------------------
# Operators: the one table
# --------------------------------------------------------------------------------------------------

NONE, ONE, PAIR, MANY = "no value", "one value", "a list of two values", "a non-empty list"
VALUE_TYPES = ("string", "number", "datetime", "boolean", "list")


@dataclass(frozen=True)
class Operator:
    types: frozenset[str]  # value types it applies to ("other": columns of any other type)
    arity: str  # NONE | ONE | PAIR | MANY
    negates: str | None = None  # a negative operator is NOT <negates>, and matches a missing value


def _op(types: str, arity: str, negates: str | None = None) -> Operator:
    return Operator(frozenset(types.split()), arity, negates)


OPERATORS: dict[str, Operator] = {
    "eq": _op("string number", ONE),
    "neq": _op("string number", ONE, negates="eq"),
    "in": _op("string", MANY),
    "not_in": _op("string", MANY, negates="in"),
    "contains": _op("string", ONE),
    "not_contains": _op("string", ONE, negates="contains"),
    "starts_with": _op("string", ONE),
    "ends_with": _op("string", ONE),
    "gt": _op("number", ONE),
    "gte": _op("number", ONE),
    "lt": _op("number", ONE),
    "lte": _op("number", ONE),
    "between": _op("number datetime", PAIR),
    "before": _op("datetime", ONE),
    "after": _op("datetime", ONE),
    "within_last": _op("datetime", ONE),
    "not_within_last": _op("datetime", ONE, negates="within_last"),
    "is_true": _op("boolean", NONE),
    "is_false": _op("boolean", NONE),
    "contains_any": _op("list", MANY),
    "contains_all": _op("list", MANY),
    "contains_none": _op("list", MANY, negates="contains_any"),
    "is_set": _op("string number datetime boolean list other", NONE),
    "is_not_set": _op("string number datetime boolean list other", NONE),
}
NEGATIVE_OPERATORS = frozenset(name for name, op in OPERATORS.items() if op.negates)
COMPARISONS = ("eq", "neq", "gt", "gte", "lt", "lte", "between")  # for count and sum
SQL_COMPARISON = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
SQL_DATETIME = {"before": "<", "after": ">"}


def operators_for(value_type: str) -> list[str]:
    return [name for name, op in OPERATORS.items() if value_type in op.types]


# --------------------------------------------------------------------------------------------------
# Catalog: what the rules may refer to
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    profile_columns: dict[str, str]  # column -> DuckDB type name ("DOUBLE", "VARCHAR[]", ...)
    event_properties: dict[str, dict[str, str]]  # event -> property -> string|number|boolean|datetime|list|any


def _split_table(table: str) -> tuple[str, str]:
    if not TABLE_RE.match(table):
        raise ValueError(f"not a table name: {table!r}")
    schema, _, name = table.rpartition(".")
    return schema or "main", name


def _json_type_class(json_types: list[str], all_datetimes: bool | None) -> str:
    kinds = set(json_types) - {"NULL"}
    if kinds and kinds <= {"BIGINT", "UBIGINT", "DOUBLE"}:
        return "number"
    if kinds == {"VARCHAR"}:
        return "datetime" if all_datetimes else "string"
    if kinds == {"BOOLEAN"}:
        return "boolean"
    if kinds == {"ARRAY"}:
        return "list"
    return "any"  # only nulls, objects or mixed types: any operator, read as the operator needs


def catalog_from_warehouse(
    con: duckdb.DuckDBPyConnection, profiles: str = "cdp.profiles", events: str = "cdp.events",
    sample_per_event: int = 1000, event_names: list[str] | None = None,
) -> Catalog:
    """Profile columns from information_schema; event properties (top level and one nested level) from the
    JSON `properties` of the `sample_per_event` most recent events of each name. `event_names` (from
    `property_events`) limits the sampling to the events a rule reads properties of: over millions of
    events the sampling costs about a second, more than evaluating most rules."""
    schema, table = _split_table(profiles)
    columns = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database() ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    properties: dict[str, dict[str, str]] = {}
    schema, table = _split_table(events)
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = ? AND table_name = ? AND table_catalog = current_database()",
        [schema, table],
    ).fetchone()[0]
    if exists and event_names != []:
        rows = con.execute(
            f"""
            WITH sample AS (
                SELECT event_name, CAST(properties AS JSON) AS properties FROM {events}
                WHERE event_name IS NOT NULL AND json_type(CAST(properties AS JSON)) = 'OBJECT'
                    AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], event_name))
                QUALIFY row_number() OVER (PARTITION BY event_name ORDER BY occurred_at DESC) <= ?
            ),
            top AS (
                SELECT s.event_name, j.key AS name, j.type, j.value FROM sample AS s, json_each(s.properties) AS j
            ),
            nested AS (
                SELECT t.event_name, t.name || '.' || j.key AS name, j.type, j.value
                FROM top AS t, json_each(t.value) AS j WHERE t.type = 'OBJECT'
            )
            SELECT event_name, name, list(DISTINCT type),
                bool_and(TRY_CAST(value ->> '$' AS TIMESTAMP) IS NOT NULL) FILTER (WHERE type = 'VARCHAR')
            FROM (SELECT * FROM top UNION ALL SELECT * FROM nested)
            GROUP BY ALL ORDER BY ALL
            """,
            [event_names, event_names, sample_per_event],
        ).fetchall()
        for event_name, name, json_types, all_datetimes in rows:
            properties.setdefault(event_name, {})[name] = _json_type_class(json_types, all_datetimes)
    return Catalog(profile_columns=dict(columns), event_properties=properties)


def column_type(duckdb_type: str) -> tuple[str, str | None]:
    """(value type, list element type) of a DuckDB column type name."""
    t = duckdb_type.strip().upper()
    list_match = re.match(r"^(.*)\[\d*\]$", t)
    if list_match:
        element, _ = column_type(list_match.group(1))
        return "list", element
    if t.startswith(("DECIMAL", "NUMERIC")) or t in {
        "TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
        "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE", "INT1", "INT2", "INT4", "INT8", "FLOAT4", "FLOAT8",
    }:
        return "number", None
    if t in {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "UUID"} or t.startswith(("VARCHAR(", "ENUM(")):
        return "string", None
    if t.startswith("TIMESTAMP") or t == "DATE":
        return "datetime", None
    if t in {"BOOLEAN", "BOOL"}:
        return "boolean", None
    return "other", None


# --------------------------------------------------------------------------------------------------
# The parsed tree
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: object  # as YAML read it: str, int, float, bool, date, datetime
    text: str | None  # the source text of an unquoted scalar, else None
    line: int


@dataclass(frozen=True)
class Test:
    """`op: <op>` with its `value:` (empty for is_set & co, two for between, a list for in & co)."""

    op: str
    values: tuple[Literal, ...]
    line: int  # of the op


@dataclass(frozen=True)
class Duration:
    text: str
    delta: timedelta
    line: int


@dataclass(frozen=True)
class AllOf:
    conditions: tuple["Condition", ...]
    line: int


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple["Condition", ...]
    line: int


@dataclass(frozen=True)
class Not:
    condition: "Condition"
    line: int


@dataclass(frozen=True)
class SegmentRef:
    name: str
    line: int


@dataclass(frozen=True)
class TraitCondition:
    column: str
    test: Test
    line: int  # of the trait name


@dataclass(frozen=True)
class PropertyCondition:
    property: str
    test: Test
    line: int  # of the property name


@dataclass(frozen=True)
class Comparison:
    """One key of `count:` or `sum:` — `gte: 3`, `between: [1, 5]`; values already checked numbers."""

    op: str
    values: tuple[float | int, ...]
    line: int


@dataclass(frozen=True)
class SumOf:
    property: str
    comparisons: tuple[Comparison, ...]
    line: int


@dataclass(frozen=True)
class FollowUp:
    event: str
    within: Duration
    where: "PropertyTree | None"
    line: int


@dataclass(frozen=True)
class EventCondition:
    event: str
    within: Duration | None
    where: "PropertyTree | None"
    count: tuple[Comparison, ...]  # empty: at least one
    sum: SumOf | None
    not_followed_by: FollowUp | None
    line: int


Condition = Union[AllOf, AnyOf, Not, SegmentRef, TraitCondition, EventCondition]
PropertyTree = Union[AllOf, AnyOf, Not, PropertyCondition]


@dataclass(frozen=True)
class SegmentDefinition:
    name: str
    description: str
    refresh: str
    where: Condition
    path: Path
    depends_on: tuple[str, ...]


def segment_refs(node) -> list[SegmentRef]:
    """Every `segment:` reference in a condition tree, in order."""
    if isinstance(node, SegmentRef):
        return [node]
    if isinstance(node, (AllOf, AnyOf)):
        return [ref for child in node.conditions for ref in segment_refs(child)]
    if isinstance(node, Not):
        return segment_refs(node.condition)
    return []


def property_events(node) -> list[str]:
    """The events whose properties a condition tree reads (`where:`, `sum:`, a follow-up's `where:`): the
    only ones the catalog must type for it."""
    if isinstance(node, SegmentDefinition):
        return property_events(node.where)
    if isinstance(node, (AllOf, AnyOf)):
        return sorted({name for child in node.conditions for name in property_events(child)})
    if isinstance(node, Not):
        return property_events(node.condition)
    if isinstance(node, EventCondition):
        names = {node.event} if node.where is not None or node.sum is not None else set()
        follow = node.not_followed_by
        if follow is not None and follow.where is not None:
            names.add(follow.event)
        return sorted(names)
    return []


# --------------------------------------------------------------------------------------------------
# Parser: YAML nodes (with line numbers) -> the tree above
# --------------------------------------------------------------------------------------------------

CONDITION_KINDS = ("all", "any", "not", "segment", "trait", "event")
CONDITION_KEYS = {
    "all": {"all"}, "any": {"any"}, "not": {"not"}, "segment": {"segment"},
    "trait": {"trait", "op", "value"},
    "event": {"event", "within", "count", "sum", "where", "not_followed_by"},
}
PROPERTY_KINDS = ("all", "any", "not", "property")
PROPERTY_KEYS = {"all": {"all"}, "any": {"any"}, "not": {"not"}, "property": {"property", "op", "value"}}
TOP_LEVEL_KEYS = ("name", "description", "refresh", "where")


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _Parser:
    def __init__(self, path: Path):
        self.path = path
        self.constructor = SafeConstructor()

    def error(self, where: Node | int, message: str) -> SegmentError:
        line = where if isinstance(where, int) else _line(where)
        return SegmentError(f"{self.path}:{line}: {message}")

    # -- YAML shapes --------------------------------------------------------------------------------

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        fields: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.error(key, f"keys of {what} must be plain names")
            if key.value in fields:
                raise self.error(key, f"duplicate key '{key.value}'")
            fields[key.value] = (key, value)
        return fields

    def only(self, fields: dict[str, tuple[Node, Node]], allowed, what: str) -> None:
        for name, (key, _) in fields.items():
            if name not in allowed:
                raise self.error(key, f"unknown key '{name}' in {what} (allowed: {', '.join(sorted(allowed))})")

    def literal(self, node: Node, what: str) -> Literal:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{what} must be a single value, not a {'list' if isinstance(node, SequenceNode) else 'mapping'}")
        value = self.construct(node, what)
        if value is None:
            raise self.error(node, f"{what} is empty (null); use op is_set / is_not_set to test for a missing value")
        return Literal(value, node.value if node.style is None else None, _line(node))

    def construct(self, node: ScalarNode, what: str):
        """The scalar as YAML types it; a value YAML cannot build (a 5,000-digit integer, month 13) is an error here."""
        try:
            return self.constructor.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            raise self.error(node, f"{what}: cannot read {node.value[:40]!r}: {str(exc)[:120]}") from None

    def string(self, node: Node, what: str) -> str:
        text = _as_string(self.literal(node, what))  # an unquoted 404 or yes is a name as written
        if text is None or not text.strip():
            raise self.error(node, f"{what} must be a non-empty text")
        return text

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(node, f"{what} must be a list")
        if not node.value:
            raise self.error(node, f"{what} must not be empty")
        return node.value

    def kind(self, node: Node, fields, kinds, what: str) -> str:
        found = [k for k in kinds if k in fields]
        if not found:
            raise self.error(node, f"{what} needs one of {', '.join(kinds)} (found: {', '.join(fields) or 'nothing'})")
        if len(found) > 1:
            raise self.error(
                fields[found[1]][0],
                f"{what} has both '{found[0]}' and '{found[1]}'; combine conditions with all: [...] or any: [...]",
            )
        return found[0]

    def duration(self, node: Node, what: str) -> Duration:
        lit = self.literal(node, what)
        try:
            return Duration(lit.value, parse_duration(lit.value), lit.line)
        except ValueError as exc:
            raise self.error(node, f"{what} must be {exc}") from None

    # -- the definition ----------------------------------------------------------------------------

    def definition(self, root: Node) -> SegmentDefinition:
        fields = self.mapping(root, "a segment definition")
        self.only(fields, TOP_LEVEL_KEYS, "a segment definition")
        if "name" not in fields:
            raise self.error(root, f"missing 'name' (it must be the file name: {self.path.stem})")
        name_node = fields["name"][1]
        name = self.string(name_node, "name")
        if not NAME_RE.match(name):
            raise self.error(name_node, f"name '{name}' may hold only letters, digits and _")
        if name != self.path.stem:
            raise self.error(name_node, f"name '{name}' does not match the file name '{self.path.stem}'")
        description = ""
        if "description" in fields:
            lit = self.literal(fields["description"][1], "description")
            description = str(lit.value)
        refresh = DEFAULT_REFRESH
        if "refresh" in fields:
            node = fields["refresh"][1]
            refresh = str(self.literal(node, "refresh").value)
            if refresh not in REFRESH_CHOICES:
                raise self.error(node, f"refresh must be one of {', '.join(REFRESH_CHOICES)}, not '{refresh}'")
        if "where" not in fields:
            raise self.error(root, "missing 'where' (the condition of the segment)")
        where = self.condition(fields["where"][1], 0)
        depends_on: list[str] = []
        for ref in segment_refs(where):
            if ref.name == name:
                raise self.error(ref.line, f"segment '{name}' refers to itself")
            if ref.name not in depends_on:
                depends_on.append(ref.name)
        return SegmentDefinition(name, description, refresh, where, self.path, tuple(depends_on))

    # -- conditions ----------------------------------------------------------------------------------

    def head(self, node: Node, depth: int, kinds, keys, what: str):
        """The kind of a (property) condition, its fields, and its key and value nodes."""
        if depth > MAX_DEPTH:
            raise self.error(node, f"conditions are nested more than {MAX_DEPTH} deep")
        fields = self.mapping(node, f"a {what}")
        kind = self.kind(node, fields, kinds, f"a {what}")
        self.only(fields, keys[kind], f"a {kind} {what}")
        key, value = fields[kind]
        return kind, fields, key, value

    def combine(self, kind: str, key: Node, value: Node, depth: int, parse):
        """all / any / not over conditions that `parse` reads: one grammar for both condition trees."""
        if kind == "not":
            return Not(parse(value, depth + 1), _line(key))
        children = tuple(parse(child, depth + 1) for child in self.sequence(value, kind))
        return (AllOf if kind == "all" else AnyOf)(children, _line(key))

    def condition(self, node: Node, depth: int) -> Condition:
        kind, fields, key, value = self.head(node, depth, CONDITION_KINDS, CONDITION_KEYS, "condition")
        if kind in ("all", "any", "not"):
            return self.combine(kind, key, value, depth, self.condition)
        if kind == "segment":
            name = self.string(value, "segment")
            if not NAME_RE.match(name):
                raise self.error(value, f"segment name '{name}' may hold only letters, digits and _")
            return SegmentRef(name, _line(value))
        if kind == "trait":
            return TraitCondition(self.string(value, "trait"), self.test(node, fields), _line(value))
        return self.event(fields, depth)

    def test(self, owner: Node, fields) -> Test:
        if "op" not in fields:
            raise self.error(owner, "missing 'op' (the operator)")
        op_node = fields["op"][1]
        op = self.string(op_node, "op")
        if op not in OPERATORS:
            raise self.error(op_node, f"unknown operator '{op}' (known: {', '.join(OPERATORS)})")
        arity = OPERATORS[op].arity
        value = fields.get("value", (None, None))[1]
        if arity == NONE:
            if value is not None:
                raise self.error(value, f"operator '{op}' takes no value")
            return Test(op, (), _line(op_node))
        if value is None:
            raise self.error(op_node, f"operator '{op}' needs a value ({arity})")
        if arity == ONE:
            literal = self.literal(value, f"the value of '{op}'")
            if op in ("within_last", "not_within_last"):
                try:
                    parse_duration(literal.value)
                except ValueError as exc:
                    raise self.error(value, f"'{op}' needs {exc}") from None
            return Test(op, (literal,), _line(op_node))
        if not isinstance(value, SequenceNode) or (arity == PAIR and len(value.value) != 2) or not value.value:
            example = "[low, high]" if arity == PAIR else "[a, b]"
            raise self.error(value, f"operator '{op}' needs {arity}, e.g. {example}")
        return Test(op, tuple(self.literal(item, f"a value of '{op}'") for item in value.value), _line(op_node))

    def event(self, fields, depth: int) -> EventCondition:
        event = self.string(fields["event"][1], "event")
        line = _line(fields["event"][1])
        within = self.duration(fields["within"][1], "within") if "within" in fields else None
        where = self.where(fields["where"][1], depth + 1) if "where" in fields else None
        count = self.comparisons(fields["count"][1], "count", whole=True) if "count" in fields else ()
        total = None
        if "sum" in fields:
            node = fields["sum"][1]
            sum_fields = self.mapping(node, "sum")
            if "property" not in sum_fields:
                raise self.error(node, "sum needs 'property' (the numeric event property to add up)")
            prop_node = sum_fields["property"][1]
            prop = self.property_name(prop_node)
            rest = {k: v for k, v in sum_fields.items() if k != "property"}
            total = SumOf(prop, self.comparisons(node, "sum", whole=False, fields=rest), _line(prop_node))
        follow = None
        if "not_followed_by" in fields:
            node = fields["not_followed_by"][1]
            follow_fields = self.mapping(node, "not_followed_by")
            self.only(follow_fields, {"event", "within", "where"}, "not_followed_by")
            for required in ("event", "within"):
                if required not in follow_fields:
                    raise self.error(node, f"not_followed_by needs '{required}'")
            follow_within = self.duration(follow_fields["within"][1], "not_followed_by within")
            follow = FollowUp(
                self.string(follow_fields["event"][1], "not_followed_by event"),
                follow_within,
                self.where(follow_fields["where"][1], depth + 1) if "where" in follow_fields else None,
                _line(follow_fields["event"][1]),
            )
            if within is not None and within.delta <= follow_within.delta:
                raise self.error(
                    within.line,
                    f"within ({within.text}) must be longer than the not_followed_by window ({follow_within.text}): "
                    "an event counts only once its follow-up window is over",
                )
        return EventCondition(event, within, where, count, total, follow, line)

    def comparisons(self, node: Node, what: str, whole: bool, fields=None) -> tuple[Comparison, ...]:
        fields = self.mapping(node, what) if fields is None else fields
        if not fields:
            raise self.error(node, f"{what} needs a comparison, e.g. {{gte: 3}}")
        out = []
        for op, (key, value) in fields.items():
            if op not in COMPARISONS:
                raise self.error(key, f"unknown {what} comparison '{op}' (known: {', '.join(COMPARISONS)})")
            items = [value]
            if op == "between":
                if not isinstance(value, SequenceNode) or len(value.value) != 2:
                    raise self.error(value, f"{what} between needs a list of two values, e.g. [1, 5]")
                items = value.value
            numbers = []
            for item in items:
                lit = self.literal(item, f"{what} {op}")
                v = lit.value
                if whole and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WHOLE):
                    raise self.error(item, f"count {op} needs a whole number from 0 to {MAX_WHOLE:,}, not {v!r}")
                if not whole:
                    v = _as_number(lit)
                    if v is None:
                        raise self.error(item, f"sum {op} needs a number, not {lit.value!r}")
                numbers.append(v)
            out.append(Comparison(op, tuple(numbers), _line(key)))
        return tuple(out)

    def property_name(self, node: Node) -> str:
        name = self.string(node, "property")
        if any(not part for part in name.split(".")):
            raise self.error(node, f"property '{name}' has an empty part (a dot separates nested keys)")
        return name

    def where(self, node: Node, depth: int) -> PropertyTree:
        if isinstance(node, SequenceNode):
            return AllOf(tuple(self.property_condition(c, depth + 1) for c in self.sequence(node, "where")), _line(node))
        return self.property_condition(node, depth)

    def property_condition(self, node: Node, depth: int) -> PropertyTree:
        kind, fields, key, value = self.head(node, depth, PROPERTY_KINDS, PROPERTY_KEYS, "property condition")
        if kind in ("all", "any", "not"):
            return self.combine(kind, key, value, depth, self.property_condition)
        return PropertyCondition(self.property_name(value), self.test(node, fields), _line(value))


def load_segment(path: Path) -> SegmentDefinition:
    """Parse one definition file and check its structure (names, keys, operators, value shapes, durations)."""
    path = Path(path)
    try:
        root = compose_yaml(path, MAX_SEGMENT_BYTES)
    except ConfigError as exc:
        raise SegmentError(str(exc)) from None
    if root is None:
        raise SegmentError(f"{path}:1: the file is empty (expected name, refresh and where)")
    return _Parser(path).definition(root)


def load_segments(directory: Path) -> dict[str, SegmentDefinition]:
    """Every `*.yaml` in the directory, by name; references must exist and must not form a cycle."""
    directory = Path(directory)
    definitions = {d.name: d for d in (load_segment(p) for p in sorted(directory.glob("*.yaml")))}
    check_references(definitions)
    return definitions


def load_valid_segments(directory: Path) -> tuple[dict[str, SegmentDefinition], dict[Path, str]]:
    """(valid definitions by name, error by file): one bad file, or a segment reusing it, leaves the others
    usable, so a typo in one definition does not take every segment down with it."""
    valid, errors = {}, {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            definition = load_segment(path)
            valid[definition.name] = definition
        except SegmentError as exc:
            errors[path] = str(exc)
        except Exception as exc:  # noqa: BLE001 (a parser bug must not stop the code location: this file fails alone)
            errors[path] = f"{path}:1: cannot load the definition ({type(exc).__name__}: {exc})"
    while True:
        try:
            check_references(valid, invalid={path.stem: path for path in errors})
            return valid, errors
        except SegmentError as exc:
            [culprit] = [d for d in valid.values() if str(exc).startswith(f"{d.path}:")]
            errors[culprit.path] = str(exc)
            del valid[culprit.name]


def check_references(definitions: dict[str, SegmentDefinition], invalid: dict[str, Path] | None = None) -> None:
    """Reused segments must exist and must not form a cycle; the error names the file and line.
    `invalid` (name -> file) are segments whose own file is wrong: reusing one says so, not 'unknown'."""
    invalid = invalid or {}
    for defn in definitions.values():
        for ref in segment_refs(defn.where):
            if ref.name in invalid and ref.name not in definitions:
                raise SegmentError(
                    f"{defn.path}:{ref.line}: segment '{ref.name}' cannot be reused: its definition "
                    f"{invalid[ref.name]} is invalid"
                )
            if ref.name not in definitions:
                known = ", ".join(sorted(definitions)) or "none"
                raise SegmentError(f"{defn.path}:{ref.line}: unknown segment '{ref.name}' (known: {known})")
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in done:
            return
        defn = definitions[name]
        for ref in segment_refs(defn.where):
            if ref.name in trail or ref.name == name:
                cycle = trail[trail.index(ref.name):] if ref.name in trail else []
                chain = " -> ".join(cycle + [name, ref.name])
                raise SegmentError(f"{defn.path}:{ref.line}: segments refer to each other in a cycle: {chain}")
            visit(ref.name, trail + [name])
        done.add(name)

    for name in sorted(definitions):
        visit(name, [])


# --------------------------------------------------------------------------------------------------
# SQL fragments: text plus its bound parameters, in order
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sql:
    text: str
    params: tuple = ()


def q(template: str, *args) -> Sql:
    """Fill each `{}` of the template: an `Sql` argument is inlined with its parameters, any other value
    becomes a `?` bound parameter. The only way a value reaches the SQL text."""
    pieces = template.split("{}")
    assert len(pieces) == len(args) + 1, template
    text, params = [pieces[0]], []
    for arg, piece in zip(args, pieces[1:]):
        if isinstance(arg, Sql):
            text.append(arg.text)
            params.extend(arg.params)
        else:
            text.append("?")
            params.append(arg)
        text.append(piece)
    return Sql("".join(text), tuple(params))


def join(separator: str, parts: list[Sql]) -> Sql:
    return q(separator.join("{}" for _ in parts), *parts)


def indent(part: Sql, spaces: int = 4) -> Sql:
    return Sql(part.text.replace("\n", "\n" + " " * spaces), part.params)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_pointer(prop: str) -> str:
    """`a.b` -> `/a/b` (RFC 6901 escaping), bound as a parameter."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in prop.split("."))


# --------------------------------------------------------------------------------------------------
# Values: YAML literals checked against the type they are compared with
# --------------------------------------------------------------------------------------------------


def _as_number(lit: Literal) -> int | float | None:
    value = lit.value
    if isinstance(value, str) and lit.text is not None:  # unquoted 1e3 is a string in YAML 1.1
        try:
            value = float(value) if not re.fullmatch(r"[-+]?[0-9]+", value) else int(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) > MAX_WHOLE:  # beyond BIGINT: as a DOUBLE, if it is one
        try:
            value = float(value)
        except OverflowError:
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_datetime(lit: Literal) -> tuple[datetime, bool] | None:
    """(naive UTC datetime, is a date without time)."""
    value = lit.value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", lit.value.strip()):
            return value, True
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            try:
                value = value.astimezone(timezone.utc).replace(tzinfo=None)
            except OverflowError:  # 9999-12-31T23:00-05:00 is past the last representable instant
                return None
        return value, False
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day), True
    return None


def _as_string(lit: Literal) -> str | None:
    if isinstance(lit.value, str):
        return lit.value
    return lit.text  # an unquoted 42, yes or 2024-01-01 is meant as written


def _looks_like_datetime(lit: Literal) -> bool:
    if isinstance(lit.value, (date, datetime)):
        return True
    return isinstance(lit.value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", lit.value) is not None and _as_datetime(lit) is not None


def _infer_property_type(test: Test) -> str:
    """The value type of an event property the catalog does not know, from the operator and value."""
    candidates = OPERATORS[test.op].types & set(VALUE_TYPES)
    if len(candidates) == 1:
        return next(iter(candidates))
    if test.op == "between":
        return "datetime" if all(_looks_like_datetime(v) for v in test.values) else "number"
    numeric = all(not isinstance(v.value, (str, bool)) and _as_number(v) is not None for v in test.values)
    return "number" if numeric else "string"  # eq / neq


# --------------------------------------------------------------------------------------------------
# Compiler: the tree -> one SELECT returning person_id
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledSegment:
    name: str
    sql: str
    params: list


PROPERTY_COMPATIBLE = {  # catalog type of a property -> value types a test may read it as
    "string": {"string"},
    "number": {"number"},
    "boolean": {"boolean"},
    "datetime": {"datetime", "string"},
    "list": {"list"},
    "any": set(VALUE_TYPES),
}


class _Compiler:
    def __init__(self, defn: SegmentDefinition, catalog: Catalog, now: datetime, profiles: str, events: str, membership: str,
                 dialect: "DuckDBDialect"):
        for table in (profiles, events, membership):
            _split_table(table)
        self.defn, self.catalog, self.now, self.dialect = defn, catalog, now, dialect
        self.profiles, self.events, self.membership = profiles, events, membership
        self.aliases = 0

    def error(self, line: int, message: str) -> SegmentError:
        return SegmentError(f"{self.defn.path}:{line}: {message}")

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    def compile(self) -> CompiledSegment:
        body = q(
            f"SELECT DISTINCT p.person_id\nFROM {self.profiles} AS p\nWHERE {{}}",
            self.condition(self.defn.where),
        )
        return CompiledSegment(self.defn.name, body.text, [self.dialect.parameter(value) for value in body.params])

    # -- conditions (each compiles to a boolean that is never NULL) -----------------------------------

    def condition(self, node: Condition) -> Sql:
        if isinstance(node, (AllOf, AnyOf)):
            return self.combine(node, self.condition)
        if isinstance(node, Not):
            return q("NOT {}", self.condition(node.condition))
        if isinstance(node, SegmentRef):
            return q(
                f"EXISTS (SELECT 1 FROM {self.membership} AS m WHERE m.segment = {{}} AND m.person_id = p.person_id)",
                node.name,
            )
        if isinstance(node, TraitCondition):
            return self.trait(node)
        return self.event(node)

    def combine(self, node: AllOf | AnyOf, compile_child) -> Sql:
        word = "AND" if isinstance(node, AllOf) else "OR"
        children = [indent(compile_child(child)) for child in node.conditions]
        return q("(\n    {}\n)", join(f"\n    {word} ", children))

    def trait(self, node: TraitCondition) -> Sql:
        columns = self.catalog.profile_columns
        if node.column not in columns:
            raise self.error(node.line, f"unknown trait '{node.column}' (profile columns: {', '.join(sorted(columns))})")
        duckdb_type = columns[node.column]
        value_type, element_type = column_type(duckdb_type)
        column = Sql(f"p.{self.dialect.quote(node.column)}")
        upper = duckdb_type.upper()
        if value_type == "string" and upper not in ("VARCHAR", "TEXT", "STRING"):
            column = self.dialect.as_text(column)  # ENUM, UUID, CHAR
        if upper in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            column = self.dialect.utc(column)
        what = f"trait '{node.column}' ({duckdb_type})"
        return self.test(node.test, column, value_type, element_type, what)

    def event(self, node: EventCondition) -> Sql:
        e = self.alias("e")
        filters = [q(f"{e}.person_id = p.person_id"), *self.event_filters(e, node.event, node.within, node.where)]
        if node.not_followed_by is not None:
            follow = node.not_followed_by
            f = self.alias("f")
            follow_filters = [
                q(f"{f}.person_id = {e}.person_id"),
                *self.event_filters(f, follow.event, None, follow.where),
                q(f"{f}.occurred_at > {e}.occurred_at"),
                q(f"{f}.occurred_at <= {e}.occurred_at + {{}}", follow.within.delta),
            ]
            filters.append(q(f"{e}.occurred_at <= {{}}", self.now - follow.within.delta))
            filters.append(q(
                f"NOT EXISTS (\n    SELECT 1 FROM {self.events} AS {f}\n    WHERE {{}}\n)",
                join("\n        AND ", follow_filters),
            ))
        where = indent(join("\n    AND ", filters), 4)
        if not node.count and node.sum is None:
            return q(f"EXISTS (\n    SELECT 1 FROM {self.events} AS {e}\n    WHERE {{}}\n)", where)
        tests = [self.comparison(Sql("count(*)"), c) for c in node.count]
        if node.sum is not None:
            prop_type = self.known_property(node.event, node.sum.property, node.sum.line)
            if prop_type not in (None, "any", "number"):
                raise self.error(
                    node.sum.line,
                    f"sum needs a numeric property; '{node.sum.property}' of event '{node.event}' is {prop_type}",
                )
            total = q("coalesce(sum({}), 0)", self.property_value(e, node.sum.property, "number", node.sum.line))
            tests += [self.comparison(total, c) for c in node.sum.comparisons]
        return q(
            f"(\n    SELECT {{}}\n    FROM {self.events} AS {e}\n    WHERE {{}}\n)",
            join(" AND ", tests),
            where,
        )

    def event_filters(self, alias: str, name: str, within: Duration | None, where: PropertyTree | None) -> list[Sql]:
        filters = [q(f"{alias}.event_name = {{}}", name)]
        if within is not None:
            filters.append(q(f"{alias}.occurred_at BETWEEN {{}} AND {{}}", self.now - within.delta, self.now))
        if where is not None:
            filters.append(indent(self.property_tree(alias, name, where)))
        return filters

    def comparison(self, value: Sql, c: Comparison) -> Sql:
        if c.op == "between":
            return q("{} BETWEEN {} AND {}", value, *c.values)
        if c.op == "neq":
            return q("{} <> {}", value, c.values[0])
        return q(f"{{}} {SQL_COMPARISON[c.op]} {{}}", value, c.values[0])

    # -- event properties ---------------------------------------------------------------------------

    def property_tree(self, alias: str, event: str, node: PropertyTree) -> Sql:
        if isinstance(node, (AllOf, AnyOf)):
            return self.combine(node, lambda child: self.property_tree(alias, event, child))
        if isinstance(node, Not):
            return q("NOT {}", self.property_tree(alias, event, node.condition))
        test = node.test
        catalog_type = self.known_property(event, node.property, node.line)
        if test.op in ("is_set", "is_not_set"):  # present, not null, not [] -- whatever its type
            raw = self.dialect.json_text(Sql(f"{alias}.properties"), node.property, self.path_error(node.line))
            present = q("coalesce({} NOT IN ('null', '[]'), FALSE)", raw)
            return present if test.op == "is_set" else q("(NOT {})", present)
        wanted = OPERATORS[test.op].types & set(VALUE_TYPES)
        if catalog_type is None or catalog_type not in PROPERTY_COMPATIBLE or catalog_type == "any":
            value_type = _infer_property_type(test)
        else:
            usable = PROPERTY_COMPATIBLE[catalog_type] & wanted
            if not usable:
                allowed = sorted({op for t in PROPERTY_COMPATIBLE[catalog_type] for op in operators_for(t)})
                raise self.error(
                    test.line,
                    f"operator '{test.op}' does not apply to property '{node.property}' of event '{event}', "
                    f"which is {catalog_type} (operators: {', '.join(allowed)})",
                )
            value_type = catalog_type if catalog_type in usable else sorted(usable)[0]
        value = self.property_value(alias, node.property, value_type, node.line)
        what = f"property '{node.property}' of event '{event}' (read as {value_type})"
        return self.test(test, value, value_type, "string" if value_type == "list" else None, what)

    def known_property(self, event: str, prop: str, line: int) -> str | None:
        """The catalog type of an event property; None when the catalog does not know the event."""
        known = self.catalog.event_properties.get(event)
        if known is None:
            return None
        if prop not in known:
            names = ", ".join(sorted(known)) or "none"
            raise self.error(line, f"event '{event}' has no property '{prop}' (known: {names})")
        return known[prop]

    def property_value(self, alias: str, prop: str, value_type: str, line: int) -> Sql:
        """The property read from the event's JSON as a typed value (NULL when absent or unreadable)."""
        return self.dialect.json_value(Sql(f"{alias}.properties"), prop, value_type, self.path_error(line))

    def path_error(self, line: int):
        return lambda message: self.error(line, message)

    # -- one test: operator + value(s) on a typed SQL value ---------------------------------------------

    def test(self, test: Test, x: Sql, value_type: str, element_type: str | None, what: str) -> Sql:
        operator = OPERATORS[test.op]
        if value_type not in operator.types:
            ops = operators_for(value_type)
            raise self.error(test.line, f"operator '{test.op}' does not apply to {what} (operators: {', '.join(ops)})")
        length = self.dialect.list_length
        if test.op == "is_set":
            return q(f"coalesce({length}({{}}) > 0, FALSE)", x) if value_type == "list" else q("({} IS NOT NULL)", x)
        if test.op == "is_not_set":
            return q(f"coalesce({length}({{}}) = 0, TRUE)", x) if value_type == "list" else q("({} IS NULL)", x)
        values = self.values(test, value_type, element_type, what)
        if operator.negates:
            return q("coalesce(NOT ({}), TRUE)", self.dialect.positive(operator.negates, x, values))
        return q("coalesce({}, FALSE)", self.dialect.positive(test.op, x, values))

    def values(self, test: Test, value_type: str, element_type: str | None, what: str) -> list:
        if test.op in ("within_last", "not_within_last"):
            lit = test.values[0]
            try:
                return [self.now - parse_duration(lit.value), self.now]
            except ValueError as exc:
                raise self.error(lit.line, f"'{test.op}' needs {exc}") from None
        expected = element_type if value_type == "list" else value_type
        out = []
        for i, lit in enumerate(test.values):
            if expected == "string":
                value = _as_string(lit)
            elif expected == "number":
                value = _as_number(lit)
            elif expected == "datetime":
                parsed = _as_datetime(lit)
                value = None
                if parsed is not None:
                    value, date_only = parsed
                    if test.op == "between" and i == 1 and date_only:  # the whole last day
                        value = datetime.max if value.date() == date.max else value + timedelta(days=1, microseconds=-1)
            else:
                raise self.error(test.line, f"operator '{test.op}' does not apply to {what}: its elements are not text or numbers")
            if value is None:
                noun = {"string": "a text", "number": "a number", "datetime": "an ISO date or date-time"}[expected]
                raise self.error(lit.line, f"{what} needs {noun}, not {lit.value!r}")
            out.append(value)
        if test.op == "between" and out[0] > out[1]:
            raise self.error(test.values[0].line, f"between [{test.values[0].value}, {test.values[1].value}]: the low end is above the high end")
        return out


def compile_segment(
    defn: SegmentDefinition,
    catalog: Catalog,
    now: datetime,
    profiles: str = PROFILES_TABLE,
    events: str = EVENTS_TABLE,
    membership: str = MEMBERSHIP_TABLE,
    dialect: str = "duckdb",
) -> CompiledSegment:
    """One SELECT returning the distinct person_id of the members, with its `?` parameters in order.
    `now` (naive UTC, or aware and converted) anchors every time window. `dialect`: the engine's name,
    `duckdb` or `spark` (DIALECTS)."""
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    if dialect not in DIALECTS:
        raise ValueError(f"no segment SQL dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    return _Compiler(defn, catalog, now, profiles, events, membership, DIALECTS[dialect]).compile()


# --------------------------------------------------------------------------------------------------
# Dialects: the only places where DuckDB and Spark SQL differ
# --------------------------------------------------------------------------------------------------
# Why a dialect layer and not a transpiler (sqlglot): what differs is mostly meaning carried by bound
# parameters and missing-value rules that a transpiler cannot see (a JSON pointer `/a/b` is a parameter;
# DuckDB's TRY_CAST of JSON, its `len` of NULL, `list_has_any` ignoring NULL elements). Each fragment below
# keeps the compiler's promise: a positive test is never true on a missing value.


class DuckDBDialect:
    """The SQL the compiler has always written (its text is what `cdp segment check` shows)."""

    name = "duckdb"
    list_length = "len"

    @staticmethod
    def quote(name: str) -> str:
        return quote_identifier(name)

    @staticmethod
    def as_text(x: Sql) -> Sql:
        return q("CAST({} AS VARCHAR)", x)

    @staticmethod
    def utc(x: Sql) -> Sql:
        return q("timezone('UTC', {})", x)

    @staticmethod
    def parameter(value):
        return value

    @staticmethod
    def json_text(props: Sql, prop: str, error) -> Sql:
        """The property as JSON text ('null' for JSON null, '"x"' for a string), NULL when absent."""
        return q("CAST(json_extract({}, {}) AS VARCHAR)", props, json_pointer(prop))

    @classmethod
    def json_value(cls, props: Sql, prop: str, value_type: str, error) -> Sql:
        """The property read as `value_type` (NULL when absent, JSON null or not readable as that type)."""
        path = json_pointer(prop)
        if value_type == "number":
            return q("TRY_CAST(json_extract_string({}, {}) AS DOUBLE)", props, path)
        if value_type == "boolean":
            return q("CASE CAST(json_extract({}, {}) AS VARCHAR) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END", props, path)
        if value_type == "list":
            return q("TRY_CAST(json_extract({}, {}) AS VARCHAR[])", props, path)
        if value_type == "datetime":
            text = q("json_extract_string({}, {})", props, path)
            return q(
                "CASE WHEN regexp_matches({}, {}) THEN timezone('UTC', TRY_CAST({} AS TIMESTAMPTZ)) "
                "ELSE TRY_CAST({} AS TIMESTAMP) END",
                text, TZ_SUFFIX_RE, text, text,
            )
        return q("json_extract_string({}, {})", props, path)  # string, any

    @staticmethod
    def positive(op: str, x: Sql, values: list) -> Sql:
        if op in SQL_COMPARISON:
            return q(f"{{}} {SQL_COMPARISON[op]} {{}}", x, values[0])
        if op in SQL_DATETIME:
            return q(f"{{}} {SQL_DATETIME[op]} {{}}", x, values[0])
        if op in ("between", "within_last"):
            return q("{} BETWEEN {} AND {}", x, values[0], values[1])
        if op == "in":  # one list parameter, joined: a list of thousands of values stays fast
            return q("{} IN (SELECT unnest({}::VARCHAR[]))", x, list(values))
        if op in ("contains", "starts_with", "ends_with"):
            return q(f"{op}({{}}, {{}})", x, values[0])
        if op in ("is_true", "is_false"):
            return q("{} = " + ("TRUE" if op == "is_true" else "FALSE"), x)
        if op in ("contains_any", "contains_all"):
            function = "list_has_any" if op == "contains_any" else "list_has_all"
            return q(f"{function}({{}}, [" + ", ".join("{}" for _ in values) + "])", x, *values)
        raise AssertionError(op)


# ISO-8601 date-times as DuckDB's casts read them above: a date, then a time, then (seconds given) a UTC
# offset or Z. Spark's cast alone would also take `2024`, `2024-01`, ` 2024-01-01 ` or a zone name, which
# DuckDB reads as missing; this keeps the two engines on the forms both read the same way.
SPARK_DATETIME_RE = (
    r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
    r"([ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"|[ T][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([zZ]|[+-][0-9]{2}(:?[0-9]{2})?))?\z"
)


class SparkDialect(DuckDBDialect):
    """Spark SQL (3.5+ for positional parameters, 4.0+ for VARIANT) with DuckDB's meaning: event properties
    are JSON text read through VARIANT (`try_parse_json`, `try_variant_get`, `to_json` give exactly
    DuckDB's JSON text, string and list readings), casts are `try_cast` (ANSI mode raises on a bad cast),
    timestamps are instants in the session's UTC."""

    name = "spark"
    list_length = "array_size"  # NULL for NULL, like DuckDB's len (size() is -1 without ANSI mode)

    @staticmethod
    def quote(name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    @staticmethod
    def as_text(x: Sql) -> Sql:
        return q("CAST({} AS STRING)", x)

    @staticmethod
    def utc(x: Sql) -> Sql:
        return x  # Spark's TIMESTAMP is an instant; the session reads it in UTC

    @staticmethod
    def parameter(value):
        """Bound values as Spark reads them: a naive datetime would be taken in the driver's local zone,
        so it is marked UTC (warehouse times are naive UTC)."""
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    @staticmethod
    def variant_path(prop: str, error) -> str:
        """`a.b` -> `$["a"]["b"]` (bound as a parameter). Spark's path syntax has no escapes: a key is quoted
        with whichever quote it does not contain."""
        parts = []
        for part in prop.split("."):
            if '"' not in part:
                parts.append(f'["{part}"]')
            elif "'" not in part:
                parts.append(f"['{part}']")
            else:
                raise error(f"property '{prop}' cannot be read on Spark: a key holding both ' and \" has no JSON path there")
        return "$" + "".join(parts)

    @classmethod
    def variant(cls, props: Sql, prop: str, error, as_type: str | None = None) -> Sql:
        path = cls.variant_path(prop, error)
        if as_type is None:
            return q("try_variant_get(try_parse_json({}), {})", props, path)
        return q(f"try_variant_get(try_parse_json({{}}), {{}}, '{as_type}')", props, path)

    @classmethod
    def json_text(cls, props: Sql, prop: str, error) -> Sql:
        return q("to_json({})", cls.variant(props, prop, error))

    @classmethod
    def json_value(cls, props: Sql, prop: str, value_type: str, error) -> Sql:
        if value_type == "number":
            return q("try_cast({} AS DOUBLE)", cls.variant(props, prop, error, "string"))
        if value_type == "boolean":
            return q("CASE {} WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END", cls.json_text(props, prop, error))
        if value_type == "list":
            return cls.variant(props, prop, error, "array<string>")
        if value_type == "datetime":
            text = cls.variant(props, prop, error, "string")
            return q("CASE WHEN {} RLIKE {} THEN try_cast({} AS TIMESTAMP) END", text, SPARK_DATETIME_RE, text)
        return cls.variant(props, prop, error, "string")  # string, any

    @staticmethod
    def positive(op: str, x: Sql, values: list) -> Sql:
        if op == "in":  # one array parameter, as on DuckDB
            return q("array_contains({}, {})", list(values), x)
        if op in ("starts_with", "ends_with"):
            return q(f"{op.replace('_', '')}({{}}, {{}})", x, values[0])
        if op == "contains_any":  # NULL when only a NULL element could match: coalesced like DuckDB's FALSE
            return q("arrays_overlap({}, array(" + ", ".join("{}" for _ in values) + "))", x, *values)
        if op == "contains_all":
            return q("array_size(array_except(array(" + ", ".join("{}" for _ in values) + "), {})) = 0", *values, x)
        return DuckDBDialect.positive(op, x, values)


DIALECTS = {dialect.name: dialect for dialect in (DuckDBDialect, SparkDialect)}
