"""The dbt project wired into Dagster: staging → identity → profiles models as assets."""
