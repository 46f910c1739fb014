"""Rendering a scrape, with each collector's text kept until its snapshot changes.

Building and formatting tens of thousands of series costs tens of milliseconds of Python.
The image, container, disk and upstream families change only when a background read
publishes a new snapshot, so their text is formatted once per snapshot and reused by every
scrape until the next one; only the small, always-changing families are built per scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import Metric

EOF_LINE = b"# EOF\n"


class _One:
    """A registry of one collector, the shape prometheus_client's encoders take."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        return iter(self.collector.collect())


class Exposition:
    def __init__(self, collectors: Sequence[Any]) -> None:
        self.collectors = list(collectors)
        self._cache: dict[tuple[int, bool], tuple[tuple[Any, ...], bytes]] = {}
        self._lock = threading.Lock()

    def render(self, encoder: Callable[[Any], bytes], openmetrics: bool) -> bytes:
        parts = []
        for index, collector in enumerate(self.collectors):
            key_fn = getattr(collector, "cache_key", None)
            key = key_fn() if key_fn else None
            slot = (index, openmetrics)
            with self._lock:
                hit = self._cache.get(slot)
            if key is not None and hit is not None and len(hit[0]) == len(key) and all(
                    a is b for a, b in zip(hit[0], key, strict=True)):
                text = hit[1]
            else:
                text = encoder(_One(collector))
                if openmetrics and text.endswith(EOF_LINE):
                    text = text[: -len(EOF_LINE)]
                if key is not None:
                    with self._lock:
                        self._cache[slot] = (key, text)
            parts.append(text)
        if openmetrics:
            parts.append(EOF_LINE)
        return b"".join(parts)
