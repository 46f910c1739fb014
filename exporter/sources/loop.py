"""Background refresh loops. Each source is read on its own thread and interval; a scrape only
ever reads the snapshot and status the loop last published, so it never waits on a source.

A loop never ends on an exception: a failed read is counted, retried with the capped back-off
(``exporter.backoff``), and logged once when the source starts failing and once when it
recovers; an exception nobody expected (a bug) is logged with its traceback too. Whether the
loop's thread is alive is exported, so a dead loop can never look like a quiet one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter import backoff
from exporter.values import redact_url

T = TypeVar("T")
log = logging.getLogger(__name__)

MIN_BACKOFF = 1.0


class SourceError(Exception):
    """A read failed for a reason outside the exporter (the engine, a registry, an API).

    ``cause`` is the root cause, the same text for every source that fails because of it
    (e.g. ``unix:///var/run/docker.sock: connect: No such file or directory``), so one root
    cause gives one warning. ``quiet`` failures (waiting for another source) warn nothing.
    """

    def __init__(self, message: str, cause: str = "", quiet: bool = False) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.quiet = quiet


@dataclass(frozen=True)
class Status:
    """The outcome of a source's last read, as the exporter collector reports it."""

    attempted: bool = False
    success: bool = False
    duration: float = 0.0
    last_success: float | None = None
    error: str = ""
    failures: int = 0  # failed reads since the process started; never goes down
    alive: bool = True  # the loop's thread runs (False only once it has ended)


class Problems:
    """Root causes being warned about, shared by every source: a second source failing for
    the same cause logs at debug level, not another warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, set[str]] = {}  # cause -> sources failing for it

    def failing(self, source: str, cause: str) -> bool:
        """Note that ``source`` fails for ``cause``; True when no other source already was."""
        with self._lock:
            failing = self._sources.setdefault(cause, set())
            first = not (failing - {source})
            failing.add(source)
            return first

    def recovered(self, source: str) -> None:
        with self._lock:
            for cause in list(self._sources):
                self._sources[cause].discard(source)
                if not self._sources[cause]:
                    del self._sources[cause]


class Source(Generic[T]):
    """A named source with a background loop; ``snapshot`` is the last good read.

    After a failure the loop retries sooner, doubling the wait from one second up to the
    interval, with jitter, and logs only when the state changes, not on every attempt.
    """

    def __init__(self, name: str, read: Callable[[], T], interval: float,
                 close: Callable[[], None] | None = None,
                 problems: Problems | None = None) -> None:
        self.name = name
        self.interval = interval
        self._read = read
        self._close = close
        self.problems = problems or Problems()
        self.snapshot: T | None = None
        self._status = Status()
        self.ready = threading.Event()
        self._failures = 0  # in a row
        self._failed_total = 0
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_publish(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (quickly: it runs on this loop's thread) whenever a read
        publishes a snapshot that differs from the last."""
        self._listeners.append(listener)

    @property
    def status(self) -> Status:
        thread = self._thread
        alive = thread is None or thread.is_alive()
        status = self._status
        return status if status.alive == alive else Status(
            status.attempted, status.success, status.duration, status.last_success,
            status.error, status.failures, alive)

    @status.setter
    def status(self, value: Status) -> None:
        self._status = value

    def refresh(self) -> bool:
        """Read once, publish the result, and say whether it succeeded."""
        started = time.monotonic()
        try:
            snapshot = self._read()
        except Exception as exc:
            self._failed(exc, time.monotonic() - started)
            return False
        if self._failures or not self._status.attempted:
            log.info("source %s is up%s", self.name,
                     f" again after {self._failures} failed reads" if self._failures else "")
        self.problems.recovered(self.name)
        self._failures = 0
        # A read equal to the last keeps the last object: everything keyed on it (rendered
        # text, the status page's rows) stays valid, and nothing downstream reacts.
        changed = snapshot != self.snapshot
        if changed:
            self.snapshot = snapshot
        self._status = Status(True, True, time.monotonic() - started, time.time(), "",
                              self._failed_total)
        self.ready.set()
        if changed:
            for listener in self._listeners:
                listener()
        return True

    def _failed(self, exc: Exception, duration: float) -> None:
        expected = isinstance(exc, SourceError)
        # Errors may quote a URL, user-info and all (httpx does): never show that part.
        reason = redact_url(str(exc) if expected else f"{type(exc).__name__}: {exc}")
        cause = redact_url(exc.cause) if isinstance(exc, SourceError) else reason
        if self._failures == 0:
            first = self.problems.failing(self.name, cause)
            if not expected:
                # A bug: say where, once, and go on.
                log.error("source %s failed unexpectedly: %s", self.name, reason[:500],
                          exc_info=exc)
            elif isinstance(exc, SourceError) and exc.quiet:
                log.debug("source %s is waiting: %s", self.name, reason[:500])
            elif first:
                log.warning("source %s is failing: %s", self.name, reason[:500])
            else:
                log.info("source %s is failing too: %s", self.name, reason[:500])
        self._failures += 1
        self._failed_total += 1
        self._status = Status(True, False, duration, self._status.last_success, reason[:500],
                              self._failed_total)
        self.ready.set()

    def next_wait(self) -> float:
        if self._failures == 0:
            return self.interval
        return backoff.jittered(backoff.delay(self._failures, MIN_BACKOFF, self.interval))

    def start(self, stop: threading.Event) -> None:
        def loop() -> None:
            try:
                while not stop.is_set():
                    try:
                        self.refresh()
                        wait = self.next_wait()
                    except Exception:  # refresh() catches the read's; this is a bug of ours
                        log.exception("source %s: the loop itself failed; going on", self.name)
                        wait = MIN_BACKOFF
                    stop.wait(wait)
            finally:
                if self._close:
                    try:
                        self._close()
                    except Exception:
                        log.exception("source %s: closing failed", self.name)

        self._thread = threading.Thread(target=loop, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread:
            self._thread.join(timeout)
