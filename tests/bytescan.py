"""The oracle of erasure tests: a byte scan of every file under a data directory, whatever its name or state.

Every file is read as raw bytes (the DuckDB file and its WAL, dot-files and temp files, rejected files and
their `.reason`); a gzip is also read decompressed, and a damaged one as far as it decompresses; a
Parquet file also through polars (its pages are compressed). A needle is found case-insensitively, as a
plain substring, with no notion of records or boundaries: that is the point.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import polars as pl


def readable_texts(raw: bytes, path: Path) -> list[bytes]:
    """The raw bytes, and every decoded form of them we can get."""
    texts = [raw]
    if raw[:2] == b"\x1f\x8b":
        texts.append(_gunzip_what_we_can(raw))
    if path.suffix == ".parquet":
        try:
            texts.append(pl.read_parquet(path).write_csv().encode())
        except Exception:  # noqa: BLE001 (a damaged Parquet file is scanned as raw bytes only)
            pass
    return texts


def _gunzip_what_we_can(raw: bytes) -> bytes:
    """Every member of a gzip, one byte at a time when it is damaged: whatever decompresses is kept."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        pass
    out, rest = [], raw
    while rest[:2] == b"\x1f\x8b":
        decompressor = zlib.decompressobj(wbits=31)
        used = 0
        try:
            while used < len(rest) and not decompressor.eof:
                out.append(decompressor.decompress(rest[used:used + 1]))
                used += 1
        except zlib.error:
            break
        rest = decompressor.unused_data + rest[used:]
    return b"".join(out)


def scan(data_dir: Path, needles: set[str]) -> dict[str, list[str]]:
    """{file relative to data_dir: needles found in it} over every file below data_dir."""
    wanted = {n.lower().encode() for n in needles if n}
    found = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        hits = {n for text in readable_texts(path.read_bytes(), path) for n in wanted if n in text.lower()}
        if hits:
            found[str(path.relative_to(data_dir))] = sorted(h.decode() for h in hits)
    return found
