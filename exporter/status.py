"""The status model: one set of rows for the page at ``/``, ``/status.json`` and ``report``.

Built from snapshots only (those the collectors render, or what ``report`` read once), so
building it never calls Docker or a registry. Rows come worst first. Times are Unix seconds
here and RFC 3339 (UTC) in JSON; sizes are bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter import __version__, reference
from exporter.config import format_duration
from exporter.decisions.drift import container_state
from exporter.snapshots import (
    DISK_KINDS,
    DiskSnapshot,
    EngineSnapshot,
    HarborSnapshot,
    HubSnapshot,
    Image,
    ImageVersions,
    TagState,
    UpstreamSnapshot,
    VersionsSnapshot,
)
from exporter.timestamps import build_time
from exporter.values import redact_url

if TYPE_CHECKING:
    from exporter.app import Exporter
    from exporter.state import StateStore

DOCS_URL = "https://github.com/docker-hygiene-exporter/docker-hygiene-exporter/tree/main/docs"
SCHEMA = 1  # of /status.json; raised when a field changes meaning or goes away

# -- formatting, shared by the page and the report -------------------------------------------

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """Decimal units with four significant digits, as the docker CLI prints sizes."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def human_age(seconds: float) -> str:
    """A duration in the largest unit that fits twice: "3 days", "36 hours", "1 second"."""
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600),
                       ("minute", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}s"
    n = int(max(seconds, 0))
    return f"{n} second{'' if n == 1 else 's'}"


def ago(when: float, now: float) -> str:
    """ "3 days ago", "just now", or "in 5 minutes" for a time ahead of ``now``."""
    delta = now - when
    if abs(delta) < 5:
        return "just now"
    return f"{human_age(delta)} ago" if delta > 0 else f"in {human_age(-delta)}"


def iso(when: float) -> str:
    """RFC 3339 in UTC, to the second: what ``<time datetime>`` and the JSON carry."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def exact(when: float) -> str:
    """The exact time for a person (shown on hover): "2026-11-28 03:58:57 UTC"."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


# What the page and the report show instead of the age of a reproducible build's image.
NO_DATE = "reproducible build (no date)"


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


# -- errors in words -------------------------------------------------------------------------

_REPR = re.compile(r"^(\w+)\((['\"])(.*)\2\)$", re.S)
_CAUSES = (
    ("No such file or directory", "the socket does not exist: is dockerd running, and does "
                                  "docker.host name its socket?"),
    ("Connection refused", "connection refused: is dockerd running and listening there?"),
    ("Permission denied", "permission denied on the socket: run the exporter as a member of "
                          "the docker group, or give it access to the socket"),
    ("Name or service not known", "the host name does not resolve"),
    ("timed out", "no answer in time"),
    ("certificate", "TLS failed: check DOCKER_CERT_PATH and DOCKER_TLS_VERIFY"),
)
_REGISTRY_REASONS = {
    "timeout": "the registry did not answer in time",
    "unreachable": "the registry cannot be reached",
    "tls_error": "TLS with the registry failed",
    "auth_failed": "the registry refused the credentials (or needs some)",
    "token_error": "the registry's token server failed",
    "rate_limited": "the registry's rate limit is spent; checks resume when it resets",
    "not_found": "the registry does not have this tag",
    "server_error": "the registry answered with a server error",
    "bad_response": "the registry's answer could not be read",
    "no_platform": "upstream has no image for this host's platform",
    "no_repo_digest": "built or imported here: it has no registry digest to compare",
    "error": "the check failed (see the exporter's log)",
}


def registry_reason(reason: str) -> str:
    """Why a tag's upstream state is unknown, in words."""
    return _REGISTRY_REASONS.get(reason, reason.replace("_", " "))


