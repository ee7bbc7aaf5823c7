"""Destinations that read state rather than changes: segment lists as files, and tags in the CRM."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from cdp_assets.activation.config import Destination
from cdp_assets.activation.deliveries import _traits
from cdp_resources.warehouse import table_exists


def segment_members(con, destination: Destination, segments: tuple[str, ...]) -> pl.DataFrame:
    """(segment, person_id, entered_at, traits JSON) of the current members of `segments`."""
    if not table_exists(con, "cdp.segment_membership"):
        return pl.DataFrame(schema={"segment": pl.String, "person_id": pl.String, "entered_at": pl.Datetime("us"), "traits": pl.String})
    profiles = "LEFT JOIN cdp.profiles p USING (person_id)" if table_exists(con, "cdp.profiles") else ""
    return con.execute(
        f"""SELECT m.segment, m.person_id, m.entered_at, {_traits(destination) if profiles else 'json_object()'}::VARCHAR AS traits
            FROM cdp.segment_membership m {profiles}
            WHERE list_contains(?, m.segment) ORDER BY m.segment, m.person_id""",
        [list(segments)],
    ).pl()


def segment_members_in(engine, destination: Destination, segments: tuple[str, ...]) -> pl.DataFrame:
    """`segment_members` on the warehouse's engine (`WarehouseResource.engine()`)."""
    if engine.name == "spark":
        from cdp_assets.activation.spark import segment_members_on_spark

        return segment_members_on_spark(engine, destination, segments)
    with engine.connect() as con:
        return segment_members(con, destination, segments)


def export_segment_files(
    members: pl.DataFrame, destination: Destination, folder: Path, stamp: datetime, run_id: str = ""
) -> dict[str, int]:
    """One file per segment for this run (`<UTC time>[_<run id>].<format>`), appearing atomically (temp
    name, fsync, rename): a tool that pulls never reads half a file."""
    written = {}
    for segment in destination.segments:
        rows = members.filter(pl.col("segment") == segment).drop("segment")
        traits = pl.DataFrame([json.loads(t) for t in rows["traits"]]) if destination.fields and len(rows) else None
        rows = rows.drop("traits") if traits is None else pl.concat([rows.drop("traits"), traits], how="horizontal")
        name = f"{stamp:%Y%m%dT%H%M%SZ}" + (f"_{run_id[:8]}" if run_id else "")
        target = folder / segment / f"{name}.{destination.format}"
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name("." + target.name)
        rows.write_parquet(temp) if destination.format == "parquet" else rows.write_csv(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        written[segment] = len(rows)
    return written


def write_back_tags(members: pl.DataFrame, destination: Destination, dsn: str) -> dict[str, int]:
    """Upsert each member's segments and traits into the CRM table; persons who left every listed
    segment keep their row with no segments (the CRM can see they left)."""
    desired = (
        members.group_by("person_id")
        .agg(pl.col("segment").sort().alias("segments"), pl.col("traits").first())
        .sort("person_id")
    )
    schema, _, name = destination.table.rpartition(".")
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    with psycopg.connect(dsn, connect_timeout=10) as pg:
        pg.execute(sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (person_id text PRIMARY KEY, segments text[] NOT NULL,
               traits jsonb, updated_at timestamptz NOT NULL DEFAULT now())"""
        ).format(table))
        with pg.cursor() as cursor:
            cursor.executemany(
                sql.SQL(
                    """INSERT INTO {t} AS t (person_id, segments, traits) VALUES (%s, %s, %s::jsonb)
                       ON CONFLICT (person_id) DO UPDATE SET segments = EXCLUDED.segments, traits = EXCLUDED.traits,
                           updated_at = now()
                       WHERE (t.segments, t.traits) IS DISTINCT FROM (EXCLUDED.segments, EXCLUDED.traits)"""
                ).format(t=table),
                [(row["person_id"], row["segments"], row["traits"]) for row in desired.iter_rows(named=True)],
            )
            cursor.execute(
                sql.SQL("UPDATE {} SET segments = '{{}}', updated_at = now() WHERE segments <> '{{}}' AND NOT (person_id = ANY(%s))").format(table),
                [desired["person_id"].to_list()],
            )
            cleared = cursor.rowcount
    return {"persons": len(desired), "cleared": cleared}
