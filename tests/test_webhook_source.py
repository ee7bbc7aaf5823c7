"""Signed webhooks reach cdp.events and profiles: the real `standardwebhooks` client signs, the real collector
lands them, an extract and a refresh read them through the source's mapping (config/sources.yaml
`kind: webhook`); a body that does not map is quarantined with its reason. And a web-only shop has revenue:
`order_completed` events are purchases, one per order id."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import duckdb
import pytest
from dagster import materialize

from cdp_assets.config import ConfigError, _source
from cdp_assets.sources.assets import build_source_asset, input_folder
from cdp_resources import LandingZoneResource, OrdersApiResource, WarehouseResource
from tests.pipeline import load_raw, refresh
from test_collector import KEY, SECRET, signed, start_server

pytestmark = pytest.mark.slow
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
NOW = datetime.now(timezone.utc).replace(tzinfo=None)
SOURCES_YAML = """
sources:
  web:
    kind: events
    partitions: hourly
    purchases: {event: order_completed, id: order_id, amount: revenue, items: "products[*].product_id"}
  billing:
    kind: webhook
    partitions: hourly
    mapping:
      event: type
      event_names: {invoice.paid: order_completed}
      timestamp: data.paid_at
      identifiers: {email: data.customer.email, user_id: data.customer.external_id}
      traits: {first_name: data.customer.first_name, plan: data.customer.plan}
      properties: {order_id: data.invoice_id, revenue: data.amount, currency: data.currency}
    purchases: {event: order_completed, id: order_id, amount: revenue}
