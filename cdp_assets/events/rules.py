"""Row-level rules read from the Great Expectations suites in `expectations/` (the single source of truth).

Each expectation becomes a polars expression that is true where a row fails; the row's reasons are the
failing expectations' `meta.reason` codes with a short detail. An expectation whose `meta.on_violation` is
`flag` (the tracking plan's rules, by default) does not block: its failures are the row's `violations`, and
the row is kept. Only the row-level expectation types we can
evaluate exactly are accepted; any other type is a configuration error naming the suite, so a rule is
never silently ignored.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
_CONDITION = re.compile(r'^\s*(\w+)\s*==\s*"([^"]*)"\s*$')


class SuiteError(ValueError):
    """A suite cannot be evaluated; the message names the file and the expectation."""


@dataclass(frozen=True)
class Rule:
    reason: str
    column: str
    failing: pl.Expr
    detail: pl.Expr
    blocking: bool = True  # False: a flagged violation, the row is kept


def _blocking(value, default: str, at: str) -> bool:
    value = default if value is None else value
    if value not in ("flag", "quarantine"):
        raise SuiteError(f"{at}: on_violation {value!r} is not one of ['flag', 'quarantine']")
    return value == "quarantine"


def load_suite(name: str, directory: Path = EXPECTATIONS_DIR) -> dict:
    path = directory / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SuiteError(f"{path}: {exc}") from exc


def suite_rules(suite: dict, parameters: dict, columns: list[str], where: str) -> list[Rule]:
    """Rules of a suite against a frame with `columns`; `$PARAMETER` values come from `parameters`."""
    rules = []
    for index, expectation in enumerate(suite.get("expectations", [])):
        at = f"{where}: expectations[{index}] ({expectation.get('type')})"
        kwargs = {k: _parameter(v, parameters, at) for k, v in expectation.get("kwargs", {}).items()}
        column = kwargs.get("column")
        if column not in columns:
            raise SuiteError(f"{at}: column {column!r} is not produced for this source (has {columns})")
        reason = expectation.get("meta", {}).get("reason") or expectation["type"]
        failing, detail = _failing(expectation["type"], pl.col(column), kwargs, at)
        condition = kwargs.get("row_condition")
        if condition:
            match = _CONDITION.match(condition)
            if not match or match[1] not in columns:
                raise SuiteError(f'{at}: row_condition must be column=="value", got {condition!r}')
            failing = failing & (pl.col(match[1]) == match[2]).fill_null(False)
        blocking = _blocking(expectation.get("meta", {}).get("on_violation"), "quarantine", at)
        rules.append(Rule(reason, column, failing.fill_null(False), detail, blocking))
    return rules


def typed_property_rules(suite: dict, where: str) -> list[Rule]:
    """The tracking plan's part of the events suite (`meta.typed_properties`): per event, a property present
    but not of its type is `wrong_type`, a required one missing is `missing_property`; flagged unless the
    entry says `on_violation: quarantine`."""
    rules = []
    for index, spec in enumerate(suite.get("meta", {}).get("typed_properties", [])):
        event, name, kind = spec.get("event"), spec.get("property"), spec.get("type")
        if kind not in _PROPERTY_TYPES or not isinstance(event, str) or not isinstance(name, str):
            raise SuiteError(f"{where}: meta.typed_properties[{index}]: expected event, property and a type in {sorted(_PROPERTY_TYPES)}")
        blocking = _blocking(spec.get("on_violation"), "flag", f"{where}: meta.typed_properties[{index}]")
        text = pl.col("properties").str.json_path_match("$['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']")
        present = text.str.strip_chars().fill_null("") != ""
        of_event = (pl.col("event_name") == event).fill_null(False)
        wrong = of_event & present & _PROPERTY_TYPES[kind](text.str.strip_chars()).not_()
        rules.append(Rule("wrong_type", "properties", wrong, pl.format(f"{name} {{}} is not a {kind}", text), blocking))
        if spec.get("required"):
            rules.append(Rule("missing_property", "properties", of_event & text.is_null(),
                              pl.lit(f"{event} requires properties.{name}"), blocking))
    return rules


def _is_timestamp(text: pl.Expr) -> pl.Expr:
    formats = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
    parsed = [text.str.strptime(pl.Datetime("us", "UTC") if "z" in f.lower() else pl.Datetime("us"), f, strict=False).is_not_null() for f in formats]
    return pl.any_horizontal(parsed)


# A property value (its JSON text) that reads as the type; strings always do.
_PROPERTY_TYPES = {
    "string": lambda text: pl.lit(True),
    "number": lambda text: text.cast(pl.Float64, strict=False).is_finite().fill_null(False),
    "boolean": lambda text: text.str.to_lowercase().is_in(["true", "false", "t", "f", "1", "0"]),
    "timestamp": _is_timestamp,
    "list": lambda text: text.str.starts_with("["),
}


def _parameter(value, parameters: dict, at: str):
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in parameters:
            raise SuiteError(f"{at}: unknown parameter {name!r}")
        return parameters[name]
    return value


def _failing(kind: str, col: pl.Expr, kwargs: dict, at: str) -> tuple[pl.Expr, pl.Expr]:
    name = kwargs["column"]
    if kind == "expect_column_values_to_not_be_null":
        return col.is_null(), pl.lit(f"{name} is missing")
    if kind == "expect_column_values_to_be_in_set":
        values = kwargs["value_set"]
        return col.is_not_null() & ~col.is_in(values), pl.format(f"{name} {{}} is not one of {values}", col)
    if kind == "expect_column_values_to_match_regex":
        return (
            col.is_not_null() & ~col.str.contains(kwargs["regex"]),
            pl.format(f"{name} {{}} does not match the expected format", col),
        )
    if kind == "expect_column_values_to_be_between":
        low, high = (_bound(kwargs.get(k)) for k in ("min_value", "max_value"))
        outside = pl.lit(False)
        if low is not None:
            outside = outside | (col < low)
        if high is not None:
            outside = outside | (col > high)
        return col.is_not_null() & outside, pl.format(f"{name} {{}} is outside [{low}, {high}]", col.cast(pl.String))
    raise SuiteError(f"{at}: expectation type {kind!r} is not supported for row-level validation")


def _bound(value):
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    return value


def apply_rules(frame: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Adds `reasons` (list of "code: detail": the frame's `parse_errors` first, then failing blocking rules)
    and `violations` (failing flag rules, same form): a row with reasons is quarantined, one with only
    violations is kept and flagged.

    A record that could not be parsed at all (`parsed` false) carries only its parse error, and a rule
    on a column whose value was present but unreadable is not reported twice.
    """
    def check(rule: Rule) -> pl.Expr:
        return (pl.when(pl.col("parsed") & rule.failing & ~pl.col("unreadable_columns").list.contains(rule.column))
                .then(pl.format(f"{rule.reason}: {{}}", rule.detail)))

    blocking = [check(rule) for rule in rules if rule.blocking]
    flagged = [check(rule) for rule in rules if not rule.blocking]
    reasons = pl.concat_list([pl.col("parse_errors"), *blocking]) if blocking else pl.col("parse_errors")
    violations = pl.concat_list(flagged).list.drop_nulls() if flagged else pl.lit([], dtype=pl.List(pl.String))
    return frame.with_columns(reasons=reasons.list.drop_nulls(), violations=violations)


