"""The versions loop: reads tag lists when due and compares every local version tag.

Tag lists are read once per ``versions.interval`` (registry ``tags/list`` with ``Link``
pages, or the Docker Hub tags API, which also says each tag's platforms and push time) and
kept in the state store. A candidate counts only when it has an image for this host's
platform; the newest such is ``latest``, and the earliest build time among them says since
when a newer version has existed. What counts as a newer version is decided in
``exporter.decisions.versions``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from exporter import backoff, reference
from exporter.config import Config, VersionRule
from exporter.decisions.versions import Version, newer, parse, rule_for
from exporter.locks import KeyedLocks
from exporter.registry.manifest import Platform, RegistryError
from exporter.registry.policy import BLOCKING, MAX_BACKOFF
from exporter.snapshots import Container, EngineSnapshot, ImageVersions, VersionsSnapshot
from exporter.sources.hub import HubAPI, HubError, UpstreamTag
from exporter.sources.loop import Problems, Source, SourceError
from exporter.sources.upstream import MIN_BACKOFF, TICK, Upstream, local_digests, local_tags
from exporter.status import remember

log = logging.getLogger(__name__)

MAX_CANDIDATE_CHECKS = 20  # newest candidates per tag whose platform is looked up


@dataclass(frozen=True)
class _Listing:
    tags: tuple[UpstreamTag, ...]
    read: float


@dataclass(frozen=True)
class _Candidate:
    has_platform: bool
    created: float | None
    checked: float


@dataclass(frozen=True)
class _Local:
    image: str
    ref: reference.Reference
    version: Version


class VersionChecker:
    """Reads tag lists when due and compares every local version tag; the 'versions' loop."""

    def __init__(self, config: Config, engine_source: Source[EngineSnapshot],
                 upstream: Upstream, hub: HubAPI | None) -> None:
        self.config = config
        self.engine_source = engine_source
        self.facts = upstream.facts
        self.client = upstream.client
        self.content = upstream.content
        self.store = upstream.store
        self.hub = hub
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, str], _Listing] = {}
        self._retry: dict[tuple[str, str], tuple[int, float]] = {}
        self._cut: set[tuple[str, str]] = set()  # repositories whose tag list was cut
        self._published: VersionsSnapshot | None = None
        self._candidates: dict[tuple[str, str, str], _Candidate] = {}
        self._results: dict[tuple[str, VersionRule], ImageVersions] = {}
        self._found: dict[tuple[tuple[str, str], float, str, VersionRule], list[Version]] = {}
        self._candidate_locks = KeyedLocks()
        self.include = [re.compile(p) for p in config.upstream_include]
        self.exclude = [re.compile(p) for p in config.upstream_exclude]
        # Requests in flight are bounded by the request policy, whatever this pool's size.
        self._pool = ThreadPoolExecutor(min(8, config.upstream_concurrency),
                                        thread_name_prefix="versions")

    # -- what to look at ---------------------------------------------------------------------

    def locals(self, snapshot: EngineSnapshot) -> list[_Local]:
        out = []
        for image, ref, short in local_tags(snapshot, self.include, self.exclude):
            version = parse(ref.tag or "")
            # Only what came from a registry has an upstream: a local build named myapp:1.0
            # is not compared with whatever Docker Hub has under that name.
            if version is not None and local_digests(image, ref.name):
                out.append(_Local(short, ref, version))
        return out

    def rules(self, snapshot: EngineSnapshot, locals_: list[_Local]
              ) -> tuple[dict[str, VersionRule], list[tuple[Container, VersionRule]]]:
        """The configured rule per local tag, and per container that rule with the
        container's own ``docker-hygiene.versions.*`` labels applied."""
        rules, pin = self.config.versions_rules, self.config.versions_pin
        per_image = {x.image: rule_for(x.image, rules, pin) for x in locals_}
        per_container = [(c, per_image[c.image].merged(dict(c.version_labels)))
                         for c in sorted(snapshot.containers,
                                         key=lambda c: (c.namespace, c.pod, c.name))
                         if c.image in per_image]
        return per_image, per_container

    # -- the cycle ---------------------------------------------------------------------------

    def run(self) -> VersionsSnapshot:
        if not self.engine_source.ready.wait(30) or self.engine_source.snapshot is None:
            raise SourceError("waiting for the engine's first successful read", quiet=True)
        snapshot = self.engine_source.snapshot
        platform = self.facts.platform()
        locals_ = self.locals(snapshot)
        per_image, per_container = self.rules(snapshot, locals_)
        repos = sorted({(x.ref.domain, x.ref.path) for x in locals_})
        listings = dict(zip(repos, self._pool.map(self._listing, repos), strict=True))
        wanted: dict[tuple[str, VersionRule], _Local] = {}
        for x in locals_:
            wanted[(x.image, per_image[x.image])] = x
        by_image = {x.image: x for x in locals_}
        for c, rule in per_container:
            wanted.setdefault((c.image, rule), by_image[c.image])
        keys = list(wanted)
        results = list(self._pool.map(
            lambda k: self._evaluate(wanted[k], k[1], listings[(wanted[k].ref.domain,
                                                                wanted[k].ref.path)],
                                     platform), keys))
        with self._lock:
            fresh = {}
            for key, result in zip(keys, results, strict=True):
                result = result or self._results.get(key)  # a failed check keeps the last
                if result is not None:
                    fresh[key] = result
            self._results = fresh
            self._forget(repos)
        images = tuple(fresh[(x.image, per_image[x.image])] for x in
                       sorted(locals_, key=lambda x: x.image)
                       if (x.image, per_image[x.image]) in fresh)
        containers = tuple((c.name, c.image, bool(fresh[(c.image, rule)].latest),
                            *((c.namespace, c.pod) if c.pod else ()))
                           for c, rule in per_container if (c.image, rule) in fresh)
        snapshot = VersionsSnapshot(images, containers)
        if snapshot == self._published:
            snapshot = self._published  # the same object while nothing changed: caches keep
        self._published = snapshot
        return remember(self.store, "versions", snapshot)

    def _forget(self, repos: list[tuple[str, str]]) -> None:
        """Drop what belongs to repositories no local tag comes from any more."""
        keep = set(repos)
        for key in set(self._listings) - keep:
            del self._listings[key]
        for key in set(self._retry) - keep:
            del self._retry[key]
        for memo in list(self._found):
            listing = self._listings.get(memo[0])
            if listing is None or listing.read != memo[1]:
                del self._found[memo]
        now = time.time()
        for key, cand in list(self._candidates.items()):
            if key[:2] not in keep or now - cand.checked > self.config.versions_interval:
                del self._candidates[key]
        self.store.forget_candidates(now - self.config.versions_interval)
        self.store.keep_tag_lists({f"{domain}/{path}" for domain, path in keep})

    # -- tag lists ---------------------------------------------------------------------------

    def _listing(self, repo: tuple[str, str]) -> _Listing | None:
        """The repository's tags: kept for versions.interval, in memory and the state store."""
        now = time.time()
        with self._lock:
            listing = self._listings.get(repo)
            retry = self._retry.get(repo)
        if listing is None:
            listing = self._stored(repo)
        if listing is not None and now - listing.read < self.config.versions_interval:
            return listing
        if retry is not None and retry[1] > time.monotonic():
            return listing  # the last one, however old, until the backoff ends
        try:
            tags, truncated, count = self._read(repo)
        except (RegistryError, HubError) as exc:
            with self._lock:
                failures = (retry[0] if retry else 0) + 1
                cap = self.config.versions_interval
                if isinstance(exc, RegistryError) and exc.reason in BLOCKING:
                    cap = min(cap, MAX_BACKOFF)  # the registry failed, not this repository
                wait = backoff.delay(failures, MIN_BACKOFF, cap)
                until = time.monotonic() + backoff.jittered(wait, 1.0, 1.1)
                if isinstance(exc, RegistryError) and exc.retry_at is not None:
                    until = max(until, exc.retry_at)  # the registry is in back-off
                self._retry[repo] = (failures, until)
            if failures == 1:
                log.warning("cannot list the tags of %s/%s: %s", repo[0], repo[1], exc)
            return listing
        if truncated and repo not in self._cut:
            self._cut.add(repo)  # said once per repository, not every interval
            log.warning("%s/%s: reading only the first %d tags (versions.max_tags, or the "
                        "registry's pages repeat or do not end)", repo[0], repo[1], count)
        listing = _Listing(tuple(tags), now)
        with self._lock:
            self._listings[repo] = listing
            self._retry.pop(repo, None)
        self.store.put_tag_list(f"{repo[0]}/{repo[1]}", now, json.dumps(
            [[t.name, t.platforms, t.pushed] for t in tags]))
        return listing

    def _stored(self, repo: tuple[str, str]) -> _Listing | None:
        row = self.store.tag_list(f"{repo[0]}/{repo[1]}")
        if row is None:
            return None
        read, body = row
        try:
            tags = tuple(UpstreamTag(str(name), tuple(platforms) if platforms is not None
                                     else None, pushed) for name, platforms, pushed in
                         json.loads(body))
        except (ValueError, TypeError):
            return None
        listing = _Listing(tags, read)
        with self._lock:
            self._listings[repo] = listing
        return listing

    def _read(self, repo: tuple[str, str]) -> tuple[list[UpstreamTag], bool, int]:
        """The version tags of the repository, whether its list was cut, and how many tags
        were read in all."""
        domain, path = repo
        limit = self.config.versions_max_tags
        if domain == reference.DOCKER_HUB and self.hub is not None:
            tags, truncated = self.hub.tags(path, limit)
        else:
            names, truncated = self.client.list_tags(domain, path, limit)
            tags = [UpstreamTag(n, None, None) for n in names]
        # Only version-shaped tags are ever candidates: keep nothing else.
        return [t for t in tags if parse(t.name) is not None], truncated, len(tags)

    # -- candidates --------------------------------------------------------------------------

    def _evaluate(self, local: _Local, rule: VersionRule, listing: _Listing | None,
                  platform: Platform) -> ImageVersions | None:
        if listing is None:
            return None
        tags = {t.name: t for t in listing.tags}
        # Tag lists change once per interval: compare each local tag with one once.
        memo = ((local.ref.domain, local.ref.path), listing.read, local.version.tag, rule)
        with self._lock:
            found = self._found.get(memo)
        if found is None:
            found = newer(local.version, tags, rule)
            with self._lock:
                self._found[memo] = found
        try:
            behind, latest, first = 0, "", None
            for i, v in enumerate(found):
                if i >= MAX_CANDIDATE_CHECKS:
                    behind += len(found) - i  # counted without looking at their platforms
                    break
                cand = self._candidate(local.ref, tags[v.tag], platform)
                if cand.has_platform:
                    behind += 1
                    latest = latest or v.tag
                    if cand.created is not None:
                        first = cand.created if first is None else min(first, cand.created)
        except RegistryError as exc:
            log.warning("checking newer versions of %s failed: %s", local.image, exc)
            return None
        return ImageVersions(local.image, local.version.tag, latest, behind, first)

    def _candidate(self, ref: reference.Reference, tag: UpstreamTag,
                   platform: Platform) -> _Candidate:
        """Whether a candidate tag has an image for ``platform``, and when it was built:
        from the Hub API's answer, else from its manifests (kept for versions.interval)."""
        key = (ref.domain, ref.path, tag.name)
        # Rules evaluated side by side share candidates: one of them looks, the others wait.
        with self._candidate_locks.hold(key):
            return self._look_at(key, ref, tag, platform)

    def _look_at(self, key: tuple[str, str, str], ref: reference.Reference, tag: UpstreamTag,
                 platform: Platform) -> _Candidate:
        now = time.time()
        with self._lock:
            cand = self._candidates.get(key)
        if cand is None:
            stored = self.store.candidate(f"{key[0]}/{key[1]}:{key[2]}")
            if stored is not None and stored[0] == str(platform):
                cand = _Candidate(stored[1], stored[2], stored[3])
        if cand is not None and now - cand.checked < self.config.versions_interval:
            return cand
        if tag.platforms is not None:
            match = [p for p in tag.platforms if platform.matches(p)]
            pushed = max((p.get("last_pushed") for p in match
                          if isinstance(p.get("last_pushed"), float | int)), default=None)
            cand = _Candidate(bool(match), pushed or tag.pushed, now)
        else:
            digest = self.client.head_digest(ref.domain, ref.path, tag.name)
            manifest = self.content.for_platform(ref.domain, ref.path, digest, platform)
            config = manifest.config_digest() if manifest else None
            created = self.content.created(ref.domain, ref.path, config) if config else None
            cand = _Candidate(manifest is not None, created, now)
        with self._lock:
            self._candidates[key] = cand
        self.store.put_candidate(f"{key[0]}/{key[1]}:{key[2]}", str(platform),
                                 cand.has_platform, cand.created, cand.checked)
        return cand

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_source(config: Config, engine: Source[EngineSnapshot], upstream: Upstream,
                hub: HubAPI | None, problems: Problems | None = None) -> Source[VersionsSnapshot]:
    """The versions loop: as often as the drift loop; tag lists are read only when due."""
    checker = VersionChecker(config, engine, upstream, hub)
    return Source("versions", checker.run, min(config.upstream_interval, TICK), checker.close,
                  problems)

