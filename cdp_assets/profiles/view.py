"""The 360° view of one person: identifiers, traits with their sources, computed traits, segments,
relationships and recent events; as a document (JSON) or as text for a person at a terminal."""

from __future__ import annotations

import json

from cdp_assets.identity.normalize import normalize_identifier
from cdp_assets.identity.rules import load_identity_rules
from cdp_assets.profiles.computed import RFM_COLUMNS, load_computed_traits
from cdp_resources import WarehouseResource
from cdp_resources.settings import config_dir
from cdp_resources.warehouse import table_exists


class ProfileNotFound(LookupError):
    pass


def _rows(con, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def person_view(identifier_type: str, raw_value: str, warehouse: WarehouseResource | None = None, events: int = 20) -> dict:
    rules = load_identity_rules(config_dir() / "identity.yaml")
    value = normalize_identifier(identifier_type, raw_value, rules.default_phone_region)
    warehouse = warehouse or WarehouseResource()
    engine = warehouse.engine()
    if engine.name == "spark":  # the one place the view differs by engine: where its rows are read
        from cdp_assets.profiles.spark import person_rows_on_spark

        rows = person_rows_on_spark(engine, identifier_type, value, events)
    else:
        rows = _person_rows(warehouse, identifier_type, value, events)
    if rows is None:
        raise ProfileNotFound(f"no person holds {identifier_type}:{value}")
    person_id, profile, identifiers, segments, traits, relationships, recent = rows
    for event in recent:
        event["properties"] = json.loads(event["properties"]) if event["properties"] else None
    declared = load_computed_traits(config_dir() / "traits.yaml")
    names = [*declared["computed_traits"], *(RFM_COLUMNS if declared["rfm"] else ())]
    row = profile[0] if profile else None
    return {
        "person_id": person_id,
        "identifiers": identifiers,
        "profile": row,
        "trait_sources": traits,
        "computed_traits": {name: (row or {}).get(name) for name in names},
        "segments": segments,
        "relationships": relationships,
        "recent_events": recent,
    }


def _person_rows(warehouse: WarehouseResource, identifier_type: str, value: str, events: int):
    """(person id, profile rows, identifiers, segments, trait sources, relationships, recent events) of whoever
    holds the identifier in the DuckDB file; None if nobody does."""
    with warehouse.connect() as con:
        found = con.execute(
            "SELECT person_id FROM cdp.id_map WHERE identifier_type = ? AND identifier_value = ?", [identifier_type, value]
        ).fetchone()
        if not found:
            return None
        person_id = found[0]
        profile = _rows(con, "SELECT * FROM cdp.profiles WHERE person_id = ?", [person_id])
        identifiers = _rows(
            con,
            "SELECT identifier_type AS type, identifier_value AS value FROM cdp.id_map WHERE person_id = ? ORDER BY ALL",
            [person_id],
        )
        segments = _rows(
            con, "SELECT segment, entered_at FROM cdp.segment_membership WHERE person_id = ? ORDER BY segment", [person_id]
        ) if _exists(con, "segment_membership") else []
        traits = _rows(
            con, "SELECT trait, value, source, observed_at FROM core.person_trait_values WHERE person_id = ? ORDER BY trait",
            [person_id],
        ) if _exists(con, "person_trait_values", "core") else []
        relationships = _rows(
            con, "SELECT kind, related_value, source, last_seen_at FROM cdp.relationships WHERE person_id = ? ORDER BY ALL",
            [person_id],
        ) if _exists(con, "relationships") else []
        recent = _rows(
            con,
            "SELECT event_id, event_type, event_name, occurred_at, source, properties FROM core.person_events "
            "WHERE person_id = ? ORDER BY occurred_at DESC, event_id LIMIT ?",
            [person_id, events],
        )
    return person_id, profile, identifiers, segments, traits, relationships, recent


def _exists(con, table: str, schema: str = "cdp") -> bool:
    return table_exists(con, f"{schema}.{table}")


def render_text(view: dict) -> str:
    """The view as a person reads it: one section per part, one line per item."""
    lines = [f"Person {view['person_id']}", "", "Identifiers"]
    lines += [f"  {i['type']:<14} {i['value']}" for i in view["identifiers"]]
    lines += ["", "Traits (winning source, observed at)"]
    lines += [f"  {t['trait']:<22} {_text(t['value']):<32} {t['source']}, {_text(t['observed_at'])}"
              for t in view["trait_sources"]]
    lines += ["", "Computed traits"]
    lines += [f"  {name:<22} {_text(value)}" for name, value in view["computed_traits"].items()]
    lines += ["", "Segments"]
    lines += [f"  {s['segment']:<22} since {_text(s['entered_at'])}" for s in view["segments"]] or ["  (none)"]
    lines += ["", "Relationships"]
    lines += [f"  {r['kind']:<14} {r['related_value']} ({r['source']})" for r in view["relationships"]] or ["  (none)"]
    lines += ["", f"Recent events ({len(view['recent_events'])})"]
    lines += [f"  {_text(e['occurred_at'])}  {e['event_type']:<8} {e['event_name'] or '':<18} {e['source']}"
              for e in view["recent_events"]] or ["  (none)"]
    return "\n".join(lines)


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds") if hasattr(value, "hour") else value.isoformat()
    return str(value)
