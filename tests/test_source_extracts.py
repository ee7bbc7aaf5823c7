"""The file extracts: files no run reads are reported, never skipped in silence."""

from __future__ import annotations

import gzip
import json

import duckdb
from dagster import AssetSelection, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cdp_assets.config import SourceConfig
from cdp_assets.sources.assets import build_source_asset, input_folders
from cdp_assets.sources.checks import stray_files_check, volume_check
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
WEB = SourceConfig(name="web", kind="events", partitions="hourly")
POS = SourceConfig(name="pos", kind="csv", partitions="daily", columns={"receipt_id": "string", "amount": "number"})
CRM = SourceConfig(name="crm_customers", kind="cdc", partitions="none", path="cdc/crm_customers")


def _land(root, day: str, hour: str, name: str, lines: list[str]) -> None:
    folder = root / "landing" / "web" / f"dt={day}" / f"hour={hour}"
    folder.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def _message(n: int) -> str:
    return json.dumps({"type": "track", "messageId": f"m{n}", "anonymousId": "a", "event": "e"})


def _materialize(tmp_path, monkeypatch, sources, first: str | None = None, last: str | None = None):
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    folders = input_folders(sources)
    assets = [build_source_asset(s) for s in sources]
    checks = [volume_check(s) for s in sources if s.partitions != "none"] + [stray_files_check(s, folders) for s in sources]
    tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last} if first else {}
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    return materialize([*assets, *checks], selection=AssetSelection.all(), resources=resources, tags=tags, run_config=QUIET)


def _raw(tmp_path, source: str = "web") -> list[tuple]:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT partition_key, file, line_no, record FROM raw.{source} ORDER BY ALL").fetchall()


def test_files_no_extract_reads_are_listed_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_PARTITIONS_START", "2025-01-01")
    _land(tmp_path, "2026-01-01", "05", "a.jsonl", [_message(1)])
    _land(tmp_path, "2026-01-01", "05", ".tmp-1", [_message(2)])  # being written: not a stray
    _land(tmp_path, "2026-01-01", "25", "b.jsonl", [_message(3)])
    _land(tmp_path, "2026-02-30", "01", "c.jsonl", [_message(4)])
    _land(tmp_path, "2026-01-01", "06", "d.json", [_message(5)])
    _land(tmp_path, "2019-06-01", "00", "e.jsonl", [_message(6)])
    (tmp_path / "landing" / "web" / "2026-01-01").mkdir(parents=True)
    (tmp_path / "landing" / "web" / "2026-01-01" / "f.jsonl").write_text(_message(7) + "\n")
    (tmp_path / "landing" / "billing" / "dt=2026-01-01" / "hour=05").mkdir(parents=True)
    (tmp_path / "landing" / "billing" / "dt=2026-01-01" / "hour=05" / "g.jsonl").write_text("{}\n")
    (tmp_path / "landing" / "_rejected").mkdir()
    (tmp_path / "landing" / "_rejected" / "x.jsonl.gz").write_text("junk")
    imports = tmp_path / "imports" / "pos"
    (imports / "old").mkdir(parents=True)
    for name in ("pos_2026-01-02.csv", "pos_2026-13-45.csv", "pos_2026-01-03.xlsx", "old/pos_2026-01-01.csv", "pos_2024-12-31.csv"):
        (imports / name).write_text("receipt_id,amount\nr1,1\n")
    (tmp_path / "cdc" / "crm_customers").mkdir(parents=True)
    (tmp_path / "cdc" / "crm_customers" / "0001.jsonl").write_text("{}\n")
    (tmp_path / "cdc" / "crm_customers" / "0002.jsonl.gz").write_bytes(gzip.compress(b"{}\n"))

    zone = LandingZoneResource(root=str(tmp_path))
    strays = {s.path: s.reason for s in zone.stray_files(input_folders([WEB, POS, CRM]))}
    assert strays == {
        "landing/web/dt=2026-01-01/hour=25/b.jsonl": "hour=25 is not an hour (00-23)",
        "landing/web/dt=2026-02-30/hour=01/c.jsonl": "dt=2026-02-30 is not a date",
        "landing/web/dt=2026-01-01/hour=06/d.json": "not a .jsonl or .jsonl.gz file",
        "landing/web/dt=2019-06-01/hour=00/e.jsonl": strays["landing/web/dt=2019-06-01/hour=00/e.jsonl"],
        "landing/web/2026-01-01/f.jsonl": "not in a dt=YYYY-MM-DD/hour=HH/ folder",
        "landing/billing/dt=2026-01-01/hour=05/g.jsonl": "no source reads landing/billing/ (config/sources.yaml)",
        "imports/pos/pos_2026-13-45.csv": "2026-13-45 in the name is not a date",
        "imports/pos/pos_2026-01-03.xlsx": "not a .csv file",
        "imports/pos/old/pos_2026-01-01.csv": "in a subfolder: only files directly in imports/pos/ are read",
        "imports/pos/pos_2024-12-31.csv": strays["imports/pos/pos_2024-12-31.csv"],
        "cdc/crm_customers/0002.jsonl.gz": "not a .json, .jsonl, .csv file",
    }
    assert "partition 2019-06-01-00:00 is outside the partitions (2025-01-01-00:00 …" in strays["landing/web/dt=2019-06-01/hour=00/e.jsonl"]
    assert "CDP_PARTITIONS_START" in strays["imports/pos/pos_2024-12-31.csv"]

    result = _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-05:00", "2026-01-01-05:00")
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "every_input_file_read"]
    listed = check.metadata["files"].value
    assert not check.passed and check.metadata["stray_files"].value == 6  # web's five and billing's
    assert "landing/billing/dt=2026-01-01/hour=05/g.jsonl" in listed and "imports/pos" not in listed


def test_cdp_run_prints_the_files_it_does_not_read():
    from cdp_assets.runner import RunSummary, format_summary
    from cdp_resources.landing import StrayFile

    text = format_summary(RunSummary(stray_files=[StrayFile("landing/web/x.json", "not in a dt=YYYY-MM-DD/hour=HH/ folder", None)]))
    assert "Files no run reads: 1\n  `landing/web/x.json`: not in a dt=YYYY-MM-DD/hour=HH/ folder" in text
    assert "Files no run reads: 0" in format_summary(RunSummary())
