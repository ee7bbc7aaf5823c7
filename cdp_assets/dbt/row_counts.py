"""Row counts of the tables dbt built, for the assets' metadata, on the warehouse's engine (the one place they
differ: DuckDB's catalog tells tables from views; on Spark a table is a Parquet directory of the warehouse)."""

from __future__ import annotations


def table_row_counts(warehouse, tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(schema, name) -> rows, for those of `tables` that are tables. Views are left out: a view's count is its
    whole query (core.person_events joins every event), which would cost more than the incremental models
    themselves in every refresh."""
    engine = warehouse.engine()
    if engine.name == "spark":
        from cdp_assets.dbt.spark import table_row_counts as on_spark

        return on_spark(engine, tables)
    counts = {}
    with warehouse.connect() as con:
        for schema, table in tables:
            is_table = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ? AND table_type = 'BASE TABLE'",
                [schema, table],
            ).fetchone()[0]
            if is_table:
                counts[(schema, table)] = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
    return counts
