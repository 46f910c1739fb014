"""The request policy: whether and when a request to a registry may go.

Every request to a registry and its token server, from every feature (drift HEADs and
GETs, tag lists, referrers, signature lookups, candidate manifests, the fleet checker), is
admitted here first; features decide what to ask, never whether or when. The policy owns,
per registry:

- health: after a timeout, a refused connection, a TLS failure, a 5xx or a 429 the
  registry is left alone for ``Retry-After`` or a back-off doubling from 30 s up to 1 h,
  and a registry in back-off costs zero requests until its time is up;
- concurrency: at most ``per_host`` requests in flight to one registry, ``concurrency`` in
  all, so one slow registry cannot take every slot;
- deadlines: connect, headers and body of one request end within ``timeout``, whatever the
  peer trickles (see ``transport``);
- the request counters and the rate-limit headers last answered.

Body caps are given per request by the client (``transport``: bodies are read capped).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from exporter import backoff
from exporter.registry import transport
from exporter.registry.manifest import RegistryError

log = logging.getLogger(__name__)

# Reasons after which the registry as a whole is left alone for a while.
BLOCKING = frozenset({"rate_limited", "timeout", "unreachable", "server_error", "tls_error",
                      "token_error"})
MIN_BACKOFF = 30.0
# The longest a failing registry is left alone without a Retry-After: once it answers again,
# drift is known again within minutes (one request per registry per wait is all it costs).
MAX_BACKOFF = 300.0


def parse_retry_after(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from delay-seconds or an HTTP date; None when absent or invalid."""
    if not header:
        return None
    header = header.strip()
    if header.isascii() and header.isdigit():
        return float(min(int(header), 86400))
    try:
        when = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, min(when - (time.time() if now is None else now), 86400.0))


@dataclass
class _Host:
    slots: threading.BoundedSemaphore
    failures: int = 0
    blocked_until: float = 0.0  # clock()
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Counters:
    """What the registries answered so far, copied under the policy's lock."""

    ratelimits: tuple[tuple[str, int | None, int | None], ...] = ()
    requests: tuple[tuple[tuple[str, str, str], int], ...] = ()
    digest_fallbacks: tuple[tuple[str, int], ...] = ()


