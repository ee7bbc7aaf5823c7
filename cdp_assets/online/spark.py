"""The online store's load on Spark (`CDP_ENGINE=spark`): the same steps (`update.apply_changes`) reading the Spark
warehouse's tables with the Spark SQL of sql/spark/*.sql, so the store receives the same persons, identifiers,
events and segments as from DuckDB.

The scope and the chunk, temporary tables on DuckDB, are checkpointed temporary views here. The segment tables
are read when the warehouse has them (the segment assets keep membership in DuckDB so far); none is an empty one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cdp_assets.online.update import CONSUMER

SQL = Path(__file__).parent / "sql" / "spark"
# Statements whose rows later ones read, and the view each leaves them in.
_KEPT = {"scope_all": "_online_scope", "scope_changed": "_online_scope", "chunk": "_online_chunk"}
_SEGMENT_TABLES = {
    "_segment_membership": ("cdp.segment_membership", "segment string, person_id string, entered_at timestamp"),
    "_segment_changes": ("cdp.segment_changes", "segment string, person_id string, change string, changed_at timestamp"),
}


def sql(name: str) -> str:
    text = "\n".join(line for line in (SQL / f"{name}.sql").read_text().splitlines() if not line.lstrip().startswith("--"))
    return text.strip().rstrip(";")


class SparkReads:
    """The warehouse as the store's update reads it (`update.DuckDBReads`), on a SparkEngine."""

    def __init__(self, engine):
        self.engine = engine
        self.session = engine.session()

    def prepare(self) -> None:
        from cdp_assets.profiles.spark import events_view

        events_view(self.engine)  # dbt's views live in the session that built them: this process may lack them
        self.engine.register_tables()  # once: the queries below name the warehouse's tables
        for view, (table, ddl) in _SEGMENT_TABLES.items():
            frame = self.engine.table(table) if self.engine.table_exists(table) else self.session.createDataFrame([], ddl)
            frame.createOrReplaceTempView(view)

    def _query(self, name: str, params: dict | None):
        # Times are bound as text and read in the session's zone (UTC): a naive datetime would be read in this
        # process's zone.
        args = {k: v.isoformat(sep=" ") if isinstance(v, datetime) else v for k, v in (params or {}).items()}
        return self.session.sql(sql(name), args=args or None)

    def run(self, name: str, params: dict | None = None) -> None:
        self._query(name, params).localCheckpoint().createOrReplaceTempView(_KEPT[name])

    def rows(self, name: str, params: dict | None = None) -> list[dict]:
        return [{k: _naive_utc(v) for k, v in row.items()} for row in self._query(name, params).toArrow().to_pylist()]

    def fetchall(self, name: str, params: dict | None = None) -> list[tuple]:
        return [tuple(row.values()) for row in self.rows(name, params)]

    def fetchone(self, name: str, params: dict | None = None) -> tuple:
        rows = self.fetchall(name, params)
        return rows[0] if rows else None

    def persons(self) -> int:
        return self.engine.table("core.persons").count()

    def advance_watermark(self, batch) -> None:
        self.engine.replace_tables({"core.watermarks": self.engine.watermarks_with(CONSUMER, batch)})


def _naive_utc(value):
    """Spark's instants as DuckDB gives the warehouse's naive UTC times."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value
