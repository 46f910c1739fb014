"""Collectors: each turns the latest snapshot of a source into metric families at scrape time."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import Metric

from exporter.config import format_duration


def cached(interval: float, what: str = "the engine") -> str:
    """The HELP suffix that tells readers how old a value can be."""
    return f" Cached: read from {what} every {format_duration(interval)}."


class SnapshotCollector:
    """Renders the latest snapshot of one source; its text is cached until that changes."""

    def __init__(self, source: Any, interval: float = 0.0) -> None:
        self.source = source
        self.interval = interval  # how often the source is read, for the HELP texts

    def describe(self) -> list[Metric]:
        return []

    def cache_key(self) -> tuple[object, ...]:
        """The output changes only with these snapshots (see exporter/exposition.py)."""
        return (self.source.snapshot,)
