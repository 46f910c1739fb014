"""Immutable snapshots of what the sources last read. Collectors render these at scrape time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DISK_KINDS = ("images", "containers", "volumes", "build_cache")


@dataclass(frozen=True)
class ImageManifest:
    """One platform's manifest in a local image (containerd image store, API 1.47+)."""

    digest: str
    os: str
    architecture: str
    variant: str
    available: bool  # its config and layers are all on this host


@dataclass(frozen=True)
class Image:
    """One local image (an image ID) with every tag and registry digest it carries.

    On the containerd image store the ID is the digest of what the tag named when pulled:
    an index for a multi-platform image, not the config digest of the classic store.
    """

    id: str
    tags: tuple[str, ...]  # familiar "repository:tag" forms, as in RepoTags
    repo_digests: tuple[str, ...]  # "repository@sha256:..." forms, as in RepoDigests
    size: int
    created: float
    # Metadata.LastTagTime, else when the exporter first saw it under a tag (the latest of its
    # tags); None for a dangling image the engine has no LastTagTime for.
    last_tagged: float | None
    containers: int  # containers (any state) created from this image ID
    # The image's platform manifests (API 1.47+ with a containerd store; else empty) ...
    manifests: tuple[ImageManifest, ...] = ()
    # ... and the one this host has for its own platform: what a container of it runs.
    platform_manifest: str = ""
    pinned: bool = False  # the runtime keeps it from the kubelet's image GC (CRI)

    @property
    def dangling(self) -> bool:
        return not self.tags

    def digest_for(self, repository: str) -> str:
        """The registry digest this image has for ``repository`` ("" when it has none)."""
        found = sorted(d.partition("@")[2] for d in self.repo_digests
                       if d.partition("@")[0] == repository)
        return found[0] if found else ""


@dataclass(frozen=True)
class Container:
    """One container, with the reference it was created from and whether that went stale."""

    id: str
    name: str
    image: str  # the reference the container was created from, in familiar form
    image_id: str
    state: str
    created: float
    stale: bool  # its tag now names other content for this platform (pulled, not recreated)
    drift_opt_out: bool = False  # label docker-hygiene.drift=false
    version_labels: tuple[tuple[str, str], ...] = ()  # docker-hygiene.versions.* labels
    # The platform manifest it runs: ImageManifestDescriptor (API 1.48+, containerd store),
    # else its image's manifest for this host's platform; "" when neither is known.
    manifest: str = ""
    # A Kubernetes pod's container (CRI): its pod's namespace and name; "" on Docker and
    # Podman. On a node, ``name`` is the container's name in its pod.
    namespace: str = ""
    pod: str = ""

    @property
    def qualified(self) -> str:
        """The name a person knows it by: ``namespace/pod/name`` for a pod's container."""
        return f"{self.namespace}/{self.pod}/{self.name}" if self.pod else self.name


ENGINES = ("docker", "podman", "containerd")


@dataclass(frozen=True)
class EngineSnapshot:
    images: tuple[Image, ...]
    containers: tuple[Container, ...]
    api_version: str
    engine: str = "docker"  # one of ENGINES
    engine_version: str = ""

    def gc_reclaimable(self) -> int:
        """What the kubelet's image GC may delete: the images no container (any state) uses
        and the runtime has not pinned, at their sizes (a layer two such images share
        counts twice, as the kubelet counts it)."""
        return sum(i.size for i in self.images if i.containers == 0 and not i.pinned)


@dataclass(frozen=True)
class KindUsage:
    """One row of ``docker system df``."""

    total: int
    active: int
    size: int
    reclaimable: int


@dataclass(frozen=True)
class Volume:
    """One volume as /system/df lists it; None where the engine did not compute it."""

    name: str
    size: int | None
    containers: int | None  # containers that mount it (RefCount)


