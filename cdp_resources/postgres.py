"""Reading a table of an OLTP database (PostgreSQL) incrementally, by its `updated_at` column.

Rows come in keyset pages ordered by (updated_at, primary key). A run starts *at* the stored cursor, not
after it: a row committed later with the same `updated_at` as the last row loaded (a tie) is still read;
the caller skips the (key, updated_at) pairs it already holds. Rows are returned as JSON-ready dicts with
every column, so a column added to the table flows through without a configuration change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


class PostgresSourceError(RuntimeError):
    """The source database cannot be reached or read; the message names the setting or the table."""


def connection_string(env_var: str) -> str:
    value = os.environ.get(env_var, "").strip()
    if not value:
        raise PostgresSourceError(f"{env_var} is not set: it must hold the source's connection string (postgresql://...)")
    return value


def json_ready(row: dict) -> dict:
    """Timestamps as ISO-8601 (the cursor compares these strings), decimals as numbers."""
    out = {}
    for name, value in row.items():
        if isinstance(value, (datetime, date)):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = float(value)
        out[name] = value
    return out


def table_pages(
    dsn: str, table: str, key: str, cursor_column: str, since: str | None, page_size: int = 5000
) -> Iterator[list[dict]]:
    """Pages of rows with `cursor_column >= since` (ISO-8601; all rows when None), by (cursor_column, key)."""
    schema, _, name = table.rpartition(".")
    relation = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    ident_key, ident_cursor = sql.Identifier(key), sql.Identifier(cursor_column)
    first = sql.SQL("SELECT * FROM {} WHERE {} IS NOT NULL{} ORDER BY {}, {} LIMIT {}").format(
        relation, ident_cursor, sql.SQL(" AND {} >= %(since)s").format(ident_cursor) if since else sql.SQL(""),
        ident_cursor, ident_key, sql.Literal(page_size),
    )
    after = sql.SQL("SELECT * FROM {} WHERE ({}, {}) > (%(at)s, %(key)s) ORDER BY {}, {} LIMIT {}").format(
        relation, ident_cursor, ident_key, ident_cursor, ident_key, sql.Literal(page_size)
    )
    try:
        with psycopg.connect(dsn, row_factory=dict_row, connect_timeout=10) as con:
            con.read_only = True
            rows = con.execute(first, {"since": datetime.fromisoformat(since) if since else None}).fetchall()
            while rows:
                yield [json_ready(row) for row in rows]
                if len(rows) < page_size:
                    return
                last = rows[-1]
                rows = con.execute(after, {"at": last[cursor_column], "key": last[key]}).fetchall()
    except psycopg.Error as exc:
        raise PostgresSourceError(f"reading {table}: {exc}".strip()) from exc