def preload_great_expectations() -> None:
    """Import Great Expectations in a background thread. Its import (~3 s) is most of the suite result's cost
    in a small refresh; started when validation starts, it overlaps the judging (DuckDB and polars release the
    GIL), and `great_expectations_result` waits for it through Python's import lock."""
    threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True,
                     name="import-great-expectations").start()


def great_expectations_result(frame: pl.DataFrame, suite: dict, parameters: dict) -> dict:
    """Great Expectations' own verdict on the suite over `frame` (only the columns the suite names):
    per expectation, its success and unexpected count. Row-level reasons come from the polars rules;
    this is the suite result data engineers know from GE, shown beside them."""
    import logging
    import warnings

    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    columns = sorted({e["kwargs"]["column"] for e in suite.get("expectations", [])} & set(frame.columns))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = gx.get_context(mode="ephemeral")
        asset = context.data_sources.add_pandas("cdp").add_dataframe_asset(suite["name"])
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame.select(columns).to_pandas()}
        )
        expectations = context.suites.add(gx.ExpectationSuite(**{k: v for k, v in suite.items() if k != "id"}))
        result = batch.validate(expectations, expectation_parameters=parameters, result_format="BASIC")
    return {
        "success": bool(result.success),
        "rows": len(frame),
        "statistics": {k: v for k, v in result.statistics.items() if v is not None},
        "expectations": [
            {
                "expectation": expectation_label(r.expectation_config.type, r.expectation_config.kwargs),
                "success": bool(r.success),
                "unexpected_count": r.result.get("unexpected_count"),
            }
            for r in result.results
        ],
    }


def expectation_label(kind: str, kwargs: dict) -> str:
    return f"{kind}({kwargs['column']}{', conditional' if kwargs.get('row_condition') else ''})"
