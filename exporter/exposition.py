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
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

log = logging.getLogger(__name__)

EOF_LINE = b"# EOF\n"
KEEP = 300.0  # seconds a format no scraper asks for is still kept ready
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
    spans: tuple[tuple[int, int], ...]  # each collector's part of text (kept once, not twice)
    gzip_head: bytes
    gzip_state: Any  # zlib's compressor after gzip_head; copied, never used itself


class Exposition:
    def __init__(self, collectors: Sequence[Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Snapshot collectors first, so their text is a prefix the live part is appended to.
        self.keyed = [c for c in collectors if getattr(c, "cache_key", None) is not None]
        self.live = [c for c in collectors if getattr(c, "cache_key", None) is None]
        self._ready: dict[bool, Ready] = {}
        # Both formats are kept ready from the start, so that the first scrape, too, finds
        # its text ready; then a format nobody asked for in KEEP seconds is let go.
        self._encoders: dict[bool, Encoder] = {False: generate_latest,
                                               True: generate_openmetrics}
        self.clock = clock
        self._asked: dict[bool, float] = dict.fromkeys(self._encoders, clock())
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
        self._asked[openmetrics] = self.clock()
        ready = self._ready.get(openmetrics)
        if ready is None or fresh:
            ready = self.update(encoder, openmetrics)
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
            parts: list[bytes | memoryview] = []
            for index, (collector, key) in enumerate(zip(self.keyed, keys, strict=True)):
                if old is not None and _same(old.keys[index], key):
                    start, end = old.spans[index]
                    parts.append(memoryview(old.text)[start:end])
                else:
                    parts.append(self._text(encoder, collector, openmetrics))
                    self.rendered += 1
            spans, at = [], 0
            for part in parts:
                spans.append((at, at + len(part)))
                at += len(part)
            text = b"".join(parts)
            del parts
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            ready = self._ready[openmetrics] = Ready(keys, text, tuple(spans), head,
                                                     compressor)
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
                now = self.clock()
                for openmetrics, encoder in list(self._encoders.items()):
                    if now - self._asked.get(openmetrics, now) > KEEP:
                        # Not kept up to date any more: a scrape must not find it.
                        self._ready.pop(openmetrics, None)
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
