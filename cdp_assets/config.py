"""The user's source configuration (`config/sources.yaml`), read once per code-location load."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cdp_resources.settings import config_dir

KINDS = {"events", "webhook", "cdc", "api", "csv", "postgres"}
EVENT_KINDS = {"events", "webhook"}  # sources whose records become cdp.events rows
# `mapping:` of a webhook source: body paths (dotted, e.g. data.customer.email) to the parts of an event.
MAPPING_KEYS = {"event", "event_names", "timestamp", "message_id", "identifiers", "traits", "properties"}
WEBHOOK_IDENTIFIERS = {"user_id", "anonymous_id", "email", "phone"}  # what an event's identity is read from
_BODY_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
# `purchases:` of a source: which records are purchases and which of their fields say what (Segment's
# e-commerce spec for events: `event: order_completed`, fields read from `properties`).
PURCHASE_KEYS = {"event", "id", "amount", "at", "items", "only", "identifier"}
PARTITIONINGS = {"hourly", "daily", "none"}
COLUMN_TYPES = {"string", "number", "timestamp", "list", "boolean"}


class ConfigError(ValueError):
    """A configuration file is wrong; the message names the file and the field."""


# Bounds on any YAML file we read: a configuration is a few kilobytes written by hand. Aliases are counted
# as the copies they stand for, so a kilobyte "billion laughs" fails at once instead of growing to gigabytes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 100


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with bounded nesting and a bounded expanded size (nodes, aliases counted as
    copies); an alias that refers to a node containing it is refused. The pure-Python composer is used on
    purpose: the bounds are checked while composing, before anything grows."""

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> nodes once aliases are expanded
        self._depth = 0

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 (PyYAML's naming)
        # The scanner looks ahead over open flow collections: refuse deep ones before it does.
        if self.flow_level >= MAX_YAML_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _refuse(self, mark, problem: str):
        return yaml.composer.ComposerError(None, None, problem, mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise self._refuse(mark, "an alias refers to a node that contains it (a recursive document)")
            return node
        if self._depth >= MAX_YAML_DEPTH:
            raise self._refuse(self.peek_event().start_mark, f"nested more than {MAX_YAML_DEPTH} levels deep")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(self._sizes[id(child)] for child in children)
        if size > MAX_YAML_NODES:
            raise self._refuse(node.start_mark, f"the document expands to more than {MAX_YAML_NODES:,} values "
                                                "(aliases count as the copies they stand for)")
        self._sizes[id(node)] = size
        return node


def yaml_text(path: Path, max_bytes: int = MAX_YAML_BYTES) -> str:
    """The text of a YAML file, refusing (ConfigError `file:line: ...`) a file over `max_bytes` or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(f"{path}:1: the file is {size:,} bytes, more than the {max_bytes:,} allowed")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}:1: cannot read the file: {exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None


def yaml_error(path: Path, exc: yaml.YAMLError, text: str) -> ConfigError:
    """A YAML error as `file:line: invalid YAML: problem`."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: it knows the offset, not the line
        line = text[: exc.position].count("\n") + 1
        return ConfigError(f"{path}:{line}: invalid YAML: character {exc.character!r} is not allowed ({exc.reason})")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else 1
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    return ConfigError(f"{path}:{line}: invalid YAML: {problem}")


def compose_yaml(path: Path, max_bytes: int = MAX_YAML_BYTES) -> yaml.Node | None:
    """The node graph of a YAML file (with line numbers), within the bounds above; else a ConfigError."""
    text = yaml_text(path, max_bytes)
    try:
        return yaml.compose(text, Loader=BoundedLoader)
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc, text) from None
    except RecursionError:  # the bounds above should make this unreachable; never take the caller down
        raise ConfigError(f"{path}:1: invalid YAML: nested too deeply") from None


def read_config(path: Path) -> dict:
    """A YAML configuration file as a mapping (empty file: {}); unreadable, too big, invalid YAML or not a
    mapping is a ConfigError naming the file."""
    text = yaml_text(path)
    try:
        document = yaml.load(text, Loader=BoundedLoader) or {}
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc, text) from None
    except RecursionError:
        raise ConfigError(f"{path}:1: invalid YAML: nested too deeply") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(document).__name__}")
    return document


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    partitions: str
    description: str = ""
    path: str = ""
    primary_key: str = ""
    time_column: str = ""
    cursor_field: str = ""
    base_url_env: str = ""
    dsn_env: str = ""  # postgres: the environment variable holding the connection string
    table: str = ""  # postgres: [schema.]table to read
    page_size: int = 5000  # postgres: rows per page, each committed with its cursor
    columns: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, str] = field(default_factory=dict)
    traits: tuple[str, ...] = ()
    relationships: dict[str, str] = field(default_factory=dict)  # column -> kind (household, parent...)
    purchases: dict = field(default_factory=dict)  # how its records are purchases (see PURCHASE_KEYS)
    mapping: dict = field(default_factory=dict)  # webhook: body paths to event name, time, identifiers, traits
    max_quarantine_rate: float = 0.05  # a raw partition quarantining more is worth a look (a warning check)

    @property
    def produces_events(self) -> bool:
        """Its records are events (cdp.events), not rows of a table of its own."""
        return self.kind in EVENT_KINDS


