"""The dbt project, parsed once.

`make` prepares it at set-up (`dagster-dbt project prepare-and-package`): `dbt parse` with the vars the
platform passes (the user's configuration, cdp_assets/dbt/vars.py), writing `target/manifest.json`, which
the code location loads, and `target/partial_parse.msgpack`, dbt's parse cache. A code-location load parses
nothing unless the manifest is missing or older than a file of the dbt project. Every dbt command then runs
with the same vars, so dbt reuses the cache (partial parsing: only changed files are parsed again; dbt parses
everything when the vars differ from the cache's). A command that had to parse writes its cache back, so
only the first command after a change of configuration pays for it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
TARGET_DIR = DBT_PROJECT_DIR / "target"
PARTIAL_PARSE = "partial_parse.msgpack"
# What the manifest is parsed from: a newer file here makes the manifest stale.
PROJECT_FILES = ("models", "macros", "snapshots", "tests", "dbt_project.yml", "profiles.yml")


def ensure_dbt_on_path() -> str:
    """dbt as installed beside this Python (the project's virtualenv), even when the venv is not activated."""
    if not shutil.which("dbt"):
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return shutil.which("dbt") or "dbt"


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    manifest = project_dir / "target" / "manifest.json"
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    for name in PROJECT_FILES:
        path = project_dir / name
        files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


def prepare_arguments() -> list[str]:
    """`dbt parse` with the vars every later command passes, so that its cache serves them. A configuration
    that does not load yet parses with the project's own vars (the asset then names the mistake)."""
    from cdp_assets.dbt.vars import dbt_vars

    try:
        return ["parse", "--quiet", "--vars", json.dumps(dbt_vars())]
    except Exception:  # noqa: BLE001 - reported by the loaders when a run reads the configuration
        return ["parse", "--quiet"]


DBT_EXECUTABLE = ensure_dbt_on_path()
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, prepare_project_cli_args=prepare_arguments())
# Not dagster-dbt's `prepare_if_dev()`: under `dagster dev` every run's process loads the code location too,
# and would parse the project each time. Parse only when the manifest is missing or stale.
if manifest_is_stale():
    dbt_project.preparer.prepare(dbt_project)


@contextmanager
def parse_cache(target: Path) -> Iterator[Path]:
    """A target directory for one dbt command, seeded with the project's parse cache; the cache the command
    leaves (new when it had to parse) becomes the project's. The directory is removed afterwards, unless the
    command raised (its logs are kept for a look)."""
    shared = TARGET_DIR / PARTIAL_PARSE
    target.mkdir(parents=True, exist_ok=True)
    if shared.exists():
        shutil.copy2(shared, target / PARTIAL_PARSE)
    before = (target / PARTIAL_PARSE).stat().st_mtime_ns if (target / PARTIAL_PARSE).exists() else None
    yield target
    written = target / PARTIAL_PARSE
    if written.exists() and written.stat().st_mtime_ns != before:
        staged = TARGET_DIR / f".{PARTIAL_PARSE}.{uuid.uuid4().hex[:8]}"
        shutil.copy2(written, staged)
        os.replace(staged, shared)  # atomic: a concurrent command reads the old cache or the new one
    shutil.rmtree(target, ignore_errors=True)


def command_target(name: str) -> Path:
    return TARGET_DIR / f"{name}-{uuid.uuid4().hex[:8]}"


def dbt_environment(warehouse=None) -> dict[str, str]:
    """What dbt's profile and Python models read: the data and config directories, DuckDB's settings."""
    from cdp_resources import WarehouseResource
    from cdp_resources.settings import config_dir, data_dir

    return {"CDP_DATA_DIR": str(data_dir()), "CDP_CONFIG_DIR": str(config_dir()),
            **(warehouse or WarehouseResource()).dbt_environment()}


