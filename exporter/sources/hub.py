"""Docker Hub's own API: repository pulls, stars and last update; tags with their push
times and platforms (for newer versions, without spending the registry's pull limit).

The Hub API has its own rate limit (X-RateLimit-Remaining, and 429 with Retry-After); one
HubAPI is shared by every reader, and once the limit is spent nothing is asked until it
resets. A cycle that stops early keeps the last values it had, so series do not flap.
Repositories that failed keep their last good values too.

Only repositories this host pulled from Docker Hub and those configured are named to it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from exporter import reference
from exporter.registry import transport
from exporter.registry.manifest import RegistryError
from exporter.registry.policy import RequestPolicy
from exporter.snapshots import EngineSnapshot, HubRepository, HubSnapshot
from exporter.sources.loop import Source, SourceError
from exporter.timestamps import parse_timestamp

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_REPOSITORIES = 2000  # series of their own; the rest fold into "_other"
MAX_TAGS = 2000  # local Docker Hub tags with a push-time series of their own; likewise
OTHER = "_other"
TAG_PAGE = 100  # the largest page_size the tags API takes
MAX_HUB_TAGS = 1000  # tags read per repository: the newest pushes, ten requests
TOKEN_SECONDS = 300.0


@dataclass(frozen=True)
class UpstreamTag:
    """One tag of a repository. ``platforms`` (os, architecture, variant, last_pushed) when
    the source says them, as the Hub API does; None when the registry must be asked."""

    name: str
    platforms: tuple[dict[str, Any], ...] | None
    pushed: float | None


class HubError(SourceError):
    pass


class HubRateLimited(HubError):
    pass


class HubAPI:
    """GETs against the Hub API with its login and its rate limit; thread-safe.

    Every request is admitted by the request policy (exporter/registry/policy.py) under the
    API's host: a deadline on the whole request, a body cap while it streams, and back-off.
    The Hub API's own limit feeds that back-off: a 429 blocks the host for its Retry-After,
    a spent ``X-RateLimit-Remaining`` until ``X-RateLimit-Reset``.
    """

    def __init__(self, url: str, username: str, password: str, timeout: float = 10.0,
                 policy: RequestPolicy | None = None) -> None:
        self.url = url
        self.username, self._password = username, password
        self.policy = policy or RequestPolicy(timeout=timeout)
        self.host = httpx.URL(url).netloc.decode("ascii", "replace").rpartition("@")[2]
        self.client = transport.client(self.policy.timeout,
                                       headers={"Accept": "application/json"})
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.policy.send(self.client, self.host, method, url, MAX_BODY, **kwargs)
        except RegistryError as exc:
            if exc.reason == "rate_limited":
                raise HubRateLimited(str(exc)) from None
            raise HubError(str(exc)) from None

    def _authorization(self, renew: bool) -> dict[str, str]:
        if not self.username or not self._password:
            return {}
        with self._lock:
            if renew or self._token is None or self._token[1] < time.monotonic():
                r = self._send("POST", f"{self.url}/v2/auth/token", json={
                    "identifier": self.username, "secret": self._password})
                if r.status_code != 200:
                    raise HubError(f"{self.host}: login answered {r.status_code}")
                try:
                    token = r.json().get("access_token")
                except (ValueError, AttributeError, RecursionError):
                    token = None
                if not isinstance(token, str) or not token:
                    raise HubError(f"{self.host}: login answered without an access_token")
                self._token = (token, time.monotonic() + TOKEN_SECONDS)
            return {"Authorization": f"Bearer {self._token[0]}"}

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """GET ``path`` (under the API's URL); 200 answers and errors alike are returned,
        but a spent rate limit raises HubRateLimited."""
        for renew in (False, True):
            r = self._send("GET", self.url + path, params=params,
                           headers=self._authorization(renew))
            if r.status_code != 401 or not self.username:
                break
        if r.status_code == 429:  # the policy leaves the API alone for its Retry-After
            raise HubRateLimited(f"{self.host}: rate limited (429)")
        remaining = r.headers.get("x-ratelimit-remaining", "")
        if remaining.isascii() and remaining.isdigit() and int(remaining) == 0:
            reset = r.headers.get("x-ratelimit-reset", "")
            known = reset.isascii() and reset.isdigit()
            wait = max(1.0, float(reset) - time.time()) if known else 60.0
            self.policy.failed(self.host, RegistryError("rate_limited", retry_after=wait))
            log.warning("%s: rate limit spent; resuming in %.0fs", self.host, wait)
        return r

    def tags(self, repository: str, limit: int) -> tuple[list[UpstreamTag], bool]:
        """The repository's tags, newest push first, with their platforms; at most ``limit``
        and MAX_HUB_TAGS, which spares the Hub API's rate limit: new versions are pushed
        last, so they are in the first pages."""
        cap = min(limit, MAX_HUB_TAGS)
        namespace, _, name = repository.partition("/")
        out: list[UpstreamTag] = []
        page = 1
        while True:
            r = self.get(f"/v2/namespaces/{namespace}/repositories/{name}/tags",
                         {"page": page, "page_size": TAG_PAGE})
            if r.status_code != 200:
                raise HubError(f"tags of {repository}: HTTP {r.status_code}")
            try:
                doc = r.json()
            except ValueError:
                doc = None
            results = doc.get("results") if isinstance(doc, dict) else None
            if not isinstance(results, list):
                raise HubError(f"tags of {repository}: unexpected JSON")
            out.extend(t for t in map(_upstream_tag, results) if t is not None)
            if len(out) >= cap:
                return out[:cap], cap == limit  # cut by versions.max_tags, not by design
            if not doc.get("next") or not results:
                return out, False
            page += 1

    def tag_pushed(self, repository: str, tag: str) -> float | None:
        namespace, _, name = repository.partition("/")
        r = self.get(f"/v2/namespaces/{namespace}/repositories/{name}/tags/{tag}")
        if r.status_code != 200:
            return None
        try:
            doc = r.json()
        except ValueError:
            return None
        return parse_timestamp(doc.get("tag_last_pushed")) if isinstance(doc, dict) else None

    def close(self) -> None:
        self.client.close()


def _upstream_tag(doc: Any) -> UpstreamTag | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        return None
    platforms = []
    for image in doc.get("images") or []:
        if isinstance(image, dict) and image.get("status", "active") == "active":
            platforms.append({"os": image.get("os"), "architecture": image.get("architecture"),
                              "variant": image.get("variant") or "",
                              "last_pushed": parse_timestamp(image.get("last_pushed"))})
    return UpstreamTag(doc["name"], tuple(platforms),
                       parse_timestamp(doc.get("tag_last_pushed")))


def hub_repository(text: str) -> str | None:
    """"nginx" -> "library/nginx"; None for references outside Docker Hub."""
    try:
        ref = reference.parse(text, default_tag=None)
    except reference.ReferenceError:
        return None
    return ref.path if ref.domain == reference.DOCKER_HUB else None


class HubReader:
    """Reads what Docker Hub says of the repositories this host pulled from it and of those
    configured, and only of those: a name is never told to Docker Hub unless an image here
    came from there (a docker.io RepoDigest) or the configuration names it."""

    def __init__(self, api: HubAPI, repositories: tuple[str, ...], local_images: bool,
                 engine: Source[EngineSnapshot]) -> None:
        self.api = api
        self.configured = list(dict.fromkeys(
            r for r in (hub_repository(x) for x in repositories) if r))
        self.local_images = local_images
        self.engine = engine
        self._known: dict[str, HubRepository] = {}
        self._pushed: dict[str, float] = {}
        self._highest: dict[str, int] = {}  # series -> the highest pull count published
        self._lowered: set[str] = set()  # series whose decrease upstream was logged

    def pulled(self) -> tuple[list[str], list[tuple[str, str, str]]]:
        """The Docker Hub repositories local images were pulled from (the image carries a
        docker.io RepoDigest for it), and the local tags of those repositories on such
        images: (short reference, repository, tag). In the classic image store a local build
        has no RepoDigest, so ``docker build -t mycorp/secret-app`` is never named to Docker
        Hub (the containerd store gives every tag one: see the docs' Security section)."""
        snap = self.engine.snapshot
        repositories: set[str] = set()
        tags: set[tuple[str, str, str]] = set()
        for image in snap.images if snap is not None and self.local_images else ():
            came_from = {r for r in (hub_repository(d.partition("@")[0])
                                     for d in image.repo_digests) if r}
            repositories |= came_from
            for text in image.tags:
                try:
                    ref = reference.parse(text)
                except reference.ReferenceError:
                    continue
                if ref.domain == reference.DOCKER_HUB and ref.tag and ref.path in came_from:
                    tags.add((ref.familiar(), ref.path, ref.tag))
        return sorted(repositories), sorted(tags)

    def read(self) -> HubSnapshot:
        if self.local_images and self.engine.snapshot is None:
            self.engine.ready.wait(30)
        pulled, tags = self.pulled()
        # Configured repositories first: they keep their own series past the cap.
        wanted = list(dict.fromkeys(self.configured + pulled))
        for gone in set(self._known) - set(wanted):
            del self._known[gone]
        for gone in set(self._pushed) - {short for short, _, _ in tags}:
            del self._pushed[gone]
        failures, last_error, read = 0, "", 0
        try:
            for name in wanted:
                namespace, _, repo = name.partition("/")
                try:
                    r = self.api.get(f"/v2/namespaces/{namespace}/repositories/{repo}")
                except HubRateLimited:
                    raise
                except HubError as exc:
                    failures, last_error = failures + 1, str(exc)
                    continue
                if r.status_code != 200:
                    failures, last_error = failures + 1, f"HTTP {r.status_code} for {name}"
                    continue
                parsed = self._parse(name, r)
                if parsed is None:
                    failures, last_error = failures + 1, f"unexpected JSON for {name}"
                    continue
                self._known[name] = parsed
                read += 1
            for short, repo, tag in tags:
                try:
                    pushed = self.api.tag_pushed(repo, tag)
                except HubRateLimited:
                    raise
                except HubError:
                    continue  # keeps the last value; the repository read says the failure
                if pushed is not None:
                    self._pushed[short] = pushed
        except HubRateLimited:
            if not read:
                raise
        if wanted and failures == len(wanted):
            raise HubError(f"every Hub request failed; last: {last_error}")
        return HubSnapshot(self._folded(wanted), self._folded_tags())

    def _folded(self, wanted: list[str]) -> tuple[HubRepository, ...]:
        """One series per repository up to MAX_REPOSITORIES, the rest folded into ``_other``
        (pulls and stars summed, the latest update), each series' pulls never lower than
        published before."""
        own = set(wanted[:MAX_REPOSITORIES])
        rows = [self._known[n] for n in sorted(self._known) if n in own]
        rest = [r for n, r in sorted(self._known.items()) if n not in own]
        if rest:
            updated = [r.last_updated for r in rest if r.last_updated is not None]
            rows.append(HubRepository(OTHER, sum(r.pulls for r in rest),
                                      sum(r.stars for r in rest), max(updated, default=None)))
        out = tuple(dataclasses.replace(r, pulls=self._never_lower(r.repository, r.pulls))
                    for r in rows)
        for gone in set(self._highest) - {r.repository for r in out}:
            del self._highest[gone]
            self._lowered.discard(gone)
        return out

    def _folded_tags(self) -> tuple[tuple[str, float], ...]:
        """Push times of up to MAX_TAGS local tags, the rest folded into ``_other`` (the
        latest of their push times)."""
        ordered = sorted(self._pushed.items())
        out = ordered[:MAX_TAGS]
        if len(ordered) > MAX_TAGS:
            out.append((OTHER, max(when for _, when in ordered[MAX_TAGS:])))
        return tuple(out)

    def _never_lower(self, series: str, pulls: int) -> int:
        """A counter never goes down: Prometheus would read a lower pull count as a reset
        and count every pull again."""
        highest = self._highest.get(series, 0)
        if pulls >= highest:
            self._highest[series] = pulls
            return pulls
        if series not in self._lowered:
            self._lowered.add(series)
            log.warning("Docker Hub now counts %d pulls of %s, fewer than the %d it counted "
                        "before; docker_hub_repository_pulls_total stays at %d until the count "
                        "is higher (a counter never goes down)", pulls, series, highest,
                        highest)
        return highest

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
