"""Asset metadata shared by every stage: a readable preview of a frame.

Dagster keeps materialization metadata in its event log for good, where an erasure cannot reach it. So a
preview shows values only of columns known to hold no personal data (`NON_PERSONAL`); any other column is
shown by name with its values hidden, and reasons are shown by their codes (a reason's detail may quote a
value). A new column is hidden until someone adds it here, knowingly.
"""

from __future__ import annotations

import polars as pl
from dagster import MetadataValue

NON_PERSONAL = frozenset({
    "source", "file", "line_no", "event_id", "event_type", "event_name", "occurred_at", "received_at",
    "observed_at", "first_seen_at", "last_seen_at", "left_type", "right_type", "identifier_type", "trait",
    "kind", "segment", "change", "changed_at", "status", "partition", "partition_key", "loaded_at", "source_rank",
})
REASON_COLUMNS = frozenset({"reason", "reasons"})  # `code: detail`: the code is shown, the detail is not
HIDDEN = "‹hidden›"


def markdown_preview(frame: pl.DataFrame, rows: int = 5, width: int = 80) -> MetadataValue:
    """The first rows as a Markdown table, long values cut so the UI stays readable; values of columns
    that may hold personal data are hidden."""
    if frame.is_empty():
        return MetadataValue.md("_no rows_")
    head = frame.head(rows)

    def cell(column: str, value) -> str:
        if value is None:
            return ""
        if column in REASON_COLUMNS:
            reasons = value if isinstance(value, (list, tuple, pl.Series)) else [value]
            text = ", ".join(str(reason).split(":", 1)[0] for reason in reasons)
        elif column in NON_PERSONAL:
            text = str(value)
        else:
            return HIDDEN
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(head.columns, row)) + " |" for row in head.iter_rows()]
    return MetadataValue.md("\n".join(lines))
