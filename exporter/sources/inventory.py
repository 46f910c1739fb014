"""The engine source: images and containers, and which containers went stale.

``build_engine_snapshot`` joins the Engine API's answers and is tested on recorded JSON;
``EngineReader`` adds the calls and the per-object caches that keep refreshes cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from exporter import reference
from exporter.decisions import provenance, tagged
from exporter.decisions.drift import platform_manifest
from exporter.decisions.stale import container_stale
from exporter.registry.manifest import DIGEST, MANIFEST_TYPES, Platform
from exporter.snapshots import Container, EngineSnapshot, Image, ImageManifest
from exporter.sources.engine import Engine, EngineError
from exporter.state import StateStore
from exporter.timestamps import parse_timestamp

log = logging.getLogger(__name__)

VERSION_LABEL = "docker-hygiene.versions."


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tags(raw: Any, familiar: Callable[[str], str] = reference.familiar) -> tuple[str, ...]:
    """RepoTags or RepoDigests in the engine's short form (Podman lists them in full)."""
    if not isinstance(raw, list):
        return ()
    return tuple(sorted({familiar(t) for t in raw
                         if isinstance(t, str) and t and "<none>" not in t}))


def _by_id(item: Mapping[str, Any]) -> str:
    return str(item.get("Id"))


class Familiar:
    """``reference.familiar`` remembered from one read to the next: parsing every reference
    again was three quarters of an unchanged read's CPU. Only the names of the latest read
    are kept (``next_read``), so it holds no more than one read's worth."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}
        self._now: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        name = self._now.get(text)
        if name is None:
            name = self._last.get(text)
            if name is None:
                name = reference.familiar(text)
            self._now[text] = name
        return name

    def next_read(self) -> None:
        self._last, self._now = self._now, {}


def _label(c: Mapping[str, Any], key: str) -> str:
    labels = c.get("Labels")
    value = labels.get(key) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else ""


def _version_labels(c: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    labels = c.get("Labels")
    if not isinstance(labels, Mapping):
        return ()
    return tuple(sorted((k[len(VERSION_LABEL):], v) for k, v in labels.items()
                        if isinstance(k, str) and k.startswith(VERSION_LABEL)
                        and isinstance(v, str)))


def _digest(doc: Any, key: str) -> str:
    value = doc.get(key) if isinstance(doc, Mapping) else None
    return value if isinstance(value, str) and DIGEST.fullmatch(value) else ""


def _manifests(img: Mapping[str, Any]) -> tuple[ImageManifest, ...]:
    """The image's platform manifests from ``Manifests`` (API 1.47+, containerd store);
    attestations and unknown kinds are left out."""
    out = []
    for m in img.get("Manifests") or ():
        if not isinstance(m, Mapping) or m.get("Kind") != "image":
            continue
        digest = _digest(m, "ID") or _digest(m.get("Descriptor"), "digest")
        data = m.get("ImageData")
        platform = data.get("Platform") if isinstance(data, Mapping) else None
        if not isinstance(platform, Mapping):
            descriptor = m.get("Descriptor")
            platform = descriptor.get("platform") if isinstance(descriptor, Mapping) else None
        platform = platform if isinstance(platform, Mapping) else {}
        if digest:
            out.append(ImageManifest(digest, str(platform.get("os") or ""),
                                     str(platform.get("architecture") or ""),
                                     str(platform.get("variant") or ""),
                                     m.get("Available") is True))
    return tuple(out)


def _host_manifest(img: Mapping[str, Any], manifests: tuple[ImageManifest, ...],
                   host: Platform | None) -> str:
    """The manifest the image has for the host's platform: from ``Manifests``, or the image
    itself when ``Descriptor`` (API 1.48+) says it is a single manifest."""
    if manifests:
        return platform_manifest(manifests, host) if host else ""
    descriptor = img.get("Descriptor")
    if isinstance(descriptor, Mapping) and descriptor.get("mediaType") in MANIFEST_TYPES:
        return _digest(descriptor, "digest")
    return ""


def _platform(text: str) -> Platform | None:
    try:
        return Platform.parse(text)
    except ValueError:
        return None


def _pulled_from(inspected: Mapping[str, Any]) -> frozenset[str] | None:
    """The repositories an image inspect says the image was pulled from (``Identity.Pull``,
    API 1.53+); None when it does not say."""
    identity = inspected.get("Identity")
    if not isinstance(identity, Mapping):
        return None
    pulls = identity.get("Pull")
    return frozenset(provenance.repository(str(p.get("Repository") or ""))
                     for p in pulls if isinstance(p, Mapping)) - {""} \
        if isinstance(pulls, list) else frozenset()


def _container_name(c: Mapping[str, Any]) -> str:
    names = c.get("Names")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0].lstrip("/")
    return str(c.get("Id", ""))[:12]


def build_engine_snapshot(
    images: Iterable[Mapping[str, Any]],
    containers: Iterable[Mapping[str, Any]],
    last_tagged: Mapping[str, float | None],
    created_from: Mapping[str, str],
    api_version: str = "",
    platform: str = "",
    store: str = provenance.CLASSIC,
    pulled_from: Mapping[str, Collection[str] | None] | None = None,
    seen_pulled: Collection[str] = (),
    familiar: Callable[[str], str] = reference.familiar,
    engine: tuple[str, str] = ("docker", ""),
) -> EngineSnapshot:
    """Join images and containers into a snapshot and decide which containers are stale.

    ``last_tagged`` maps image ID to when it was last pulled or tagged here (LastTagTime, or
    EngineReader's first sight under a tag); ``created_from`` maps container ID
    to Config.Image for the containers whose listed Image is an ID (see EngineReader);
    ``platform`` is the engine's os/architecture. Only RepoDigests that show the image came
    from a registry are kept (decisions/provenance.py: ``store``, what the engine says each
    image was pulled from, by image ID, and the repositories this host was seen pulling).
    """
    images = list(images)
    containers = list(containers)
    uses: dict[str, int] = {}
    for c in containers:
        image_id = str(c.get("ImageID", ""))
        uses[image_id] = uses.get(image_id, 0) + 1

    host = _platform(platform)
    out_images = []
    for img in images:
        image_id = str(img.get("Id", ""))
        manifests = _manifests(img)
        out_images.append(Image(
            id=image_id,
            tags=_tags(img.get("RepoTags"), familiar),
            repo_digests=provenance.registry_digests(
                (d for d in _tags(img.get("RepoDigests"), familiar) if "@" in d), store,
                (pulled_from or {}).get(image_id), seen_pulled),
            size=max(_int(img.get("Size")), 0),
            created=float(_int(img.get("Created"))),
            last_tagged=last_tagged.get(image_id),
            containers=uses.get(image_id, 0),
            manifests=manifests,
            platform_manifest=_host_manifest(img, manifests, host),
        ))
    by_id = {i.id: i for i in out_images}
    by_tag = {tag: i for i in out_images for tag in i.tags}  # tags are familiar already

    out_containers = []
    for c in containers:
        image_id = str(c.get("ImageID", ""))
        listed = str(c.get("Image", ""))
        # The engine lists the original reference while it still names the container's image,
        # and the image ID once it does not; then Config.Image tells what it was created from.
        origin = created_from.get(str(c.get("Id")), listed) if listed == image_id else listed
        image = origin if reference.is_image_id(origin) else familiar(origin)
        # What it runs: the engine says so from API 1.48 (containerd store); before, its
        # image's manifest for this platform, while that image is still listed.
        manifest = _digest(c.get("ImageManifestDescriptor"), "digest")
        if not manifest and image_id in by_id:
            manifest = by_id[image_id].platform_manifest
        out_containers.append(Container(
            id=str(c.get("Id", "")),
            name=_container_name(c),
            image=image,
            image_id=image_id,
            state=str(c.get("State", "")),
            created=float(_int(c.get("Created"))),
            stale=container_stale(image_id, manifest, by_tag.get(image)),
            drift_opt_out=_label(c, "docker-hygiene.drift").lower() == "false",
            version_labels=_version_labels(c),
            manifest=manifest,
        ))

    out_images.sort(key=lambda i: i.id)
    out_containers.sort(key=lambda c: c.name)
    return EngineSnapshot(tuple(out_images), tuple(out_containers), api_version, *engine)


class EngineReader:
    """Reads images and containers; inspects only what it has not seen before.

    LastTagTime (and, from API 1.53, which repositories the image was pulled from) needs one
    inspect per image; it is cached per (ID, tags, digests) because a pull or tag changes
    those. Config.Image never changes for a container, so it is cached per container ID, and
    only needed when the engine lists the container's image by ID. ``seen_pulled`` gives the
    repositories this host was seen pulling (the event stream's).

    Where the engine gives no LastTagTime (pulls on dockerd, anything on Podman), an image's
    is the latest time this exporter first saw it under one of its tags, kept in ``store``
    across restarts (decisions/tagged.py); ``pull_times`` gives the event stream's pull
    times per tag, which make it exact. Without a store, LastTagTime is all there is.
    """

    def __init__(self, engine: Engine,
                 seen_pulled: Callable[[], Collection[str]] = frozenset,
                 store: StateStore | None = None,
                 pull_times: Callable[[], Mapping[str, float]] = dict) -> None:
        self.engine = engine
        self.seen_pulled = seen_pulled
        self.store = store
        self.pull_times = pull_times
        self._last_read = 0.0  # when the previous read asked for the images
        self._tag_times: dict[tuple[str, tuple[str, ...], tuple[str, ...]],
                              tuple[float | None, frozenset[str] | None]] = {}
        self._config_image: dict[str, str] = {}
        self._said_podman = False
        self._familiar = Familiar()
        # What the last read was made of, and the snapshot it gave: a read whose answers and
        # inputs are all equal gives the same snapshot, without building it again.
        self._last: tuple[tuple[Any, ...], EngineSnapshot] | None = None

    def read(self) -> EngineSnapshot:
        asked = time.time()
        images = self.engine.images()
        answered = time.time()
        containers = self.engine.containers()
        podman = self.engine.podman
        if podman and not self._said_podman:
            self._said_podman = True
            log.info("the engine is Podman: disk figures are podman system df's, there is no "
                     "build cache (no such series), no LastTagTime (the exporter's first sight "
                     "of each tag stands in), localhost/ images are local builds, and "
                     "run/create also count as pulls")

        store = self.engine.store
        pulls = self.pull_times()
        seen_pulled = frozenset(self.seen_pulled()) if store == provenance.CONTAINERD \
            else frozenset()
        # In ID order (the engine lists images made in the same second in any order); a
        # container's "Status" ("Up 5 seconds") changes with the clock and is not read.
        inputs = (sorted(images, key=_by_id),
                  sorted(({k: v for k, v in c.items() if k != "Status"} for c in containers),
                         key=_by_id),
                  pulls, seen_pulled, store, podman, self.engine.api_version,
                  self.engine.platform, self.engine.server_version)
        if self._last is not None and self._last[0] == inputs:
            # Nothing the snapshot is made of changed (the tags seen neither: they follow
            # from the same tags, IDs and pull times): most reads of a quiet host. Measured
            # in-process at 2,000 tags: 8.1 ms of CPU a read instead of 15.6.
            self._last_read = asked
            return self._last[1]
        tag_times: dict[tuple[str, tuple[str, ...], tuple[str, ...]],
                        tuple[float | None, frozenset[str] | None]] = {}
        failed: set[tuple[str, tuple[str, ...], tuple[str, ...]]] = set()
        engine_down = False
        for img in images:
            key = (str(img.get("Id")), _tags(img.get("RepoTags"), self._familiar),
                   _tags(img.get("RepoDigests"), self._familiar))
            if key in self._tag_times or podman:  # Podman never sets LastTagTime
                tag_times[key] = self._tag_times.get(key, (None, None))
                continue
            # A failed inspect costs that image's LastTagTime for this read, nothing more; it
            # is asked again next time. Once the engine times out or is gone, the remaining
            # inspects wait for the next read instead of each waiting for the timeout.
            tag_times[key] = (None, None)
            if engine_down:
                failed.add(key)
                continue
            try:
                inspected = self.engine.inspect_image(key[0]) or {}
            except EngineError as exc:
                failed.add(key)
                engine_down = exc.reason != "api_error"
                continue
            meta = inspected.get("Metadata")
            tag_times[key] = (parse_timestamp(meta.get("LastTagTime")) if isinstance(
                meta, Mapping) else None, _pulled_from(inspected))
        self._tag_times = {k: v for k, v in tag_times.items() if k not in failed}

        config_image: dict[str, str] = {}
        for c in containers:
            cid = str(c.get("Id"))
            if c.get("Image") != c.get("ImageID"):
                continue
            if cid not in self._config_image:
                inspected = self.engine.inspect_container(cid) or {}
                cfg = inspected.get("Config")
                origin = cfg.get("Image") if isinstance(cfg, Mapping) else None
                self._config_image[cid] = origin if isinstance(origin, str) else str(c["Image"])
            config_image[cid] = self._config_image[cid]
        self._config_image = config_image

        times = {k[0]: v[0] for k, v in tag_times.items()}
        if self.store is not None:
            seen = tagged.tags_seen(self.store.tags_seen(),
                                    {tag: key[0] for key in tag_times for tag in key[1]},
                                    answered, self._last_read, pulls)
            self.store.keep_tags_seen(seen)
            for image_id, when in tagged.last_tagged(seen).items():
                if times.get(image_id) is None:  # the engine's LastTagTime wins
                    times[image_id] = when
        self._last_read = asked

        snapshot = build_engine_snapshot(
            images, containers, times, config_image,
            self.engine.api_version, self.engine.platform, store,
            {k[0]: v[1] for k, v in tag_times.items()}, seen_pulled, self._familiar,
            ("podman" if podman else "docker", self.engine.server_version))
        self._familiar.next_read()
        # A read with a failed inspect is not kept: the next one asks again.
        self._last = None if failed else (inputs, snapshot)
        return snapshot
