"""The file extracts: per-partition metadata, volumes judged per partition loaded, files no run reads,
and the batched reader keeping every record, line number and rejection of the line-by-line one."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

import duckdb
import pytest
from dagster import AssetSelection, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from hypothesis import given
from hypothesis import strategies as st

from cdp_assets.config import SourceConfig
from cdp_assets.sources.assets import build_source_asset, input_folders
from cdp_assets.sources.checks import stray_files_check, volume_check
from cdp_assets.sources.readers import jsonl_records
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


def test_a_single_run_backfill_gives_each_partition_its_own_metadata(tmp_path, monkeypatch):
    """One run over three hours used to show the run's totals on every hour."""
    _land(tmp_path, "2026-01-01", "00", "a.jsonl", [_message(1)])
    _land(tmp_path, "2026-01-01", "01", "a.jsonl", [_message(2), "", _message(3)])
    _land(tmp_path, "2026-01-01", "01", "b.jsonl.gz", [_message(4)])
    _land(tmp_path, "2026-01-01", "02", "bad.jsonl.gz", [])
    (tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=02" / "bad.jsonl.gz").write_bytes(b"not gzip")
    result = _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-01-03:00")
    metadata = {e.partition: e.materialization.metadata for e in result.get_asset_materialization_events()}
    values = {k: {name: v.value for name, v in m.items() if name in ("records_loaded", "files", "rejected_files", "dagster/row_count")}
              for k, m in metadata.items()}
    assert values == {
        "2026-01-01-00:00": {"records_loaded": 1, "files": 1, "rejected_files": 0, "dagster/row_count": 1},
        "2026-01-01-01:00": {"records_loaded": 3, "files": 2, "rejected_files": 0, "dagster/row_count": 3},
        "2026-01-01-02:00": {"records_loaded": 0, "files": 0, "rejected_files": 1, "dagster/row_count": 0},
        "2026-01-01-03:00": {"records_loaded": 0, "files": 0, "rejected_files": 0, "dagster/row_count": 0},
    }
    preview = metadata["2026-01-01-01:00"]["preview"].value  # its own lines only (records are hidden: personal data)
    assert "hour=01/a.jsonl | 3 |" in preview and "hour=01/b.jsonl.gz | 1 |" in preview and "hour=00" not in preview
    assert "bad.jsonl.gz" in metadata["2026-01-01-02:00"]["rejected"].value
    assert [r[2] for r in _raw(tmp_path) if r[1] == "landing/web/dt=2026-01-01/hour=01/a.jsonl"] == [1, 3]


def _hours(start: datetime, counts: list[int]) -> dict[str, int]:
    return {(start + timedelta(hours=n)).strftime("%Y-%m-%d-%H:00"): c for n, c in enumerate(counts)}


def test_the_volume_check_judges_the_partitions_the_run_loaded(tmp_path, monkeypatch):
    """An hour with a tenth of its usual records, loaded by a run, is flagged even when newer hours are fine."""
    start = datetime(2026, 1, 1)
    counts = _hours(start, [30] * 30)
    counts["2026-01-01-20:00"] = 3
    for key, count in counts.items():
        _land(tmp_path, key[:10], key[11:13], "part.jsonl", [_message(n) for n in range(count)])
    result = _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-02-05:00")
    [volume] = [c for c in result.get_asset_check_evaluations() if c.check_name == "volume_within_usual_range"]
    assert not volume.passed and volume.metadata["out_of_range"].value == 1
    assert "2026-01-01-20:00" in volume.metadata["anomalies"].value and volume.metadata["judged"].value == 30
    # A run of one usual hour judges that hour only: it passes although an older hour is anomalous.
    result = _materialize(tmp_path, monkeypatch, [WEB], "2026-01-02-05:00", "2026-01-02-05:00")
    [volume] = [c for c in result.get_asset_check_evaluations() if c.check_name == "volume_within_usual_range"]
    assert volume.passed and volume.metadata["partition"].value == "2026-01-02-05:00"
    # Run on its own (the UI's "Execute"), the check judges the partitions of the newest load.
    alone = materialize([build_source_asset(WEB), volume_check(WEB)], selection=AssetSelection.checks(volume_check(WEB)),
                        resources={"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}, run_config=QUIET)
    [volume] = alone.get_asset_check_evaluations()
    assert volume.passed and volume.metadata["judged"].value == 1 and volume.metadata["partition"].value == "2026-01-02-05:00"


def test_volume_of_each_judged_partition_is_against_its_own_trailing_hours():
    from cdp_assets.sources.checks import volume_anomalies

    start = datetime(2026, 1, 1)
    counts = _hours(start, [100] * 10 + [500] * 30)  # a lasting step up: a spike at first, then the usual
    now = datetime(2026, 1, 3)
    verdict = volume_anomalies(counts, "hourly", now, judged=list(counts))
    flagged = [a["partition"] for a in verdict["anomalies"]]
    assert flagged and flagged[0] == "2026-01-01-10:00" and "2026-01-02-15:00" not in flagged
    gap = {**counts, "2026-01-02-10:00": 0}
    del gap["2026-01-02-10:00"]  # an hour with no file at all counts 0, it is not skipped
    assert not volume_anomalies(gap, "hourly", now, judged=["2026-01-02-10:00"])["passed"]
    assert volume_anomalies(counts, "hourly", datetime(2026, 1, 2, 15, 30), judged=["2026-01-02-15:00"])["judged"] == 0  # in progress


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


def test_a_backfill_read_in_small_batches_stores_exactly_what_one_batch_does(tmp_path, monkeypatch):
    import cdp_assets.sources.assets as assets

    for hour in range(6):
        _land(tmp_path, "2026-01-01", f"{hour:02d}", "a.jsonl", [_message(hour * 10 + n) for n in range(hour + 1)])
        _land(tmp_path, "2026-01-01", f"{hour:02d}", "b.jsonl.gz", ["", _message(hour * 10 + 9), "{broken"])
    _land(tmp_path, "2026-01-01", "03", "c.jsonl.gz", [])
    (tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=03" / "c.jsonl.gz").write_bytes(b"\x1f\x8b truncated")
    pristine = tmp_path / "pristine"
    import shutil

    shutil.copytree(tmp_path / "landing", pristine)
    assert _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-01-05:00").success
    whole = _raw(tmp_path)
    shutil.rmtree(tmp_path / "landing")
    shutil.copytree(pristine, tmp_path / "landing")
    (tmp_path / "warehouse.duckdb").unlink()
    monkeypatch.setattr(assets, "BATCH_BYTES", 60)  # about one file per batch
    monkeypatch.setattr(assets, "ROW_GROUP", 4)  # appends of 4, 8 ... rows, the rest carried to the next batch
    assert len(list(assets._batches(LandingZoneResource(root=str(tmp_path)).landing_files("web")))) >= 12
    assert _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-01-05:00").success
    assert _raw(tmp_path) == whole and len(whole) == 21 + 12
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT file FROM raw.rejected_files").fetchall() == [("landing/web/dt=2026-01-01/hour=03/c.jsonl.gz",)]


def test_csv_imports_and_cdc_files_load_through_the_batches(tmp_path, monkeypatch):
    imports = tmp_path / "imports" / "pos"
    imports.mkdir(parents=True)
    (imports / "pos_2026-01-02.csv").write_text("receipt_id,amount\nr1,1\n\nr2,2\n")
    (imports / "pos_2026-01-03.csv").write_text("receipt_id\nr3\n")  # a required column missing: rejected
    cdc = tmp_path / "cdc" / "crm_customers"
    cdc.mkdir(parents=True)
    (cdc / "0001.jsonl").write_text('{"op":"c"}\n\n{"op":"u"}\n')
    (cdc / "0002.csv").write_text("Op,id\nI,1\n")
    assert _materialize(tmp_path, monkeypatch, [POS], "2026-01-02", "2026-01-03").success
    assert [(k, line, json.loads(r)) for k, _, line, r in _raw(tmp_path, "pos")] == [
        ("2026-01-02", 2, {"receipt_id": "r1", "amount": "1"}), ("2026-01-02", 4, {"receipt_id": "r2", "amount": "2"})]
    assert (tmp_path / "landing" / "_rejected" / "imports" / "pos" / "pos_2026-01-03.csv.reason").exists()
    result = _materialize(tmp_path, monkeypatch, [CRM])
    assert [(f, line, r) for _, f, line, r in _raw(tmp_path, "crm_customers")] == [
        ("cdc/crm_customers/0001.jsonl", 1, '{"op":"c"}'), ("cdc/crm_customers/0001.jsonl", 3, '{"op":"u"}'),
        ("cdc/crm_customers/0002.csv", 2, '{"Op": "I", "id": "1"}')]
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["records_loaded"].value == 3 and event.materialization.metadata["files"].value == 2


# Text made of JSON-ish lines, spaces, tabs, CRLF, blank and whitespace-only lines and non-ASCII characters.
_LINE = st.text(alphabet=st.sampled_from(list('{}":ab1 \t\u00e9\u4e2d\u00a0\x1f') + ["\U0001f600"]), max_size=12)
_TEXT = st.lists(st.tuples(_LINE, st.sampled_from(["\n", "\r\n"])), max_size=12).map(lambda ls: "".join(a + b for a, b in ls))


@given(text=_TEXT, tail=_LINE, bom=st.booleans(), zipped=st.booleans())
def test_lines_and_their_numbers_are_those_of_python_line_by_line(tmp_path_factory, text, tail, bom, zipped):
    """The oracle is the reader this replaced: `splitlines()` and `strip()` per line, numbered from 1."""
    path = tmp_path_factory.mktemp("f") / ("x.jsonl.gz" if zipped else "x.jsonl")
    data = (("\ufeff" if bom else "") + text + tail).encode()
    path.write_bytes(gzip.compress(data) if zipped else data)
    expected = [(n, line) for n, line in enumerate((text + tail).splitlines(), start=1) if line.strip()]
    assert jsonl_records(path) == expected


def test_a_record_holding_a_unicode_line_separator_stays_one_record(tmp_path):
    """U+2028 is legal inside a JSON string; splitlines() used to cut such a record in two."""
    path = tmp_path / "x.jsonl"
    record = '{"type":"track","properties":{"q":"a\u2028b\u0085c"}}'
    path.write_text(record + "\n" + _message(1) + "\n", encoding="utf-8")
    assert jsonl_records(path) == [(1, record), (2, _message(1))]


def test_a_gzip_file_of_several_members_is_read_whole(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"b":2}\n'))
    assert jsonl_records(path) == [(1, '{"a":1}'), (2, '{"b":2}')]


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8\n", b"\x1f\x8b\x08\x00 broken gzip"])
def test_an_undecodable_file_is_rejected_whole(tmp_path, monkeypatch, content):
    _land(tmp_path, "2026-01-01", "00", "good.jsonl", [_message(1)])
    name = "bad.jsonl.gz" if content.startswith(b"\x1f\x8b") else "bad.jsonl"
    (tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=00" / name).write_bytes(content)
    assert _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-01-00:00").success
    assert [r[3] for r in _raw(tmp_path)] == [_message(1)]
    reason = (tmp_path / "landing" / "_rejected" / "web" / "dt=2026-01-01" / "hour=00" / f"{name}.reason").read_text()
    assert reason.startswith(f"{name}: cannot be read")


def test_records_of_erased_persons_are_removed_from_the_files_first(tmp_path, monkeypatch):
    from cdp_assets.privacy.suppression import SUPPRESSIONS_DDL, identifier_hash

    monkeypatch.setenv("CDP_PII_SALT", "test-salt-not-a-secret")
    erased = json.dumps({"type": "identify", "messageId": "e1", "userId": "u1", "traits": {"email": "Gone@Example.com"}})
    _land(tmp_path, "2026-01-01", "00", "a.jsonl", [erased, _message(1)])
    _land(tmp_path, "2026-01-01", "00", "b.jsonl.gz", [_message(2), erased])
    corrupt = tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=00" / "c.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 a body that is not deflate")  # a header, then garbage
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA cdp")
        con.execute(SUPPRESSIONS_DDL)
        con.execute("INSERT INTO cdp.suppressions VALUES ('email', ?, now())", [identifier_hash("test-salt-not-a-secret", "gone@example.com")])
    result = _materialize(tmp_path, monkeypatch, [WEB], "2026-01-01-00:00", "2026-01-01-00:00")
    assert result.success
    assert [(f.rsplit("/", 1)[1], line, r) for _, f, line, r in _raw(tmp_path)] == [("a.jsonl", 1, _message(1)), ("b.jsonl.gz", 1, _message(2))]
    assert "Gone@" not in (tmp_path / "landing" / "web" / "dt=2026-01-01" / "hour=00" / "a.jsonl").read_text()
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["suppressed_records"].value == 2 and event.materialization.metadata["rejected_files"].value == 1
