"""Profiles on Spark (`CDP_ENGINE=spark`): the profile models themselves are dbt models (`dbt build --target
spark`); what Python reads of them lives here."""

from __future__ import annotations

from pyspark.sql import functions as F

# The snapshot's own columns (dbt/snapshots/profile_history.yml `snapshot_meta_column_names`).
VERSION_COLUMNS = ("version_id", "version_updated_at", "valid_from", "valid_to")


def history_problems(engine) -> tuple[int, int]:
    """(profiles differing from the current version of their history, profiles without one), as
    checks.history_problems counts them on DuckDB. The versioned columns are the history's own (those of
    core.profile_versions, a view, which a process's in-memory catalog holds only after dbt ran in it), read
    from cdp.profiles, whose projection that view is."""
    history = engine.table("cdp.profile_history")
    current = history.where(F.col("valid_to").isNull())
    columns = [f"`{c}`" for c in history.columns if c not in VERSION_COLUMNS]
    profiles = engine.table("cdp.profiles")
    differing = profiles.select(*columns).subtract(current.select(*columns)).count()
    without = profiles.join(current.select("person_id"), "person_id", "left_anti").count()
    return differing, without
