"""Pulls on a containerd node (the kubelet's CRI), from containerd's own event stream.

containerd's event stream says nothing like "pulled". What a CRI PullImage does to the image
store was measured on containerd 1.6 (namespace ``k8s.io``; create or update depending on
whether the record existed, every event labelled ``io.cri-containerd.image=managed``):

- a tag:        ``reg/app:1``, ``sha256:<config>``, ``reg/app:1``, ``reg/app@sha256:<manifest>``
- by digest:    ``reg/app@sha256:<m>``, ``sha256:<config>``, ``reg/app@sha256:<m>``

so exactly one event per pull names the image-ID record (``sha256:`` and 64 hex digits),
changed image or not, and the event just before it names what was pulled. CRI also writes
an ID record when something else adds an image to its namespace (``ctr images import``,
``ctr images pull``), but then the event before it is not labelled ``managed``: those are
not counted, and neither is a ``ctr images tag`` (no ID record). Should two CRI pulls end
at the same instant (``serializeImagePulls: false``), their events may interleave and one
pull may be counted under the other's repository or not at all.

containerd cannot replay events: pulls that happen while the stream is disconnected (the
daemon restarting) are not counted. A stream silent for ``silence`` seconds is checked with
containerd's Version call, so a daemon that no longer answers shows as disconnected.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from exporter import reference
from exporter.sources import containerd_api as api
from exporter.sources.events import MAX_BACKOFF, HeldStream
from exporter.sources.loop import Problems, SourceError
from exporter.state import StateStore

log = logging.getLogger(__name__)

KUBELET_NAMESPACE = "k8s.io"
TOPICS = frozenset({"/images/create", "/images/update"})
MANAGED_LABEL = "io.cri-containerd.image"  # CRI's label on the images it manages
_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


class PullSequences:
    """Finds CRI pulls in one namespace's image create/update events, in stream order: the
    name of the image-ID record's event is a pull of the reference named just before it,
    when CRI labelled that one as its own."""

    def __init__(self) -> None:
        self._candidate: str | None = None

    def feed(self, name: str, labels: Mapping[str, str]) -> str | None:
        """The reference pulled, when this event completes a pull; else None."""
        if _IMAGE_ID.fullmatch(name):
            pulled, self._candidate = self._candidate, None
            return pulled
        self._candidate = name if labels.get(MANAGED_LABEL) == "managed" else None
        return None


def names(pulled: str) -> tuple[str | None, str | None]:
    """The repository (engine's short form) and the tag ("repo:tag", None for a pull by
    digest) a pulled reference names; (None, None) when it is not a reference."""
    try:
        ref = reference.parse(pulled, default_tag=None)
    except reference.ReferenceError:
        return None, None
    return ref.familiar_name, ref.familiar() if ref.tag and not ref.digest else None


@dataclass(frozen=True)
class _Ended:
    """The stream ended: normally (``error`` None) or with a gRPC error."""

    error: Exception | None


def _read(call: Any, out: queue.Queue[Any]) -> None:
    """Move the stream's envelopes to ``out`` (its own thread: a gRPC stream read cannot
    time out, and a silent stream must be checked)."""
    try:
        for envelope in call:
            out.put(envelope)
        out.put(_Ended(None))
    except Exception as exc:  # the call was cancelled, or the connection broke
        out.put(_Ended(exc))


class ContainerdEvents(HeldStream):
    """Counts CRI image pulls from containerd's event stream; the same interface as
    ``EventStream`` (counts, pulled_repositories, pull_times, status, start, join).

    ``endpoint`` is containerd's socket as gRPC names it (``unix:///run/containerd/
    containerd.sock``; a bare path is taken as one). The events are containerd's native
    ``containerd.services.events.v1.Events/Subscribe`` (CRI has no event stream of pulls).
    """

    what = "containerd event stream"

    def __init__(self, endpoint: str, namespace: str = KUBELET_NAMESPACE,
                 silence: float = 60.0, problems: Problems | None = None,
                 retry: tuple[float, float] = (1.0, MAX_BACKOFF),
                 store: StateStore | None = None) -> None:
        super().__init__(silence, problems, retry, store)
        self.endpoint = f"unix://{endpoint}" if endpoint.startswith("/") else endpoint
        self.namespace = namespace
        # A call that takes longer than the silence allowed is as good as none.
        self.timeout = min(30.0, silence)
        self._sequences = PullSequences()
        self._channel: grpc.Channel | None = None

    def _connecting(self) -> None:
        # Events missed while disconnected cannot be read: a half-seen pull is none.
        self._sequences = PullSequences()

    def handle(self, envelope: Any) -> bool:
        """Feed one event envelope; says whether it completed (and counted) a pull."""
        if envelope.namespace != self.namespace or envelope.topic not in TOPICS:
            return False
        event = api.ImageEvent.FromString(envelope.event.value)
        with self._lock:
            pulled = self._sequences.feed(event.name, event.labels)
        if pulled is None:
            return False
        when = envelope.timestamp.ToNanoseconds() / 1e9 if envelope.HasField("timestamp") \
            else time.time()
        repository, tag = names(pulled)
        return self.counter.count(repository, tag, when)

    def _ask(self, channel: grpc.Channel) -> str:
        """containerd's version, or SourceError when it does not answer."""
        version = channel.unary_unary(api.VERSION, request_serializer=lambda _: b"",
                                      response_deserializer=api.VersionResponse.FromString)
        try:
            return str(version(None, timeout=self.timeout).version)
        except grpc.RpcError as exc:
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            cause = f"{self.endpoint}: {details}"
            raise SourceError(f"containerd does not answer: {cause}", cause) from None

    def _stream_once(self, failures: int) -> None:
        """Subscribe, count events until the stream ends, then make sure containerd still
        answers (raising when it does not); a silent stream is checked every ``silence``."""
        # A new channel each time: gRPC's own reconnect back-off (up to two minutes) would
        # otherwise hold a restarted daemon's socket at arm's length.
        channel = grpc.insecure_channel(self.endpoint)
        with self._lock:
            self._channel = channel
        if self._stop.is_set():
            return
        started = time.monotonic()
        subscribe = channel.unary_stream(
            api.SUBSCRIBE, request_serializer=api.SubscribeRequest.SerializeToString,
            response_deserializer=api.Envelope.FromString)
        call = subscribe(api.SubscribeRequest(
            filters=[f'namespace=="{self.namespace}",topic~="/images/"']))
        try:
            envelopes: queue.Queue[Any] = queue.Queue()
            threading.Thread(target=_read, args=(call, envelopes), daemon=True,
                             name="source-events-read").start()
            version = self._ask(channel)
            self.what = f"containerd {version} event stream"
            self._connected_now(time.monotonic() - started, failures)
            while not self._stop.is_set():
                try:
                    item = envelopes.get(timeout=self.silence)
                except queue.Empty:
                    self._ask(channel)  # silent: still there?
                    continue
                if isinstance(item, _Ended):
                    log.debug("containerd event stream ended: %s", item.error)
                    break
                try:
                    self.handle(item)
                except Exception:  # one bad event is no reason to drop the stream
                    log.exception("containerd event could not be read; going on")
        finally:
            call.cancel()
        if not self._stop.is_set():
            self._ask(channel)

    def _close(self) -> None:
        with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()
