"""Rendering a scrape from text made ready in the background.

Formatting tens of thousands of series costs tens of milliseconds of Python. The image,
container, disk and upstream families change only when a source publishes a new snapshot
(an unchanged read keeps the old object: see ``Source.refresh``), so a renderer thread,
woken by each publication, formats the collectors whose snapshots changed and joins them,
for each format a scraper has asked for, into ready bytes and their gzip. A scrape takes
the ready bytes as they are, even while the renderer works on newer ones, and formats only
the small live families (the exporter's own counters and collector status, pulls, process
metrics): what a scrape costs does not depend on when the last refresh happened.

The gzip of the ready bytes ends in a sync flush, and the compressor is kept: a scrape
copies it, compresses the live part and finishes the stream, so the body is one gzip
member and only the live part is compressed per scrape.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

log = logging.getLogger(__name__)

EOF_LINE = b"# EOF\n"
GZIP_LEVEL = 1  # the live part is compressed during the scrape: fast beats small
Encoder = Callable[[Any], bytes]


class _One:
    """A registry of one collector, the shape prometheus_client's encoders take."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        return iter(self.collector.collect())


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Ready:
    """The snapshot families of one format: their text, and its gzip up to a sync flush."""

    keys: tuple[tuple[object, ...], ...]  # each collector's cache_key() it was rendered from
    text: bytes
    gzip_head: bytes
    gzip_state: Any  # zlib's compressor after gzip_head; copied, never used itself


class Exposition:
    def __init__(self, collectors: Sequence[Any]) -> None:
        # Snapshot collectors first, so their text is a prefix the live part is appended to.
        self.keyed = [c for c in collectors if getattr(c, "cache_key", None) is not None]
        self.live = [c for c in collectors if getattr(c, "cache_key", None) is None]
        self._texts: dict[tuple[int, bool], tuple[tuple[object, ...], bytes]] = {}
        self._ready: dict[bool, Ready] = {}
        # Both formats are made ready until a scraper asks for one: the first scrape, too,
        # finds its text ready. Then only the formats scrapers asked for are kept up.
        self._encoders: dict[bool, Encoder] = {False: generate_latest,
                                               True: generate_openmetrics}
        self._asked: set[bool] = set()
        self._rendering = threading.Lock()  # one renderer at a time
        self._wake = threading.Event()
        self.rendered = 0  # collector texts formatted so far (for tests and benchmarks)

    def changed(self) -> None:
        """A source published a new snapshot (called on its thread: only wakes the renderer)."""
        self._wake.set()

    def render(self, encoder: Encoder, openmetrics: bool, gzip: bool = False,
               fresh: bool = False) -> bytes:
        """The body of a scrape. ``fresh`` renders what changed first (collect-on-scrape);
        otherwise only the first scrape of a format waits for its text."""
        ready = self._ready.get(openmetrics)
        if ready is None or fresh or openmetrics not in self._asked:
            # The renderer keeps a format up to date only once it was asked for: before, its
            # text may be older than the snapshots (checked here; rendered only if it is).
            ready = self.update(encoder, openmetrics)
            self._asked.add(openmetrics)
        live = b"".join(self._text(encoder, collector, openmetrics) for collector in self.live)
        if openmetrics:
            live += EOF_LINE
        if not gzip:
            return ready.text + live
        compressor = ready.gzip_state.copy()
        return ready.gzip_head + compressor.compress(live) + compressor.flush()

    def update(self, encoder: Encoder, openmetrics: bool) -> Ready:
        """Format the snapshot collectors whose snapshots changed, and publish the result."""
        with self._rendering:
            self._encoders[openmetrics] = encoder
            keys = tuple(collector.cache_key() for collector in self.keyed)
            old = self._ready.get(openmetrics)
            if old is not None and len(old.keys) == len(keys) and all(
                    _same(a, b) for a, b in zip(old.keys, keys, strict=True)):
                return old
            parts = []
            for index, (collector, key) in enumerate(zip(self.keyed, keys, strict=True)):
                hit = self._texts.get((index, openmetrics))
                if hit is None or not _same(hit[0], key):
                    hit = key, self._text(encoder, collector, openmetrics)
                    self._texts[(index, openmetrics)] = hit
                    self.rendered += 1
                parts.append(hit[1])
            text = b"".join(parts)
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            ready = self._ready[openmetrics] = Ready(keys, text, head, compressor)
            return ready

    @staticmethod
    def _text(encoder: Encoder, collector: Any, openmetrics: bool) -> bytes:
        text = encoder(_One(collector))
        if openmetrics and text.endswith(EOF_LINE):
            text = text[: -len(EOF_LINE)]
        return text

    def start(self, stop: threading.Event) -> threading.Thread:
        """The renderer: after each publication, the formats scrapers asked for are made
        ready again. A failure is logged and drops that format's ready text, so the next
        scrape renders it itself and fails as loudly as it would have without a renderer."""
        def loop() -> None:
            while not stop.is_set():
                if not self._wake.wait(1.0):
                    continue
                self._wake.clear()
                asked = self._asked
                for openmetrics, encoder in list(self._encoders.items()):
                    if asked and openmetrics not in asked:
                        continue
                    try:
                        self.update(encoder, openmetrics)
                    except Exception:
                        log.exception("rendering the metrics failed; the next scrape renders "
                                      "them itself")
                        self._ready.pop(openmetrics, None)

        thread = threading.Thread(target=loop, name="renderer", daemon=True)
        thread.start()
        return thread
