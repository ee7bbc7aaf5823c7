"""Cutting ordered work into bounded groups: files by bytes (extracts), partitions by rows (validation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bounded_groups(items: Iterable[T], weight: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """`items` in order, in groups whose weights add up to at most `limit` (an item heavier than `limit` is a
    group of its own)."""
    group, total = [], 0
    for item in items:
        w = weight(item)
        if group and total + w > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += w
    if group:
        yield group
