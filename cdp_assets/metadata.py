"""Asset metadata shared by every stage: a readable preview of a frame."""

from __future__ import annotations

import polars as pl
from dagster import MetadataValue


def markdown_preview(frame: pl.DataFrame, rows: int = 5, width: int = 80) -> MetadataValue:
    """The first rows as a Markdown table, long values cut so the UI stays readable."""
    if frame.is_empty():
        return MetadataValue.md("_no rows_")
    head = frame.head(rows)

    def cell(value) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    return MetadataValue.md("\n".join(lines))
