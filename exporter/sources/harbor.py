"""Harbor per-repository pull counts, for the projects named in the config.

Harbor counts pulls itself; this reads ``pull_count`` from its repository list, page by
page, and keeps the last good values of a project whose read failed. The ``registry`` label
is the URL's host and port, never its user-info; a series' count never goes lower than it
was published (Prometheus would read that as a reset), and past MAX_SERIES repositories fold
into ``_other`` per project (pulls summed).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import urlparse

from exporter.config import HarborInstance, redact_url
from exporter.registry import transport
from exporter.registry.manifest import RegistryError
from exporter.registry.policy import RequestPolicy, parse_retry_after
from exporter.snapshots import HarborRepository, HarborSnapshot
from exporter.sources.loop import SourceError

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_PAGES = 100  # 10,000 repositories per project at most
MAX_BODY = 4 * 1024 * 1024
MAX_SERIES = 5000  # repositories with a series of their own; the rest fold into "_other"
OTHER = "_other"


class HarborError(SourceError):
    pass


def registry_label(url: str) -> str:
    """The ``registry`` label of a Harbor URL: its host and port, never its user-info."""
    return urlparse(url).netloc.rpartition("@")[2]


class HarborReader:
    def __init__(self, instances: tuple[HarborInstance, ...], timeout: float = 10.0,
                 policy: RequestPolicy | None = None) -> None:
        self.instances = instances
        # Requests go through the request policy: a deadline on the whole request, a body
        # cap while it streams, back-off after 429 (Retry-After), 5xx or no answer.
        self.policy = policy or RequestPolicy(timeout=timeout)
        self.client = transport.client(self.policy.timeout,
                                       headers={"Accept": "application/json"})
        self._known: dict[tuple[str, str], list[HarborRepository]] = {}
        self._highest: dict[tuple[str, str, str], int] = {}  # the highest count published
        self._lowered: set[tuple[str, str, str]] = set()  # series whose decrease was logged
        self._cut: set[tuple[str, str]] = set()  # projects whose listing MAX_PAGES cut

    def read(self) -> HarborSnapshot:
        failures, attempts, last_error = 0, 0, ""
        for instance in self.instances:
            registry = registry_label(instance.url)
            auth = (instance.username, instance.password) if instance.username else None
            for project in instance.projects:
                attempts += 1
                try:
                    self._known[(registry, project)] = self._project(instance, registry,
                                                                     project, auth)
                except (HarborError, RegistryError) as exc:
                    failures, last_error = failures + 1, redact_url(
                        f"{registry}/{project}: {exc}")
        if attempts and failures == attempts:
            raise HarborError(last_error)
        if failures:
            log.warning("harbor: %d of %d projects failed; last: %s", failures, attempts,
                        last_error)
        return HarborSnapshot(self._folded())

    def _folded(self) -> tuple[HarborRepository, ...]:
        """The first MAX_SERIES repositories (by registry, project, name) keep their own
        series; the rest fold into (registry, project, "_other") with their pulls summed.
        No series is published lower than before."""
        rows = sorted((r for repos in self._known.values() for r in repos),
                      key=lambda r: (r.registry, r.project, r.repository))
        own, other = rows[:MAX_SERIES], {}
        for r in rows[MAX_SERIES:]:
            key = (r.registry, r.project)
            other[key] = other.get(key, 0) + r.pulls
        own += [HarborRepository(reg, project, OTHER, pulls)
                for (reg, project), pulls in sorted(other.items())]
        out = tuple(dataclasses.replace(r, pulls=self._never_lower(r)) for r in own)
        for gone in set(self._highest) - {(r.registry, r.project, r.repository) for r in out}:
            del self._highest[gone]
            self._lowered.discard(gone)
        return out

    def _never_lower(self, r: HarborRepository) -> int:
        series = (r.registry, r.project, r.repository)
        highest = self._highest.get(series, 0)
        if r.pulls >= highest:
            self._highest[series] = r.pulls
            return r.pulls
        if series not in self._lowered:
            self._lowered.add(series)
            log.warning("Harbor %s now counts %d pulls of %s/%s, fewer than the %d it counted "
                        "before; docker_harbor_repository_pulls_total stays at %d until the "
                        "count is higher (a counter never goes down)", r.registry, r.pulls,
                        r.project, r.repository, highest, highest)
        return highest

    def _project(self, instance: HarborInstance, registry: str, project: str,
                 auth: tuple[str, str] | None) -> list[HarborRepository]:
        out: list[HarborRepository] = []
        for page in range(1, MAX_PAGES + 1):
            r = self.policy.send(
                self.client, registry, "GET",
                f"{instance.url}/api/v2.0/projects/{project}/repositories", MAX_BODY,
                params={"page": page, "page_size": PAGE_SIZE}, auth=auth)
            if r.status_code == 429:
                wait = parse_retry_after(r.headers.get("retry-after"))
                raise HarborError(f"rate limited (retry after {wait}s)")
            if r.status_code != 200:
                raise HarborError(f"HTTP {r.status_code}")
            try:
                items: Any = r.json()
            except ValueError:
                raise HarborError("answer is not JSON") from None
            if not isinstance(items, list):
                raise HarborError("answer is not a list")
            for item in items:
                if not isinstance(item, dict):
                    continue
                name, pulls = item.get("name"), item.get("pull_count")
                if not isinstance(name, str) or not isinstance(pulls, int) or pulls < 0:
                    continue
                out.append(HarborRepository(registry, project,
                                            name.removeprefix(f"{project}/"), pulls))
            total = r.headers.get("x-total-count", "")
            more = 'rel="next"' in r.headers.get("link", "")
            if total.isascii() and total.isdigit():
                more = page * PAGE_SIZE < int(total)
            if not more or len(items) < PAGE_SIZE:
                self._cut.discard((registry, project))
                return out
        if (registry, project) not in self._cut:
            self._cut.add((registry, project))
            log.warning("harbor: %s/%s has more than %d repositories; reading the first %d",
                        registry, project, MAX_PAGES * PAGE_SIZE, MAX_PAGES * PAGE_SIZE)
        return out

    def close(self) -> None:
        self.client.close()