def explain(error: str, source: str = "", docker_host: str = "", cri: bool = False) -> str:
    """A source's last error as a sentence a person can act on."""
    if not error:
        return ""
    if error == "disconnected":
        return "the event stream is not connected (it reconnects by itself once the " \
               "engine answers)"
    m = _REPR.match(error)
    if m:
        kind, text = m.group(1), m.group(3)
        if text == "no engine snapshot yet":
            return "waiting for the first successful read of the engine"
        error = text if kind.endswith("Error") else f"{kind}: {text}"
    kind = "the CRI runtime" if cri else "the Docker Engine"
    engine = f"{kind} at {redact_url(docker_host)}" if docker_host else kind
    reason, _, detail = error.partition(": ")
    engine_error = _ENGINE_ERROR.match(error)
    if engine_error and source in ("engine", "disk", "events", ""):
        # "HOST: GET /path: connect: CAUSE", as the engine client words its errors
        reason, detail = _engine_reason(engine_error.group("detail"))
    if source in ("engine", "disk", ""):  # EngineError: "reason: detail"
        if reason == "unreachable":
            why = next((words for needle, words in _CAUSES if needle in detail),
                       _first_line(detail))
            return f"cannot reach {engine}: {why}"
        if reason == "timeout":
            return f"{engine} did not answer in time ({source or 'engine'} timeout)"
        if reason == "api_error":
            return f"{engine} answered with an error: {_first_line(detail)}"
        if reason == "bad_response":
            return f"{engine} answered with something that is not JSON"
    if source == "hub":
        return f"Docker Hub API: {_first_line(error)}"
    if source == "harbor":
        return f"Harbor: {_first_line(error)}"
    return _first_line(error)


# An engine client error: host, then the operation, then what happened.
_ENGINE_ERROR = re.compile(r"^\S+://\S*?: (?:GET|HEAD) /\S*: (?P<detail>.*)$", re.S)


def _engine_reason(detail: str) -> tuple[str, str]:
    """(reason word, detail) of an engine client error's last part."""
    if detail.startswith("connect: "):
        return "unreachable", detail[len("connect: "):]
    if detail.startswith("no answer within"):
        return "timeout", detail
    if detail.startswith("answer is not JSON"):
        return "bad_response", detail
    return "api_error", detail  # the daemon's own message, e.g. about API versions


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskRow:
    kind: str
    objects: int
    active: int
    size_bytes: int
    reclaimable_bytes: int


@dataclass(frozen=True)
class VolumeRow:
    name: str
    size_bytes: int | None  # None where the engine did not compute it
    containers: int | None  # containers that mount it


@dataclass(frozen=True)
class Disk:
    as_of: float | None
    size_bytes: int
    reclaimable_bytes: int
    kinds: tuple[DiskRow, ...]  # most reclaimable first
    volumes: tuple[VolumeRow, ...]  # unused first, then largest first


