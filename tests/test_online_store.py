"""The online store against the warehouse it mirrors: what `cdp run` loads, and incremental updates equal to a
full load, on SQLite and on the real Redis server."""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime

import duckdb
import pytest

from cdp_assets.online.update import update_store
from cdp_resources.online_store import open_store

REDIS_URL = os.environ.get("CDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_store(prefix: str | None = None):
    """A Redis store under a prefix of its own; skipped without a server, except in CI."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis must answer at {REDIS_URL} in CI: {exc}")
        pytest.skip(f"no Redis server answers at {REDIS_URL} ({exc})")
    return open_store(setting=f"{REDIS_URL}?prefix={prefix or 'test' + uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request):
    return request.param


def new_store(kind: str, folder):
    return open_store(folder) if kind == "sqlite" else redis_store()


def snapshot(store, con) -> dict:
    """Everything the store answers about every person and identifier the warehouse knows."""
    out = {}
    for (person_id,) in con.execute("SELECT person_id FROM core.persons ORDER BY 1").fetchall():
        document = store.person(person_id)
        out[person_id] = (document, store.identifiers(person_id), store.events(person_id, None, 1000))
    out["ids"] = {(t, v): store.person_of(t, v) for t, v in con.execute("SELECT identifier_type, identifier_value FROM cdp.id_map").fetchall()}
    return out


def test_cdp_run_loads_every_person_as_the_warehouse_has_them(demo, warehouse):
    store = open_store(demo.data_dir)
    profiles = warehouse.execute("SELECT * FROM cdp.profiles").pl()
    assert store.persons_count() == profiles.height > 0
    for row in profiles.iter_rows(named=True):
        traits = store.person(row["person_id"])["traits"]
        assert traits["email"] == row["email"] and traits["event_count"] == row["event_count"]
        assert traits["total_revenue"] == pytest.approx(float(row["total_revenue"] or 0)) or row["total_revenue"] is None
    for identifier_type, value, person_id in warehouse.execute("SELECT * FROM cdp.id_map").fetchall():
        assert store.person_of(identifier_type, value) == person_id
    member = warehouse.execute("SELECT person_id, segment FROM cdp.segment_membership LIMIT 1").fetchone()
    if member:
        assert member[1] in {s["segment"] for s in store.person(member[0])["segments"]}
    store.close()


def test_incremental_update_equals_a_full_load(demo, tmp_path, store_kind):
    """Changes stamped as the pipeline stamps them (a profile row in a new batch, a segment entry, a merge that
    removes a person and moves an identifier): the incremental update reaches what a fresh full load reaches."""
    shutil.copy(demo.data_dir / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    store = new_store(store_kind, tmp_path / "a")
    first = update_store(con, store)
    assert first.mode == "full" and first.reason == "empty store"
    assert update_store(con, store).persons_written == 0  # nothing changed, nothing written

    a, b, c = [r[0] for r in con.execute("SELECT person_id FROM cdp.profiles ORDER BY person_id LIMIT 3").fetchall()]
    batch = con.execute("SELECT max(batch_id) + 1 FROM core.batches").fetchone()[0]
    con.execute("INSERT INTO core.batches VALUES (?, 'test', now())", [batch])
    con.execute("UPDATE cdp.profiles SET city = 'Oslo', _batch_id = ? WHERE person_id = ?", [batch, a])
    con.execute("INSERT INTO cdp.segment_membership VALUES ('vip_buyers', ?, ?)", [b, datetime(2030, 1, 1)])
    con.execute("INSERT INTO cdp.segment_changes VALUES ('vip_buyers', ?, 'entered', ?)", [b, datetime(2030, 1, 1)])
    # c merges into a: c's identifiers now a's, c gone (as identity and dbt leave it).
    con.execute("UPDATE cdp.id_map SET person_id = ? WHERE person_id = ?", [a, c])
    for table in ("core.persons", "cdp.profiles", "core.person_trait_values", "cdp.relationships", "cdp.segment_membership"):
        con.execute(f"DELETE FROM {table} WHERE person_id = ?", [c])
    con.execute("INSERT INTO core.affected_persons VALUES (?, ?), (?, ?)", [a, batch, c, batch])

    update = update_store(con, store)
    assert update.mode == "incremental" and update.persons_written == 2 and update.persons_deleted == 1
    assert store.person(a)["traits"]["city"] == "Oslo" and store.person(c) is None
    assert "vip_buyers" in {s["segment"] for s in store.person(b)["segments"]}
    fresh = new_store(store_kind, tmp_path / "b")
    update_store(con, fresh, full=True)
    assert snapshot(store, con) == snapshot(fresh, con)
    assert con.execute("SELECT batch_id FROM core.watermarks WHERE consumer = 'online_store'").fetchone()[0] == batch
    for s in (store, fresh):
        if s.kind == "redis":
            s.drop_everything()
        s.close()


def test_a_changed_configuration_or_an_emptied_store_loads_everything(demo, tmp_path, monkeypatch):
    shutil.copy(demo.data_dir / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    store = open_store(tmp_path / "s")
    update_store(con, store)
    monkeypatch.setenv("CDP_ONLINE_EVENTS_PER_PERSON", "5")
    again = update_store(con, store)
    assert again.mode == "full" and "configuration" in again.reason
    assert max(len(store.events(p, None, 1000)) for p, in con.execute("SELECT person_id FROM core.persons").fetchall()) == 5
    with store.writer() as writer:
        writer.delete([con.execute("SELECT min(person_id) FROM core.persons").fetchone()[0]])
    healed = update_store(con, store)
    assert healed.mode == "full" and "persons" in healed.reason
    assert store.persons_count() == con.execute("SELECT count(*) FROM core.persons").fetchone()[0]


def test_erasure_leaves_nothing_of_the_person_in_redis():
    """Redis is erased through the same interface: the person's entries, their live messages and anything that
    mentions them; a dump of every key under the prefix holds none of their values."""
    from cdp_resources.online_store import PersonRecord
    from cdp_resources.online_store.live import live_events

    store = redis_store()
    ann = {"email": "ann.lee@x.com", "user_id": "u_ann_001"}
    with store.writer(full=True) as writer:
        writer.put([PersonRecord("p_ann", {"traits": {"email": ann["email"]}, "segments": []},
                                 [{"type": t, "id": v} for t, v in ann.items()], [(1, "m1", {"event": "x"})]),
                     PersonRecord("p_bob", {"traits": {"note": "friend of ann.lee@x.com"}, "segments": []},
                                  [{"type": "user_id", "id": "u_bob"}], []),
                     PersonRecord("p_eve", {"traits": {"email": "eve@x.com"}, "segments": []}, [{"type": "user_id", "id": "u_eve"}], [])])
        writer.set_meta({"batch": "1"})
    store.append_live(live_events([{"type": "identify", "messageId": "l1", "anonymousId": "anon-ann",
                                    "traits": {"email": "  ANN.LEE@X.COM"}},
                                   {"type": "track", "messageId": "l2", "userId": "u_eve", "event": "e"}]))
    counts = store.erase({"p_ann"}, {("email", "ann.lee@x.com"), ("user_id", "u_ann_001")}, ["ann.lee@x.com", '"u_ann_001"', '"p_ann"'])
    assert counts["persons"] == 2 and counts["live_events"] == 1
    dump = []
    for key in store.client.scan_iter(f"{store.prefix}:*"):
        kind = store.client.type(key)
        dump.append(key + str(store.client.hgetall(key) if kind == "hash" else store.client.smembers(key) if kind == "set" else store.client.get(key)))
    text = "\n".join(dump).lower()
    assert "ann.lee@x.com" not in text and "u_ann_001" not in text and "p_ann" not in text and "anon-ann" not in text
    assert store.person_of("user_id", "u_eve") == "p_eve" and [e[1] for e in store.live_events([("user_id", "u_eve")], None, 5)] == ["l2"]
    assert store.meta() == {}
    store.drop_everything()
    store.close()
