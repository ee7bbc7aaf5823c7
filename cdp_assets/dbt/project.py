"""The dbt project. Its manifest is built at set-up (`make` runs `dagster-dbt project prepare-and-package`),
and rebuilt on load only under `dagster dev`, so production loads never parse dbt."""

import os
import shutil
import sys
import tempfile
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


def run_dbt(args: list[str], vars_: dict | None = None) -> None:
    """Run a dbt command on this project in this process (the caller holds the warehouse lock and no
    connection to it); a RuntimeError naming what failed when it fails. For steps outside the dbt assets
    (the parse views a validation needs, tests); the assets themselves run through dagster-dbt. In-process,
    dbt's import and parse are paid once per process, not once per command."""
    import json

    from dbt.cli.main import dbtRunner

    from cdp_resources.settings import config_dir, data_dir

    global _RUNNER
    if _RUNNER is None:
        _RUNNER = dbtRunner()
    # A target and log folder per process: concurrent processes (tests, a run beside the UI) never share them.
    scratch = Path(tempfile.gettempdir()) / f"cdp-dbt-{os.getpid()}"
    command = [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--quiet",
               "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")]
    if vars_ is not None:
        command += ["--vars", json.dumps(vars_)]
    saved = {k: os.environ.get(k) for k in ("CDP_DATA_DIR", "CDP_CONFIG_DIR")}
    os.environ.update(CDP_DATA_DIR=str(data_dir()), CDP_CONFIG_DIR=str(config_dir()))
    try:
        result = _RUNNER.invoke(command)
    finally:
        _close_duckdb()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not result.success:
        failures = [f"{r.node.name}: {r.message}" for r in (result.result or []) if getattr(r, "status", None) in ("error", "fail")]
        raise RuntimeError(f"dbt {' '.join(args)} failed: {'; '.join(failures) or result.exception}")


_RUNNER = None


def _close_duckdb() -> None:
    """dbt-duckdb may keep the database open after a command; other processes must be able to open it."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
            DuckDBConnectionManager._ENV = None