"""


def sources(tmp_path):
    from cdp_assets.config import load_sources

    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES_YAML)
    return load_sources(path)


def invoice(invoice_id: str, email: str | None, amount: float, paid_at, **customer) -> dict:
    return {"type": "invoice.paid", "data": {"invoice_id": invoice_id, "amount": amount, "currency": "EUR",
                                             "paid_at": paid_at, "customer": {"email": email, **customer}}}


def test_signed_webhooks_reach_events_and_profiles(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CDP_WRITE_KEYS", KEY)
    monkeypatch.setenv("CDP_WEBHOOK_SECRET_BILLING", SECRET)
    configured = sources(tmp_path)
    paid_at = (NOW - timedelta(hours=1)).replace(microsecond=0)
    bodies = [
        invoice("inv_1", " Ann@Example.com ", 120.5, paid_at.isoformat() + "Z", first_name="Ann", plan="pro"),
        invoice("inv_2", "ann@example.com", 30, int((paid_at + timedelta(minutes=5)).replace(tzinfo=timezone.utc).timestamp())),
        {"type": "customer.updated", "data": {"customer": {"email": "bob@example.com", "external_id": "u-bob",
                                                           "first_name": "Bob", "plan": "free"}}},
        invoice("inv_3", None, 10, paid_at.isoformat() + "Z"),            # nobody: missing_identity
        invoice("inv_4", "ann@example.com", 10, "last tuesday"),          # bad_timestamp
        {"data": {"customer": {"email": "ann@example.com"}}},             # no event name: missing_event_name
        [1, 2, 3],                                                        # not an object: unmapped_webhook
    ]
    server, thread, url = start_server(data_dir)
    try:
        import requests

        for number, body in enumerate(bodies):
            payload = json.dumps(body).encode()
            headers = {**signed(payload, msg_id=f"msg_{number}"), "content-type": "application/json"}
            assert requests.post(f"{url}/webhooks/billing", data=payload, headers=headers, timeout=10).status_code == 200
        payload = json.dumps(bodies[0]).encode()  # a replay: lands once
        assert requests.post(f"{url}/webhooks/billing", data=payload, headers=signed(payload, msg_id="msg_0"), timeout=10).json()["duplicate"]
        # The same person signs in on the site: her web events and her invoices are one person.
        identify = {"type": "identify", "userId": "u-ann", "messageId": "web-1", "traits": {"email": "ann@example.com"}}
        assert requests.post(f"{url}/v1/identify", json=identify, auth=(KEY, ""), timeout=10).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)

    # A run: the extract of each landed hour, then validation, identity and profiles.
    resources = {"warehouse": WarehouseResource(), "landing_zone": LandingZoneResource(), "orders_api": OrdersApiResource()}
    for source in configured.values():
        keys = sorted({f.partition_key for f in LandingZoneResource().input_files(input_folder(source))})
        assert keys
        for key in keys:
            assert materialize([build_source_asset(source)], partition_key=key, resources=resources, run_config=QUIET).success
    refresh(data_dir, configured, now=NOW)

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        events = con.execute("""SELECT event_id, event_type, event_name, user_id, occurred_at, traits ->> '$.email',
                                       properties ->> '$.order_id', properties ->> '$.revenue'
                                FROM cdp.events WHERE source = 'billing' ORDER BY event_id""").fetchall()
        quarantine = con.execute("""SELECT split_part(reasons[1], ':', 1), record::json ->> '$.webhook_id' FROM cdp.quarantine
                                    WHERE source = 'billing' ORDER BY 2""").fetchall()
        profiles = con.execute("""SELECT p.email, p.first_name, p.plan, p.order_count, p.total_revenue
                                  FROM cdp.profiles p ORDER BY p.email""").fetchall()
        ann = con.execute("""SELECT count(DISTINCT person_id) FROM cdp.id_map
                             WHERE (identifier_type, identifier_value) IN (('user_id', 'u-ann'), ('email', 'ann@example.com'))""").fetchone()[0]
    finally:
        con.close()
    assert events == [
        ("billing:msg_0", "track", "order_completed", None, paid_at, " Ann@Example.com ", "inv_1", "120.5"),
        ("billing:msg_1", "track", "order_completed", None, paid_at + timedelta(minutes=5), "ann@example.com", "inv_2", "30"),
        ("billing:msg_2", "track", "customer.updated", "u-bob", events[2][4], "bob@example.com", None, None),
    ]
    assert quarantine == [("missing_identity", "msg_3"), ("bad_timestamp", "msg_4"), ("missing_event_name", "msg_5"),
                          ("unmapped_webhook", "msg_6")]
    assert ann == 1
    assert profiles == [("ann@example.com", "Ann", "pro", 2, 150.5), ("bob@example.com", "Bob", "free", 0, 0.0)]


def test_a_web_only_shop_has_revenue(tmp_path, monkeypatch):
    """No orders API, no stores: Segment's order_completed events are the purchases, one per order id."""
    from cdp_assets.config import load_sources

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    web = {"web": load_sources()["web"]}  # as shipped
    at = datetime(2026, 2, 20, 10)

    def order(message_id, user, order_id, revenue, products=("sku_1",)):
        return json.dumps({"type": "track", "event": "order_completed", "messageId": message_id, "userId": user,
                           "timestamp": at.isoformat() + "Z", "receivedAt": at.isoformat() + "Z",
                           "properties": {"order_id": order_id, "revenue": revenue, "currency": "EUR",
                                          "products": [{"product_id": p} for p in products]}})

    tracked = [
        order("m1", "u1", "o1", 300), order("m2", "u1", "o2", 250.5, ("sku_2", "sku_3")),
        order("m3", "u1", "o1", 300),             # the same order reported twice (a page reload): once
        order("m4", "u2", "o3", "lots"),          # no amount: flagged by the tracking plan, no purchase
        order("m5", "u2", "o4", 40),
    ]
    load_raw(tmp_path, "web", "2026-02-20-10:00", tracked)
    refresh(tmp_path, web, now=datetime(2026, 3, 1))
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("""SELECT i.identifier_value, p.order_count, p.total_revenue, p.products_purchased
                              FROM cdp.profiles p JOIN cdp.id_map i USING (person_id)
                              WHERE i.identifier_type = 'user_id' ORDER BY 1""").fetchall()
        vip = con.execute("SELECT count(*) FROM cdp.profiles WHERE total_revenue >= 500").fetchone()[0]
    finally:
        con.close()
    assert [(u, n, r, sorted(items)) for u, n, r, items in rows] == [
        ("u1", 2, 550.5, ["sku_1", "sku_2", "sku_3"]), ("u2", 1, 40.0, ["sku_1"])]
    assert vip == 1  # what vip_buyers (total_revenue >= 500) finds

    # The shop adds its orders API: an order it holds counts once, as the API has it, and one it holds as
    # refunded counts for neither, though the site reported it completed.
    shipped, shop = load_sources(), tmp_path / "with_api"  # a fresh warehouse: its parse views know both sources
    shop.mkdir()
    monkeypatch.setenv("CDP_DATA_DIR", str(shop))
    load_raw(shop, "web", "2026-02-20-10:00", tracked)
    api = [{"order_id": "o1", "customer_email": "u1@example.com", "amount": 310.0, "currency": "EUR", "status": "completed",
            "items": ["sku_1"], "created_at": "2026-02-20T10:00:00Z"},
           {"order_id": "o2", "customer_email": "u1@example.com", "amount": 250.5, "currency": "EUR", "status": "refunded",
            "items": ["sku_2"], "created_at": "2026-02-20T10:00:00Z"}]
    load_raw(shop, "orders", "", [json.dumps(o) for o in api])
    load_raw(shop, "web", "2026-02-20-11:00", [json.dumps({
        "type": "identify", "messageId": "i1", "userId": "u1", "traits": {"email": "u1@example.com"},
        "timestamp": at.isoformat() + "Z"})])
    refresh(shop, {"web": shipped["web"], "orders": shipped["orders"]}, now=datetime(2026, 3, 1))
    con = duckdb.connect(str(shop / "warehouse.duckdb"), read_only=True)
    try:
        purchases = con.execute("""SELECT i.identifier_value, pp.channel, pp.purchase_id, pp.amount FROM core.person_purchases pp
                                   JOIN cdp.id_map i ON i.person_id = pp.person_id AND i.identifier_type = 'user_id'
                                   ORDER BY 1, 3""").fetchall()
    finally:
        con.close()
    assert purchases == [("u1", "orders", "o1", 310.0), ("u2", "web", "o4", 40.0)]


