"""Pulls on this host, from the engine's event stream.

The stream is held open; after a daemon restart it reconnects with ``since`` set to the last
event it counted and skips what it already saw, so a reconnect neither loses nor doubles a
pull. The counter lives in the process and never goes backwards.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from exporter import backoff, reference
from exporter.sources.engine import Engine
from exporter.sources.loop import Status

log = logging.getLogger(__name__)

MAX_REPOSITORIES = 5000  # label values accepted from the stream; the rest count as "_other"
OTHER = "_other"
MAX_BACKOFF = 30.0


def repository_of(event: Mapping[str, Any]) -> str | None:
    """The repository a pull event names, in the engine's short form."""
    actor = event.get("Actor")
    if not isinstance(actor, Mapping):
        return None
    attributes = actor.get("Attributes")
    name = attributes.get("name") if isinstance(attributes, Mapping) else None
    if not isinstance(name, str) or not name:
        name = actor.get("ID") if isinstance(actor.get("ID"), str) else None
    if not name:
        return None
    try:
        return reference.parse(name, default_tag=None).familiar_name
    except reference.ReferenceError:
        return None


class EventStream:
    """Counts ``image pull`` events; ``status`` says whether the stream is connected."""

    name = "events"

    def __init__(self, host: str) -> None:
        self.engine = Engine(host, timeout=30.0)  # the stream itself waits without a timeout
        self.pulls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._connected = False
        self._connect_duration = 0.0
        self._last_success: float | None = None
        self._attempted = False
        self._last_nano = 0
        self._seen_at_last: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.started = time.time()

    @property
    def status(self) -> Status:
        with self._lock:
            last = time.time() if self._connected else self._last_success
            return Status(self._attempted, self._connected, self._connect_duration, last,
                          "" if self._connected else "disconnected")

    def counts(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self.pulls.items())

    def handle(self, event: Mapping[str, Any]) -> bool:
        """Count one event unless it was already counted; says whether it counted."""
        if event.get("Type") != "image" or event.get("Action") != "pull":
            return False
        nano = event.get("timeNano")
        if not isinstance(nano, int):
            nano = int(event.get("time", 0) or 0) * 1_000_000_000
        actor = event.get("Actor") if isinstance(event.get("Actor"), Mapping) else {}
        key = (str(actor.get("ID", "")), str(event.get("id", "")))
        repository = repository_of(event)
        with self._lock:
            if nano < self._last_nano or (nano == self._last_nano and key in self._seen_at_last):
                return False
            if nano > self._last_nano:
                self._last_nano, self._seen_at_last = nano, set()
            self._seen_at_last.add(key)
            if repository is None:
                return False
            if repository not in self.pulls and len(self.pulls) >= MAX_REPOSITORIES:
                repository = OTHER
            self.pulls[repository] += 1
        return True

    def _since(self) -> str:
        with self._lock:
            nano = self._last_nano or int(self.started * 1_000_000_000)
        return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            stream = None
            try:
                stream = self.engine.events(self._since(),
                                            {"type": ["image"], "event": ["pull"]})
                with self._lock:
                    self._attempted = True
                    self._connected = True
                    self._connect_duration = time.monotonic() - started
                    self._last_success = time.time()
                log.info("event stream connected%s",
                         f" again after {failures} failed attempts" if failures else "")
                failures = 0
                for event in stream:
                    if isinstance(event, Mapping):
                        self.handle(event)
                    if self._stop.is_set():
                        break
                raise ConnectionError("the engine closed the event stream")
            except Exception as exc:
                with self._lock:
                    was_connected = self._connected
                    self._connected = False
                    self._attempted = True
                    if was_connected:
                        self._last_success = time.time()
                if self._stop.is_set():
                    break
                if was_connected or failures == 0:
                    log.warning("event stream disconnected: %s", str(exc)[:300])
                failures += 1
                wait = backoff.jittered(backoff.delay(failures, 1.0, MAX_BACKOFF))
            finally:
                # The stream's socket is not the pool's: close it here, or each reconnect
                # leaves one behind until the garbage collector finds it.
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
                self.engine.close()
            self._stop.wait(wait)

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="source-events", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self.engine.close()  # unblocks a read that waits for the next event
        if self._thread:
            self._thread.join(timeout)
