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


def run_dbt(args: list[str], vars_: dict | None = None) -> str:
    """Run a dbt command on this project (the caller holds the warehouse lock); its output, or a
    RuntimeError with the output's tail when it fails. For steps outside the dbt assets (building the parse
    views a validation needs, tests); the assets themselves run through dagster-dbt."""
    import json
    import subprocess

    from cdp_resources.settings import config_dir, data_dir

    command = [DBT_EXECUTABLE, *args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    if vars_ is not None:
        command += ["--vars", json.dumps(vars_)]
    env = {**os.environ, "CDP_DATA_DIR": str(data_dir()), "CDP_CONFIG_DIR": str(config_dir())}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=DBT_PROJECT_DIR)
    if done.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return done.stdout