def load_sources(path: Path | None = None) -> dict[str, SourceConfig]:
    path = path or config_dir() / "sources.yaml"
    entries = read_config(path).get("sources")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: expected a mapping `sources:` with at least one source")
    return {name: _source(path, name, entry or {}) for name, entry in entries.items()}


def _source(path: Path, name: str, entry: dict) -> SourceConfig:
    where = f"{path}: sources.{name}"
    known = set(SourceConfig.__dataclass_fields__) - {"name"}
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    if entry.get("kind") not in KINDS:
        raise ConfigError(f"{where}.kind: {entry.get('kind')!r} is not one of {sorted(KINDS)}")
    if entry.get("partitions", "none") not in PARTITIONINGS:
        raise ConfigError(f"{where}.partitions: {entry.get('partitions')!r} is not one of {sorted(PARTITIONINGS)}")
    columns = entry.get("columns") or {}
    for column, kind in columns.items():
        if kind not in COLUMN_TYPES:
            raise ConfigError(f"{where}.columns.{column}: type {kind!r} is not one of {sorted(COLUMN_TYPES)}")
    for column in list(entry.get("identifiers") or {}) + list(entry.get("traits") or []) + list(entry.get("relationships") or {}):
        if columns and column not in columns:
            raise ConfigError(f"{where}: {column!r} is not a declared column")
    if entry["kind"] == "postgres":
        for needed in ("dsn_env", "table", "primary_key", "time_column"):
            if not entry.get(needed):
                raise ConfigError(f"{where}.{needed}: a postgres source needs it")
    purchases = entry.get("purchases") or {}
    if purchases:
        _check_purchases(where, entry["kind"], purchases, columns, entry.get("identifiers") or {})
    mapping = entry.get("mapping") or {}
    if entry["kind"] == "webhook":
        _check_mapping(f"{where}.mapping", mapping)
        if entry.get("partitions", "none") != "hourly":
            raise ConfigError(f"{where}.partitions: a webhook source lands hourly like the collector writes it (hourly)")
    elif mapping:
        raise ConfigError(f"{where}.mapping: only a webhook source has a mapping")
    if entry["kind"] not in EVENT_KINDS and not columns:
        raise ConfigError(f"{where}.columns: a {entry['kind']} source declares its columns")
    return SourceConfig(
        name=name,
        kind=entry["kind"],
        partitions=entry.get("partitions", "none"),
        description=entry.get("description", ""),
        path=entry.get("path", ""),
        primary_key=entry.get("primary_key", ""),
        time_column=entry.get("time_column", ""),
        cursor_field=entry.get("cursor_field", ""),
        base_url_env=entry.get("base_url_env", ""),
        dsn_env=entry.get("dsn_env", ""),
        table=entry.get("table", ""),
        page_size=int(entry.get("page_size", 5000)),
        columns=dict(columns),
        identifiers=dict(entry.get("identifiers") or {}),
        traits=tuple(entry.get("traits") or ()),
        relationships=dict(entry.get("relationships") or {}),
        purchases=dict(purchases),
        mapping=dict(mapping),
        max_quarantine_rate=_rate(where, entry.get("max_quarantine_rate", 0.05)),
    )


