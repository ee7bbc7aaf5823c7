"""Turn one input file into raw records (text) — no interpretation, that is validation's job."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from cdp_resources.landing import read_lines


class UnreadableFile(ValueError):
    """The whole file cannot be loaded; it is rejected with this reason, nothing of it is kept."""


def jsonl_records(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every non-blank line; malformed lines are kept for quarantine."""
    try:
        lines = read_lines(path)
    except ValueError as exc:
        raise UnreadableFile(str(exc)) from exc
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


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
