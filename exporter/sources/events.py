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
from exporter.decisions import provenance
from exporter.sources.engine import Engine
from exporter.sources.loop import Problems, SourceError, Status
from exporter.state import StateStore
from exporter.values import redact_url

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


def tag_of(event: Mapping[str, Any]) -> str | None:
    """The tag a pull event names, in the engine's short form ("busybox:1.36"): dockerd says
    it in Actor.ID, Podman in the name attribute (its Actor.ID is the image ID). None for a
    pull by digest or of every tag."""
    actor = event.get("Actor")
    if not isinstance(actor, Mapping):
        return None
    attributes = actor.get("Attributes")
    for name in (actor.get("ID"), attributes.get("name") if isinstance(attributes, Mapping)
                 else None):
        if not isinstance(name, str) or not name:
            continue
        try:
            ref = reference.parse(name, default_tag=None)
        except reference.ReferenceError:
            continue
        if ref.tag and not ref.digest:
            return ref.familiar()
    return None


class PullCounter:
    """Pulls per repository, the repositories seen pulled and when each tag was last pulled:
    the bookkeeping every pull source shares (the engine's event stream, containerd's).

    Repositories are in the engine's short form; past MAX_REPOSITORIES new ones count as
    "_other", so a host pulling endless names cannot grow the exposition without bound.
    """

    def __init__(self, store: StateStore | None = None) -> None:
        # The repositories this host was seen pulling, kept in the state store: where the
        # engine does not say what was pulled and what built (decisions/provenance.py).
        self.store = store
        self._pulled: set[str] = set(store.pulled_repositories()) if store else set()
        self.pulls: Counter[str] = Counter()
        # When each tag was last pulled, latest last (up to MAX_REPOSITORIES): a tag that
        # names a new image ID was pulled then (decisions/tagged.py).
        self._pulled_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def count(self, repository: str | None, tag: str | None, when: float) -> bool:
        """Count one pull of ``repository`` (short form; None: not known, nothing counted)
        and note ``tag`` ("repo:tag", None for a pull by digest) as pulled at ``when``."""
        with self._lock:
            if tag is not None:
                self._pulled_at.pop(tag, None)
                self._pulled_at[tag] = when
                if len(self._pulled_at) > MAX_REPOSITORIES:
                    del self._pulled_at[next(iter(self._pulled_at))]
            if repository is None:
                return False
            if repository not in self.pulls and len(self.pulls) >= MAX_REPOSITORIES:
                repository = OTHER
            self.pulls[repository] += 1
            full = provenance.repository(repository) if repository != OTHER else ""
            new = bool(full) and full not in self._pulled and \
                len(self._pulled) < MAX_REPOSITORIES
            if new:
                self._pulled.add(full)
        if new and self.store is not None:
            self.store.seen_pulling(full, when)
        return True

    def counts(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self.pulls.items())

    def pulled_repositories(self) -> frozenset[str]:
        """Repositories this host was seen pulling, fully qualified, restarts included."""
        with self._lock:
            return frozenset(self._pulled)

    def pull_times(self) -> dict[str, float]:
        """When each tag was last seen pulled since the exporter started ("repo:tag")."""
        with self._lock:
            return dict(self._pulled_at)