@dataclass(frozen=True)
class ImageFilesystem:
    """One image filesystem as CRI's ImageFsInfo reports it: what the kubelet watches."""

    mountpoint: str
    used_bytes: int
    inodes_used: int | None
    capacity_bytes: int | None  # statvfs of the mountpoint; None where it is not visible


@dataclass(frozen=True)
class DiskSnapshot:
    # docker system df's rows; None where the engine has no such thing (Podman: build
    # cache; a CRI node: all four, it has the image filesystems instead).
    images: KindUsage | None
    containers: KindUsage | None
    volumes: KindUsage | None
    build_cache: KindUsage | None
    # Each volume, where the engine lists them (API 1.52+ only with verbose, so maybe empty).
    volume_items: tuple[Volume, ...] = ()
    # What ``docker image prune`` (dangling only) would free: the unique bytes of the dangling
    # images no container uses. None where the answer lists no images (API 1.53+ summaries).
    dangling_unused: int | None = None
    # A CRI node: its image filesystems (what the kubelet's image GC may delete of them is
    # worked out from the images: ``EngineSnapshot.gc_reclaimable``).
    image_filesystems: tuple[ImageFilesystem, ...] = ()

    def by_kind(self) -> dict[str, KindUsage]:
        """The kinds the engine has."""
        return {kind: getattr(self, kind) for kind in DISK_KINDS
                if getattr(self, kind) is not None}


UPSTREAM_STATUSES = ("current", "drifted", "platform_unchanged", "unknown")


@dataclass(frozen=True)
class TagState:
    """What the registry says of one local tag, as of its last check."""

    image: str  # the tag in short form, e.g. "nginx:1.25"
    image_id: str  # the local image ID the tag named when checked
    status: str  # one of UPSTREAM_STATUSES
    reason: str = ""  # why the status is unknown
    upstream_digest: str = ""
    upstream_config: str = ""  # config digest of upstream's manifest for this platform
    checked: float | None = None  # when a check last decided the status
    drift_since: float | None = None  # when drift was first seen; survives restarts
    changed: float | None = None  # fleet mode: when the upstream digest last changed
    signed: bool | None = None  # a signature for upstream_digest exists; None: not known
    created: float | None = None  # creation time of upstream's image for this platform
    upstream_manifest: str = ""  # digest of upstream's manifest for this platform, if read
    decided: str = ""  # the status the last deciding check gave, kept while checks are unknown

    @property
    def verdict(self) -> str:
        """The status in force, or while checks cannot decide, the last one decided for this
        image ("" when none): a registry outage must not look like the drift was fixed."""
        return self.status if self.status != "unknown" else self.decided


@dataclass(frozen=True)
class UpstreamSnapshot:
    states: tuple[TagState, ...]
    ratelimits: tuple[tuple[str, int | None, int | None], ...] = ()
    requests: tuple[tuple[tuple[str, str, str], int], ...] = ()
    digest_fallbacks: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class ImageVersions:
    image: str  # the local tag, short form
    current: str
    latest: str  # "" when no newer version exists
    behind: int
    # The earliest build time among the newer versions for this platform (Hub: push time):
    # a newer version has existed since then, however often the project releases.
    first_created: float | None


@dataclass(frozen=True)
class VersionsSnapshot:
    images: tuple[ImageVersions, ...]
    # (container, image, newer available[, namespace, pod]): the last two for pods only
    containers: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class HubRepository:
    repository: str  # namespace/name, e.g. library/nginx
    pulls: int
    stars: int
    last_updated: float | None


@dataclass(frozen=True)
class HubSnapshot:
    repositories: tuple[HubRepository, ...]
    tags: tuple[tuple[str, float], ...] = ()  # (local tag, tag_last_pushed)


@dataclass(frozen=True)
class HarborRepository:
    registry: str
    project: str
    repository: str
    pulls: int


@dataclass(frozen=True)
class HarborSnapshot:
    repositories: tuple[HarborRepository, ...]
