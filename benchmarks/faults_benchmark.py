"""Figures for the README's reliability section (issue 19: erasure, deliveries, hostile segment files).

    .venv/bin/python benchmarks/faults_benchmark.py --events 100000          # demo size: generate, `cdp run`, measure
    .venv/bin/python benchmarks/faults_benchmark.py --data-dir /tmp/demo     # measure on a copy of an instance that ran

1. Erasure of one person at that size: the erase itself (rows, scrub, files) and the warehouse rewrite
   (`COPY FROM DATABASE` into a fresh file, swapped in), with file sizes; then the byte scan of tests/bytescan.py.
2. A 641-byte YAML alias bomb: time and peak memory until the file:line error.
3. A destination refusing connections for two runs (max_attempts 2) then back: delivered, dead, waiting.
Run on a quiet machine for the published figures; at a small size it proves the script works.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("CDP_CONFIG_DIR", str(REPO / "config"))
os.environ.pop("DAGSTER_HOME", None)


def erasure(data_dir: Path) -> dict:
    import duckdb
    from bytescan import scan

    from cdp_assets.privacy.erase import request_erasure
    from cdp_assets.privacy.jobs import process_erasure_requests
    from cdp_resources import WarehouseResource

    os.environ["CDP_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("CDP_PII_SALT", "benchmark-salt")
    warehouse = data_dir / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        person, email = con.execute(
            "SELECT person_id, email FROM cdp.profiles WHERE email IS NOT NULL ORDER BY order_count DESC, person_id LIMIT 1").fetchone()
        needles = {r[0].strip().lower() for r in con.execute(
            """SELECT raw_value FROM core.identifier_lookup l JOIN cdp.id_map m USING (identifier_type, identifier_value)
               WHERE m.person_id = ? UNION SELECT identifier_value FROM cdp.id_map WHERE person_id = ?""", [person, person]
        ).fetchall() if r[0] and len(r[0].strip()) > 5} | {person}
    files = sum(1 for p in data_dir.rglob("*") if p.is_file())
    request_erasure(data_dir, "email", email)
    lines: list[str] = []
    started = time.perf_counter()
    [audit] = process_erasure_requests(WarehouseResource(), log=lines.append)
    total = time.perf_counter() - started
    rewrite = next(line for line in lines if line.startswith("warehouse rewritten"))
    started = time.perf_counter()
    left = scan(data_dir, needles)
    return {"files under the data dir": files, "rows deleted": sum(audit["rows_deleted"].values()),
            "file records removed": audit["file_records_removed"], "erasure total s": round(total, 2),
            "rewrite": rewrite.split(": ", 1)[1], "byte scan s": round(time.perf_counter() - started, 2),
            "found after": len(left)}


def alias_bomb() -> dict:
    from test_hostile_segments import alias_bomb as bomb

    from cdp_assets.segments.compiler import SegmentError, load_segment

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.yaml"
        path.write_bytes(bomb("bomb"))
        tracemalloc.start()
        started = time.perf_counter()
        try:
            load_segment(path)
            message = "loaded?!"
        except SegmentError as exc:
            message = str(exc).split(": ", 1)[1]
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"bytes": len(bomb("bomb")), "ms to fail": round(elapsed * 1000, 1), "peak MiB": round(peak / 2**20, 2), "error": message}


def outage(persons: int = 50) -> dict:
    import duckdb
    from test_activation import Receiver, _client, _free_port

    from cdp_assets.activation.config import Destination
    from cdp_assets.activation.deliveries import deliver
    from cdp_resources import WarehouseResource

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "warehouse.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE SCHEMA cdp")
            con.execute("CREATE TABLE cdp.segment_changes (segment VARCHAR, person_id VARCHAR, change VARCHAR, changed_at TIMESTAMP)")
            start = datetime(2026, 5, 1)
            con.executemany("INSERT INTO cdp.segment_changes VALUES ('vip', ?, ?, ?)", [
                (f"p{p}", change, start + timedelta(minutes=n * persons + p))
                for n, change in enumerate(("entered", "exited", "entered")) for p in range(persons)])
        warehouse = WarehouseResource(path=str(path))
        destination = Destination(name="hook", kind="http", url_env="U", segments=("vip",), batch_size=10, max_attempts=2,
                                  outage_backoff_s=0)
        port = _free_port()
        for _ in range(2):
            deliver(warehouse.connect, destination, _client(f"http://127.0.0.1:{port}/hook"))
        receiver = Receiver(port=port)
        try:
            started = time.perf_counter()
            report = deliver(warehouse.connect, destination, _client(receiver.url))
            elapsed = time.perf_counter() - started
        finally:
            receiver.close()
    return {"items": persons * 3, "delivered after recovery": len(receiver.accepted), "dead": report.dead_total,
            "still open": report.open_total, "recovery run s": round(elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--data-dir", type=Path, help="an instance that already ran (copied, never changed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cdp-faults-"))
    data_dir = work / "data"
    try:
        if args.data_dir:
            shutil.copytree(args.data_dir, data_dir)
        else:
            from cdp_assets.runner import run_everything
            from cdp_assets.sample_data import generate_sample_data

            os.environ["CDP_DATA_DIR"] = str(data_dir)
            generate_sample_data(data_dir, events=args.events, seed=7, log=lambda *_: None)
            assert run_everything(progress=lambda _: None).success
        size = (data_dir / "warehouse.duckdb").stat().st_size
        print(f"## Erasure of one person ({size / 2**20:.1f} MiB warehouse)")
        for key, value in erasure(data_dir).items():
            print(f"- {key}: {value}")
        print("## Alias bomb")
        for key, value in alias_bomb().items():
            print(f"- {key}: {value}")
        print("## Destination down for two runs, then back")
        for key, value in outage().items():
            print(f"- {key}: {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
