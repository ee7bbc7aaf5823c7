"""What a Spark session needs before `dbt build --target spark` runs in it (dbt-spark's session method joins the
process's own SparkSession, so dbt must run in this process: `run_dbt`, cdp_assets/dbt/project.py).

- The catalog: the warehouse's tables are Parquet directories and the catalog is in memory (cdp_resources/spark.py),
  so each process registers the directories it finds before SQL can name them.
- Identifier normalization: core.identifier_lookup normalizes raw identifiers with the platform's Python code
  (libphonenumber, the blocked values of config/identity.yaml). On DuckDB that is a dbt Python model; dbt-spark
  runs Python models only on Databricks clusters, so on Spark the SQL model calls the same code as the session's
  function `cdp_identifier_value(identifier_type, raw_value)` (vectorized with Arrow, on the executors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa  # at module level: pyspark reads the function's type hints (pa.Array) in this namespace

from cdp_assets.identity.rules import IdentityRules, load_identity_rules
from cdp_resources.settings import config_dir

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cdp_resources.spark import SparkEngine


def prepare_session(engine: "SparkEngine", rules: IdentityRules | None = None) -> "SparkSession":
    """The engine's session with every warehouse table in its catalog and the identity functions registered."""
    session = engine.session()
    engine.register_tables()
    register_identifier_function(session, rules or load_identity_rules(config_dir() / "identity.yaml"))
    return session


def register_identifier_function(session: "SparkSession", rules: IdentityRules) -> None:
    """`cdp_identifier_value(identifier_type, raw_value)`: the normalized identifier, null when it is blocked or
    not an identifier of its type; what identifier_lookup.py computes on DuckDB."""
    from pyspark.sql.functions import arrow_udf

    region = rules.default_phone_region

    @arrow_udf("string")
    def cdp_identifier_value(types: pa.Array, values: pa.Array) -> pa.Array:
        import polars as pl

        from cdp_assets.identity.normalize import normalize_identifiers

        frame = pl.from_arrow(pa.table({"identifier_type": types.cast(pa.string()), "raw_value": values.cast(pa.string())}))
        normalized = normalize_identifiers(
            frame.with_columns(identifier_value=pl.col("raw_value")), "identifier_type", "identifier_value", region)
        value = (pl.when(pl.col("identifier_value").is_null() | rules.blocked()).then(None)
                 .otherwise(pl.col("identifier_value")))
        return normalized.select(value.alias("v")).to_series().to_arrow().cast(pa.string())

    session.udf.register("cdp_identifier_value", cdp_identifier_value)


def table_row_counts(engine: "SparkEngine", tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(schema, name) -> rows of those of `tables` that are tables of the warehouse (views have no directory)."""
    return {(schema, name): engine.table(f"{schema}.{name}").count()
            for schema, name in tables if engine.table_exists(f"{schema}.{name}")}

