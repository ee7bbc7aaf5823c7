"""The dbt project. Its manifest is built at set-up (`make` runs `dagster-dbt project prepare-and-package`),
and rebuilt on load only under `dagster dev`, so production loads never parse dbt."""

from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
