"""Harbor per-repository pull counts, for the projects named in the config.

Harbor counts pulls itself; this reads ``pull_count`` from its repository list, page by
page, and keeps the last good values of a project whose read failed.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import httpx

from exporter import __version__
from exporter.config import HarborInstance
from exporter.registry.client import parse_retry_after
from exporter.snapshots import HarborRepository, HarborSnapshot
from exporter.sources.loop import SourceError

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MAX_PAGES = 100  # 10,000 repositories per project at most
MAX_BODY = 4 * 1024 * 1024


class HarborError(SourceError):
    pass


class HarborReader:
    def __init__(self, instances: tuple[HarborInstance, ...], timeout: float = 10.0) -> None:
        self.instances = instances
        self.client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False,
                                   headers={"User-Agent": f"docker-hygiene-exporter/{__version__}",
                                            "Accept": "application/json"})
        self._known: dict[tuple[str, str], list[HarborRepository]] = {}

    def read(self) -> HarborSnapshot:
        failures, attempts, last_error = 0, 0, ""
        for instance in self.instances:
            registry = urlparse(instance.url).netloc.rpartition("@")[2]  # no user-info
            auth = (instance.username, instance.password) if instance.username else None
            for project in instance.projects:
                attempts += 1
                try:
                    self._known[(registry, project)] = self._project(instance, registry,
                                                                     project, auth)
                except (HarborError, httpx.HTTPError) as exc:
                    failures, last_error = failures + 1, f"{registry}/{project}: {exc}"
        if attempts and failures == attempts:
            raise HarborError(last_error)
        if failures:
            log.warning("harbor: %d of %d projects failed; last: %s", failures, attempts,
                        last_error)
        rows = [r for repos in self._known.values() for r in repos]
        return HarborSnapshot(tuple(sorted(rows, key=lambda r: (r.registry, r.project,
                                                                r.repository))))

    def _project(self, instance: HarborInstance, registry: str, project: str,
                 auth: tuple[str, str] | None) -> list[HarborRepository]:
        out: list[HarborRepository] = []
        for page in range(1, MAX_PAGES + 1):
            r = self.client.get(f"{instance.url}/api/v2.0/projects/{project}/repositories",
                                params={"page": page, "page_size": PAGE_SIZE}, auth=auth)
            if r.status_code == 429:
                wait = parse_retry_after(r.headers.get("retry-after"))
                raise HarborError(f"rate limited (retry after {wait}s)")
            if r.status_code != 200 or len(r.content) > MAX_BODY:
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
                break
        return out

    def close(self) -> None:
        self.client.close()
