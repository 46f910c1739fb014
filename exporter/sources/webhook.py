"""Pull and push counts for CNCF Distribution registries, from their notifications.

A pull is counted the way Docker Hub defines one: a GET of a manifest or index, by tag or by
digest. Blob fetches are not pulls, HEADs are checks (this exporter's own upstream checks are
HEADs), and an index GET followed by the GET of a platform manifest from the same client in
the same repository within a few seconds is one pull. A push is a manifest PUT. Redelivered
events (same id) count once.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from exporter.registry.manifest import INDEX_TYPES
from exporter.registry.manifest import MANIFEST_TYPES as CURRENT_MANIFEST_TYPES
from exporter.timestamps import parse_timestamp

# Old clients still push and pull schema 1 manifests: they are pulls and pushes too.
MANIFEST_TYPES = CURRENT_MANIFEST_TYPES | {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}
CONTENT_TYPES = frozenset({
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
})
MAX_BODY = 1024 * 1024
MAX_EVENTS = 10_000
MAX_SERIES = 5000
OTHER = "_other"
INDEX_WINDOW = 5.0  # seconds within which an index GET and its platform GET are one pull
SEEN_IDS = 100_000


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, Mapping) else None
    return doc


class DistributionWebhook:
    def __init__(self, secret: str, registry_names: Mapping[str, str]) -> None:
        self._secret = secret.encode()
        self.registry_names = dict(registry_names)
        self.pulls: Counter[tuple[str, str]] = Counter()
        self.pushes: Counter[tuple[str, str]] = Counter()
        self.responses: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._index_gets: dict[tuple[str, str, str], float] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def authorized(self, header: str | None) -> bool:
        return hmac.compare_digest((header or "").encode(), self._secret)

    def respond(self, code: int) -> int:
        with self._lock:
            self.responses[str(code)] += 1
        return code

    def handle(self, authorization: str | None, content_type: str | None,
               body: bytes) -> tuple[int, str]:
        """Check and count one delivery; the status code and a short message to answer."""
        if not self.authorized(authorization):
            return self.respond(401), "wrong or missing Authorization"
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in CONTENT_TYPES:
            return self.respond(415), "expected application/vnd.docker.distribution.events"
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return self.respond(400), "body is not JSON"
        events = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(events, list) or len(events) > MAX_EVENTS:
            return self.respond(400), "body is not an envelope of events"
        with self._lock:
            for event in events:
                if isinstance(event, Mapping):
                    self._count(event)
            self.responses["200"] += 1
        return 200, "ok"

    def _label(self, counter: Counter[tuple[str, str]], registry: str,
               repository: str) -> tuple[str, str]:
        key = (registry, repository)
        if key not in counter and len(counter) >= MAX_SERIES:
            return (registry if len({r for r, _ in counter}) < MAX_SERIES else OTHER, OTHER)
        return key

    def _count(self, event: Mapping[str, Any]) -> None:
        event_id = event.get("id")
        if isinstance(event_id, str) and event_id:
            if event_id in self._seen:
                return
            self._seen[event_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
        action = event.get("action")
        method = _get(event, "request", "method")
        media = _get(event, "target", "mediaType")
        repository = _get(event, "target", "repository")
        host = _get(event, "request", "host")
        if not isinstance(repository, str) or not repository or not isinstance(host, str):
            return
        if media not in INDEX_TYPES and media not in MANIFEST_TYPES:
            return  # blobs: layers and configs are not pulls or pushes
        registry = self.registry_names.get(host, host)
        if action == "push" and method == "PUT":
            self.pushes[self._label(self.pushes, registry, repository)] += 1
            return
        if action != "pull" or method != "GET":
            return  # HEADs are checks, not pulls
        when = parse_timestamp(event.get("timestamp")) or time.time()
        addr = _get(event, "request", "addr")
        client = addr.rsplit(":", 1)[0] if isinstance(addr, str) else ""
        key = (client, registry, repository)
        if media in INDEX_TYPES:
            self._index_gets[key] = when
        else:
            index_at = self._index_gets.pop(key, None)
            if index_at is not None and 0 <= when - index_at <= INDEX_WINDOW:
                return  # the platform manifest of an index pull just counted
        self.pulls[self._label(self.pulls, registry, repository)] += 1
        if len(self._index_gets) > MAX_SERIES:
            cutoff = when - INDEX_WINDOW
            self._index_gets = {k: t for k, t in self._index_gets.items() if t >= cutoff}

    def snapshot(self) -> tuple[list[tuple[tuple[str, str], int]],
                                list[tuple[tuple[str, str], int]], list[tuple[str, int]]]:
        with self._lock:
            return (sorted(self.pulls.items()), sorted(self.pushes.items()),
                    sorted(self.responses.items()))