class HeldStream:
    """A stream held open on its own thread, for pulls: the reconnect loop with the capped
    back-off, and the connection state ``status`` reports (a stream is healthy while
    connected). Subclasses open, read and check the stream in ``_stream_once``, which
    returns when it ended while the engine answers and raises when the engine does not, and
    close what it holds in ``_close``."""

    name = "events"
    what = "event stream"  # in logs

    def __init__(self, silence: float, problems: Problems | None,
                 retry: tuple[float, float], store: StateStore | None) -> None:
        self.counter = PullCounter(store)
        self.silence = silence
        self.retry = retry  # back-off after a failed connect: (first wait, longest wait)
        self.problems = problems or Problems()
        self._lock = threading.Lock()
        self._connected = False
        self._connect_duration = 0.0
        self._last_success: float | None = None
        self._attempted = False
        self._error = ""
        self._failures_total = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.started = time.time()  # pulls are counted from here

    @property
    def status(self) -> Status:
        alive = self._thread is None or self._thread.is_alive()
        with self._lock:
            last = time.time() if self._connected else self._last_success
            return Status(self._attempted, self._connected, self._connect_duration, last,
                          "" if self._connected else self._error or "disconnected",
                          self._failures_total, alive)

    def counts(self) -> list[tuple[str, int]]:
        return self.counter.counts()

    def pulled_repositories(self) -> frozenset[str]:
        """Repositories this host was seen pulling, fully qualified, restarts included."""
        return self.counter.pulled_repositories()

    def pull_times(self) -> dict[str, float]:
        """When each tag was last seen pulled since the exporter started ("repo:tag")."""
        return self.counter.pull_times()

    def _stream_once(self, failures: int) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Close what the stream holds; also ends a read blocked on it."""

    def _connecting(self) -> None:
        """Called under the lock as the stream connects (again)."""

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            wait, started = 0.0, time.monotonic()
            try:
                self._stream_once(failures)
                failures = 0  # the stream went silent or ended while the engine answers
                if time.monotonic() - started < 1.0:
                    wait = 1.0  # an engine that ends every stream at once is not hammered
            except Exception as exc:
                if self._stop.is_set():
                    break
                failures += 1
                self._disconnected(exc, failures)
                wait = backoff.jittered(backoff.delay(failures, *self.retry))
            finally:
                self._close()
            self._stop.wait(wait)

    def _connected_now(self, duration: float, failures: int) -> None:
        with self._lock:
            reconnect = self._connected
            self._attempted = self._connected = True
            self._connect_duration = duration
            self._last_success = time.time()
            self._connecting()
        self.problems.recovered(self.name)
        if not reconnect:
            log.info("%s connected%s", self.what,
                     f" again after {failures} failed attempts" if failures else "")

    def _disconnected(self, exc: Exception, failures: int) -> None:
        expected = isinstance(exc, SourceError)
        reason = redact_url(str(exc) if expected else f"{type(exc).__name__}: {exc}")
        cause = redact_url(exc.cause) if isinstance(exc, SourceError) else reason
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._attempted = True
            self._error = reason[:500]
            self._failures_total += 1
            if was_connected:
                self._last_success = time.time()
        if was_connected or failures == 1:
            first = self.problems.failing(self.name, cause)
            if not expected:
                log.error("%s failed unexpectedly: %s", self.what, reason[:300], exc_info=exc)
            elif first:
                log.warning("%s disconnected: %s", self.what, reason[:300])
            else:
                log.info("%s disconnected: %s", self.what, reason[:300])

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="source-events", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._close()  # unblocks a read that waits for the next event
        if self._thread:
            self._thread.join(timeout)


class EventStream(HeldStream):
    """Counts ``image pull`` events; ``status`` says whether the stream is connected.

    A stream that stays silent for ``silence`` seconds is checked with a ping: an engine that
    answers gets a new stream at once (asking for what happened since the last event, so
    nothing is lost), one that does not is reported disconnected and retried with back-off.
    """

    def __init__(self, host: str, silence: float = 60.0, problems: Problems | None = None,
                 retry: tuple[float, float] = (1.0, MAX_BACKOFF),
                 store: StateStore | None = None) -> None:
        super().__init__(silence, problems, retry, store)
        # A connect or ping that takes longer than the silence allowed is as good as none.
        self.engine = Engine(host, timeout=min(30.0, silence))
        self.pulls = self.counter.pulls
        self._last_nano = 0
        self._seen_at_last: set[tuple[str, str]] = set()

    def handle(self, event: Mapping[str, Any]) -> bool:
        """Count one event unless it was already counted; says whether it counted."""
        if event.get("Type") != "image" or event.get("Action") != "pull":
            return False
        nano = event.get("timeNano")
        if not isinstance(nano, int):
            nano = int(event.get("time", 0) or 0) * 1_000_000_000
        actor = event.get("Actor") if isinstance(event.get("Actor"), Mapping) else {}
        key = (str(actor.get("ID", "")), str(event.get("id", "")))
        with self._lock:
            if nano < self._last_nano or (nano == self._last_nano and key in self._seen_at_last):
                return False
            if nano > self._last_nano:
                self._last_nano, self._seen_at_last = nano, set()
            self._seen_at_last.add(key)
        return self.counter.count(repository_of(event), tag_of(event), nano / 1e9)

    def _since(self) -> str:
        with self._lock:
            nano = self._last_nano or int(self.started * 1_000_000_000)
        return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"

    def _close(self) -> None:
        self.engine.close()

    def _stream_once(self, failures: int) -> None:
        """Connect, count events until the stream goes silent or ends, then make sure the
        engine still answers (raising when it does not)."""
        started = time.monotonic()
        stream = self.engine.events(self._since(), {"type": ["image"], "event": ["pull"]},
                                    self.silence)
        try:
            self._connected_now(time.monotonic() - started, failures)
            try:
                for event in stream:
                    if isinstance(event, Mapping):
                        self.handle(event)
                    if self._stop.is_set():
                        return
            except Exception as exc:  # silent for too long, or the connection broke
                log.debug("event stream interrupted: %s", exc)
        finally:
            # The stream's socket is not the pool's: close it here, or each reconnect
            # leaves one behind until the garbage collector finds it.
            with contextlib.suppress(Exception):
                stream.close()
        if not self._stop.is_set():
            # On new connections: a pooled one may be as dead as the stream's was.
            self.engine.close()
            self.engine.ping()  # raises EngineError when the engine does not answer
