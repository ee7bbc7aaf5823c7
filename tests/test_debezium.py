"""Debezium's value encodings (temporal types, precise decimals) are read as the values they stand for: by the
field's schema name when the envelope carries `schema`, by the declared column type when it does not.

Oracles are independent of the SQL under test: Debezium's documentation (its create event verbatim, its
TIMESTAMP example), Python's datetime/Decimal arithmetic, and a real PostgreSQL's own rendering of its values."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import duckdb
import polars as pl
import pytest

from cdp_assets.config import SourceConfig, load_sources
from cdp_assets.events.pii import PiiRules
from cdp_assets.events.validate import new_batch, run_sql, unpack_typed, validate_source
from tests.conftest import build_models

# The value of the _create_ event in Debezium's PostgreSQL connector documentation ("Change event values",
# documentation/modules/ROOT/pages/connectors/postgresql.adoc), verbatim but for the {debezium-version} attribute.
DOCUMENTED_CREATE = """{
    "schema": {"type": "struct", "fields": [
        {"type": "struct", "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "string", "optional": false, "field": "first_name"},
            {"type": "string", "optional": false, "field": "last_name"},
            {"type": "string", "optional": false, "field": "email"}],
         "optional": true, "name": "PostgreSQL_server.inventory.customers.Value", "field": "before"},
        {"type": "struct", "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "string", "optional": false, "field": "first_name"},
            {"type": "string", "optional": false, "field": "last_name"},
            {"type": "string", "optional": false, "field": "email"}],
         "optional": true, "name": "PostgreSQL_server.inventory.customers.Value", "field": "after"},
        {"type": "struct", "fields": [
            {"type": "string", "optional": false, "field": "version"},
            {"type": "string", "optional": false, "field": "connector"},
            {"type": "string", "optional": false, "field": "name"},
            {"type": "int64", "optional": false, "field": "ts_ms"},
            {"type": "int64", "optional": false, "field": "ts_us"},
            {"type": "int64", "optional": false, "field": "ts_ns"},
            {"type": "boolean", "optional": true, "default": false, "field": "snapshot"},
            {"type": "string", "optional": false, "field": "db"},
            {"type": "string", "optional": false, "field": "schema"},
            {"type": "string", "optional": false, "field": "table"},
            {"type": "int64", "optional": true, "field": "txId"},
            {"type": "int64", "optional": true, "field": "lsn"},
            {"type": "int64", "optional": true, "field": "xmin"}],
         "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source"},
        {"type": "string", "optional": false, "field": "op"},
        {"type": "int64", "optional": true, "field": "ts_ms"},
        {"type": "int64", "optional": true, "field": "ts_us"},
        {"type": "int64", "optional": true, "field": "ts_ns"}],
     "optional": false, "name": "PostgreSQL_server.inventory.customers.Envelope"},
    "payload": {
        "before": null,
        "after": {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"},
        "source": {"version": "3.0.0.Final", "connector": "postgresql", "name": "PostgreSQL_server",
                   "ts_ms": 1559033904863, "ts_us": 1559033904863123, "ts_ns": 1559033904863123000,
                   "snapshot": true, "db": "postgres", "sequence": "[\\"24023119\\",\\"24023128\\"]",
                   "schema": "public", "table": "customers", "txId": 555, "lsn": 24023128, "xmin": null},
        "op": "c", "ts_ms": 1559033904863, "ts_us": 1559033904863841, "ts_ns": 1559033904863841257}
}"""
# The documentation's TIMESTAMP example: "2018-06-20 15:13:16.945104" is the MicroTimestamp 1529507596945104.
DOCUMENTED_MICROS, DOCUMENTED_TIME = 1529507596945104, datetime(2018, 6, 20, 15, 13, 16, 945104)

CRM = load_sources()["crm_customers"]
EPOCH = datetime(1970, 1, 1)
# A CDC source with a column per encoding (the declared type each is read as).
TYPES = SourceConfig(
    name="pg_types", kind="cdc", partitions="none", path="cdc/pg_types", primary_key="id",
    columns={"id": "string", "born": "timestamp", "kday": "string", "wake_ms": "string", "kwake": "string",
             "wake_us": "string", "wake_ns": "string", "ms_at": "timestamp", "kafka_at": "timestamp",
             "us_at": "timestamp", "ns_at": "timestamp", "zoned_at": "timestamp", "price": "number",
             "price_text": "string", "balance": "number", "balance_text": "string", "plain_at": "timestamp"},
)
NAMES = {"born": "io.debezium.time.Date", "kday": "org.apache.kafka.connect.data.Date",
         "wake_ms": "io.debezium.time.Time", "kwake": "org.apache.kafka.connect.data.Time",
         "wake_us": "io.debezium.time.MicroTime", "wake_ns": "io.debezium.time.NanoTime",
         "ms_at": "io.debezium.time.Timestamp", "kafka_at": "org.apache.kafka.connect.data.Timestamp",
         "us_at": "io.debezium.time.MicroTimestamp", "ns_at": "io.debezium.time.NanoTimestamp",
         "zoned_at": "io.debezium.time.ZonedTimestamp", "price": "org.apache.kafka.connect.data.Decimal",
         "price_text": "org.apache.kafka.connect.data.Decimal", "balance": "io.debezium.data.VariableScaleDecimal",
         "balance_text": "io.debezium.data.VariableScaleDecimal"}


def unscaled(value: Decimal, scale: int) -> str:
    """Kafka Connect's Decimal bytes: the unscaled value, big-endian two's complement, base64."""
    sign, digits, exponent = value.as_tuple()  # exact at any precision (Decimal arithmetic rounds to 28 digits)
    number = (-1 if sign else 1) * int("".join(map(str, digits))) * 10 ** (exponent + scale)
    size = max(1, (number.bit_length() + 8) // 8)
    return base64.b64encode(number.to_bytes(size, "big", signed=True)).decode()


def field_schema(column: str, scale: int | None = None) -> dict:
    schema = {"type": "int64", "optional": True, "field": column}
    if column in NAMES:
        schema["name"] = NAMES[column]
    if scale is not None:
        schema["parameters"] = {"scale": str(scale), "connect.decimal.precision": "38"}
    return schema


def envelope(after: dict, scales: dict[str, int], lsn: int, with_schema: bool = True) -> str:
    payload = {"before": None, "after": after, "op": "c", "source": {"lsn": lsn, "ts_ms": lsn}}
    if not with_schema:
        return json.dumps(payload)
    fields = [field_schema(c, scales.get(c)) for c in after]
    value = {"type": "struct", "fields": fields, "optional": True, "name": "srv.public.t.Value"}
    schema = {"type": "struct", "name": "srv.public.t.Envelope",
              "fields": [{**value, "field": "before"}, {**value, "field": "after"}, {"type": "string", "field": "op"}]}
    return json.dumps({"schema": schema, "payload": payload})


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("debezium")
    build_models(data_dir, "path:models/staging/parsed", {**load_sources(), "pg_types": TYPES})
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    yield con
    con.close()


def typed(con, source: SourceConfig, lines: list[str]) -> pl.DataFrame:
    """`lines` as raw records of `source`, read back through the parse view with their declared types."""
    con.execute(f"DELETE FROM raw.{source.name}")
    con.executemany(f"INSERT INTO raw.{source.name} VALUES ('', 'f.jsonl', ?, ?, TIMESTAMP '2026-01-01')", list(enumerate(lines, 1)))
    frame = con.sql(f"SELECT * FROM staging.parsed_records WHERE raw_source = '{source.name}' ORDER BY line_no").pl()
    return unpack_typed(frame, source)


def validate_crm(con, lines: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    run_sql(con, "state")
    for table in ("crm_customers", "crm_customers_changes", "crm_customers_removed"):
        con.execute(f"DROP TABLE IF EXISTS validated.{table}")
    con.execute("DELETE FROM core.validated_partitions WHERE raw_source = 'crm_customers'")
    con.execute("DELETE FROM raw.crm_customers")
    con.executemany("INSERT INTO raw.crm_customers VALUES ('', 'f.jsonl', ?, ?, now())", list(enumerate(lines, 1)))
    validate_source(con, CRM, PiiRules(), {}, new_batch(con, "test", datetime(2026, 1, 1)))
    return (con.sql("SELECT * FROM validated.crm_customers ORDER BY id").pl(),
            con.sql("SELECT * FROM cdp.quarantine WHERE source = 'crm_customers'").pl())


def test_the_documented_create_event_and_timestamp_are_read(warehouse):
    after = {"id": "c1", "email": "c1@example.com", "updated_at": DOCUMENTED_MICROS}
    with_schema = json.loads(envelope(after, {}, 7))
    with_schema["schema"]["fields"][1]["fields"][2]["name"] = "io.debezium.time.MicroTimestamp"
    lines = [DOCUMENTED_CREATE, json.dumps(with_schema),
             json.dumps({"payload": {"op": "c", "after": {**after, "id": "c2"}, "source": {"lsn": 8}}})]
    rows, quarantine = validate_crm(warehouse, lines)
    assert quarantine["reasons"].to_list() == []
    assert rows.select("id", "first_name", "email").rows() == [
        ("1", "Anne", "annek@noanswer.org"), ("c1", None, "c1@example.com"), ("c2", None, "c1@example.com")]
    assert rows["updated_at"].to_list() == [None, DOCUMENTED_TIME, DOCUMENTED_TIME]


def test_every_temporal_encoding_and_decimal_by_schema_name(warehouse):
    moment = datetime(2026, 11, 27, 10, 15, 30, 123456)
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    day = date(2026, 11, 27)
    of_day = (moment - moment.replace(hour=0, minute=0, second=0, microsecond=0)) // timedelta(microseconds=1)
    after = {
        "id": 1, "born": (day - date(1970, 1, 1)).days, "kday": (day - date(1970, 1, 1)).days,
        "wake_ms": of_day // 1000, "kwake": of_day // 1000, "wake_us": of_day, "wake_ns": of_day * 1000 + 789,
        "ms_at": micros // 1000, "kafka_at": micros // 1000, "us_at": micros, "ns_at": micros * 1000 + 789,
        "zoned_at": "2026-11-27T11:15:30.123456+01:00", "price": unscaled(Decimal("-1234567.89"), 2),
        "price_text": unscaled(Decimal("12345678901234567890123456.123456789012"), 12),
        "balance": {"scale": 3, "value": unscaled(Decimal("0.125"), 3)}, "plain_at": micros,
    }
    lines = [envelope(after, {"price": 2, "price_text": 12}, 1),
             envelope({"id": 2, "us_at": 9223372036825200000, "price": "not base64!"}, {"price": 2}, 2),
             envelope({"id": 3, "us_at": micros, "price": 1234}, {}, 3, with_schema=False)]
    frame = typed(warehouse, TYPES, lines)
    assert frame["parse_errors"].to_list() == [
        [], ["bad_timestamp: us_at 9223372036825200000 is not a timestamp", "wrong_type: price not base64! is not a number"],
        []]
    row = frame.row(0, named=True)
    millis = moment.replace(microsecond=123000)
    assert row["born"] == datetime(2026, 11, 27) and row["kday"] == "2026-11-27"
    assert (row["wake_ms"], row["kwake"], row["wake_us"], row["wake_ns"]) == (
        "10:15:30.123000", "10:15:30.123000", "10:15:30.123456", "10:15:30.123456")
    assert (row["ms_at"], row["kafka_at"], row["us_at"], row["ns_at"]) == (millis, millis, moment, moment)
    assert row["zoned_at"] == moment and row["plain_at"] == moment  # no schema name: µs by the column type
    assert row["price"] == -1234567.89 and row["balance"] == 0.125
    assert row["price_text"] == "12345678901234567890123456.123456789012"  # exact, all 38 digits
    schemaless = frame.row(2, named=True)  # without a schema an integer is µs only in a timestamp column
    assert schemaless["us_at"] == moment and schemaless["price"] == 1234.0


@pytest.mark.postgres
def test_a_postgresql_table_round_trips_through_debezium_encodings(warehouse, pg_schema, monkeypatch):
    """Rows of a real PostgreSQL table, written as Debezium's PostgreSQL connector documents (adaptive time
    precision, precise decimals), come out of validation as PostgreSQL itself renders them."""
    con, schema, _ = pg_schema
    con.execute(f"""CREATE TABLE {schema}.t (id integer PRIMARY KEY, born date, wake_us time(6), us_at timestamp,
                    ms_at timestamp(3), zoned_at timestamptz, price_text numeric(12, 2), balance_text numeric)""")
    con.execute(f"""INSERT INTO {schema}.t VALUES
        (1, '1969-07-20', '23:59:59.999999', '2018-06-20 15:13:16.945104', '2018-06-20 15:13:16.945',
         '2026-03-29 01:30:00.5+02', -1234.56, 0.000001),
        (2, '2038-01-19', '00:00:00', '1901-12-13 20:45:52.000001', '1999-12-31 23:59:59.999',
         '2000-01-01 00:00:00Z', 9999999999.99, -98765432109876543210.5)""")
    pg_rows = con.execute(f"SELECT * FROM {schema}.t ORDER BY id").fetchall()
    columns = ["id", "born", "wake_us", "us_at", "ms_at", "zoned_at", "price_text", "balance_text"]
    lines = []
    for lsn, (id_, born, wake, us_at, ms_at, zoned, price, balance) in enumerate(pg_rows, 1):
        of_day = (datetime.combine(date.min, wake) - datetime.min) // timedelta(microseconds=1)
        balance_scale = -balance.as_tuple().exponent
        after = {"id": id_, "born": (born - date(1970, 1, 1)).days, "wake_us": of_day,
                 "us_at": (us_at - EPOCH) // timedelta(microseconds=1), "ms_at": (ms_at - EPOCH) // timedelta(milliseconds=1),
                 "zoned_at": zoned.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                 "price_text": unscaled(price, 2),
                 "balance_text": {"scale": balance_scale, "value": unscaled(balance, balance_scale)}}
        fields = [field_schema(c, 2 if c == "price_text" else None) for c in columns]
        value = {"type": "struct", "fields": fields, "optional": True, "name": "pg.public.t.Value"}
        record = {"schema": {"type": "struct", "fields": [{**value, "field": "before"}, {**value, "field": "after"}]},
                  "payload": {"before": None, "after": after, "op": "r", "source": {"lsn": lsn, "ts_ms": lsn}}}
        lines.append(json.dumps(record))
    source = TYPES
    monkeypatch.setattr("cdp_assets.events.validate.load_suite", lambda name: {"name": "pg_types", "expectations": []})
    warehouse.execute("DELETE FROM raw.pg_types")
    warehouse.executemany("INSERT INTO raw.pg_types VALUES ('', 'f.jsonl', ?, ?, now())", list(enumerate(lines, 1)))
    run_sql(warehouse, "state")
    result = validate_source(warehouse, source, PiiRules(), {}, new_batch(warehouse, "test", datetime(2026, 1, 1)))
    assert (result.accepted, result.quarantined) == (2, 0)
    got = warehouse.sql("""SELECT id, strftime(born, '%Y-%m-%d'), wake_us, strftime(us_at, '%Y-%m-%d %H:%M:%S.%f'),
                                  strftime(ms_at, '%Y-%m-%d %H:%M:%S.%f'), strftime(zoned_at, '%Y-%m-%d %H:%M:%S.%f'),
                                  price_text, balance_text FROM validated.pg_types ORDER BY id""").fetchall()
    expected = con.execute(f"""SELECT id::text, to_char(born, 'YYYY-MM-DD'), to_char(wake_us, 'HH24:MI:SS.US'),
                                      to_char(us_at, 'YYYY-MM-DD HH24:MI:SS.US'), to_char(ms_at, 'YYYY-MM-DD HH24:MI:SS.US'),
                                      to_char(zoned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                                      price_text::text, balance_text::text FROM {schema}.t ORDER BY id""").fetchall()
    assert got == [tuple(r) for r in expected]
