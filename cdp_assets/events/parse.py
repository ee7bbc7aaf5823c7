"""Read raw records into typed columns with DuckDB's JSON functions, noting what cannot be read.

Each function returns one row per raw record with `parsed` (the record is a JSON object),
`parse_errors` (list of "code: detail") and `unreadable_columns` (values present but not of their type)
next to the typed columns; the rules in `expectations/` then
judge the typed values. Column names and JSON paths come from the user's configuration and are quoted.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdp_assets.config import SourceConfig

_CAST = {"number": "DOUBLE", "timestamp": "TIMESTAMPTZ", "boolean": "BOOLEAN", "list": "VARCHAR[]"}


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed(json_col: str, path: str, kind: str, name: str) -> tuple[str, str, str]:
    """(typed value, error message or NULL, name of the column if it failed or NULL) for one JSON field."""
    text = f"({json_col} ->> {quote_literal(path)})"
    if kind == "string":
        return f"nullif(trim({text}), '')", "NULL", "NULL"
    if kind == "list":
        value = f"try_cast({json_col} -> {quote_literal(path)} AS VARCHAR[])"
    elif kind == "timestamp":
        value = f"timezone('UTC', try_cast({text} AS TIMESTAMPTZ))"
    else:
        value = f"try_cast({text} AS {_CAST[kind]})"
    code = "bad_timestamp" if kind == "timestamp" else "wrong_type"
    failed = f"nullif(trim({text}), '') IS NOT NULL AND {value} IS NULL"
    error = f"CASE WHEN {failed} THEN {quote_literal(f'{code}: {name} ')} || {text} || {quote_literal(f' is not a {kind}')} END"
    return value, error, f"CASE WHEN {failed} THEN {quote_literal(name)} END"


def _frame(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    return con.sql(sql).pl()


def parse_events(con: duckdb.DuckDBPyConnection, source: SourceConfig, typed_properties: list[dict]) -> pl.DataFrame:
    """Segment-spec messages → the columns of `cdp.events`, plus `identity` and a normalized `email`."""
    ts_value, ts_error, ts_failed = _typed("m", "$.timestamp", "timestamp", "timestamp")
    property_errors = []
    for rule in typed_properties:
        path = f"$.properties.{rule['property']}"
        _, error, _ = _typed("m", path, rule["type"], rule["property"])
        if rule.get("required"):
            missing = f"missing_property: {rule['event']} requires properties.{rule['property']}"
            absent = f"coalesce(json_type(m -> {quote_literal(path)}), 'NULL') = 'NULL'"
            error = f"CASE WHEN {absent} THEN {quote_literal(missing)} ELSE {error} END"
        property_errors.append(f"CASE WHEN event_name = {quote_literal(rule['event'])} THEN {error} END")
    errors = ", ".join([ts_error, *property_errors])
    return _frame(
        con,
        f"""
        WITH raw AS (
            SELECT partition_key, file, line_no, record, loaded_at,
                   json_valid(record) AND starts_with(ltrim(record), '{{') AS parsed
            FROM raw.{quote_ident(source.name)}
        ), messages AS (
            SELECT *, CASE WHEN parsed THEN record::JSON END AS m FROM raw
        ), fields AS (
            SELECT *,
                nullif(trim(m ->> '$.messageId'), '') AS event_id,
                m ->> '$.type' AS event_type,
                coalesce(m ->> '$.event', m ->> '$.name') AS event_name,
                nullif(trim(m ->> '$.anonymousId'), '') AS anonymous_id,
                nullif(trim(m ->> '$.userId'), '') AS user_id,
                nullif(trim(m ->> '$.previousId'), '') AS previous_id,
                nullif(trim(m ->> '$.groupId'), '') AS group_id,
                coalesce(timezone('UTC', try_cast(m ->> '$.receivedAt' AS TIMESTAMPTZ)), loaded_at) AS received_at
            FROM messages
        )
        SELECT partition_key, file, line_no, record, parsed,
            CASE WHEN parsed THEN list_filter([{errors}], lambda e: e IS NOT NULL)
                 ELSE ['malformed_json: the line is not a JSON object'] END AS parse_errors,
            list_filter([{ts_failed}], lambda c: c IS NOT NULL) AS unreadable_columns,
            event_id, event_type, event_name, anonymous_id, user_id, previous_id, group_id,
            coalesce({ts_value}, received_at) AS occurred_at,
            received_at,
            coalesce(m ->> '$.source', {quote_literal(source.name)}) AS source,
            m -> '$.properties' AS properties,
            m -> '$.traits' AS traits,
            m -> '$.context' AS context,
            coalesce(user_id, anonymous_id, previous_id) AS identity,
            lower(trim(coalesce(m ->> '$.traits.email', m ->> '$.context.traits.email'))) AS email
        FROM fields
        """,
    )


def parse_table(con: duckdb.DuckDBPyConnection, source: SourceConfig) -> pl.DataFrame:
    """JSON records of a table source (API pull, CSV row) → its declared, typed columns."""
    return _frame(con, _table_sql(source, f"raw.{quote_ident(source.name)}", "record::JSON", "", ""))


def parse_changes(con: duckdb.DuckDBPyConnection, source: SourceConfig) -> pl.DataFrame:
    """Debezium envelopes (optionally inside `payload`) and DMS CSV rows (`Op` I/U/D) → typed changes.

    Each change has `op` (c/u/d/r, or t for a tombstone), its row image (`after`, or `before` for a delete) in the declared
    columns, and its source position: (lsn, ts_ms) for Debezium, (file, line) for DMS.
    """
    envelope = "coalesce(j -> '$.payload', j)"
    image = (
        f"CASE WHEN j ->> '$.Op' IS NOT NULL THEN j "
        f"WHEN {envelope} ->> '$.op' = 'd' THEN {envelope} -> '$.before' ELSE {envelope} -> '$.after' END"
    )
    # A tombstone (`{"schema": null, "payload": null}` after a delete, for Kafka log compaction) is op 't'.
    op = (
        f"CASE WHEN json_type(json_extract(j, '$.payload')) = 'NULL' AND json_extract_string(j, '$.op') IS NULL THEN 't' "
        f"ELSE coalesce({envelope} ->> '$.op', CASE j ->> '$.Op' WHEN 'I' THEN 'c' WHEN 'U' THEN 'u' WHEN 'D' THEN 'd' END) END"
    )
    extra = f""",
            {op} AS op,
            try_cast({envelope} ->> '$.source.lsn' AS BIGINT) AS source_lsn,
            try_cast(coalesce({envelope} ->> '$.source.ts_ms', {envelope} ->> '$.ts_ms') AS BIGINT) AS source_ts_ms"""
    return _frame(con, _table_sql(source, f"raw.{quote_ident(source.name)}", image, extra, "j"))


def _table_sql(source: SourceConfig, table: str, image: str, extra: str, alias: str) -> str:
    columns, errors, failed = [], [], []
    for name, kind in source.columns.items():
        value, error, failed_column = _typed("img", f"$.{name}", kind, name)
        columns.append(f"{value} AS {quote_ident(name)}")
        errors.append(error)
        failed.append(failed_column)
    j = alias or "j"
    return f"""
        WITH raw AS (
            SELECT partition_key, file, line_no, record, loaded_at,
                   json_valid(record) AND starts_with(ltrim(record), '{{') AS parsed
            FROM {table}
        ), typed AS (
            SELECT *, CASE WHEN parsed THEN record::JSON END AS {j} FROM raw
        ), images AS (
            SELECT *, {image.replace("record::JSON", j)} AS img FROM typed
        )
        SELECT partition_key, file, line_no, record, parsed, loaded_at AS received_at,
            CASE WHEN parsed THEN list_filter([{", ".join(errors)}], lambda e: e IS NOT NULL)
                 ELSE ['malformed_json: the record is not a JSON object'] END AS parse_errors,
            list_filter([{", ".join(failed)}], lambda c: c IS NOT NULL) AS unreadable_columns,
            {", ".join(columns)}{extra}
        FROM images
    """
