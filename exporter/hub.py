"""Docker Hub repository statistics from the Hub API: pulls, stars, last update.

The Hub API has its own rate limit (X-RateLimit-Remaining, and 429 with Retry-After); a
cycle stops early when it is spent and keeps the last values it had, so series do not
flap. Repositories that failed keep their last good values too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from exporter import __version__, reference
from exporter.readers import parse_timestamp
from exporter.refresh import Source
from exporter.registry import parse_retry_after
from exporter.snapshots import EngineSnapshot

log = logging.getLogger("exporter.hub")

MAX_BODY = 1024 * 1024
MAX_REPOSITORIES = 2000


@dataclass(frozen=True)
class HubRepository:
    repository: str  # namespace/name, e.g. library/nginx
    pulls: int
    stars: int
    last_updated: float | None


@dataclass(frozen=True)
class HubSnapshot:
    repositories: tuple[HubRepository, ...]


class HubError(Exception):
    pass


def hub_repository(text: str) -> str | None:
    """"nginx" -> "library/nginx"; None for references outside Docker Hub."""
    try:
        ref = reference.parse(text, default_tag=None)
    except reference.ReferenceError:
        return None
    return ref.path if ref.domain == reference.DOCKER_HUB else None


class HubReader:
    def __init__(self, url: str, repositories: tuple[str, ...], local_images: bool,
                 engine: Source[EngineSnapshot], username: str, password: str,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.configured = [r for r in (hub_repository(x) for x in repositories) if r]
        self.local_images = local_images
        self.engine = engine
        self.username, self._password = username, password
        self.client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False,
                                   headers={"User-Agent": f"docker-hygiene-exporter/{__version__}",
                                            "Accept": "application/json"})
        self._known: dict[str, HubRepository] = {}
        self._blocked_until = 0.0

    def wanted(self) -> list[str]:
        names = set(self.configured)
        snap = self.engine.snapshot
        if self.local_images and snap is not None:
            for image in snap.images:
                for tag in image.tags:
                    repo = hub_repository(tag)
                    if repo:
                        names.add(repo)
        return sorted(names)[:MAX_REPOSITORIES]

    def _token(self) -> str | None:
        if not self.username or not self._password:
            return None
        r = self.client.post(f"{self.url}/v2/auth/token",
                             json={"identifier": self.username, "secret": self._password})
        if r.status_code != 200:
            raise HubError(f"Hub login answered {r.status_code}")
        token = r.json().get("access_token")
        if not isinstance(token, str) or not token:
            raise HubError("Hub login answered without an access_token")
        return token

    def read(self) -> HubSnapshot:
        if self.engine.snapshot is None:
            self.engine.ready.wait(30)
        wanted = self.wanted()
        for gone in set(self._known) - set(wanted):
            del self._known[gone]
        if time.time() < self._blocked_until:
            raise HubError(f"rate limited for {self._blocked_until - time.time():.0f}s more")
        failures, last_error = 0, ""
        headers = {}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for name in wanted:
            namespace, _, repo = name.partition("/")
            try:
                r = self.client.get(
                    f"{self.url}/v2/namespaces/{namespace}/repositories/{repo}", headers=headers)
            except httpx.HTTPError as exc:
                failures, last_error = failures + 1, f"{type(exc).__name__}"
                continue
            if r.status_code == 429:
                wait = parse_retry_after(r.headers.get("retry-after")) or 60.0
                self._blocked_until = time.time() + wait
                raise HubError(f"Hub API rate limit: retry after {wait:.0f}s")
            if r.status_code != 200 or len(r.content) > MAX_BODY:
                failures, last_error = failures + 1, f"HTTP {r.status_code} for {name}"
                continue
            parsed = self._parse(name, r)
            if parsed is None:
                failures, last_error = failures + 1, f"unexpected JSON for {name}"
                continue
            self._known[name] = parsed
            remaining = r.headers.get("x-ratelimit-remaining", "")
            if remaining.isdigit() and int(remaining) == 0:
                reset = r.headers.get("x-ratelimit-reset", "")
                self._blocked_until = float(reset) if reset.isdigit() else time.time() + 60
                log.warning("Hub API rate limit spent; resuming at %s", self._blocked_until)
                break
        if wanted and failures == len(wanted):
            raise HubError(f"every Hub request failed; last: {last_error}")
        return HubSnapshot(tuple(self._known[n] for n in sorted(self._known)))

    @staticmethod
    def _parse(name: str, response: httpx.Response) -> HubRepository | None:
        try:
            doc: Any = response.json()
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        pulls, stars = doc.get("pull_count"), doc.get("star_count")
        if not isinstance(pulls, int) or isinstance(pulls, bool) or pulls < 0:
            return None
        return HubRepository(name, pulls, stars if isinstance(stars, int) else 0,
                             parse_timestamp(doc.get("last_updated")))

    def close(self) -> None:
        self.client.close()
