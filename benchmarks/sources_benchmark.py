"""The file extracts (`raw.<source>` from landing/, imports/ and cdc/): seconds and peak RSS per source.

Generates the sample data set once into a cache folder (`--data`, default a temp folder named by the size),
then for each source hard-links a fresh copy of the data set (an extract moves unreadable files to
`landing/_rejected/`, so every measure starts from the same files) and materializes that source's asset
over every partition that has input, as `cdp run` does (one single-run backfill), in a child process of
its own: the extract's seconds, the child's (Dagster start-up included) and its peak resident memory
(`ru_maxrss`, DuckDB's memory included: it runs in the same process).

    .venv/bin/python benchmarks/sources_benchmark.py [--events 1000000] [--sources web,pos,crm_customers]
        [--data /tmp/cdp-sources-bench-1000000] [--code /work/main] [--repeat 1]

`--code` runs the extracts of another checkout (e.g. main, to compare before/after on the same data);
with `--repeat`, each source is measured that many times and the fastest run is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from dagster import AssetSelection, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from cdp_assets.config import load_sources
from cdp_assets.definitions import defs
from cdp_assets.runner import partitions_present
from cdp_assets.sources.assets import raw_key

source = load_sources()[sys.argv[1]]
resources = defs.resources
tags = {}
if source.partitions != "none":
    keys = partitions_present(source, resources["landing_zone"])
    tags = {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
started = time.monotonic()
result = materialize(list(defs.assets), selection=AssetSelection.assets(raw_key(source.name)), resources=resources,
                     tags=tags, run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
seconds = time.monotonic() - started
import duckdb
with duckdb.connect(str(resources["warehouse"].file()), read_only=True) as con:
    rows = con.execute(f"SELECT count(*) FROM raw.{source.name}").fetchone()[0]
import resource
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"seconds": seconds, "rows": rows, "success": result.success, "peak_rss_mb": peak_mb}))
"""


def ensure_data(folder: Path, events: int) -> None:
    if (folder / "sample_manifest.json").exists():
        return
    from cdp_assets.sample_data import generate_sample_data

    print(f"generating {events:,} events into {folder} (once) …", flush=True)
    generate_sample_data(folder, events=events, seed=7, end=datetime(2026, 11, 27, 16))


def measure(data: Path, source: str, code: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="cdp-sources-bench-") as temp:
        copy = Path(temp) / "data"
        subprocess.run(["cp", "-al", str(data), str(copy)], check=True)  # hard links: extracts rename, never write in place
        env = {**os.environ, "CDP_DATA_DIR": str(copy), "CDP_CONFIG_DIR": str(code / "config"),
               "CDP_PARTITIONS_START": "2025-01-01", "PYTHONPATH": str(code)}
        env.pop("DAGSTER_HOME", None)
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-c", CHILD, source], env=env, cwd=code, capture_output=True, text=True)
        wall = time.monotonic() - started
        if child.returncode != 0:
            raise SystemExit(f"{source}: extract failed\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["process_seconds"] = wall
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sources", default="web,pos,crm_customers")
    parser.add_argument("--data", type=Path, help="cache folder of the generated data set")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose extracts run (default: this one)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / f"cdp-sources-bench-{args.events}"
    ensure_data(data, args.events)
    print(f"file extracts of {args.code.resolve()} over {data}", flush=True)
    for source in args.sources.split(","):
        result = min((measure(data, source, args.code.resolve()) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        print(f"  {source:<14} {result['rows']:>10,} rows  extract {result['seconds']:6.1f}s  "
              f"process {result['process_seconds']:6.1f}s  peak RSS {result['peak_rss_mb']:,} MB", flush=True)


if __name__ == "__main__":
    main()
