"""Collectors: each turns the latest snapshot of a source into metric families at scrape time."""

from __future__ import annotations

from exporter.config import format_duration


def cached(interval: float, what: str = "the engine") -> str:
    """The HELP suffix that tells readers how old a value can be."""
    return f" Cached: read from {what} every {format_duration(interval)}."
