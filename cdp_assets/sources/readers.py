"""Turn input files into raw records (text) — no interpretation, that is validation's job.

JSON Lines files are split in polars, many files at once, not line by line in Python: a line ends at `\\n`
(a `\\r` before it is dropped), so a record holding a raw U+2028 (legal inside a JSON string) stays whole.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl

from cdp_resources.landing import read_text

TEXTS_SCHEMA = pl.Schema({"partition_key": pl.String, "file": pl.String, "text": pl.String})
RECORDS_SCHEMA = pl.Schema({"partition_key": pl.String, "file": pl.String, "line_no": pl.Int64, "record": pl.String})
# Every character for which str.isspace() holds (what str.strip() removes): a line of only these is blank.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
NOT_BLANK = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]"  # a regex: any other character


class UnreadableFile(ValueError):
    """The whole file cannot be loaded; it is rejected with this reason, nothing of it is kept."""


def file_text(path: Path) -> str:
    """The whole text of a JSON Lines file (gzip allowed); UnreadableFile when it cannot be decoded."""
    try:
        return read_text(path)
    except ValueError as exc:
        raise UnreadableFile(str(exc)) from exc


def jsonl_lines(texts: pl.DataFrame) -> pl.DataFrame:
    """One row per file (partition_key, file, text) to one row per non-blank line (partition_key, file,
    line_no, record), numbered from 1 in each file; malformed lines are kept for quarantine."""
    lines = (
        texts.lazy()
        .select("partition_key", "file", pl.col("text").str.split("\n").alias("record"))
        .explode("record")
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("file").alias("line_no"))
    )
    if texts["text"].str.contains("\r", literal=True).any():  # rare: spare the copy of every line otherwise
        lines = lines.with_columns(pl.col("record").str.strip_suffix("\r"))
    return lines.filter(pl.col("record").str.contains(NOT_BLANK)).select(RECORDS_SCHEMA.names()).collect()


def jsonl_records(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every non-blank line of one file."""
    texts = pl.DataFrame([("", str(path), file_text(path))], schema=TEXTS_SCHEMA, orient="row")
    return list(jsonl_lines(texts).select("line_no", "record").iter_rows())


def csv_records(path: Path, required: list[str]) -> list[tuple[int, str]]:
    """(line number, row as a JSON object of header → text) for a CSV file with a header.

    Added columns are kept; a missing required column rejects the file with a message naming it.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path.name}: cannot be read as UTF-8: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [column for column in required if column not in header]
    if missing:
        raise UnreadableFile(f"{path.name}: missing required column(s) {', '.join(missing)} (header: {', '.join(header)})")
    reader.fieldnames = header
    records = []
    for row in reader:
        extra = row.pop(None, None)  # a row longer than the header
        if extra:
            row["_extra_values"] = extra
        records.append((reader.line_num, json.dumps(row, ensure_ascii=False)))
    return records
