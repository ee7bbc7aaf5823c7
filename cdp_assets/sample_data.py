"""A deterministic fictional shop in the contract's input formats, with its ground truth.

Registered customers browse anonymously on one to three devices, sign up and later log in on each device;
some visitors never sign up; two accounts share a family laptop; emails carry case and space noise and
phones come in mixed formats. The CRM arrives as Debezium change files, orders through the (local) orders
API (most of them also tracked on the site as Segment `order_completed` events with the same order id: one
purchase each), store purchases as daily CSV exports. A few customers have an older order history, so that every segment
template has members: lapsed ones last bought over 90 days ago (they still browse, but do not order), loyal
ones place their tenth order within the month. A known number of bad records of several kinds is mixed in,
and a few events that break the tracking plan (flagged and kept, as the plan's `on_violation: flag` says).
`sample_manifest.json` records what a correct pipeline must find back (persons, quarantined records by
reason, an example person's purchases). Same arguments, same bytes: only `random.Random(seed)` is used.

Volumes look like a real shop's, so the demo passes the checks it ships with (issue 19.4): browsing is spread
over the month, with a few short sessions in the last 100 minutes (cart abandoners), bad lines are spread
over hours, and the month starts at midnight (no partial first day). Messages are written as they are made,
spooled per hour and sorted hour by hour, so memory stays bounded whatever `events` (10M events included).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

FIRST = ["Ann", "Bob", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe"]
LAST = ["Smith", "Martin", "Garcia", "Rossi", "Novak", "Kim", "Dubois", "Silva", "Khan", "Jensen", "Weber",
        "Costa", "Lopez", "Meyer", "Sato", "Haddad", "Olsen", "Moreau", "Nagy", "Brown"]
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Rome", "Vienna", "Oslo", "Dublin", "Prague"]
AREAS = ["201", "202", "206", "212", "213", "303", "305", "312", "404", "415", "503", "512", "617", "702",
         "718", "808", "801", "857", "917", "971"]
PRODUCTS = [f"sku_{n:04d}" for n in range(1, 61)]
CATEGORIES = ["shoes", "shirts", "bags", "hats", "socks"]
PAGES = ["home", "category", "product", "cart", "about"]
RECENT_SESSION = 3  # events of a session in the last 100 minutes


@dataclass
class Person:
    index: int
    kind: str  # registered | anonymous | offline | walk_in
    first: str
    last: str
    email: str = ""
    phone: str = ""  # E.164
    user_id: str = ""
    crm_id: str = ""
    history: str = "recent"  # recent | lapsed | loyal: which orders the API holds for a registered person
    devices: list[tuple[str, str | None]] = field(default_factory=list)  # (anonymous id, device id)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Shop:
    def __init__(self, events: int, seed: int, end: datetime, days: int):
        self.rng = random.Random(seed)
        self.end = end
        self.start = (end - timedelta(days=days)).replace(hour=0)  # whole days: no partial first day
        self.events_target = events
        self.counter = 0
        self.persons: list[Person] = []

    def ident(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(64):016x}"

    def moment(self, recent: bool = False) -> datetime:
        if recent:  # inside the last 100 minutes: cart abandoners and "today" segments have members
            return self.end - timedelta(seconds=self.rng.uniform(60, 6000))
        span = (self.end - self.start).total_seconds()
        return self.start + timedelta(seconds=self.rng.uniform(0, span - 1))

    def noisy_email(self, email: str) -> str:
        return self.rng.choice([email, f"  {email.title()} ", email.upper(), f"{email} "])

    def noisy_phone(self, e164: str) -> str:
        area, line = e164[2:5], e164[8:]
        return self.rng.choice([f"+1 {area}-555-{line}", f"({area}) 555-{line}", f"{area}555{line}", f"{area}.555.{line}"])

    def person(self, kind: str) -> Person:
        index = len(self.persons)
        person = Person(index, kind, self.rng.choice(FIRST), self.rng.choice(LAST))
        if kind != "anonymous":
            person.phone = f"+1{AREAS[index % len(AREAS)]}555{100 + index // len(AREAS):04d}"
        if kind in ("registered", "offline"):
            person.email = f"{person.first}.{person.last}.{index}@example.com".lower()
        if kind == "registered":
            person.user_id = f"u_{index:06d}"
        if kind in ("registered", "anonymous"):
            for _ in range(1 if kind == "anonymous" else self.rng.choice([1, 1, 2, 3])):
                person.devices.append((self.ident("anon"), self.ident("dev") if self.rng.random() < 0.4 else None))
        self.persons.append(person)
        return person


def _message(shop: _Shop, kind: str, at: datetime, anonymous_id: str | None, user_id: str | None,
             device_id: str | None, **fields) -> dict:
    shop.counter += 1
    message = {"type": kind, "messageId": f"msg-{shop.counter:08d}-{shop.rng.getrandbits(32):08x}"}
    if anonymous_id:
        message["anonymousId"] = anonymous_id
    if user_id:
        message["userId"] = user_id
    message.update(fields)
    context = {"ip": f"203.0.113.{shop.rng.randrange(1, 255)}", "library": {"name": "analytics.js", "version": "5.2.0"}}
    if device_id:
        context["device"] = {"id": device_id, "type": "ios"}
    message["context"] = context
    message["timestamp"] = _iso(at)
    received = at + timedelta(milliseconds=shop.rng.randrange(50, 4000))
    message["sentAt"] = _iso(at + timedelta(milliseconds=20))
    message["receivedAt"] = _iso(received)
    message["source"] = "web"
    return message


def _browse(shop: _Shop, person: Person, device: tuple[str, str | None], user_id: str | None, count: int,
            recent: bool = False) -> list[dict]:
    anonymous_id, device_id = device
    messages = []
    for _ in range(count):
        at = shop.moment(recent)
        product = shop.rng.choice(PRODUCTS)
        roll = shop.rng.random()
        if roll < 0.35:
            messages.append(_message(shop, "page", at, anonymous_id, user_id, device_id,
                                     name=shop.rng.choice(PAGES), properties={"path": f"/{shop.rng.choice(PAGES)}"}))
        elif roll < 0.75:
            messages.append(_message(shop, "track", at, anonymous_id, user_id, device_id, event="product_viewed",
                                     properties={"product_id": product, "category": shop.rng.choice(CATEGORIES)}))
        else:  # orders are tracked from the orders themselves (_order_events)
            messages.append(_message(shop, "track", at, anonymous_id, user_id, device_id, event="product_added",
                                     properties={"product_id": product, "price": round(shop.rng.uniform(5, 120), 2),
                                                 "category": shop.rng.choice(CATEGORIES)}))
    return messages


def _identify(shop: _Shop, person: Person, device: tuple[str, str | None], at: datetime, sign_up: bool) -> list[dict]:
    traits = {"email": shop.noisy_email(person.email), "first_name": person.first, "last_name": person.last}
    if sign_up:
        traits.update(phone=shop.noisy_phone(person.phone), city=shop.rng.choice(CITIES))
    messages = [_message(shop, "identify", at, device[0], person.user_id, device[1], traits=traits)]
    event = "signed_up" if sign_up else "logged_in"
    messages.append(_message(shop, "track", at + timedelta(seconds=2), device[0], person.user_id, device[1], event=event, properties={}))
    return messages


def _web_messages(shop: _Shop, per_person: float, emit) -> dict:
    """Every good web message, passed to `emit` as it is made; returns the family laptop's identifiers."""

    def emit_all(messages: list[dict]) -> None:
        for message in messages:
            emit(message)

    registered = [p for p in shop.persons if p.kind == "registered"]
    # The family laptop: two registered accounts (not the example person) identify on one shared device.
    laptop = (shop.ident("anon"), None)
    for member in registered[1:3]:
        member.devices.append(laptop)
    for person in shop.persons:
        if person.kind not in ("registered", "anonymous"):
            continue
        budget = max(2, int(shop.rng.expovariate(1 / per_person)))
        for number, device in enumerate(person.devices):
            share = max(1, budget // len(person.devices))
            anonymous = max(1, share // 3)
            emit_all(_browse(shop, person, device, None, anonymous))
            if person.kind == "registered":
                emit_all(_identify(shop, person, device, shop.moment(), sign_up=number == 0))
                signed_in = max(0, share - anonymous - 2)
                if shop.rng.random() < 0.08:  # a short session in the last 100 minutes, the rest spread
                    session = min(signed_in, RECENT_SESSION)
                    emit_all(_browse(shop, person, device, person.user_id, signed_in - session))
                    emit_all(_browse(shop, person, device, person.user_id, session, recent=True))
                else:
                    emit_all(_browse(shop, person, device, person.user_id, signed_in))
    for person in registered[3:6]:  # alias: an old anonymous id joins its user
        emit(_message(shop, "alias", shop.moment(), None, person.user_id, None, previousId=shop.ident("anon")))
    for person in registered[6:8]:  # group calls: accounts, not identities
        emit(_message(shop, "group", shop.moment(), person.devices[0][0], person.user_id, None,
                      groupId=f"acct-{person.index}", traits={"name": f"{person.last} Ltd"}))
    return {"anonymous_id": laptop[0], "user_ids": [m.user_id for m in registered[1:3]]}


def _bad_web_lines(shop: _Shop, registered: list[Person], k: int) -> tuple[list[tuple[datetime, str]], dict, dict]:
    """Lines to quarantine (by reason) and events that break the tracking plan only (flagged, kept)."""
    bad: list[tuple[datetime, str]] = []
    person = registered[-1]
    device = person.devices[0]

    def add(message: dict):
        received = datetime.strptime(message["receivedAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
        bad.append((received, json.dumps(message, separators=(",", ":"))))

    for _ in range(k):  # each bad line in an hour of its own (mostly): no hour of mostly garbage
        bad.append((shop.moment(), '{"type":"track","messageId":"broken-' + f"{shop.counter}" + '","event":"product_vie'))
        shop.counter += 1
        viewed = {"product_id": "sku_0001"}
        add({k2: v for k2, v in _message(shop, "track", shop.moment(), None, None, None, event="product_viewed", properties=viewed).items()})
        m = _message(shop, "track", shop.moment(), device[0], None, None, event="product_viewed", properties=viewed)
        m["timestamp"] = "yesterday"
        add(m)
        m = _message(shop, "track", shop.moment(), device[0], None, None, event="product_viewed", properties=viewed)
        m["timestamp"] = "2099-01-01T00:00:00.000Z" if _ % 2 == 0 else "1999-06-01T00:00:00.000Z"
        add(m)
        add(_message(shop, "purchase", shop.moment(), device[0], person.user_id, None, properties={"sku": "sku_0001"}))
        add(_message(shop, "track", shop.moment(), device[0], person.user_id, None, event="order_completed",
                     properties={"order_id": shop.ident("web-order"), "revenue": "twelve", "currency": "EUR"}))
        add(_message(shop, "track", shop.moment(), device[0], person.user_id, None, event="product_added", properties={"price": 9.5}))
    codes = {"malformed_json": k, "missing_identity": k, "bad_timestamp": k, "timestamp_out_of_range": k, "unknown_type": k}
    return bad, codes, {"wrong_type": k, "missing_property": k}


class _Landing:
    """Landing files written as messages are made: lines are buffered per hour and spooled to a dot-file in
    the hour's folder (invisible to extracts) when the buffer grows, then each hour is sorted by receive time
    into `part-00000.jsonl`. Memory is the buffer and one hour's lines, whatever the number of messages."""

    FLUSH_BYTES = 32 * 2**20
    SPOOL = ".spool-part-00000.jsonl"

    def __init__(self, root: Path, duplicate_every: int):
        self.root, self.duplicate_every = root / "landing" / "web", duplicate_every
        self.buffers: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.hours: set[tuple[str, str]] = set()
        self.size = self.good = self.duplicates = 0

    def add_message(self, message: dict) -> None:
        text = json.dumps(message, separators=(",", ":"))
        self.add(message["receivedAt"], text)
        self.good += 1
        if self.good % self.duplicate_every == 0:  # the same delivery landed twice
            self.add(message["receivedAt"], text)
            self.duplicates += 1

    def add(self, received: str, text: str) -> None:
        line = f"{received}\t{text}\n"  # receive times have one width: the line sorts by (time, text)
        self.buffers[(received[:10], received[11:13])].append(line)
        self.size += len(line)
        if self.size > self.FLUSH_BYTES:
            self.flush()

    def folder(self, hour: tuple[str, str]) -> Path:
        return self.root / f"dt={hour[0]}" / f"hour={hour[1]}"

    def flush(self) -> None:
        for hour, lines in self.buffers.items():
            folder = self.folder(hour)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / self.SPOOL, "a") as spool:
                spool.writelines(lines)
            self.hours.add(hour)
        self.buffers.clear()
        self.size = 0

    def close(self) -> int:
        """Each hour's file, sorted; one corrupt gzip file in the middle hour. Returns the number of hours."""
        self.flush()
        for hour in sorted(self.hours):
            spool = self.folder(hour) / self.SPOOL
            lines = sorted(spool.read_text().splitlines())
            (spool.parent / "part-00000.jsonl").write_text("".join(line.split("\t", 1)[1] + "\n" for line in lines))
            spool.unlink()
        day, hour = sorted(self.hours)[len(self.hours) // 2]
        (self.folder((day, hour)) / "part-00001.jsonl.gz").write_bytes(b"this is not gzip data\n" * 4)
        return len(self.hours)


def _crm_files(shop: _Shop, root: Path) -> tuple[int, int, str]:
    """Debezium change files; returns (current rows, files, deleted crm id)."""
    folder = root / "cdc" / "crm_customers"
    folder.mkdir(parents=True, exist_ok=True)
    customers = [p for p in shop.persons if p.crm_id]
    lsn = 1000
    ts = int(shop.start.replace(tzinfo=timezone.utc).timestamp() * 1000)

    def row(person: Person, city: str, email: str) -> dict:
        gender = shop.rng.choice(["female", "male", None])
        return {"id": person.crm_id, "email": email, "phone": shop.noisy_phone(person.phone) if person.phone else None,
                "first_name": person.first, "last_name": person.last, "gender": gender, "city": city,
                "updated_at": _iso(datetime.fromtimestamp(ts / 1000, timezone.utc).replace(tzinfo=None))}

    def change(op: str, before: dict | None, after: dict | None) -> str:
        nonlocal lsn, ts
        lsn += shop.rng.randrange(1, 50)
        ts += shop.rng.randrange(1000, 60000)
        envelope = {"before": before, "after": after, "op": op, "ts_ms": ts,
                    "source": {"ts_ms": ts, "lsn": lsn, "db": "crm", "table": "customers"}}
        return json.dumps({"payload": envelope}, separators=(",", ":"))

    half = len(customers) // 2
    images = {p.crm_id: row(p, shop.rng.choice(CITIES), p.email) for p in customers}
    snapshot = [change("r", None, images[p.crm_id]) for p in customers[:half]]
    creates = [change("c", None, images[p.crm_id]) for p in customers[half:]]
    creates.insert(len(creates) // 2, '{"payload":{"op":"c","after":{"id":"crm_broken"')
    updates = []
    for person in customers[1::10]:
        before = images[person.crm_id]
        after = dict(before, city=shop.rng.choice(CITIES), email=before["email"].upper())
        images[person.crm_id] = after
        updates.append(change("u", before, after))
    deleted = next(p for p in reversed(customers) if p.kind == "registered" and p.index > 10)
    updates.append(change("d", images[deleted.crm_id], None))
    for number, lines in enumerate([snapshot, creates, updates], start=1):
        (folder / f"{number:04d}.jsonl").write_text("".join(line + "\n" for line in lines))
    return len(customers) - 1, 3, deleted.crm_id


def _order_times(shop: _Shop, person: Person, example: Person) -> list[datetime]:
    """When a registered person ordered: within the month, or the older history the lapsed and tenth-order
    segment templates look for (those persons buy nothing in stores, so the API holds all their orders)."""
    if person.history == "lapsed":  # bought before, nothing in the last 90 days
        return [shop.end - timedelta(days=shop.rng.uniform(91, 365)) for _ in range(shop.rng.choice([1, 2, 3]))]
    if person.history == "loyal":  # nine orders over the past year, the tenth within the month
        return [shop.end - timedelta(days=shop.rng.uniform(31, 365)) for _ in range(9)] + [shop.moment()]
    count = shop.rng.choice([0, 0, 1, 1, 2, 3, 5]) if person is not example else 2
    return [shop.moment() for _ in range(count)]


def _orders(shop: _Shop, root: Path, example: Person) -> tuple[int, dict, list[tuple[Person, dict]]]:
    folder = root / "api" / "orders"
    folder.mkdir(parents=True, exist_ok=True)
    orders, per_person, placed = [], defaultdict(lambda: [0, 0.0]), []
    for person in shop.persons:
        if person.kind != "registered":
            continue
        for at in _order_times(shop, person, example):
            amount = round(shop.rng.uniform(20, 300), 2)
            refunded = shop.rng.random() < 0.1 and person is not example and person.history == "recent"
            status = "refunded" if refunded else "completed"
            orders.append({"order_id": shop.ident("ord"), "customer_email": shop.noisy_email(person.email),
                           "amount": amount, "currency": "EUR", "status": status,
                           "items": sorted(shop.rng.sample(PRODUCTS, shop.rng.randrange(1, 4))),
                           "created_at": _iso(at)})
            placed.append((person, orders[-1]))
            if status == "completed":
                per_person[person.index][0] += 1
                per_person[person.index][1] += amount
    someone = example.email
    orders.append({"order_id": shop.ident("ord"), "customer_email": someone, "amount": "twelve", "currency": "EUR",
                   "status": "completed", "items": ["sku_0001"], "created_at": _iso(shop.moment())})
    orders.append({"order_id": shop.ident("ord"), "customer_email": "not-an-email", "amount": 10.0, "currency": "EUR",
                   "status": "completed", "items": ["sku_0002"], "created_at": _iso(shop.moment())})
    orders.sort(key=lambda o: (o["created_at"], o["order_id"]))
    (folder / "orders.jsonl").write_text("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in orders))
    return len(orders) - 2, per_person, placed


def _order_events(shop: _Shop, placed: list[tuple[Person, dict]]) -> list[dict]:
    """Segment `order_completed` events for most orders placed within the landing window, with the API's
    order id (the same order twice: the API's record wins, refunded or not, so totals stay the API's)."""
    events = []
    for person, order in placed:
        at = datetime.strptime(order["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        if at < shop.start or shop.rng.random() < 0.2:  # older history, or ordered by phone: not tracked
            continue
        device = shop.rng.choice(person.devices)
        products = [{"product_id": item, "quantity": 1} for item in order["items"]]
        events.append(_message(shop, "track", at, device[0], person.user_id, device[1], event="order_completed",
                               properties={"order_id": order["order_id"], "revenue": order["amount"],
                                           "currency": order["currency"], "products": products}))
    return events


def _pos(shop: _Shop, root: Path, example: Person) -> tuple[int, dict]:
    folder = root / "imports" / "pos"
    folder.mkdir(parents=True, exist_ok=True)
    rows, per_person = [], defaultdict(lambda: [0, 0.0])
    for person in shop.persons:
        if not person.phone or person.kind == "offline":
            continue
        if person.kind == "walk_in":
            count = shop.rng.choice([1, 2])
        elif person is example:
            count = 2
        elif person.history != "recent":
            count = 0
        else:
            count = shop.rng.choice([0, 0, 0, 1, 2])
        for _ in range(count):
            amount = round(shop.rng.uniform(5, 150), 2)
            at = shop.moment()
            rows.append([shop.ident("rcpt"), shop.noisy_phone(person.phone), f"{amount:.2f}",
                         f"store-{shop.rng.randrange(1, 9):02d}", at.strftime("%Y-%m-%d %H:%M:%S")])
            per_person[person.index][0] += 1
            per_person[person.index][1] += amount
    good = len(rows)
    rows.append([shop.ident("rcpt"), shop.noisy_phone(example.phone), "abc", "store-01", shop.moment().strftime("%Y-%m-%d %H:%M:%S")])
    rows.append([shop.ident("rcpt"), shop.noisy_phone(example.phone), "12.00", "store-01", "not-a-date"])
    by_day: dict[str, list[list[str]]] = defaultdict(list)
    for r in rows:
        day = r[4][:10] if r[4][:4].isdigit() else rows[0][4][:10]
        by_day[day].append(r)
    for day, day_rows in sorted(by_day.items()):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["receipt_id", "phone", "amount", "store_id", "purchased_at"])
        writer.writerows(sorted(day_rows, key=lambda r: r[4]))
        (folder / f"pos_{day}.csv").write_text(buffer.getvalue())
    return good, per_person


def generate_sample_data(data_dir: Path, events: int = 100_000, seed: int = 7, end: datetime | None = None,
                         days: int = 30, log=print) -> dict:
    """Write the sample shop into `data_dir`; returns (and writes) its ground-truth manifest."""
    data_dir = Path(data_dir)
    end = end or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    shop = _Shop(events, seed, end, days)
    n_persons = max(24, events // 40)
    for _ in range(int(n_persons * 0.7)):
        shop.person("registered")
    for _ in range(int(n_persons * 0.22)):
        shop.person("anonymous")
    for _ in range(max(2, int(n_persons * 0.04))):
        shop.person("offline")
    for _ in range(max(2, int(n_persons * 0.04))):
        shop.person("walk_in")
    registered = [p for p in shop.persons if p.kind == "registered"]
    for person in shop.persons:
        if person.kind == "offline" or (person.kind == "registered" and (person.index == 0 or shop.rng.random() < 0.8)):
            person.crm_id = f"crm_{person.index:06d}"
    example = registered[0]
    # After the persons with a part above (example, family laptop, aliases, groups): customers with history.
    lapsed = max(1, len(registered) // 25)
    loyal = max(1, len(registered) // 100)
    for person in registered[8 : 8 + lapsed]:
        person.history = "lapsed"
    for person in registered[8 + lapsed : 8 + lapsed + loyal]:
        person.history = "loyal"

    web_persons = [p for p in shop.persons if p.kind in ("registered", "anonymous")]
    landing = _Landing(data_dir, duplicate_every=max(1, events // max(3, events // 1000)))
    laptop = _web_messages(shop, per_person=events / len(web_persons) * 1.25, emit=landing.add_message)
    bad_k = max(2, events // 20_000)
    bad, web_codes, flagged = _bad_web_lines(shop, registered, bad_k)
    for at, text in bad:
        landing.add(_iso(at), text)
    orders, order_totals, placed = _orders(shop, data_dir, example)
    order_events = _order_events(shop, placed)
    for message in order_events:
        landing.add_message(message)
    hours = landing.close()
    good, duplicates = landing.good, landing.duplicates
    log(f"  web: {good:,} messages ({len(order_events)} order_completed; +{duplicates} duplicate deliveries, "
        f"{len(bad)} bad lines) in {hours} hourly folders, 1 corrupt file")
    log(f"  orders: {orders:,} orders for the API (+2 bad)")
    crm_current, crm_files, deleted = _crm_files(shop, data_dir)
    log(f"  crm_customers: {crm_current:,} customers after changes in {crm_files} Debezium files (1 delete, 1 malformed line)")
    purchases, pos_totals = _pos(shop, data_dir, example)
    log(f"  pos: {purchases:,} store purchases in daily CSV files (+2 bad rows)")

    manifest = {
        "seed": seed, "events_requested": events, "end": _iso(end),
        # Kept events: the good messages and those that break only the tracking plan (flagged).
        "web_messages": good + sum(flagged.values()), "web_duplicate_lines": duplicates,
        "web_order_events": len(order_events),
        "tracking_plan_violations": {"web": flagged},
        "quarantine": {"web": web_codes, "crm_customers": {"malformed_json": 1},
                       "orders": {"wrong_type": 1, "invalid_email": 1}, "pos": {"wrong_type": 1, "bad_timestamp": 1}},
        "rejected_files": 1,
        "persons": len(shop.persons),
        "registered_persons": len(registered),
        "anonymous_visitors": sum(p.kind == "anonymous" for p in shop.persons),
        "offline_crm_customers": sum(p.kind == "offline" for p in shop.persons),
        "walk_in_customers": sum(p.kind == "walk_in" for p in shop.persons),
        "crm_customers_current": crm_current, "crm_deleted": deleted,
        "orders": orders, "pos_purchases": purchases,
        "family_laptop": laptop,
        "example_person": {
            "user_id": example.user_id, "email": example.email, "phone": example.phone, "crm_id": example.crm_id,
            "anonymous_ids": [d[0] for d in example.devices],
            "orders": order_totals[example.index][0], "order_revenue": round(order_totals[example.index][1], 2),
            "pos_purchases": pos_totals[example.index][0], "pos_revenue": round(pos_totals[example.index][1], 2),
        },
    }
    (data_dir / "sample_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"  {manifest['persons']:,} persons in truth; manifest in {data_dir / 'sample_manifest.json'}")
    return manifest
