"""Fault injection for deliveries: a dead destination, one that comes back, a flaky one, one refusing a
single payload. Outages never spend attempts, nothing is dead-lettered by them, every item arrives once
and in order per person; a refused item dies alone and holds nothing."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import duckdb
import pytest
from test_activation import T0, Receiver, _client, _free_port

from cdp_assets.activation.config import Destination
from cdp_assets.activation.deliveries import OUTAGE_BACKOFF_MAX_S, _now, deliver
from cdp_resources import WarehouseResource

PERSONS = 20
CHANGES = ("entered", "exited", "entered")


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    """20 persons, each entering, leaving and entering again segment `vip`, interleaved in time: 60 items."""
    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA cdp")
        con.execute("CREATE TABLE cdp.profiles (person_id VARCHAR, total_revenue DOUBLE)")
        con.execute("INSERT INTO cdp.profiles SELECT 'p' || lpad(i::VARCHAR, 2, '0'), i FROM range(?) t(i)", [PERSONS])
        con.execute("CREATE TABLE cdp.segment_changes (segment VARCHAR, person_id VARCHAR, change VARCHAR, changed_at TIMESTAMP)")
        con.executemany("INSERT INTO cdp.segment_changes VALUES ('vip', ?, ?, ?)", [
            (f"p{p:02d}", change, T0 + timedelta(minutes=n * PERSONS + p))
            for n, change in enumerate(CHANGES) for p in range(PERSONS)])
    return WarehouseResource()


def _destination(**overrides) -> Destination:
    base = dict(name="hook", kind="http", url_env="U", segments=("vip",), fields={"revenue": "total_revenue"},
                batch_size=10, max_attempts=2, outage_backoff_s=0)
    return Destination(**{**base, **overrides})


def _ledger(warehouse) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute("SELECT person_id, status, attempts FROM cdp.deliveries ORDER BY person_id, ordered_at").fetchall()


def _arrivals(receiver: Receiver) -> dict[str, list[str]]:
    per_person: dict[str, list[str]] = {}
    for item in receiver.accepted:
        per_person.setdefault(item["person_id"], []).append(item["change"])
    return per_person


def test_a_destination_down_for_two_runs_loses_nothing_and_spends_no_attempt(warehouse):
    """max_attempts: 2 and two runs refused: before, 20 items were dead and 58 held behind them."""
    destination = _destination(outage_backoff_s=1.0)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hook"
    first = deliver(warehouse.connect, destination, _client(url))
    assert (first.enqueued, first.sent, first.waited, first.dead_lettered) == (60, 0, 10, 0) and first.retry_at
    skipped = deliver(warehouse.connect, destination, _client(url))  # before retry_at: nothing is tried
    assert (skipped.waited, skipped.deferred) == (0, 60) and "next try" in skipped.stopped
    time.sleep(max(0.0, (first.retry_at - _now()).total_seconds()) + 0.05)
    second = deliver(warehouse.connect, destination, _client(url))
    assert (second.waited, second.dead_lettered) == (10, 0)
    assert second.retry_at - first.retry_at >= timedelta(seconds=2)  # the wait doubled: 1 s, then 2 s
    assert {(status, attempts) for _, status, attempts in _ledger(warehouse)} == {("waiting", 0), ("pending", 0)}
    receiver = Receiver(port=port)  # the destination is back
    try:
        time.sleep(max(0.0, (second.retry_at - _now()).total_seconds()) + 0.05)
        recovered = deliver(warehouse.connect, destination, _client(receiver.url))
        assert (recovered.sent, recovered.dead_total, recovered.open_total, recovered.retry_at) == (60, 0, 0, None)
        assert _arrivals(receiver) == {f"p{p:02d}": list(CHANGES) for p in range(PERSONS)}  # once each, in order
        assert {(status, attempts) for _, status, attempts in _ledger(warehouse)} == {("sent", 1)}
        with warehouse.connect() as con:
            assert con.execute("SELECT count(*) FROM cdp.destination_outages").fetchone()[0] == 0
    finally:
        receiver.close()


def test_a_dead_destination_waits_with_a_capped_backoff_and_dead_letters_nothing(warehouse):
    destination = _destination()  # no wait between runs here: each run tries, is refused, and stops
    url = f"http://127.0.0.1:{_free_port()}/hook"
    for _ in range(6):
        report = deliver(warehouse.connect, destination, _client(url))
        assert (report.sent, report.dead_lettered, report.waited, report.deferred) == (0, 0, 10, 50)
    assert {(status, attempts) for _, status, attempts in _ledger(warehouse)} == {("waiting", 0), ("pending", 0)}
    with warehouse.connect() as con:
        outages, retry_at, error = con.execute("SELECT outages, retry_at, last_error FROM cdp.destination_outages").fetchone()
    assert outages == 6 and "ConnectionError" in error
    huge = _destination(outage_backoff_s=60)
    deliver(warehouse.connect, huge, _client(url))  # the 7th outage: 60 s * 2**6, capped at 30 minutes
    with warehouse.connect() as con:
        since, retry_at = con.execute("SELECT since, retry_at FROM cdp.destination_outages").fetchone()
    assert timedelta(seconds=OUTAGE_BACKOFF_MAX_S - 5) < retry_at - _now() <= timedelta(seconds=OUTAGE_BACKOFF_MAX_S)


def test_a_flaky_destination_gets_everything_once_in_order(warehouse):
    """Half the requests fail (500, 503, 429, a timeout, an answer lost after acceptance), over several runs."""
    rng = random.Random(19)
    script = [rng.choice(["500", "503", "429", "429", "200", "200"]) for _ in range(40)]
    script[3], script[5] = "accept-hang", "hang"
    receiver = Receiver(script)
    destination = _destination()
    try:
        for runs in range(1, 31):
            report = deliver(warehouse.connect, destination, _client(receiver.url, timeout_s=0.5))
            assert report.dead_lettered == 0
            if not report.open_total:
                break
        assert report.open_total == 0 and report.dead_total == 0 and runs >= 2  # it took several runs
        assert _arrivals(receiver) == {f"p{p:02d}": list(CHANGES) for p in range(PERSONS)}
        assert {attempts for *_, attempts in _ledger(warehouse)} == {1}  # only the delivery itself counted
        assert receiver.duplicates >= 1 and receiver.bad == 0  # the lost answer's batch came back under its key
    finally:
        receiver.close()


def test_one_refused_payload_dies_alone_and_the_persons_later_items_flow(warehouse):
    """A 400 for any batch holding p07's first entry: the batch is split until that item is alone; it is
    dead-lettered, the other items of its batches are delivered, and p07's exit and re-entry follow."""
    receiver = Receiver(refuse=lambda item: item["person_id"] == "p07" and item["changed_at"] == str(T0 + timedelta(minutes=7)))
    try:
        report = deliver(warehouse.connect, _destination(), _client(receiver.url))
        assert (report.sent, report.dead_lettered, report.failed, report.held, report.open_total) == (59, 1, 1, 0, 0)
        assert _arrivals(receiver) == {f"p{p:02d}": ["exited", "entered"] if p == 7 else list(CHANGES) for p in range(PERSONS)}
        dead = [(person, attempts) for person, status, attempts in _ledger(warehouse) if status == "dead"]
        assert dead == [("p07", 1)]
    finally:
        receiver.close()


def test_a_refusal_that_may_change_is_retried_and_holds_the_person_meanwhile(warehouse):
    """A 409 (not one of 400/413/422) spends an attempt: the item is retried next run, its person's later
    items wait behind it, and it is dead after max_attempts; then they flow."""
    receiver = Receiver(refuse=lambda item: item["person_id"] == "p03" and item["changed_at"] == str(T0 + timedelta(minutes=3)),
                        refused_status="409")
    try:
        first = deliver(warehouse.connect, _destination(), _client(receiver.url))
        assert (first.failed, first.dead_lettered, first.held) == (1, 0, 2)
        assert "p03" not in _arrivals(receiver)
        second = deliver(warehouse.connect, _destination(), _client(receiver.url))
        assert (second.failed, second.dead_lettered, second.sent) == (1, 1, 2)
        assert _arrivals(receiver)["p03"] == ["exited", "entered"]
    finally:
        receiver.close()