@pytest.mark.parametrize(("mapping", "message"), [
    (None, "mapping: a webhook source maps its body"),
    ({"identifiers": {"email": "data.email"}}, "mapping.event: required"),
    ({"event": "type"}, "mapping.identifiers: required"),
    ({"event": "type", "identifiers": {"crm_id": "data.id"}}, "mapping.identifiers: ['crm_id'] not among"),
    ({"event": "type", "identifiers": {"email": "data['x']"}}, "mapping.identifiers.email: \"data['x']\" is not a body path"),
    ({"event": "type", "identifiers": {"email": "e"}, "colour": "x"}, "mapping: unknown field(s) ['colour']"),
])
def test_a_wrong_webhook_mapping_names_the_field(tmp_path, mapping, message):
    entry = {"kind": "webhook", "partitions": "hourly", **({"mapping": mapping} if mapping is not None else {})}
    with pytest.raises(ConfigError, match=re.escape(f"sources.billing.{message}")):
        _source(tmp_path / "sources.yaml", "billing", entry)


def test_a_purchase_moving_to_another_person_updates_both_incrementally(tmp_path, monkeypatch):
    """One record per order id wins across persons: when an earlier report of an order arrives late for
    another person, the incremental refresh moves the purchase (both persons recomputed), as a rebuild would."""
    from cdp_assets.config import load_sources

    monkeypatch.setenv("CDP_DATA_DIR", str(tmp_path))
    web = {"web": load_sources()["web"]}

    def order(message_id, user, at):
        return json.dumps({"type": "track", "event": "order_completed", "messageId": message_id, "userId": user,
                           "timestamp": at.isoformat() + "Z", "receivedAt": at.isoformat() + "Z",
                           "properties": {"order_id": "o1", "revenue": 99.0}})

    def counts():
        with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
            return dict(con.execute("""SELECT i.identifier_value, p.order_count FROM cdp.profiles p
                                       JOIN cdp.id_map i ON i.person_id = p.person_id AND i.identifier_type = 'user_id'
                                       ORDER BY 1""").fetchall())

    late = datetime(2026, 2, 20, 12)
    load_raw(tmp_path, "web", "2026-02-20-12:00", [order("m1", "u1", late)])
    refresh(tmp_path, web, now=datetime(2026, 3, 1))
    assert counts() == {"u1": 1}
    load_raw(tmp_path, "web", "2026-02-20-10:00", [order("m2", "u2", late - timedelta(hours=2))])
    refresh(tmp_path, web, now=datetime(2026, 3, 1, 1))
    assert counts() == {"u1": 0, "u2": 1}
