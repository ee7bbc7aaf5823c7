"""Tables of a DuckDB warehouse on a Spark warehouse, and rows of either as comparable Python values: what the
differential Spark tests (tests/test_spark_pipeline_dbt.py, tests/test_spark_segments.py and others) share."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal

import duckdb


def quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def copy_to_spark(con: duckdb.DuckDBPyConnection, engine, tables: list[str]) -> None:
    """Each DuckDB table as a Parquet directory of the Spark warehouse, as the platform's Spark stages lay them
    out (`<schema>.db/<table>/`): JSON as text, unsigned hashes as decimals, times as instants (naive UTC times
    in DuckDB, Spark timestamps in a UTC session). prepare_session (or engine.register_tables) registers them."""
    con.execute("SET TimeZone = 'UTC'")
    for table in tables:
        schema, name = table.split(".")
        types = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", [schema, name]).fetchall()
        casts = {"JSON": "VARCHAR", "UBIGINT": "DECIMAL(20, 0)", "TIMESTAMP": "TIMESTAMPTZ"}
        select = ", ".join(f"{quote(c)}::{casts[t]} AS {quote(c)}" if t in casts else quote(c) for c, t in types)
        directory = engine.location(table)
        directory.mkdir(parents=True)
        con.execute(f"COPY (SELECT {select} FROM {table}) TO '{directory / 'part-0.parquet'}' (FORMAT parquet)")


def sorted_rows(table) -> list[tuple]:
    """An Arrow table's rows as sorted tuples of plain values."""
    return sorted((tuple(plain(v) for v in row.values()) for row in table.to_pylist()), key=repr)


def plain(value):
    """One comparable Python value: aware times as naive UTC, lists as tuples, numbers as floats."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    if isinstance(value, list):
        return tuple(plain(v) for v in value)
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value
