"""Rewriting an input or export file without the records of erased persons, atomically (temp name,
fsync, rename): a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import polars as pl

from cdp_assets.privacy.suppression import KnownValues, Suppressions

DATA_SUFFIXES = {".jsonl", ".json", ".gz", ".csv", ".parquet"}


def _replace(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.rewrite")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def strip_file(path: Path, suppressions: Suppressions | KnownValues) -> int:
    """Remove every record carrying a suppressed identifier from `path`; how many were removed."""
    if not suppressions or path.suffix not in DATA_SUFFIXES or path.name.startswith("."):
        return 0
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        texts = frame.select(pl.concat_str(pl.all().cast(pl.String), separator="\t", ignore_nulls=True)).to_series()
        keep = [not suppressions.matches_values(text.split("\t")) for text in texts]
        removed = keep.count(False)
        if removed:
            buffer = io.BytesIO()
            frame.filter(pl.Series(keep)).write_parquet(buffer)
            _replace(path, buffer.getvalue())
        return removed
    raw = path.read_bytes()
    zipped = path.suffix == ".gz"
    try:
        text = (gzip.decompress(raw) if zipped else raw).decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError):
        return 0  # unreadable: it is rejected by the extract and its bytes are not records
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))
        kept = rows[:1] + [row for row in rows[1:] if not suppressions.matches_values(row)]
        removed = len(rows) - len(kept)
        if removed:
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator="\n").writerows(kept)
            _replace(path, out.getvalue().encode())
        return removed
    lines = text.splitlines()
    kept = [line for line in lines if not (line.strip() and suppressions.matches_record(line))]
    removed = len(lines) - len(kept)
    if removed:
        data = ("\n".join(kept) + "\n").encode() if kept else b""
        _replace(path, gzip.compress(data) if zipped else data)
    return removed