def _rate(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{where}.max_quarantine_rate: {value!r} is not a share between 0 and 1")
    return float(value)


def _check_purchases(where: str, kind: str, purchases, columns: dict, identifiers: dict) -> None:
    where = f"{where}.purchases"
    if not isinstance(purchases, dict):
        raise ConfigError(f"{where}: expected a mapping (id, amount, at, items, only, identifier; event for events)")
    unknown = set(purchases) - PURCHASE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(PURCHASE_KEYS)}")
    for needed in ("id", "amount"):
        if not isinstance(purchases.get(needed), str):
            raise ConfigError(f"{where}.{needed}: required (a {'property path' if kind in EVENT_KINDS else 'column'})")
    if kind in EVENT_KINDS:
        if not isinstance(purchases.get("event"), str):
            raise ConfigError(f"{where}.event: the event that is a purchase (e.g. order_completed)")
        for key in ("id", "amount", "items"):
            value = purchases.get(key)
            if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+(\[\*\])?(\.[A-Za-z0-9_]+)*", value):
                raise ConfigError(f"{where}.{key}: {value!r} is not a property path such as revenue or products[*].product_id")
        return
    if not isinstance(purchases.get("at"), str):
        raise ConfigError(f"{where}.at: required (the column holding the purchase time)")
    named = [purchases[k] for k in ("id", "amount", "at", "items") if purchases.get(k)] + list(purchases.get("only") or {})
    for column in named:
        if column not in columns:
            raise ConfigError(f"{where}: {column!r} is not a declared column")
    identifier = purchases.get("identifier")
    if identifier is not None and identifier not in identifiers:
        raise ConfigError(f"{where}.identifier: {identifier!r} is not one of the source's identifiers {sorted(identifiers)}")
    if not identifiers:
        raise ConfigError(f"{where}: a source of purchases needs an identifier column to know whose they are")


def _check_mapping(where: str, mapping) -> None:
    """A webhook source's mapping: `event` (required), `event_names` (renames), `timestamp`, `message_id`,
    `identifiers` (user_id, anonymous_id, email, phone), `traits`, `properties`: each a body path."""
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"{where}: a webhook source maps its body to an event: {{event: <body path>, identifiers: {{...}}, ...}}")
    unknown = set(mapping) - MAPPING_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(MAPPING_KEYS)}")

    def path(key: str, value) -> None:
        if not isinstance(value, str) or not _BODY_PATH.fullmatch(value):
            raise ConfigError(f"{where}.{key}: {value!r} is not a body path such as type or data.customer.email")

    if "event" not in mapping:
        raise ConfigError(f"{where}.event: required (the body path holding the event name, e.g. type)")
    for key in ("event", "timestamp", "message_id"):
        if key in mapping:
            path(key, mapping[key])
    names = mapping.get("event_names") or {}
    if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise ConfigError(f"{where}.event_names: expected a mapping of body event name -> event name")
    for key in ("identifiers", "traits", "properties"):
        entries = mapping.get(key) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}.{key}: expected a mapping of name -> body path")
        for name, value in entries.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ConfigError(f"{where}.{key}: {name!r} is not a plain name")
            path(f"{key}.{name}", value)
    unknown_types = set(mapping.get("identifiers") or {}) - WEBHOOK_IDENTIFIERS
    if unknown_types:
        raise ConfigError(f"{where}.identifiers: {sorted(unknown_types)} not among {sorted(WEBHOOK_IDENTIFIERS)} "
                          "(an event carries these; other identifiers come from table sources)")
    if not mapping.get("identifiers"):
        raise ConfigError(f"{where}.identifiers: required (which body paths say who the event is about)")
