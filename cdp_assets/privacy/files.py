"""Rewriting an input or export file without the records of erased persons, atomically (temp name,
fsync, rename): a reader sees the old file or the new one, never half of one.

`strip_file` is what extracts do with suppressed (hashed) identifiers. `erase_from_file` is what an
erasure does to every file under the data directory, whatever its name: the person's records go, their
identifiers mentioned inside other records' strings become `[erased]`, and a file that cannot be read
as records (a corrupt gzip, bytes that are not UTF-8) loses every line mentioning them, its readable
prefix included.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from pathlib import Path

import polars as pl

from cdp_assets.privacy.suppression import KnownValues, Suppressions, json_strings

DATA_SUFFIXES = {".jsonl", ".json", ".gz", ".csv", ".parquet"}
GZIP_MAGIC = b"\x1f\x8b"
# Databases keep their own files: the warehouse is rewritten by the erasure, others erase through their owner.
DATABASE_MAGIC = (b"SQLite format 3\x00",)
MAX_PREFIX_BYTES = 512 * 2**20  # of a corrupt gzip, decompressed to look for the person


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
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
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


def erase_from_file(path: Path, erased: KnownValues) -> tuple[int, int]:
    """(records removed, strings scrubbed) in one file; rewritten atomically when anything changed."""
    raw = path.read_bytes()
    if raw.startswith(DATABASE_MAGIC) or raw[8:12] == b"DUCK":
        return 0, 0
    if path.suffix == ".parquet":
        return _erase_parquet(path, erased)
    zipped = raw.startswith(GZIP_MAGIC)
    try:
        text = (gzip.decompress(raw) if zipped else raw).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
        return _erase_unreadable(path, raw, zipped, erased)
    if not erased.may_hold(text):
        return 0, 0
    if path.suffix == ".csv":
        changed, removed, scrubbed = _erase_csv(text, erased)
    elif path.suffix in DATA_SUFFIXES or path.name.startswith("."):  # data, and temp files of data
        changed, removed, scrubbed = _erase_json(text, erased, whole=path.suffix == ".json")
    else:  # free text (a rejected file's `.reason`): mentions only
        changed = erased.scrub(text)
        removed, scrubbed = 0, int(changed != text)
    if changed != text:
        data = changed.encode()
        _replace(path, gzip.compress(data) if zipped else data)
    return removed, scrubbed


def _erase_json(text: str, erased: KnownValues, whole: bool) -> tuple[str, int, int]:
    """A JSON document (`whole`, if it parses as one) or JSON lines: records holding an identifier as a
    value go, mentions in the others are scrubbed; a line that is not JSON goes if one of its tokens is an
    identifier, else is scrubbed."""
    if whole:
        try:
            document = json.loads(text)
        except ValueError:
            pass
        else:
            pruned, removed = _prune(document, erased)
            scrubbed = erased.scrub_strings(pruned)
            if removed or scrubbed != document:
                return json.dumps(scrubbed, ensure_ascii=False, indent=2) + "\n", removed, int(scrubbed != pruned)
            return text, 0, 0
    kept, removed, scrubbed = [], 0, 0
    for line in text.splitlines():
        if not line.strip():
            kept.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if erased.matches_values(json_strings(record)) if record is not None else erased.matches_record(line):
            removed += 1
        elif record is not None and _mentioned(record, erased):
            kept.append(json.dumps(erased.scrub_strings(record), ensure_ascii=False))
            scrubbed += 1
        elif record is None and erased.mentions(line):
            kept.append(erased.scrub(line))
            scrubbed += 1
        else:
            kept.append(line)
    if not removed and not scrubbed:
        return text, 0, 0
    return ("\n".join(kept) + "\n" if kept else ""), removed, scrubbed


def _mentioned(node, erased: KnownValues) -> bool:
    if isinstance(node, str):
        return erased.mentions(node)
    if isinstance(node, dict):
        return any(erased.mentions(k) or _mentioned(v, erased) for k, v in node.items())
    if isinstance(node, list):
        return any(_mentioned(v, erased) for v in node)
    return False


def _prune(node, erased: KnownValues):
    """(node without the records holding an identifier as a value, how many went): a record is an object
    or list inside a list; one that holds records itself (a page of them) is pruned, not dropped."""
    if isinstance(node, list):
        out, removed = [], 0
        for child in node:
            if isinstance(child, (dict, list)) and not _holds_records(child) and erased.matches_values(json_strings(child)):
                removed += 1
                continue
            child, more = _prune(child, erased)
            out.append(child)
            removed += more
        return out, removed
    if isinstance(node, dict):
        out, removed = {}, 0
        for key, value in node.items():
            out[key], more = _prune(value, erased)
            removed += more
        return out, removed
    return node, 0


def _holds_records(node) -> bool:
    values = node.values() if isinstance(node, dict) else node
    return any(isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v) for v in values)


def _erase_csv(text: str, erased: KnownValues) -> tuple[str, int, int]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    kept, removed, scrubbed = rows[:1], 0, 0
    for row in rows[1:]:
        if erased.matches_values(row):
            removed += 1
            continue
        clean = [erased.scrub(cell) for cell in row]
        scrubbed += clean != row
        kept.append(clean)
    if not removed and not scrubbed:
        return text, 0, 0
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(kept)
    return out.getvalue(), removed, scrubbed


def _erase_parquet(path: Path, erased: KnownValues) -> tuple[int, int]:
    frame = pl.read_parquet(path)
    strings = [name for name, kind in frame.schema.items() if kind == pl.String]
    cells = frame.select(pl.concat_str(pl.all().cast(pl.String), separator="\t", ignore_nulls=True)).to_series()
    keep = pl.Series([not erased.matches_values(text.split("\t")) for text in cells], dtype=pl.Boolean)
    kept = frame.filter(keep)
    clean = kept.with_columns(pl.col(c).map_elements(erased.scrub, return_dtype=pl.String) for c in strings) if strings and len(kept) else kept
    removed = len(frame) - len(kept)
    scrubbed = sum(int((clean[c] != kept[c]).fill_null(False).sum()) for c in strings) if len(kept) else 0
    if removed or scrubbed:
        buffer = io.BytesIO()
        clean.write_parquet(buffer)
        _replace(path, buffer.getvalue())
    return removed, scrubbed


def _readable_prefix(raw: bytes, chunk: int = 4096) -> bytes:
    """As much of a damaged gzip as decompresses (members one after another), up to MAX_PREFIX_BYTES.
    zlib drops a piece's output when it fails inside it, so a failing piece is fed again byte by byte."""
    out, size, rest = [], 0, raw
    while rest.startswith(GZIP_MAGIC) and size < MAX_PREFIX_BYTES:
        decompressor, position = zlib.decompressobj(wbits=31), 0
        while position < len(rest) and not decompressor.eof and size < MAX_PREFIX_BYTES:
            step = chunk
            saved = decompressor.copy()
            try:
                piece = decompressor.decompress(rest[position:position + step])
            except zlib.error:
                decompressor, step, piece = saved, 1, b""
                try:
                    while position < len(rest):
                        piece += decompressor.decompress(rest[position:position + 1])
                        position += 1
                except zlib.error:
                    out.append(piece)
                    return b"".join(out)[:MAX_PREFIX_BYTES]
            position += step
            out.append(piece)
            size += len(piece)
        if not decompressor.eof:
            break
        rest = decompressor.unused_data + rest[position:]
    return b"".join(out)[:MAX_PREFIX_BYTES]


def _erase_unreadable(path: Path, raw: bytes, zipped: bool, erased: KnownValues) -> tuple[int, int]:
    """A file that cannot be read as records: every line of it (or of its readable prefix, for a damaged
    gzip) mentioning the person goes; what cannot be decompressed cannot be searched and goes too when the
    rest had to be rewritten or its raw bytes mention them."""
    prefix = _readable_prefix(raw) if zipped else raw
    if not (erased.in_bytes(raw) or erased.in_bytes(prefix)):
        return 0, 0
    lines = prefix.split(b"\n")
    kept = [line for line in lines if not erased.in_bytes(line)]
    data = b"\n".join(kept)
    _replace(path, gzip.compress(data) if zipped else data)
    return len(lines) - len(kept), 0