@dataclass(frozen=True)
class ContainerRow:
    """One container and what is wrong with the image it runs."""

    name: str
    image: str  # the reference it was created from
    image_id: str
    state: str
    created: float
    problems: tuple[str, ...]  # of "drifted", "stale", "newer_version"; empty when fine
    stale: bool  # its tag now names another local image (pulled, never recreated)
    stale_since: float | None  # when that image was pulled or tagged here
    drifted: bool | None  # it does not run what the registry serves now; None: not known
    drift_since: float | None
    newer_version: str  # the newest version of its tag's shape; "" when none
    versions_behind: int | None
    newer_since: float | None  # a newer version has existed since then

    @property
    def since(self) -> float | None:
        """When its oldest problem began."""
        times = [t for t in (self.stale_since if self.stale else None,
                             self.drift_since if self.drifted else None,
                             self.newer_since if self.newer_version else None)
                 if t is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class TagRow:
    """One local tag, as its registry last answered."""

    image: str
    image_id: str
    upstream: str  # current, drifted, platform_unchanged, unknown; "" when not checked
    reason: str  # why unknown, as the metric's reason label says it (registry_reason: words)
    drift_since: float | None
    checked: float | None
    upstream_created: float | None
    newer_version: str
    versions_behind: int | None
    newer_since: float | None
    containers: tuple[str, ...]  # names of the containers created from this tag

    @property
    def attention(self) -> bool:
        """Drifted, behind, or not checkable for a reason that can be fixed (a local build
        has no upstream to compare with: that is not a problem)."""
        return self.upstream == "drifted" or bool(self.newer_version) or (
            self.upstream == "unknown" and self.reason != "no_repo_digest")


@dataclass(frozen=True)
class ImageRow:
    id: str
    tags: tuple[str, ...]  # empty: dangling
    size_bytes: int
    created: float
    last_tagged: float | None  # pulled or tagged here
    containers: int

    @property
    def built(self) -> float | None:
        """When it was built; None for a reproducible build, whose date is a placeholder."""
        return build_time(self.created)

    @property
    def name(self) -> str:
        if not self.tags:
            return "<none>"
        more = len(self.tags) - 1
        return self.tags[0] + (f" (+{more} tag{'s' if more > 1 else ''})" if more else "")


@dataclass(frozen=True)
class Count:
    repository: str
    pulls: int


@dataclass(frozen=True)
class HostPulls:
    since: float | None  # the counts start when the exporter started
    repositories: tuple[Count, ...]


@dataclass(frozen=True)
class HubRow:
    repository: str
    pulls: int
    stars: int
    last_updated: float | None


@dataclass(frozen=True)
class RegistryRow:
    registry: str
    repository: str
    pulls: int
    pushes: int


@dataclass(frozen=True)
class HarborRow:
    registry: str
    project: str
    repository: str
    pulls: int


@dataclass(frozen=True)
class Pulls:
    """None where that source is off or has not answered yet; most pulled first."""

    host: HostPulls | None = None
    hub: tuple[HubRow, ...] | None = None
    registry: tuple[RegistryRow, ...] | None = None
    harbor: tuple[HarborRow, ...] | None = None


@dataclass(frozen=True)
class SourceRow:
    name: str
    state: str  # failing, starting, ok
    last_success: float | None
    duration_seconds: float
    error: str  # as the source reported it
    reason: str  # the same in words


@dataclass(frozen=True)
class Knowledge:
    """Where drift or version facts come from, and as of when."""

    origin: str  # exporter, state store, check, off, none
    as_of: float | None
    detail: str = ""


@dataclass(frozen=True)
class Status:
    generated: float
    version: str
    docker_host: str
    engine_api: str
    engine_as_of: float | None
    disk: Disk | None
    containers: tuple[ContainerRow, ...]  # all of them, those with problems first
    tags: tuple[TagRow, ...]  # those needing attention first
    images: tuple[ImageRow, ...]  # oldest first
    pulls: Pulls
    sources: tuple[SourceRow, ...]  # failing first
    drift: Knowledge
    versions: Knowledge
    # docker, podman, or a Kubernetes node's CRI runtime (containerd) and its version
    engine: str = "docker"
    engine_version: str = ""

    @property
    def attention(self) -> tuple[ContainerRow, ...]:
        return tuple(c for c in self.containers if c.problems)

    @property
    def failing(self) -> tuple[SourceRow, ...]:
        return tuple(s for s in self.sources if s.state == "failing")


# -- building it -----------------------------------------------------------------------------

_STATE_RANK = {"running": 0, "restarting": 0, "paused": 1}
_SOURCE_RANK = {"failing": 0, "starting": 1, "ok": 2}


def disk_rows(disk: DiskSnapshot, as_of: float | None,
              engine: EngineSnapshot | None = None) -> Disk:
    order = {k: i for i, k in enumerate(DISK_KINDS)}
    rows = [DiskRow(k, u.total, u.active, u.size, u.reclaimable)
            for k, u in disk.by_kind().items()]
    if disk.image_filesystems:  # a CRI node: the kubelet's view, not docker system df's
        rows.append(DiskRow("image_filesystem", len(disk.image_filesystems), 0,
                            sum(f.used_bytes for f in disk.image_filesystems),
                            engine.gc_reclaimable() if engine else 0))
    kinds = sorted(rows, key=lambda r: (-r.reclaimable_bytes, order.get(r.kind, len(order))))
    volumes = sorted((VolumeRow(v.name, v.size, v.containers) for v in disk.volume_items),
                     key=lambda v: (v.containers != 0, -(v.size_bytes or 0), v.name))
    return Disk(as_of, sum(r.size_bytes for r in kinds), sum(r.reclaimable_bytes for r in kinds),
                tuple(kinds), tuple(volumes))


class _TagIndex:
    """The local image a tag names now. RepoTags are already in the engine's short form, so
    the familiar form (a parse per tag) is only worked out for a reference not found as is."""

    def __init__(self, engine: EngineSnapshot) -> None:
        self.engine = engine
        self.exact = {t: image for image in engine.images for t in image.tags}
        self.familiar: dict[str, Image] | None = None

    def get(self, tag: str) -> Image | None:
        found = self.exact.get(tag)
        if found is None:
            if self.familiar is None:
                self.familiar = {reference.familiar(t): image for image in self.engine.images
                                 for t in image.tags}
            found = self.familiar.get(tag)
        return found


def _versions_index(versions: VersionsSnapshot | None
                    ) -> tuple[dict[str, ImageVersions], dict[tuple[str, str], bool]]:
    if versions is None:
        return {}, {}
    return ({v.image: v for v in versions.images},
            {("/".join((*where, name)), image): newer
             for name, image, newer, *where in versions.containers})


def container_rows(engine: EngineSnapshot, upstream: UpstreamSnapshot | None,
                   versions: VersionsSnapshot | None) -> tuple[ContainerRow, ...]:
    """Every container; those with more problems first, running before stopped, then the
    longest-standing problem first."""
    by_tag = _TagIndex(engine)
    images = {i.id: i for i in engine.images}
    states = {s.image: s for s in upstream.states} if upstream else {}
    per_image, per_container = _versions_index(versions)
    rows = []
    for c in engine.containers:
        now_names = by_tag.get(c.image) if c.stale else None
        stale_since = now_names.last_tagged if now_names is not None else None
        state: TagState | None = states.get(c.image)
        drifted, drift_since = None, None
        if state is not None:
            value = container_state(state, images, c)
            drifted = None if value is None else value == 1
            if drifted:
                drift_since = state.drift_since if state.verdict == "drifted" else stale_since
        v = per_image.get(c.image)
        newer = per_container.get((c.qualified, c.image), bool(v and v.latest))
        newer_version = (v.latest if v and v.latest else "newer") if newer else ""
        problems = tuple(p for p, on in (("drifted", drifted), ("stale", c.stale),
                                         ("newer_version", bool(newer_version))) if on)
        rows.append(ContainerRow(
            c.qualified, c.image, c.image_id, c.state, c.created, problems, c.stale, stale_since,
            drifted, drift_since, newer_version, v.behind if v else None,
            build_time(v.first_created) if v and newer_version else None))
    return tuple(sorted(rows, key=lambda r: (
        -len(r.problems), _STATE_RANK.get(r.state, 2) if r.problems else 0,
        r.since if r.since is not None else float("inf"), r.name)))


def tag_rows(engine: EngineSnapshot | None, upstream: UpstreamSnapshot | None,
             versions: VersionsSnapshot | None) -> tuple[TagRow, ...]:
    """Every tag the registries were asked about: drifted first (longest first), then newer
    versions (most behind first), then those that could not be checked, then the rest."""
    states = {s.image: s for s in upstream.states} if upstream else {}
    per_image, _ = _versions_index(versions)
    users: dict[str, list[str]] = {}
    for c in engine.containers if engine else ():
        users.setdefault(c.image, []).append(c.qualified)
    rows = []
    for image in sorted(set(states) | set(per_image)):
        s, v = states.get(image), per_image.get(image)
        rows.append(TagRow(
            image, s.image_id if s else "", s.status if s else "",
            s.reason if s else "",
            s.drift_since if s else None, s.checked if s else None, s.created if s else None,
            v.latest if v else "", v.behind if v else None,
            build_time(v.first_created) if v and v.latest else None,
            tuple(users.get(image, ()))))

    def rank(r: TagRow) -> tuple[Any, ...]:
        if r.upstream == "drifted":
            return (0, r.drift_since or float("inf"), r.image)
        if r.newer_version:
            return (1, -(r.versions_behind or 0), r.image)
        if r.attention:
            return (2, r.reason, r.image)
        return (3, "", r.image)
    return tuple(sorted(rows, key=rank))


def image_rows(engine: EngineSnapshot) -> tuple[ImageRow, ...]:
    """Oldest first; reproducible builds (no build date) last."""
    return tuple(sorted((ImageRow(i.id, i.tags, i.size, i.created, i.last_tagged, i.containers)
                         for i in engine.images),
                        key=lambda r: (r.built is None, r.created, r.id)))


def pulls(host: Iterable[tuple[str, int]] | None = None, host_since: float | None = None,
          hub: HubSnapshot | None = None,
          registry: tuple[Sequence[tuple[tuple[str, str], int]],
                          Sequence[tuple[tuple[str, str], int]]] | None = None,
          harbor: HarborSnapshot | None = None) -> Pulls:
    out = Pulls()
    if host is not None:
        counts = sorted((Count(r, n) for r, n in host), key=lambda c: (-c.pulls, c.repository))
        out = dataclasses.replace(out, host=HostPulls(host_since, tuple(counts)))
    if hub is not None:
        out = dataclasses.replace(out, hub=tuple(sorted(
            (HubRow(r.repository, r.pulls, r.stars, r.last_updated) for r in hub.repositories),
            key=lambda r: (-r.pulls, r.repository))))
    if registry is not None:
        pulled, pushed = dict(registry[0]), dict(registry[1])
        out = dataclasses.replace(out, registry=tuple(sorted(
            (RegistryRow(k[0], k[1], pulled.get(k, 0), pushed.get(k, 0))
             for k in set(pulled) | set(pushed)),
            key=lambda r: (-r.pulls, -r.pushes, r.registry, r.repository))))
    if harbor is not None:
        out = dataclasses.replace(out, harbor=tuple(sorted(
            (HarborRow(r.registry, r.project, r.repository, r.pulls)
             for r in harbor.repositories),
            key=lambda r: (-r.pulls, r.registry, r.project, r.repository))))
    return out


def source_row(name: str, status: Any, docker_host: str, cri: bool = False) -> SourceRow:
    """A row from a source's Status (exporter.sources.loop.Status)."""
    state = "ok" if status.success else ("failing" if status.attempted else "starting")
    return SourceRow(name, state, status.last_success, status.duration, status.error,
                     explain(status.error, name, docker_host, cri) if state == "failing"
                     else "")


Rows = tuple[tuple[ContainerRow, ...], tuple[TagRow, ...], tuple[ImageRow, ...]]


class RowCache:
    """The rows built from the large snapshots, kept until one of them is replaced: a page
    view then costs about what a scrape does (the exposition keeps its text the same way).
    Threads may race to fill it; each builds the same rows."""

    def __init__(self) -> None:
        self._last: tuple[tuple[object, ...], Rows] | None = None

    def rows(self, engine: EngineSnapshot | None, upstream: UpstreamSnapshot | None,
             versions: VersionsSnapshot | None) -> Rows:
        key = (engine, upstream, versions)
        last = self._last
        if last is not None and all(a is b for a, b in zip(last[0], key, strict=True)):
            return last[1]
        rows = _rows(engine, upstream, versions)
        self._last = (key, rows)
        return rows


def _rows(engine: EngineSnapshot | None, upstream: UpstreamSnapshot | None,
          versions: VersionsSnapshot | None) -> Rows:
    return (container_rows(engine, upstream, versions) if engine else (),
            tag_rows(engine, upstream, versions), image_rows(engine) if engine else ())


def build(*, docker_host: str, engine: EngineSnapshot | None,
          engine_as_of: float | None = None, disk: DiskSnapshot | None = None,
          disk_as_of: float | None = None, upstream: UpstreamSnapshot | None = None,
          versions: VersionsSnapshot | None = None, drift: Knowledge | None = None,
          versions_knowledge: Knowledge | None = None, pull_counts: Pulls | None = None,
          sources: Iterable[SourceRow] = (), now: float | None = None,
          cache: RowCache | None = None) -> Status:
    containers, tags, images = cache.rows(engine, upstream, versions) if cache else \
        _rows(engine, upstream, versions)
    return Status(
        generated=time.time() if now is None else now,
        version=__version__,
        docker_host=redact_url(docker_host),
        engine_api=engine.api_version if engine else "",
        engine_as_of=engine_as_of,
        disk=disk_rows(disk, disk_as_of, engine) if disk is not None else None,
        containers=containers,
        tags=tags,
        images=images,
        pulls=pull_counts or Pulls(),
        # Failing first, the engine before the rest: everything else depends on it.
        sources=tuple(sorted(sources, key=lambda s: (_SOURCE_RANK[s.state], s.name != "engine",
                                                     s.name))),
        drift=drift or Knowledge("none", None),
        versions=versions_knowledge or Knowledge("none", None),
        engine=engine.engine if engine else "docker",
        engine_version=engine.engine_version if engine else "",
    )


def from_exporter(exporter: Exporter, now: float | None = None) -> Status:
    """The running exporter's status, from the snapshots its collectors render."""
    parts, config = exporter.parts, exporter.config
    host = config.cri_endpoint or config.docker_host

    def knowledge(source: Any, what: str, every: str) -> Knowledge:
        if source is None:
            return Knowledge("off", None, f"{what} are off")
        return Knowledge("exporter", source.status.last_success, every)

    webhook = parts.webhook.snapshot()[:2] if parts.webhook is not None else None
    counts = pulls(
        parts.events.counts() if parts.events is not None else None,
        parts.events.started if parts.events is not None else None,
        parts.hub.snapshot if parts.hub is not None else None, webhook,
        parts.harbor.snapshot if parts.harbor is not None else None)
    return build(
        docker_host=host, engine=None if parts.central else parts.engine.snapshot,
        engine_as_of=parts.engine.status.last_success,
        disk=None if parts.central else parts.disk.snapshot,
        disk_as_of=parts.disk.status.last_success,
        upstream=parts.upstream.snapshot if parts.upstream is not None else None,
        versions=parts.versions.snapshot if parts.versions is not None else None,
        drift=knowledge(parts.upstream, "upstream checks",
                        f"each tag is checked every {format_duration(config.upstream_interval)}"),
        versions_knowledge=knowledge(
            parts.versions, "newer-version checks",
            f"tag lists are read every {format_duration(config.versions_interval)}"),
        pull_counts=counts,
        sources=[source_row(s.name, s.status, host, bool(config.cri_endpoint))
                 for s in parts.sources], now=now,
        cache=exporter.status_rows)


# -- JSON ------------------------------------------------------------------------------------

_TIMES = frozenset({"generated", "engine_as_of", "as_of", "created", "last_tagged",
                    "stale_since", "drift_since", "newer_since", "checked", "upstream_created",
                    "last_success", "last_updated", "since"})


def _plain(value: Any, times: bool = True) -> Any:
    """A dataclass as a dictionary, nested ones and tuples of them too; with ``times``, the
    time fields as RFC 3339. Rows are flat, so only containers of rows are walked."""
    out = dict(vars(value))
    for key, item in out.items():
        if isinstance(item, tuple) and item and hasattr(item[0], "__dataclass_fields__"):
            out[key] = [_plain(v, times) for v in item]
        elif hasattr(item, "__dataclass_fields__"):
            out[key] = _plain(item, times)
        elif times and key in _TIMES and item is not None:
            out[key] = iso(item)
    return out


def to_json(status: Status) -> dict[str, Any]:
    """What /status.json and ``report --format json`` write."""
    return {"schema": SCHEMA, **_plain(status)}


def dumps(status: Status, indent: int | None = None) -> str:
    """Compact unless ``indent`` (the encoder in C only runs without one)."""
    return json.dumps(to_json(status), indent=indent,
                      separators=(",", ":") if indent is None else None) + "\n"


# -- saving snapshots for report -------------------------------------------------------------

SAVE_EVERY = 600.0  # an unchanged snapshot is saved again after this many seconds


def remember(store: StateStore, name: str, snapshot: Any) -> Any:
    """Save a source's snapshot in the state store for ``report`` (which runs in another
    process), and return it. An unchanged one is written again only every SAVE_EVERY, so a
    loop that publishes every minute does not rewrite the file every minute."""
    kept = snapshot
    if isinstance(snapshot, UpstreamSnapshot):  # the request counters are the process's own
        kept = UpstreamSnapshot(snapshot.states)
    body = json.dumps(_plain(kept, times=False), separators=(",", ":"))
    saved = store.snapshot(name)
    now = time.time()
    if saved is None or saved[1] != body or now - saved[0] >= SAVE_EVERY:
        store.put_snapshot(name, now, body)
    return snapshot


def upstream_from_json(body: str) -> UpstreamSnapshot:
    """What ``remember`` saved for the upstream source. Raises ValueError when unreadable."""
    try:
        doc = json.loads(body)
        return UpstreamSnapshot(tuple(TagState(**_known(s, TagState)) for s in doc["states"]))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a saved upstream snapshot: {exc}") from None


def versions_from_json(body: str) -> VersionsSnapshot:
    """What ``remember`` saved for the versions source. Raises ValueError when unreadable."""
    try:
        doc = json.loads(body)
        return VersionsSnapshot(
            tuple(ImageVersions(**_known(v, ImageVersions)) for v in doc["images"]),
            tuple((str(c[0]), str(c[1]), bool(c[2]), *(str(x) for x in c[3:5]))
                  for c in doc["containers"]))
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a saved versions snapshot: {exc}") from None


def _known(doc: dict[str, Any], cls: type) -> dict[str, Any]:
    """The fields ``cls`` has: a snapshot saved by another version of the exporter still
    loads when it has fields more (they are dropped) or fewer (with defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in doc.items() if k in names}
