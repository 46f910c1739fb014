"""Background refresh loops. Each source is read on its own thread and interval; a scrape only
ever reads the snapshot and status the loop last published, so it never waits on a source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter import backoff
from exporter.sources.engine import EngineError
from exporter.values import redact_url

T = TypeVar("T")
log = logging.getLogger(__name__)

MIN_BACKOFF = 1.0


@dataclass(frozen=True)
class Status:
    """The outcome of a source's last read, as the exporter collector reports it."""

    attempted: bool = False
    success: bool = False
    duration: float = 0.0
    last_success: float | None = None
    error: str = ""


class Source(Generic[T]):
    """A named source with a background loop; ``snapshot`` is the last good read.

    After a failure the loop retries sooner, doubling the wait from one second up to the
    interval, with jitter, and logs only when the state changes, not on every attempt.
    """

    def __init__(self, name: str, read: Callable[[], T], interval: float,
                 close: Callable[[], None] | None = None) -> None:
        self.name = name
        self.interval = interval
        self._read = read
        self._close = close
        self.snapshot: T | None = None
        self.status = Status()
        self.ready = threading.Event()
        self._failures = 0
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Read once, publish the result, and say whether it succeeded."""
        started = time.monotonic()
        try:
            snapshot = self._read()
        except Exception as exc:
            reason = redact_url(f"{exc.reason}: {exc.detail}" if isinstance(exc, EngineError)
                                else repr(exc))
            if not isinstance(exc, EngineError):
                log.debug("source %s raised", self.name, exc_info=True)
            if self._failures == 0:
                log.warning("source %s is failing: %s", self.name, reason[:500])
            self._failures += 1
            self.status = Status(True, False, time.monotonic() - started,
                                 self.status.last_success, reason[:500])
            self.ready.set()
            return False
        if self._failures or not self.status.attempted:
            log.info("source %s is up%s", self.name,
                     f" again after {self._failures} failed reads" if self._failures else "")
        self._failures = 0
        self.snapshot = snapshot
        self.status = Status(True, True, time.monotonic() - started, time.time(), "")
        self.ready.set()
        return True

    def next_wait(self) -> float:
        if self._failures == 0:
            return self.interval
        return backoff.jittered(backoff.delay(self._failures, MIN_BACKOFF, self.interval))

    def start(self, stop: threading.Event) -> None:
        def loop() -> None:
            try:
                while not stop.is_set():
                    self.refresh()
                    stop.wait(self.next_wait())
            finally:
                if self._close:
                    self._close()

        self._thread = threading.Thread(target=loop, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread:
            self._thread.join(timeout)
