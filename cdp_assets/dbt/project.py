"""The dbt project. Its manifest is built at set-up (`make` runs `dagster-dbt project prepare-and-package`),
and rebuilt on load only under `dagster dev`, so production loads never parse dbt."""

import os
import shutil
import sys
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"


def ensure_dbt_on_path() -> str:
    """dbt as installed beside this Python (the project's virtualenv), even when the venv is not activated."""
    if not shutil.which("dbt"):
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return shutil.which("dbt") or "dbt"


DBT_EXECUTABLE = ensure_dbt_on_path()
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