def run_dbt(args: list[str], vars_: dict | None = None, warehouse=None) -> list[str]:
    """Run a dbt command on this project in this process (the caller holds the warehouse lock and no
    connection to it); a RuntimeError naming what failed when it fails. For steps outside the dbt assets
    (the parse views a validation needs, tests). Returns what dbt said about parsing (`UnableToPartialParse:
    ...` when it parsed the whole project; empty when the cache served)."""
    said: list[str] = []

    def listen(event) -> None:
        if event.info.name in ("UnableToPartialParse", "PartialParsingNotEnabled"):
            said.append(f"{event.info.name}: {event.info.msg}")

    with parse_cache(command_target("run_dbt")) as target:
        result = invoke_dbt([*args, "--quiet"], target, vars_, warehouse, listen=listen)
    if not result.success:
        raise RuntimeError(f"dbt {' '.join(args)} failed: {dbt_failures(result)}")
    return said


def invoke_dbt(args: list[str], target: Path, vars_: dict | None = None, warehouse=None, *, listen=None,
               manifest=None, environment: dict[str, str] | None = None):
    """One dbt command in this process, on this project, writing its artifacts and log to `target`; dbt's
    result. In-process, dbt's import is paid once per process, and with a `manifest` (`parsed_manifest`)
    dbt does not even read its parse cache: a command costs its SQL, not dbt's start-up (a `dbt build` in
    a subprocess spent ~4 s of CPU before its first model on the project's 2-core machine)."""
    from dbt.cli.main import dbtRunner

    if "--target" not in args:
        args = [*args, *engine_target(warehouse)]
    added = {**dbt_environment(warehouse), **(environment or {})}
    saved = {k: os.environ.get(k) for k in added}
    os.environ.update(added)
    command = [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
               "--target-path", str(target), "--log-path", str(target)]
    if vars_ is not None:
        command += ["--vars", json.dumps(vars_)]
    try:
        return dbtRunner(manifest=manifest, callbacks=[listen] if listen else []).invoke(command)
    finally:
        _close_duckdb()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parsed_manifest(vars_: dict, warehouse=None):
    """dbt's parsed project for these vars (and engine: the targets enable different models), parsed once per
    process (from the parse cache) and kept."""
    from cdp_resources.settings import engine_name

    key = (json.dumps(vars_, sort_keys=True), engine_name(), (TARGET_DIR / "manifest.json").stat().st_mtime_ns
           if (TARGET_DIR / "manifest.json").exists() else 0)
    if key not in _MANIFESTS:
        with parse_cache(command_target("parse")) as target:
            result = invoke_dbt(["parse", "--quiet"], target, vars_, warehouse)
        if not result.success:
            raise RuntimeError(f"dbt parse failed: {result.exception}")
        _MANIFESTS.clear()
        _MANIFESTS[key] = result.result
    return _MANIFESTS[key]


def engine_target(warehouse=None) -> list[str]:
    """The dbt target of the warehouse's engine (`CDP_ENGINE`), ready to run in this process: none for DuckDB
    (profiles.yml's default); on Spark `--target spark`, whose session method joins this process's SparkSession,
    prepared first (the warehouse's tables in its catalog, the identity functions: cdp_assets/dbt/spark.py).
    The one place dbt differs by engine."""
    from cdp_resources import WarehouseResource

    engine = (warehouse or WarehouseResource()).engine()
    if engine.name != "spark":
        return []
    from cdp_assets.dbt.spark import prepare_session

    prepare_session(engine)
    return ["--target", "spark"]


@contextmanager
def writer_lock(warehouse) -> Iterator[None]:
    """The warehouse's writer lock for a dbt command: the DuckDB file's, or the Spark warehouse's
    (`SparkEngine.lock`, which the Spark stages hold around their read-modify-writes)."""
    engine = warehouse.engine()
    with engine.lock() if engine.name == "spark" else warehouse.lock():
        yield


def dbt_failures(result) -> str:
    failures = [f"{r.node.name}: {r.message}" for r in (getattr(result.result, "results", None) or [])
                if getattr(r, "status", None) in ("error", "fail")]
    return "; ".join(failures) or str(result.exception or "dbt failed")


_MANIFESTS: dict = {}


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