@dataclass
class RequestPolicy:
    concurrency: int = 32
    per_host: int = 16
    timeout: float = 10.0  # the deadline of one whole request
    # In-memory deadlines (back-off, retry_at) on the monotonic clock: a wall clock stepped
    # back would stretch every back-off, one stepped forward end them all at once.
    clock: Callable[[], float] = time.monotonic
    _hosts: dict[str, _Host] = field(default_factory=dict)
    _requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _fallbacks: Counter[str] = field(default_factory=Counter)
    _ratelimits: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._all = threading.BoundedSemaphore(self.concurrency)

    def _host(self, host: str) -> _Host:
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                state = self._hosts[host] = _Host(threading.BoundedSemaphore(self.per_host))
            return state

    def blocked(self, host: str) -> tuple[float, str] | None:
        """(until when, why) while the registry is left alone; None when it may be asked."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None or state.blocked_until <= self.clock():
                return None
            return state.blocked_until, state.reason

    def refuse_if_blocked(self, host: str) -> None:
        """Raise RegistryError (with ``retry_at``) while the registry is in back-off."""
        blocked = self.blocked(host)
        if blocked is not None:
            until, reason = blocked
            raise RegistryError(reason, f"{host}: left alone for {until - self.clock():.0f}s "
                                "more", retry_at=until)

    @contextlib.contextmanager
    def admit(self, host: str) -> Iterator[None]:
        """Hold a slot for one request to ``host``, within its deadline.

        Refuses at once (RegistryError with ``retry_at``) while the registry is in back-off,
        also when it went into back-off while this request waited for a slot.
        """
        self.refuse_if_blocked(host)
        state = self._host(host)
        with transport.deadline(self.timeout) as when:
            # No free slot in time is our own queue, not the registry failing: the refusal
            # says when to try again, so the registry is not put in back-off for it.
            if not state.slots.acquire(timeout=max(0.0, when - time.monotonic())):
                raise RegistryError("timeout", f"{host}: no free request slot in time",
                                    retry_at=self.clock())
            try:
                if not self._all.acquire(timeout=max(0.0, when - time.monotonic())):
                    raise RegistryError("timeout", f"{host}: no free request slot in time",
                                        retry_at=self.clock())
                try:
                    self.refuse_if_blocked(host)
                    yield
                finally:
                    self._all.release()
            finally:
                state.slots.release()

    def succeeded(self, host: str) -> None:
        """The registry answered: whatever back-off it was in is over."""
        with self._lock:
            state = self._hosts.get(host)
            if state is not None and state.failures:
                log.info("registry %s answers again after %d failures", host, state.failures)
                state.failures, state.reason, state.detail = 0, "", ""

    def failed(self, host: str, error: RegistryError) -> None:
        """Leave the registry alone for a while after a failure of the registry itself."""
        if error.reason not in BLOCKING:
            return
        state = self._host(host)
        with self._lock:
            now = self.clock()
            if state.blocked_until > now:
                return  # a request that was already in flight: the back-off stands
            state.failures += 1
            wait = error.retry_after if error.retry_after is not None else backoff.delay(
                state.failures, MIN_BACKOFF, MAX_BACKOFF)
            state.blocked_until = now + backoff.jittered(wait, 1.0, 1.1)
            state.reason, state.detail = error.reason, str(error)
            first = state.failures == 1
        if first:
            log.warning("%s: %s; leaving it alone for %.0fs", host, error, wait)

    def send(self, http: httpx.Client, host: str, method: str, url: str, max_bytes: int,
             **kwargs: Any) -> httpx.Response:
        """One request to an API (Docker Hub's, Harbor's) under this policy: admitted, within
        the deadline, body capped, counted; 429 (with its Retry-After), 5xx and transport
        failures put the host in back-off. Raises RegistryError when there is no answer."""
        try:
            with self.admit(host):
                response = transport.fetch(http, method, url, max_bytes, **kwargs)
        except transport.TooLarge as exc:
            self.count(host, method, "error")
            raise RegistryError("bad_response", str(exc)) from None
        except httpx.TimeoutException:
            self.count(host, method, "timeout")
            error = RegistryError("timeout", f"{host}: no whole answer within "
                                  f"{self.timeout:g}s")
            self.failed(host, error)
            raise error from None
        except httpx.HTTPError as exc:
            self.count(host, method, "error")
            error = RegistryError("unreachable", f"{host}: connect: {transport.why(exc)}")
            self.failed(host, error)
            raise error from None
        self.count(host, method, str(response.status_code))
        if response.status_code == 429:
            self.failed(host, RegistryError(
                "rate_limited", f"{host} answered 429",
                parse_retry_after(response.headers.get("retry-after"))))
        elif response.status_code >= 500:
            self.failed(host, RegistryError("server_error",
                                            f"{host} answered {response.status_code}"))
        else:
            self.succeeded(host)
        return response

    # -- counters ----------------------------------------------------------------------------

    def count(self, host: str, method: str, code: str) -> None:
        with self._lock:
            self._requests[(host, method, code)] += 1

    def fallback(self, host: str) -> None:
        with self._lock:
            self._fallbacks[host] += 1

    def ratelimit(self, host: str, limit: int | None, remaining: int | None) -> None:
        if limit is not None or remaining is not None:
            with self._lock:
                self._ratelimits[host] = (limit, remaining)

    def counters(self) -> Counters:
        with self._lock:
            return Counters(
                tuple(sorted((h, lim, rem) for h, (lim, rem) in self._ratelimits.items())),
                tuple(sorted(self._requests.items())), tuple(sorted(self._fallbacks.items())))
